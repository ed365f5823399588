#include "target/text_keys.hh"

#include <doctest/doctest.h>

#include <cstring>

using namespace zuma::target;

static std::vector<uint8_t> bytes(const char* s, size_t n) {
  return std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(s),
                              reinterpret_cast<const uint8_t*>(s) + n);
}

TEST_CASE("parse NUL-separated keys") {
  auto data = bytes("InitiatorName=iqn.x\0SessionType=Normal\0", 40);
  auto kv = parse_text(data);
  REQUIRE(kv);
  REQUIRE(kv->size() == 2);
  CHECK((*kv)[0].key == "InitiatorName");
  CHECK((*kv)[0].value == "iqn.x");
  CHECK((*kv)[1].key == "SessionType");
  CHECK((*kv)[1].value == "Normal");
}

TEST_CASE("last item without NUL, padding NULs, empty value") {
  auto data = bytes("A=1\0\0\0B=\0C=x=y", 15);
  auto kv = parse_text(data);
  REQUIRE(kv);
  REQUIRE(kv->size() == 3);
  CHECK((*kv)[1].key == "B");
  CHECK((*kv)[1].value.empty());
  CHECK((*kv)[2].value == "x=y");
}

TEST_CASE("malformed items are errors") {
  CHECK_FALSE(parse_text(bytes("NoEquals\0", 9)));
  CHECK_FALSE(parse_text(bytes("=value\0", 7)));
  std::string longkey(64, 'k');
  longkey += "=1";
  CHECK_FALSE(parse_text(bytes(longkey.c_str(), longkey.size())));
  std::string longval = "K=" + std::string(kMaxValueLen + 1, 'v');
  CHECK_FALSE(parse_text(bytes(longval.c_str(), longval.size())));
}

TEST_CASE("append_key") {
  std::vector<uint8_t> out;
  append_key(out, "K", "V");
  append_key(out, "X", "");
  CHECK(out == bytes("K=V\0X=\0", 7));
}

TEST_CASE("numbers: decimal, hex, bounds") {
  CHECK(parse_number("8192", 16777215) == 8192u);
  CHECK(parse_number("0x10", 100) == 16u);
  CHECK_FALSE(parse_number("", 10));
  CHECK_FALSE(parse_number("12a", 100));
  CHECK_FALSE(parse_number("-1", 100));
  CHECK_FALSE(parse_number("101", 100));
  CHECK_FALSE(parse_number("99999999999999999999999", ~0ull));
}
