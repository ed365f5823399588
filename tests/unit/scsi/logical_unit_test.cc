#include "scsi/logical_unit.hh"

#include <doctest/doctest.h>

#include <stdexcept>

#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::FakeBackend;

TEST_CASE("parse_uuid accepts RFC 4122 text in either case, nothing else") {
  const auto u = parse_uuid("12345678-9ABC-4def-8123-456789abcdef");
  REQUIRE(u.has_value());
  const std::array<uint8_t, 16> want = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef,
                                        0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
  CHECK(*u == want);
  CHECK_FALSE(parse_uuid("").has_value());
  CHECK_FALSE(parse_uuid("12345678-9abc-4def-8123-456789abcde").has_value());
  CHECK_FALSE(parse_uuid("12345678-9abc-4def-8123-456789abcdeg").has_value());
  CHECK_FALSE(parse_uuid("123456789-abc-4def-8123-456789abcdef").has_value());
  CHECK_FALSE(parse_uuid("12345678-9abc-4def-8123-456789abcdef\n").has_value());
}

TEST_CASE("NAA-6 designator: company id then the UUID's variable bits") {
  const auto d = naa6_from_uuid(*parse_uuid(test::kUuid));
  const std::array<uint8_t, 16> want = {0x65, 0xA5, 0x54, 0xDB, 0xD0, 0x3E, 0xA7, 0x89,
                                        0xAB, 0xCD, 0xEF, 0x04, 0x8D, 0x15, 0x9E, 0x26};
  CHECK(d == want);
  // Deterministic, and different UUIDs give different designators.
  CHECK(naa6_from_uuid(*parse_uuid(test::kUuid)) == d);
  CHECK(naa6_from_uuid(*parse_uuid("02345678-9abc-4def-8123-456789abcdef")) != d);
  CHECK(naa6_from_uuid(*parse_uuid("12345678-9abc-4def-8123-456789a0cdef")) != d);
  CHECK((d[0] >> 4) == 6);
}

TEST_CASE("identity and geometry of a LU") {
  LogicalUnit lu(test::default_params(), std::make_unique<FakeBackend>(2048 * 512));
  CHECK(lu.serial() == "123456789ABC4DEF8123456789ABCDEF");
  CHECK(lu.block_size() == 512);
  CHECK(lu.num_blocks() == 2048);
  CHECK(lu.max_transfer_blocks() == 16384);
  CHECK(lu.write_cache());
  CHECK_FALSE(lu.descriptor_sense());

  LogicalUnit lu4k(test::default_params(256, 4096), std::make_unique<FakeBackend>(256 * 4096));
  CHECK(lu4k.max_transfer_blocks() == 2048);
}

TEST_CASE("unusable parameters are refused at construction") {
  auto make = [](LuParams p, uint64_t backend_size) {
    LogicalUnit lu(std::move(p), std::make_unique<FakeBackend>(backend_size));
  };
  CHECK_THROWS_AS(make(test::default_params(2048, 520), 1 << 20), std::invalid_argument);
  CHECK_THROWS_AS(make(test::default_params(2048, 8192), 16 << 20), std::invalid_argument);
  CHECK_THROWS_AS(make(test::default_params(0), 1 << 20), std::invalid_argument);
  CHECK_THROWS_AS(make(test::default_params(2048), 2047 * 512), std::invalid_argument);
  LuParams bad = test::default_params();
  bad.uuid = "nope";
  CHECK_THROWS_AS(make(bad, 1 << 20), std::invalid_argument);
  CHECK_NOTHROW(make(test::default_params(2048), 2048 * 512 + 100));
}

TEST_CASE("changing mode parameters tells the other nexuses") {
  LuParams p = test::default_params();
  p.write_cache = false;
  LogicalUnit lu(p, std::make_unique<FakeBackend>(2048 * 512));
  CHECK_FALSE(lu.write_cache());
  CHECK(lu.default_mode_params() == ModeParams{false, false, true});  // TAS=1
  lu.unit_attentions().touch(1);
  lu.unit_attentions().touch(2);

  lu.set_mode_params({false, false, true}, 1);  // no change, no condition
  CHECK_FALSE(lu.unit_attentions().pending(2));

  lu.set_mode_params({true, true, true}, 1);
  CHECK(lu.write_cache());
  CHECK(lu.descriptor_sense());
  CHECK_FALSE(lu.unit_attentions().pending(1));
  CHECK(lu.unit_attentions().take(2) == Reason::kUaModeParametersChanged);
}

}  // namespace
}  // namespace zuma::scsi
