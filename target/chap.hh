// CHAP for iSCSI login (RFC 7143 12.1.3, RFC 1994), with the CHAP_A values of the IANA PPP
// authentication algorithm registry: 5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256.
// Hashes come from OpenSSL EVP.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zuma::target {

enum class ChapAlgorithm : uint8_t { kMd5 = 5, kSha1 = 6, kSha256 = 7, kSha3_256 = 8 };

// Credentials one side proves it knows.
struct ChapSecret {
  std::string user;
  std::string secret;
};

// What the administrator configured for a target (or for discovery).
struct ChapPolicy {
  ChapSecret initiator;                 // the initiator must prove this (one-way CHAP)
  std::optional<ChapSecret> target;     // mutual CHAP: the target proves this back
  std::vector<ChapAlgorithm> allowed;   // strongest first; empty = all four
};

// "MD5" / "SHA-1" / "SHA-256" / "SHA3-256" (case-insensitive) -> algorithm.
std::optional<ChapAlgorithm> chap_algorithm_from_name(std::string_view name);
const char* chap_algorithm_name(ChapAlgorithm a);
// Digest length in bytes.
size_t chap_digest_len(ChapAlgorithm a);

// Picks the strongest algorithm the initiator lists (CHAP_A="7,5") that the policy allows.
std::optional<ChapAlgorithm> chap_choose(std::string_view initiator_list,
                                         const std::vector<ChapAlgorithm>& allowed);

// RFC 1994 4.1: H(identifier || secret || challenge).
std::vector<uint8_t> chap_response(ChapAlgorithm a, uint8_t id, std::string_view secret,
                                   std::span<const uint8_t> challenge);

// RFC 7143 6.1 binary values: "0x" hex or "0b" base64. nullopt when malformed.
std::optional<std::vector<uint8_t>> decode_binary(std::string_view v);
std::string encode_hex(std::span<const uint8_t> bytes);  // "0x..."

// Constant-time comparison of equal-length byte strings (false when lengths differ).
bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

// `n` random bytes from RAND_bytes; empty when the generator fails.
std::vector<uint8_t> random_bytes(size_t n);

}  // namespace zuma::target
