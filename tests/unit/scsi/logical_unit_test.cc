#include "scsi/logical_unit.hh"

#include <doctest/doctest.h>

#include <stdexcept>

#include "storage/memory_backend.hh"

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::FakeBackend;
using test::Fixture;
using test::run_cdb;
using test::Bytes;

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


// A LU on a real memory backend in f's table (LUN 0), for resize.
std::shared_ptr<LogicalUnit> memory_lu(Fixture& f, uint64_t blocks) {
  auto lu = make_logical_unit(test::default_params(blocks),
                              std::make_unique<storage::MemoryBackend>(blocks * 512));
  f.lu = lu;
  f.table.luns[0] = lu;
  return lu;
}

Bytes read_capacity16(Fixture& f, const Nexus* n = nullptr) {
  auto t = f.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0},
                 DataDir::kIn, 32, {}, 0, n);
  REQUIRE(t->good());
  return test::slice(t->data_in(), 0, 12);
}

TEST_CASE("resize: grow; every known nexus gets CAPACITY DATA HAS CHANGED once") {
  Fixture f;
  auto lu = memory_lu(f, 2048);
  const std::initializer_list<uint8_t> tur = {op::kTestUnitReady, 0, 0, 0, 0, 0};
  REQUIRE(f.run(tur, DataDir::kNone, 0)->good());
  REQUIRE(f.run(tur, DataDir::kNone, 0, {}, 0, &f.other)->good());
  const Bytes data = test::pattern(8 * 512, 9);
  REQUIRE(run_cdb(f, test::cdb16(op::kWrite16, 0, 2040, 8), DataDir::kOut, 4096, data)->good());

  auto r = lu->resize(4096);
  REQUIRE_MESSAGE(r.has_value(), r.error());
  CHECK(lu->num_blocks() == 4096);
  CHECK(lu->geometry().num_blocks == 4096);
  CHECK(lu->backend().size() == 4096 * 512);
  // SBC-4 / SPC-5: UNIT ATTENTION, CAPACITY DATA HAS CHANGED (2Ah/09h), then the new size.
  auto t = f.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0},
                 DataDir::kIn, 32);
  CHECK_SENSE(t, 0x6, 0x2A, 0x09);
  CHECK(read_capacity16(f) == Bytes{0, 0, 0, 0, 0, 0, 0x0F, 0xFF, 0, 0, 0x02, 0x00});
  t = f.run(tur, DataDir::kNone, 0, {}, 0, &f.other);
  CHECK_SENSE(t, 0x6, 0x2A, 0x09);
  CHECK(f.run(tur, DataDir::kNone, 0, {}, 0, &f.other)->good());
  // The old data stays, the new blocks read as zeros and take writes.
  t = run_cdb(f, test::cdb16(op::kRead16, 0, 2040, 8), DataDir::kIn, 4096);
  REQUIRE(t->good());
  CHECK(t->data_in() == data);
  t = run_cdb(f, test::cdb16(op::kRead16, 0, 2048, 8), DataDir::kIn, 4096);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes(4096, 0));
  REQUIRE(run_cdb(f, test::cdb16(op::kWrite16, 0, 4088, 8), DataDir::kOut, 4096, data)->good());
  t = run_cdb(f, test::cdb16(op::kRead16, 0, 4088, 8), DataDir::kIn, 4096);
  CHECK(t->data_in() == data);
  // The same size again: nothing changes, no attention.
  REQUIRE(lu->resize(4096));
  CHECK(f.run(tur, DataDir::kNone, 0)->good());
}

TEST_CASE("resize: shrink ends the LBA range; refused while a reservation is held") {
  Fixture f;
  auto lu = memory_lu(f, 2048);
  const std::initializer_list<uint8_t> tur = {op::kTestUnitReady, 0, 0, 0, 0, 0};
  REQUIRE(f.run(tur, DataDir::kNone, 0)->good());
  REQUIRE(lu->resize(1024));
  CHECK(lu->backend().size() == 1024 * 512);
  auto t = run_cdb(f, test::cdb16(op::kRead16, 0, 1020, 8), DataDir::kIn, 4096);
  CHECK_SENSE(t, 0x6, 0x2A, 0x09);
  t = run_cdb(f, test::cdb16(op::kRead16, 0, 1020, 8), DataDir::kIn, 4096);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);  // LOGICAL BLOCK ADDRESS OUT OF RANGE
  CHECK(run_cdb(f, test::cdb16(op::kRead16, 0, 1016, 8), DataDir::kIn, 4096)->good());

  REQUIRE(f.run({op::kReserve6, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other)->good());
  auto r = lu->resize(512);
  REQUIRE_FALSE(r);
  CHECK(r.error() ==
        "a reservation is held on the LU; its holder may use the blocks a shrink removes "
        "(release it first)");
  CHECK(lu->num_blocks() == 1024);
  CHECK(lu->backend().size() == 1024 * 512);
  // No attention for a refused change: the holder's TEST UNIT READY is good, and the other
  // nexus sees the reservation conflict (checked after unit attentions, SPC-5 5.14).
  CHECK(f.run(tur, DataDir::kNone, 0, {}, 0, &f.other)->good());
  CHECK(f.run(tur, DataDir::kNone, 0)->task.status == status::kReservationConflict);
  REQUIRE(lu->resize(2048));                     // growing takes nothing away: allowed
  CHECK(lu->num_blocks() == 2048);
  CHECK(lu->resize(0).error() == "the capacity must be at least one block");
}

