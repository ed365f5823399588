// Authentication of a site link's two ends by a shared secret (docs/REPLICATION.md
// "Authentication"), with or without TLS. Mutual challenge-response with HMAC-SHA256:
//
//   primary -> HELLO, with "auth": {"method": "hmac-sha256", "nonce": 64 hex digits}
//   secondary -> AUTH_CHALLENGE: its own 32 random bytes
//   primary -> AUTH_PROOF: proof(kPrimary)
//   secondary -> AUTH_OK: proof(kSecondary), only once the primary's proof was right
//   secondary -> WELCOME (or ERROR), as without authentication
//
// proof(side) = HMAC-SHA256(secret, "zuma-replication-auth-v1 " side NUL || SHA-256(HELLO
// payload) || secondary nonce || channel binding). The HELLO names the group, the link and
// the primary's log id and holds the primary's nonce, so a proof is bound to both nonces,
// that group and that log: a recorded exchange cannot be replayed (the secondary's nonce is
// new) nor reflected (each side's label differs). With TLS the channel binding (32 bytes of
// the TLS exporter, link_tls.hh) ties it to the TLS session as well; without TLS it is
// empty, and the exchange proves who is at the other end when the connection starts, not
// that nobody takes it over later (docs/REPLICATION.md says what that means).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "replication/protocol.hh"

namespace zuma::replication::auth {

constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;
constexpr const char* kMethod = "hmac-sha256";

using Nonce = std::array<uint8_t, kNonceBytes>;
using Proof = std::array<uint8_t, kProofBytes>;
enum class Side : uint8_t { kPrimary, kSecondary };

Nonce random_nonce();  // OpenSSL RAND_bytes; aborts if the generator fails
std::string hex(std::span<const uint8_t> bytes);
// Lower- or upper-case hex digits, an even number of them; nullopt otherwise.
std::optional<std::vector<uint8_t>> unhex(std::string_view text);

Proof proof(Side who, std::string_view secret, std::span<const uint8_t> hello,
            std::span<const uint8_t> secondary_nonce, std::span<const uint8_t> binding);
// Constant-time comparison (CRYPTO_memcmp); false when `got` is not kProofBytes long.
bool proof_matches(const Proof& expected, std::span<const uint8_t> got);

struct Result {
  bool ok = false;
  bool auth_failure = false;  // the secret (or its absence) is the reason, not I/O
  std::string error;          // one line, when !ok
};

// The primary, after sending `hello` with an auth nonce: answers the challenge, then checks
// the secondary's proof. A peer that refuses (ERROR) gives "the peer refused: REASON".
Result prove_to_secondary(proto::Conn& c, std::string_view secret, std::span<const uint8_t> hello,
                          int timeout_ms);
// The secondary, given such a `hello`: challenges the primary, checks its proof, answers
// with its own. On failure nothing more is sent: the caller sends `error` as an ERROR frame
// and closes. Every frame read here is at most proto::kMaxAuthFrame bytes.
Result check_primary(proto::Conn& c, std::string_view secret, std::span<const uint8_t> hello,
                     int timeout_ms);

}  // namespace zuma::replication::auth
