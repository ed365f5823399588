#include "target/chap.hh"

#include <doctest/doctest.h>

#include <numeric>

using namespace zuma::target;

namespace {
std::vector<uint8_t> challenge16() {
  std::vector<uint8_t> c(16);
  std::iota(c.begin(), c.end(), 0);
  return c;
}
}  // namespace

TEST_CASE("CHAP response = H(id || secret || challenge) for every algorithm") {
  // Expected values computed independently (Python hashlib) for id 7, secret
  // "alice-secret-1234", challenge 00 01 .. 0f.
  const auto c = challenge16();
  CHECK(encode_hex(chap_response(ChapAlgorithm::kMd5, 7, "alice-secret-1234", c)) ==
        "0x7f64deabc2280fe18859284da345af6b");
  CHECK(encode_hex(chap_response(ChapAlgorithm::kSha1, 7, "alice-secret-1234", c)) ==
        "0xeea8d91a4d2b88b22563bc8b0e8b0b73f300ac24");
  CHECK(encode_hex(chap_response(ChapAlgorithm::kSha256, 7, "alice-secret-1234", c)) ==
        "0x6cef9f55dbabb52d1c4e3964316154ba75181ba103d3074de3d69926f930538c");
  CHECK(encode_hex(chap_response(ChapAlgorithm::kSha3_256, 7, "alice-secret-1234", c)) ==
        "0xdf8403496f751394d80777aec61ad95e6ae52144ca1071379d2113af6fcf4f7c");
  CHECK(chap_digest_len(ChapAlgorithm::kMd5) == 16);
  CHECK(chap_digest_len(ChapAlgorithm::kSha1) == 20);
  CHECK(chap_digest_len(ChapAlgorithm::kSha256) == 32);
  CHECK(chap_digest_len(ChapAlgorithm::kSha3_256) == 32);
}

TEST_CASE("the strongest offered algorithm the policy allows is chosen") {
  CHECK(chap_choose("5", {}) == ChapAlgorithm::kMd5);
  CHECK(chap_choose("5,7,6", {}) == ChapAlgorithm::kSha256);
  CHECK(chap_choose("8,5", {}) == ChapAlgorithm::kSha3_256);
  CHECK(chap_choose("5,7", {ChapAlgorithm::kMd5}) == ChapAlgorithm::kMd5);
  CHECK_FALSE(chap_choose("5", {ChapAlgorithm::kSha256}));
  CHECK_FALSE(chap_choose("", {}));
  CHECK_FALSE(chap_choose("1,2,99,x", {}));
  CHECK(chap_choose("99,6", {}) == ChapAlgorithm::kSha1);
}

TEST_CASE("algorithm names") {
  CHECK(chap_algorithm_from_name("sha3-256") == ChapAlgorithm::kSha3_256);
  CHECK(chap_algorithm_from_name("SHA-1") == ChapAlgorithm::kSha1);
  CHECK(chap_algorithm_from_name("md5") == ChapAlgorithm::kMd5);
  CHECK_FALSE(chap_algorithm_from_name("SHA-512"));
  CHECK(std::string(chap_algorithm_name(ChapAlgorithm::kSha256)) == "SHA-256");
}

TEST_CASE("binary values: hex and base64 (RFC 7143 6.1)") {
  CHECK(decode_binary("0x0102ff") == std::vector<uint8_t>{1, 2, 255});
  CHECK(decode_binary("0X0A") == std::vector<uint8_t>{10});
  CHECK(decode_binary("0x102") == std::vector<uint8_t>{1, 2});  // leading zero left out
  CHECK(decode_binary("0bAQL/") == std::vector<uint8_t>{1, 2, 255});
  CHECK(decode_binary("0bAQI=") == std::vector<uint8_t>{1, 2});
  CHECK_FALSE(decode_binary("0x"));
  CHECK_FALSE(decode_binary("0xzz"));
  CHECK_FALSE(decode_binary("1234"));
  CHECK_FALSE(decode_binary("0bAQ"));
  CHECK(encode_hex(std::vector<uint8_t>{0, 0xab}) == "0x00ab");
}

TEST_CASE("constant-time comparison and random challenges") {
  std::vector<uint8_t> a{1, 2, 3}, b{1, 2, 3}, c{1, 2, 4}, d{1, 2};
  CHECK(constant_time_equal(a, b));
  CHECK_FALSE(constant_time_equal(a, c));
  CHECK_FALSE(constant_time_equal(a, d));
  auto r1 = random_bytes(32), r2 = random_bytes(32);
  CHECK(r1.size() == 32);
  CHECK(r1 != r2);  // 2^-256 chance of a false failure
}