// SAM-5 I_T nexus loss: the next session with the lost nexus's names reports 29h/07h, once;
// a nexus with other names, or one that never used the LU, is not affected.
TEST_CASE("I_T NEXUS LOSS OCCURRED for the next nexus with the lost one's names") {
  LuParams p = test::default_params();
  p.power_on_unit_attention = true;
  Fixture f(p);
  const std::initializer_list<uint8_t> tur = {op::kTestUnitReady, 0, 0, 0, 0, 0};
  {
    auto t = f.run(tur, DataDir::kNone, 0);
    CHECK_SENSE(t, 0x6, 0x29, 0x01);  // POWER ON OCCURRED
  }
  REQUIRE(f.run(tur, DataDir::kNone, 0)->good());
  nexus_lost(*f.lu, f.nexus);

  Nexus again = f.nexus;  // a new session, same initiator port and target port
  again.id = 10;
  again.task_sets.clear();
  {
    auto t = f.run(tur, DataDir::kNone, 0, {}, 0, &again);
    CHECK_SENSE(t, 0x6, 0x29, 0x07);
  }
  CHECK(f.run(tur, DataDir::kNone, 0, {}, 0, &again)->good());
  Nexus third = f.nexus;  // reported once: the session after gets the power-on condition
  third.id = 11;
  third.task_sets.clear();
  {
    auto t = f.run(tur, DataDir::kNone, 0, {}, 0, &third);
    CHECK_SENSE(t, 0x6, 0x29, 0x01);
  }

  // Another ISID is another I_T nexus: power on, not nexus loss.
  Nexus other_isid = f.nexus;
  other_isid.id = 12;
  other_isid.task_sets.clear();
  other_isid.initiator_port = "iqn.1994-05.com.example:host1,i,0x023d00000002";
  nexus_lost(*f.lu, again);
  {
    auto t = f.run(tur, DataDir::kNone, 0, {}, 0, &other_isid);
    CHECK_SENSE(t, 0x6, 0x29, 0x01);
  }

  // Reinstatement where the new session used the LU before the old one was cleaned up:
  // the new one is told at once (replacing its power-on condition).
  Nexus fresh = f.nexus;
  fresh.id = 13;
  fresh.task_sets.clear();
  REQUIRE(f.run(tur, DataDir::kNone, 0, {}, 0, &fresh)->task.status == status::kCheckCondition);
  REQUIRE(f.run(tur, DataDir::kNone, 0, {}, 0, &fresh)->good());
  nexus_lost(*f.lu, third);
  {
    auto t = f.run(tur, DataDir::kNone, 0, {}, 0, &fresh);
    CHECK_SENSE(t, 0x6, 0x29, 0x07);
  }

  // A nexus that never sent the LU a command lost nothing here.
  Nexus never = f.other;
  never.id = 14;
  nexus_lost(*f.lu, never);
  Nexus never_again = f.other;
  never_again.id = 15;
  {
    auto t = f.run(tur, DataDir::kNone, 0, {}, 0, &never_again);
    CHECK_SENSE(t, 0x6, 0x29, 0x01);
  }
}

TEST_CASE("resize: a backend that cannot change its size refuses; nothing changes") {
  Fixture f;  // FakeBackend keeps Backend's default resize()
  const std::initializer_list<uint8_t> tur = {op::kTestUnitReady, 0, 0, 0, 0, 0};
  REQUIRE(f.run(tur, DataDir::kNone, 0)->good());
  auto r = f.lu->resize(4096);
  REQUIRE_FALSE(r);
  CHECK(r.error() == f.backend->describe() + ": this kind of backend cannot change its size");
  CHECK(f.lu->num_blocks() == 2048);
  CHECK(f.run(tur, DataDir::kNone, 0)->good());
}

}  // namespace
}  // namespace zuma::scsi
