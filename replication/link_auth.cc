#include "replication/link_auth.hh"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "replication/link_tls.hh"

namespace zuma::replication::auth {

Nonce random_nonce() {
  Nonce n;
  if (RAND_bytes(n.data(), int(n.size())) != 1) std::abort();  // no randomness: nothing is safe
  return n;
}

std::string hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

std::optional<std::vector<uint8_t>> unhex(std::string_view text) {
  if (text.size() % 2) return std::nullopt;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<uint8_t> out(text.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(text[2 * i]), lo = digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = uint8_t(hi << 4 | lo);
  }
  return out;
}

Proof proof(Side who, std::string_view secret, std::span<const uint8_t> hello,
            std::span<const uint8_t> secondary_nonce, std::span<const uint8_t> binding) {
  // The label ends with its NUL, so "primary" and "secondary" transcripts never share a prefix.
  static constexpr char kPrimary[] = "zuma-replication-auth-v1 primary";
  static constexpr char kSecondary[] = "zuma-replication-auth-v1 secondary";
  const std::string_view label = who == Side::kPrimary
                                     ? std::string_view(kPrimary, sizeof(kPrimary))
                                     : std::string_view(kSecondary, sizeof(kSecondary));
  uint8_t hello_hash[SHA256_DIGEST_LENGTH];
  SHA256(hello.data(), hello.size(), hello_hash);
  std::vector<uint8_t> msg;
  msg.reserve(label.size() + sizeof(hello_hash) + secondary_nonce.size() + binding.size());
  msg.insert(msg.end(), label.begin(), label.end());
  msg.insert(msg.end(), hello_hash, hello_hash + sizeof(hello_hash));
  msg.insert(msg.end(), secondary_nonce.begin(), secondary_nonce.end());
  msg.insert(msg.end(), binding.begin(), binding.end());
  Proof out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), int(secret.size()), msg.data(), msg.size(), out.data(), &len);
  return out;
}

bool proof_matches(const Proof& expected, std::span<const uint8_t> got) {
  return got.size() == expected.size() &&
         CRYPTO_memcmp(expected.data(), got.data(), got.size()) == 0;
}

Result prove_to_secondary(proto::Conn& c, std::string_view secret, std::span<const uint8_t> hello,
                          int timeout_ms) {
  proto::Frame type{};
  std::vector<uint8_t> p;
  auto io = [&c](const char* what, int r) {
    // TLS 1.3: the peer checks this side's certificate after this side's handshake is done.
    if (r == -EPROTO && c.tls())
      return Result{
          false, true,
          fmt::format("TLS handshake failed: the peer refused this side: {}", proto::tls_error())};
    return Result{
        false, false,
        fmt::format("{}: {}", what,
                    r == -ECONNRESET ? "the peer closed the connection" : std::strerror(-r))};
  };
  auto refused = [](const std::vector<uint8_t>& msg) {
    const std::string m(msg.begin(), msg.end());
    return Result{false, m.starts_with("authentication"), "the peer refused: " + m};
  };
  if (int r = proto::recv_frame(c, &type, &p, timeout_ms); r < 0)
    return io("no answer to HELLO", r);
  if (type == proto::Frame::kError) return refused(p);
  if (type == proto::Frame::kWelcome)
    return {
        false, true,
        "authentication: the peer accepted this side without asking it to authenticate: it has no "
        "secret for this group (set the same secret on the group there), or is an older zumad"};
  if (type != proto::Frame::kAuthChallenge || p.size() != kNonceBytes)
    return {false, false, "authentication: malformed AUTH_CHALLENGE"};
  const std::vector<uint8_t> nonce = p;
  const auto binding = tls::channel_binding(c);
  const Proof mine = proof(Side::kPrimary, secret, hello, nonce, binding);
  if (int r = proto::send_frame(c, proto::Frame::kAuthProof, mine, timeout_ms); r < 0)
    return io("sending AUTH_PROOF", r);
  if (int r = proto::recv_frame(c, &type, &p, timeout_ms); r < 0)
    return io("no answer to AUTH_PROOF", r);
  if (type == proto::Frame::kError) return refused(p);
  if (type != proto::Frame::kAuthOk) return {false, false, "authentication: malformed AUTH_OK"};
  if (!proof_matches(proof(Side::kSecondary, secret, hello, nonce, binding), p))
    return {false, true,
            "authentication failed: the peer's proof does not match this link's secret (the peer "
            "has another secret for this group)"};
  return {true, false, ""};
}

Result check_primary(proto::Conn& c, std::string_view secret, std::span<const uint8_t> hello,
                     int timeout_ms) {
  const Nonce nonce = random_nonce();
  if (int r = proto::send_frame(c, proto::Frame::kAuthChallenge, nonce, timeout_ms); r < 0)
    return {false, false, fmt::format("sending AUTH_CHALLENGE: {}", std::strerror(-r))};
  proto::Frame type{};
  std::vector<uint8_t> p;
  // A peer that has not proved anything yet gets no more than a proof's worth of memory.
  if (int r = proto::recv_frame(c, &type, &p, timeout_ms, proto::kMaxAuthFrame); r < 0)
    return {
        false, r == -EPROTO,
        r == -EPROTO
            ? std::string("authentication failed: malformed frame instead of AUTH_PROOF")
            : fmt::format("waiting for AUTH_PROOF: {}",
                          r == -ECONNRESET ? "the peer closed the connection" : std::strerror(-r))};
  if (type != proto::Frame::kAuthProof || p.size() != kProofBytes)
    return {false, true, "authentication failed: malformed AUTH_PROOF"};
  const auto binding = tls::channel_binding(c);
  if (!proof_matches(proof(Side::kPrimary, secret, hello, nonce, binding), p))
    return {false, true,
            "authentication failed: the primary's proof does not match this group's secret here"};
  const Proof mine = proof(Side::kSecondary, secret, hello, nonce, binding);
  if (int r = proto::send_frame(c, proto::Frame::kAuthOk, mine, timeout_ms); r < 0)
    return {false, false, fmt::format("sending AUTH_OK: {}", std::strerror(-r))};
  return {true, false, ""};
}

}  // namespace zuma::replication::auth
