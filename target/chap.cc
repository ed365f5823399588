#include "target/chap.hh"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <memory>

namespace zuma::target {
namespace {

const EVP_MD* evp_of(ChapAlgorithm a) {
  switch (a) {
    case ChapAlgorithm::kMd5:
      return EVP_md5();
    case ChapAlgorithm::kSha1:
      return EVP_sha1();
    case ChapAlgorithm::kSha256:
      return EVP_sha256();
    case ChapAlgorithm::kSha3_256:
      return EVP_sha3_256();
  }
  return nullptr;
}

// Strength order for "strongest the initiator offers".
int strength(ChapAlgorithm a) {
  switch (a) {
    case ChapAlgorithm::kSha3_256:
      return 4;
    case ChapAlgorithm::kSha256:
      return 3;
    case ChapAlgorithm::kSha1:
      return 2;
    case ChapAlgorithm::kMd5:
      return 1;
  }
  return 0;
}

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<ChapAlgorithm> chap_algorithm_from_name(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::toupper(c); });
  if (n == "MD5") return ChapAlgorithm::kMd5;
  if (n == "SHA-1" || n == "SHA1") return ChapAlgorithm::kSha1;
  if (n == "SHA-256" || n == "SHA256") return ChapAlgorithm::kSha256;
  if (n == "SHA3-256") return ChapAlgorithm::kSha3_256;
  return std::nullopt;
}

const char* chap_algorithm_name(ChapAlgorithm a) {
  switch (a) {
    case ChapAlgorithm::kMd5:
      return "MD5";
    case ChapAlgorithm::kSha1:
      return "SHA-1";
    case ChapAlgorithm::kSha256:
      return "SHA-256";
    case ChapAlgorithm::kSha3_256:
      return "SHA3-256";
  }
  return "?";
}

size_t chap_digest_len(ChapAlgorithm a) { return size_t(EVP_MD_get_size(evp_of(a))); }

std::optional<ChapAlgorithm> chap_choose(std::string_view list,
                                         const std::vector<ChapAlgorithm>& allowed) {
  std::optional<ChapAlgorithm> best;
  size_t i = 0;
  while (i <= list.size()) {
    size_t comma = list.find(',', i);
    if (comma == std::string_view::npos) comma = list.size();
    const std::string_view v = list.substr(i, comma - i);
    i = comma + 1;
    int n = -1;
    if (v == "5") n = 5;
    if (v == "6") n = 6;
    if (v == "7") n = 7;
    if (v == "8") n = 8;
    if (n < 0) continue;  // values we do not know are skipped (RFC 7143 6.2.1)
    const auto a = ChapAlgorithm(n);
    const bool ok = allowed.empty() || std::find(allowed.begin(), allowed.end(), a) != allowed.end();
    if (ok && (!best || strength(a) > strength(*best))) best = a;
  }
  return best;
}

std::vector<uint8_t> chap_response(ChapAlgorithm a, uint8_t id, std::string_view secret,
                                   std::span<const uint8_t> challenge) {
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), evp_of(a), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), &id, 1) != 1 ||
      EVP_DigestUpdate(ctx.get(), secret.data(), secret.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), challenge.data(), challenge.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1)
    return {};
  out.resize(len);
  return out;
}

std::optional<std::vector<uint8_t>> decode_binary(std::string_view v) {
  if (v.size() < 3 || v[0] != '0') return std::nullopt;
  std::vector<uint8_t> out;
  if (v[1] == 'x' || v[1] == 'X') {
    std::string_view hex = v.substr(2);
    const bool odd = hex.size() % 2;
    if (odd) {  // RFC 7143 6.1: a leading zero may be left out
      int d = hex_value(hex[0]);
      if (d < 0) return std::nullopt;
      out.push_back(uint8_t(d));
      hex.remove_prefix(1);
    }
    for (size_t i = 0; i < hex.size(); i += 2) {
      int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(uint8_t(hi << 4 | lo));
    }
    return out;
  }
  if (v[1] == 'b' || v[1] == 'B') {
    const std::string_view b64 = v.substr(2);
    if (b64.size() % 4) return std::nullopt;
    out.resize(b64.size() / 4 * 3);
    const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(b64.data()),
                                  int(b64.size()));
    if (n < 0) return std::nullopt;
    size_t len = size_t(n);
    if (b64.ends_with("==")) len -= 2;
    else if (b64.ends_with("=")) len -= 1;
    out.resize(len);
    return out;
  }
  return std::nullopt;
}

std::string encode_hex(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = "0x";
  for (uint8_t b : bytes) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::vector<uint8_t> random_bytes(size_t n) {
  std::vector<uint8_t> out(n);
  if (RAND_bytes(out.data(), int(n)) != 1) return {};
  return out;
}

}  // namespace zuma::target
