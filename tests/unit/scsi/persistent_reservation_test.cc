// Persistent reservations and RESERVE/RELEASE through execute(): exact status, sense and
// parameter data bytes; conflicts per reservation type; unit attentions to the other
// nexuses; APTPL state files.
#include "scsi/persistent_reservation.hh"

#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "scsi/cdb.hh"
#include "scsi/task_set.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::Bytes;
using test::cdb10;
using test::Fixture;
using test::run_cdb;
using test::slice;

constexpr uint64_t kKeyA = 0x1111111111111111ull;
constexpr uint64_t kKeyB = 0x2222222222222222ull;

Bytes be64(uint64_t v) {
  Bytes b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
  return b;
}

// The basic PERSISTENT RESERVE OUT parameter list (24 bytes).
Bytes params(uint64_t key, uint64_t sark, uint8_t flags = 0) {
  Bytes p(24, 0);
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<uint8_t>(key >> (56 - 8 * i));
    p[8 + i] = static_cast<uint8_t>(sark >> (56 - 8 * i));
  }
  p[20] = flags;
  return p;
}

// An iSCSI TransportID, format 01b (port) or 00b (name).
Bytes transport_id(const std::string& name, bool port) {
  const size_t add = std::max<size_t>(20, (name.size() + 1 + 3) / 4 * 4);
  Bytes t(4 + add, 0);
  t[0] = static_cast<uint8_t>((port ? 0x40 : 0x00) | 0x05);
  t[2] = static_cast<uint8_t>(add >> 8);
  t[3] = static_cast<uint8_t>(add);
  std::memcpy(t.data() + 4, name.data(), name.size());
  return t;
}

struct Pr {
  Fixture& f;

  std::unique_ptr<test::TestTask> out(const Nexus& n, uint8_t sa, uint8_t scope_type,
                                      const Bytes& p) {
    const uint32_t len = static_cast<uint32_t>(p.size());
    Bytes cdb = {op::kPersistentReserveOut,
                 sa,
                 scope_type,
                 0,
                 0,
                 static_cast<uint8_t>(len >> 24),
                 static_cast<uint8_t>(len >> 16),
                 static_cast<uint8_t>(len >> 8),
                 static_cast<uint8_t>(len),
                 0};
    return run_cdb(f, cdb, DataDir::kOut, len, p, 0, &n);
  }
  std::unique_ptr<test::TestTask> in(const Nexus& n, uint8_t sa, uint16_t alloc = 1024) {
    Bytes cdb = {op::kPersistentReserveIn,    sa, 0, 0, 0, 0, 0, static_cast<uint8_t>(alloc >> 8),
                 static_cast<uint8_t>(alloc), 0};
    return run_cdb(f, cdb, DataDir::kIn, alloc, {}, 0, &n);
  }
  void reg(const Nexus& n, uint64_t key, uint8_t flags = 0) {
    auto t = out(n, prout_sa::kRegisterAndIgnore, 0, params(0, key, flags));
    REQUIRE(t->good());
  }
  void reserve(const Nexus& n, uint64_t key, uint8_t type) {
    auto t = out(n, prout_sa::kReserve, type, params(key, 0));
    REQUIRE(t->good());
  }
  bool read_ok(const Nexus& n) {
    auto t = run_cdb(f, cdb10(op::kRead10, 0, 1, 1), DataDir::kIn, 512, {}, 0, &n);
    REQUIRE(t->completions == 1);
    return t->task.status == status::kGood;
  }
  bool write_ok(const Nexus& n) {
    auto t = run_cdb(f, cdb10(op::kWrite10, 0, 1, 1), DataDir::kOut, 512, Bytes(512, 0xAB), 0, &n);
    REQUIRE(t->completions == 1);
    if (t->task.status != status::kGood) {
      CHECK(t->task.status == status::kReservationConflict);
      CHECK(t->task.sense_len == 0);
    }
    return t->task.status == status::kGood;
  }
  std::unique_ptr<test::TestTask> tur(const Nexus& n) {
    return run_cdb(f, {op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &n);
  }
};

// These macros evaluate their task expression once (it often runs a command).
#define CHECK_CONFLICT(expr)                                \
  do {                                                      \
    auto&& t_ = (expr);                                     \
    CHECK(t_->completions == 1);                            \
    CHECK(t_->task.status == status::kReservationConflict); \
    CHECK(t_->task.sense_len == 0);                         \
  } while (0)
#define CHECK_SENSE_OF(expr, k, a, q) \
  do {                                \
    auto&& t_ = (expr);               \
    CHECK_SENSE(t_, k, a, q);         \
  } while (0)
#define CHECK_INVALID_CDB_OF(expr, byte, bit) \
  do {                                        \
    auto&& t_ = (expr);                       \
    CHECK_INVALID_CDB(t_, byte, bit);         \
  } while (0)

// INVALID FIELD IN PARAMETER LIST with the field pointer at (byte, bit) (C/D=0).
#define CHECK_INVALID_PARAM(expr, byte, bit)                                    \
  do {                                                                          \
    auto&& t_ = (expr);                                                         \
    CHECK_SENSE(t_, 0x5, 0x26, 0x00);                                           \
    CHECK(int(t_->task.sense[15]) == (0x80 | ((bit) >= 0 ? 0x08 | (bit) : 0))); \
    CHECK(int(t_->task.sense[16] << 8 | t_->task.sense[17]) == (byte));         \
  } while (0)

TEST_CASE("REGISTER, READ KEYS and unregistering") {
  Fixture f;
  Pr pr{f};
  auto keys = pr.in(f.nexus, prin_sa::kReadKeys);
  REQUIRE(keys->good());
  CHECK(keys->data_in() == Bytes{0, 0, 0, 0, 0, 0, 0, 0});

  auto t = pr.out(f.nexus, prout_sa::kRegister, 0, params(0, kKeyA));
  CHECK(t->good());
  CHECK(t->task.transfer_len == 24);
  keys = pr.in(f.nexus, prin_sa::kReadKeys);
  Bytes want = {0, 0, 0, 1, 0, 0, 0, 8};
  const Bytes ka = be64(kKeyA);
  want.insert(want.end(), ka.begin(), ka.end());
  CHECK(keys->data_in() == want);

  // Registered: the RESERVATION KEY must match (SPC-5 REGISTER).
  CHECK_CONFLICT(pr.out(f.nexus, prout_sa::kRegister, 0, params(kKeyB, kKeyB)));
  // A new key through the matching one; REGISTER AND IGNORE EXISTING KEY ignores it.
  CHECK(pr.out(f.nexus, prout_sa::kRegister, 0, params(kKeyA, kKeyB))->good());
  CHECK(pr.out(f.nexus, prout_sa::kRegisterAndIgnore, 0, params(0x99, kKeyA))->good());
  // Unregister: SARK 0.
  CHECK(pr.out(f.nexus, prout_sa::kRegister, 0, params(kKeyA, 0))->good());
  keys = pr.in(f.nexus, prin_sa::kReadKeys);
  CHECK(keys->data_in() == Bytes{0, 0, 0, 4, 0, 0, 0, 0});
}

TEST_CASE("REGISTER while not registered") {
  Fixture f;
  Pr pr{f};
  // A non-zero RESERVATION KEY from an unregistered nexus conflicts; SARK 0 does nothing
  // (no PRGENERATION change).
  CHECK_CONFLICT(pr.out(f.nexus, prout_sa::kRegister, 0, params(kKeyA, kKeyB)));
  CHECK(pr.out(f.nexus, prout_sa::kRegister, 0, params(0, 0))->good());
  CHECK(pr.in(f.nexus, prin_sa::kReadKeys)->data_in() == Bytes(8, 0));
}

TEST_CASE("PERSISTENT RESERVE OUT parameter list and CDB checks") {
  Fixture f;
  Pr pr{f};
  SUBCASE("list shorter or longer than 24 bytes") {
    CHECK_SENSE_OF(pr.out(f.nexus, prout_sa::kRegister, 0, Bytes(23, 0)), 0x5, 0x1A, 0x00);
    CHECK_SENSE_OF(pr.out(f.nexus, prout_sa::kRegister, 0, Bytes(28, 0)), 0x5, 0x1A, 0x00);
  }
  SUBCASE("reserved bits of byte 20") {
    auto t = pr.out(f.nexus, prout_sa::kRegister, 0, params(0, kKeyA, 0x10));
    CHECK_INVALID_PARAM(t, 20, 4);
  }
  SUBCASE("SPEC_I_PT with another service action") {
    auto t = pr.out(f.nexus, prout_sa::kRegisterAndIgnore, 0, params(0, kKeyA, 0x08));
    CHECK_INVALID_PARAM(t, 20, 3);
  }
  SUBCASE("fewer bytes than PARAMETER LIST LENGTH") {
    Bytes cdb = {op::kPersistentReserveOut, 0, 0, 0, 0, 0, 0, 0, 24, 0};
    auto t = run_cdb(f, cdb, DataDir::kOut, 24, Bytes(10, 0));
    CHECK_SENSE(t, 0x5, 0x0E, 0x03);
  }
  SUBCASE("RESERVE with a bad TYPE or SCOPE") {
    pr.reg(f.nexus, kKeyA);
    CHECK_INVALID_CDB_OF(pr.out(f.nexus, prout_sa::kReserve, 0x02, params(kKeyA, 0)), 2, 3);
    CHECK_INVALID_CDB_OF(pr.out(f.nexus, prout_sa::kReserve, 0x11, params(kKeyA, 0)), 2, 7);
  }
  SUBCASE("service actions 08h-1Fh do not exist") {
    auto t = pr.out(f.nexus, 0x08, 0, params(0, kKeyA));
    CHECK_INVALID_CDB(t, 1, 4);
    for (uint8_t sa = 4; sa < 0x20; ++sa) {
      CAPTURE(int(sa));
      CHECK_INVALID_CDB_OF(pr.in(f.nexus, sa), 1, 4);
    }
  }
}

TEST_CASE("RESERVE, READ RESERVATION, RELEASE") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  // Not registered: conflict. Wrong key: conflict.
  CHECK_CONFLICT(pr.out(f.other, prout_sa::kReserve, pr_type::kWriteExclusive, params(kKeyA, 0)));
  CHECK_CONFLICT(pr.out(f.nexus, prout_sa::kReserve, pr_type::kWriteExclusive, params(kKeyB, 0)));
  pr.reserve(f.nexus, kKeyA, pr_type::kExclusiveAccess);
  auto rr = pr.in(f.nexus, prin_sa::kReadReservation);
  Bytes want = {0, 0, 0, 1, 0, 0, 0, 16};
  const Bytes ka = be64(kKeyA);
  want.insert(want.end(), ka.begin(), ka.end());
  want.insert(want.end(), {0, 0, 0, 0, 0, pr_type::kExclusiveAccess, 0, 0});
  CHECK(rr->data_in() == want);
  // The same reservation again: GOOD; another type: conflict (SPC-5 RESERVE).
  CHECK(pr.out(f.nexus, prout_sa::kReserve, pr_type::kExclusiveAccess, params(kKeyA, 0))->good());
  CHECK_CONFLICT(pr.out(f.nexus, prout_sa::kReserve, pr_type::kWriteExclusive, params(kKeyA, 0)));
  // RELEASE with another type: INVALID RELEASE OF PERSISTENT RESERVATION.
  CHECK_SENSE_OF(pr.out(f.nexus, prout_sa::kRelease, pr_type::kWriteExclusive, params(kKeyA, 0)),
                 0x5, 0x26, 0x04);
  // A registrant that is not the holder: RELEASE does nothing.
  pr.reg(f.other, kKeyB);
  CHECK(pr.out(f.other, prout_sa::kRelease, pr_type::kExclusiveAccess, params(kKeyB, 0))->good());
  CHECK(pr.in(f.nexus, prin_sa::kReadReservation)->data_in().size() == 24);
  CHECK(pr.out(f.nexus, prout_sa::kRelease, pr_type::kExclusiveAccess, params(kKeyA, 0))->good());
  CHECK(pr.in(f.nexus, prin_sa::kReadReservation)->data_in() == Bytes{0, 0, 0, 2, 0, 0, 0, 0});
  // EXCLUSIVE ACCESS released: no unit attention for the other registrant.
  CHECK(pr.tur(f.other)->good());
}

TEST_CASE("access per reservation type (SPC-5 / SBC-4 tables)") {
  struct Case {
    uint8_t type;
    bool reg_read, reg_write, unreg_read, unreg_write;
  };
  const Case cases[] = {
      {pr_type::kWriteExclusive, true, false, true, false},
      {pr_type::kExclusiveAccess, false, false, false, false},
      {pr_type::kWriteExclusiveRegistrantsOnly, true, true, true, false},
      {pr_type::kExclusiveAccessRegistrantsOnly, true, true, false, false},
      {pr_type::kWriteExclusiveAllRegistrants, true, true, true, false},
      {pr_type::kExclusiveAccessAllRegistrants, true, true, false, false},
  };
  for (const Case& c : cases) {
    CAPTURE(int(c.type));
    Fixture f;
    Pr pr{f};
    pr.reg(f.nexus, kKeyA);
    pr.reg(f.other, kKeyB);
    pr.reserve(f.nexus, kKeyA, c.type);
    CHECK(pr.read_ok(f.nexus));
    CHECK(pr.write_ok(f.nexus));
    CHECK(pr.read_ok(f.other) == c.reg_read);
    CHECK(pr.write_ok(f.other) == c.reg_write);
    CHECK(pr.out(f.other, prout_sa::kRegister, 0, params(kKeyB, 0))->good());
    CHECK(pr.read_ok(f.other) == c.unreg_read);
    CHECK(pr.write_ok(f.other) == c.unreg_write);
    // Allowed whatever the type: INQUIRY, TEST UNIT READY, READ CAPACITY, PERSISTENT RESERVE
    // IN, REPORT LUNS.
    CHECK(pr.tur(f.other)->good());
    CHECK(
        run_cdb(f, cdb10(op::kReadCapacity10, 0, 0, 0), DataDir::kIn, 8, {}, 0, &f.other)->good());
    CHECK(pr.in(f.other, prin_sa::kReadKeys)->good());
    CHECK(run_cdb(f, {op::kInquiry, 0, 0, 0, 96, 0}, DataDir::kIn, 96, {}, 0, &f.other)->good());
    // MODE SENSE is a "write" for the table: conflicts for the unregistered nexus.
    auto ms = run_cdb(f, {op::kModeSense6, 0, 0x3F, 0, 255, 0}, DataDir::kIn, 255, {}, 0, &f.other);
    CHECK(ms->task.status == status::kReservationConflict);
  }
}

TEST_CASE("all registrants: every registrant holds, the last one out releases") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reg(f.other, kKeyB);
  pr.reserve(f.nexus, kKeyA, pr_type::kWriteExclusiveAllRegistrants);
  // READ RESERVATION reports key 0 for the all registrants types.
  auto rr = pr.in(f.other, prin_sa::kReadReservation);
  CHECK(slice(rr->data_in(), 8, 16) == Bytes(8, 0));
  // Unregistering the one that reserved does not release it.
  CHECK(pr.out(f.nexus, prout_sa::kRegister, 0, params(kKeyA, 0))->good());
  CHECK(pr.in(f.other, prin_sa::kReadReservation)->data_in().size() == 24);
  // The other registrant may release it.
  CHECK(
      pr.out(f.other, prout_sa::kRelease, pr_type::kWriteExclusiveAllRegistrants, params(kKeyB, 0))
          ->good());
  CHECK(pr.in(f.other, prin_sa::kReadReservation)->data_in().size() == 8);
}

TEST_CASE("registrants only: the holder unregistering releases, the others are told") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reg(f.other, kKeyB);
  pr.reserve(f.nexus, kKeyA, pr_type::kExclusiveAccessRegistrantsOnly);
  CHECK(pr.out(f.nexus, prout_sa::kRegister, 0, params(kKeyA, 0))->good());
  // RESERVATIONS RELEASED for the other registrant, none for the sender.
  CHECK_SENSE_OF(pr.tur(f.other), 0x6, 0x2A, 0x04);
  CHECK(pr.tur(f.other)->good());
  CHECK(pr.tur(f.nexus)->good());
  CHECK(pr.in(f.other, prin_sa::kReadReservation)->data_in().size() == 8);
}

TEST_CASE("RELEASE of a registrants-only reservation tells the other registrants") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reg(f.other, kKeyB);
  pr.reserve(f.nexus, kKeyA, pr_type::kWriteExclusiveRegistrantsOnly);
  CHECK(
      pr.out(f.nexus, prout_sa::kRelease, pr_type::kWriteExclusiveRegistrantsOnly, params(kKeyA, 0))
          ->good());
  CHECK_SENSE_OF(pr.tur(f.other), 0x6, 0x2A, 0x04);
  CHECK(pr.tur(f.nexus)->good());
}

TEST_CASE("CLEAR removes everything and tells the other registrants") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reg(f.other, kKeyB);
  pr.reserve(f.nexus, kKeyA, pr_type::kExclusiveAccess);
  CHECK_CONFLICT(pr.out(f.other, prout_sa::kClear, 0, params(kKeyA, 0)));  // wrong key
  CHECK(pr.out(f.other, prout_sa::kClear, 0, params(kKeyB, 0))->good());
  CHECK_SENSE_OF(pr.tur(f.nexus), 0x6, 0x2A, 0x03);
  // PRGENERATION: two registrations, one CLEAR (RESERVE does not count).
  CHECK(pr.in(f.nexus, prin_sa::kReadKeys)->data_in() == Bytes{0, 0, 0, 3, 0, 0, 0, 0});
  CHECK(pr.tur(f.other)->good());
  CHECK(pr.write_ok(f.nexus));
}

TEST_CASE("PREEMPT") {
  Fixture f;
  Pr pr{f};
  SUBCASE("no reservation: removes the registrations with SARK") {
    pr.reg(f.nexus, kKeyA);
    pr.reg(f.other, kKeyB);
    CHECK_INVALID_PARAM(
        pr.out(f.other, prout_sa::kPreempt, pr_type::kExclusiveAccess, params(kKeyB, 0)), 8, -1);
    CHECK_CONFLICT(
        pr.out(f.other, prout_sa::kPreempt, pr_type::kExclusiveAccess, params(kKeyB, 0x77)));
    CHECK(pr.out(f.other, prout_sa::kPreempt, pr_type::kExclusiveAccess, params(kKeyB, kKeyA))
              ->good());
    Bytes want = {0, 0, 0, 3, 0, 0, 0, 8};
    const Bytes kb = be64(kKeyB);
    want.insert(want.end(), kb.begin(), kb.end());
    CHECK(pr.in(f.other, prin_sa::kReadKeys)->data_in() == want);
    CHECK_SENSE_OF(pr.tur(f.nexus), 0x6, 0x2A, 0x05);
    CHECK(pr.in(f.other, prin_sa::kReadReservation)->data_in().size() == 8);
  }
  SUBCASE("the holder's key: the sender takes the reservation") {
    pr.reg(f.nexus, kKeyA);
    pr.reg(f.other, kKeyB);
    pr.reserve(f.nexus, kKeyA, pr_type::kExclusiveAccess);
    CHECK(pr.out(f.other, prout_sa::kPreempt, pr_type::kWriteExclusive, params(kKeyB, kKeyA))
              ->good());
    auto rr = pr.in(f.other, prin_sa::kReadReservation);
    CHECK(slice(rr->data_in(), 8, 16) == be64(kKeyB));
    CHECK(rr->data_in()[21] == pr_type::kWriteExclusive);
    CHECK_SENSE_OF(pr.tur(f.nexus), 0x6, 0x2A, 0x05);
    CHECK_CONFLICT(pr.out(f.nexus, prout_sa::kRegister, 0, params(kKeyA, 0)));
    CHECK(pr.write_ok(f.other));
  }
  SUBCASE("type change tells the remaining registrants") {
    Nexus third = f.other;
    third.id = 3;
    third.initiator_port = "iqn.1994-05.com.example:host3,i,0x023d00000001";
    third.initiator_name = "iqn.1994-05.com.example:host3";
    pr.reg(f.nexus, kKeyA);
    pr.reg(f.other, kKeyB);
    pr.reg(third, 0x33);
    pr.reserve(f.nexus, kKeyA, pr_type::kExclusiveAccessRegistrantsOnly);
    CHECK(pr.out(f.other, prout_sa::kPreempt, pr_type::kWriteExclusiveRegistrantsOnly,
                 params(kKeyB, kKeyA))
              ->good());
    CHECK_SENSE_OF(pr.tur(f.nexus), 0x6, 0x2A, 0x05);
    CHECK_SENSE_OF(pr.tur(third), 0x6, 0x2A, 0x04);
    CHECK(pr.tur(f.other)->good());
  }
  SUBCASE("all registrants with SARK 0: every other registration goes") {
    pr.reg(f.nexus, kKeyA);
    pr.reg(f.other, kKeyB);
    pr.reserve(f.nexus, kKeyA, pr_type::kWriteExclusiveAllRegistrants);
    CHECK(pr.out(f.other, prout_sa::kPreempt, pr_type::kExclusiveAccess, params(kKeyB, 0))->good());
    auto rr = pr.in(f.other, prin_sa::kReadReservation);
    CHECK(slice(rr->data_in(), 8, 16) == be64(kKeyB));
    CHECK(rr->data_in()[21] == pr_type::kExclusiveAccess);
    CHECK(pr.in(f.other, prin_sa::kReadKeys)->data_in().size() == 16);
  }
}

TEST_CASE("PREEMPT AND ABORT aborts the preempted nexus's tasks and waits for them") {
  Fixture f;
  Pr pr{f};
  {
    std::lock_guard lock(f.lu->mode_mutex());
    f.lu->set_mode_params({true, false, false}, 99);  // TAS=0
  }
  std::vector<std::function<void()>> posted;
  f.other.post = [&](std::function<void()> fn) { posted.push_back(std::move(fn)); };
  pr.reg(f.nexus, kKeyA);
  pr.reg(f.other, kKeyB);
  pr.reserve(f.nexus, kKeyA, pr_type::kWriteExclusive);
  f.backend->defer = true;
  auto w = run_cdb(f, cdb10(op::kWrite10, 0, 8, 1), DataDir::kOut, 512, Bytes(512, 1));
  CHECK(w->completions == 0);
  auto pa =
      pr.out(f.other, prout_sa::kPreemptAndAbort, pr_type::kExclusiveAccess, params(kKeyB, kKeyA));
  CHECK(pa->completions == 0);  // waits for the aborted write
  f.backend->complete_deferred();
  CHECK(w->completions == 1);
  CHECK(w->task.aborted);
  CHECK(w->task.status == status::kTaskAborted);
  CHECK_FALSE(w->task.report_abort);  // TAS=0: no response at all
  CHECK(pa->completions == 0);        // completes on its own thread, through Nexus::post
  REQUIRE(posted.size() == 1);
  posted[0]();
  CHECK(pa->good());
  CHECK_SENSE_OF(pr.tur(f.nexus), 0x6, 0x2A, 0x05);
}

TEST_CASE("PREEMPT AND ABORT without Nexus::post completes at once") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reg(f.other, kKeyB);
  f.backend->defer = true;
  auto w = run_cdb(f, cdb10(op::kRead10, 0, 8, 1), DataDir::kIn, 512);
  auto pa =
      pr.out(f.other, prout_sa::kPreemptAndAbort, pr_type::kExclusiveAccess, params(kKeyB, kKeyA));
  CHECK(pa->good());
  f.backend->complete_deferred();
  CHECK(w->task.aborted);
}

TEST_CASE("PREEMPT AND ABORT with TAS=1 ends the other nexus's tasks with TASK ABORTED") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reg(f.other, kKeyB);
  f.backend->defer = true;
  auto w = run_cdb(f, cdb10(op::kRead10, 0, 8, 1), DataDir::kIn, 512);
  auto pa =
      pr.out(f.other, prout_sa::kPreemptAndAbort, pr_type::kExclusiveAccess, params(kKeyB, kKeyA));
  f.backend->complete_deferred();
  CHECK(w->completions == 1);
  CHECK(w->task.aborted);
  CHECK(w->task.status == status::kTaskAborted);
  CHECK(w->task.report_abort);  // TAS=1, the default
  CHECK(w->task.data_in_len == 0);
  CHECK(w->task.sense_len == 0);
  CHECK(pa->good());
}

TEST_CASE("REGISTER AND MOVE") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reserve(f.nexus, kKeyA, pr_type::kWriteExclusive);
  const auto move_params = [&](uint64_t key, uint64_t sark, uint8_t flags, uint16_t rel,
                               const Bytes& tid) {
    Bytes p(24, 0);
    for (int i = 0; i < 8; ++i) {
      p[i] = static_cast<uint8_t>(key >> (56 - 8 * i));
      p[8 + i] = static_cast<uint8_t>(sark >> (56 - 8 * i));
    }
    p[17] = flags;
    p[18] = static_cast<uint8_t>(rel >> 8);
    p[19] = static_cast<uint8_t>(rel);
    p[23] = static_cast<uint8_t>(tid.size());
    p.insert(p.end(), tid.begin(), tid.end());
    return p;
  };
  const Bytes tid_b = transport_id(f.other.initiator_port, true);
  SUBCASE("SARK 0 is invalid") {
    CHECK_INVALID_PARAM(
        pr.out(f.nexus, prout_sa::kRegisterAndMove, 0, move_params(kKeyA, 0, 0, 1, tid_b)), 8, -1);
  }
  SUBCASE("an unknown relative port") {
    CHECK_INVALID_PARAM(
        pr.out(f.nexus, prout_sa::kRegisterAndMove, 0, move_params(kKeyA, kKeyB, 0, 7, tid_b)), 18,
        -1);
  }
  SUBCASE("to itself") {
    CHECK_INVALID_PARAM(
        pr.out(f.nexus, prout_sa::kRegisterAndMove, 0,
               move_params(kKeyA, kKeyB, 0, 1, transport_id(f.nexus.initiator_port, true))),
        24, -1);
  }
  SUBCASE("not the holder") {
    pr.reg(f.other, kKeyB);
    CHECK_CONFLICT(
        pr.out(f.other, prout_sa::kRegisterAndMove, 0,
               move_params(kKeyB, 0x55, 0, 1, transport_id(f.nexus.initiator_port, true))));
  }
  SUBCASE("moves the reservation, UNREG drops the sender") {
    auto t =
        pr.out(f.nexus, prout_sa::kRegisterAndMove, 0, move_params(kKeyA, kKeyB, 0x02, 1, tid_b));
    CHECK(t->good());
    auto rr = pr.in(f.other, prin_sa::kReadReservation);
    CHECK(slice(rr->data_in(), 8, 16) == be64(kKeyB));
    CHECK(pr.write_ok(f.other));
    CHECK_FALSE(pr.write_ok(f.nexus));
    Bytes want = {0, 0, 0, 2, 0, 0, 0, 8};
    const Bytes kb = be64(kKeyB);
    want.insert(want.end(), kb.begin(), kb.end());
    CHECK(pr.in(f.nexus, prin_sa::kReadKeys)->data_in() == want);
  }
}

TEST_CASE("SPEC_I_PT registers the TransportIDs too; READ FULL STATUS lists them") {
  Fixture f;
  Pr pr{f};
  Bytes p = params(0, kKeyA, 0x08);
  const Bytes tid = transport_id(f.other.initiator_port, true);
  const Bytes tid_name = transport_id("iqn.1994-05.com.example:host9", false);
  const uint32_t tl = static_cast<uint32_t>(tid.size() + tid_name.size());
  p.insert(p.end(), {0, 0, 0, static_cast<uint8_t>(tl)});
  p.insert(p.end(), tid.begin(), tid.end());
  p.insert(p.end(), tid_name.begin(), tid_name.end());
  CHECK(pr.out(f.nexus, prout_sa::kRegister, 0, p)->good());
  // The other nexus is registered with the same key and may reserve with it.
  CHECK(pr.out(f.other, prout_sa::kReserve, pr_type::kExclusiveAccess, params(kKeyA, 0))->good());

  auto fs = pr.in(f.nexus, prin_sa::kReadFullStatus, 4096);
  REQUIRE(fs->good());
  const Bytes d = fs->data_in();
  CHECK(slice(d, 0, 4) == Bytes{0, 0, 0, 1});
  // Three descriptors: 24 + TransportID each. The sender's: 48 + 4 bytes TransportID.
  const Bytes tid_a = transport_id(f.nexus.initiator_port, true);
  size_t off = 8;
  // Sender.
  CHECK(slice(d, off, off + 8) == be64(kKeyA));
  CHECK(d[off + 12] == 0x00);  // not ALL_TG_PT, not the holder
  CHECK(d[off + 19] == 1);     // RELATIVE TARGET PORT IDENTIFIER
  CHECK(slice(d, off + 20, off + 24) == Bytes{0, 0, 0, static_cast<uint8_t>(tid_a.size())});
  CHECK(slice(d, off + 24, off + 24 + tid_a.size()) == tid_a);
  off += 24 + tid_a.size();
  // The other port, holder of EXCLUSIVE ACCESS.
  CHECK(d[off + 12] == 0x01);
  CHECK(d[off + 13] == pr_type::kExclusiveAccess);
  CHECK(slice(d, off + 24, off + 24 + tid.size()) == tid);
  off += 24 + tid.size();
  // The name-only TransportID (format 00b).
  CHECK(slice(d, off + 24, off + 24 + tid_name.size()) == tid_name);
  off += 24 + tid_name.size();
  CHECK(d.size() == off);
  CHECK(slice(d, 4, 8) == Bytes{0, 0, 0, static_cast<uint8_t>(off - 8)});
}

TEST_CASE("a TransportID without ISID covers every port of that initiator") {
  Fixture f;
  Pr pr{f};
  Bytes p = params(0, kKeyA, 0x08);
  const Bytes tid = transport_id(f.other.initiator_name, false);
  p.insert(p.end(), {0, 0, 0, static_cast<uint8_t>(tid.size())});
  p.insert(p.end(), tid.begin(), tid.end());
  CHECK(pr.out(f.nexus, prout_sa::kRegister, 0, p)->good());
  Nexus other_isid = f.other;
  other_isid.id = 7;
  other_isid.initiator_port = f.other.initiator_name + ",i,0x023d00000099";
  CHECK(pr.out(other_isid, prout_sa::kReserve, pr_type::kWriteExclusive, params(kKeyA, 0))->good());
}

TEST_CASE("bad TransportIDs") {
  Fixture f;
  Pr pr{f};
  const auto with = [&](Bytes tid) {
    Bytes p = params(0, kKeyA, 0x08);
    p.insert(p.end(), {0, 0, 0, static_cast<uint8_t>(tid.size())});
    p.insert(p.end(), tid.begin(), tid.end());
    return pr.out(f.nexus, prout_sa::kRegister, 0, p);
  };
  Bytes fc = transport_id("iqn.x", true);
  fc[0] = 0x40 | 0x00;  // Fibre Channel
  CHECK_INVALID_PARAM(with(fc), 28, 3);
  Bytes fmt = transport_id("iqn.x", true);
  fmt[0] = 0x80 | 0x05;  // FORMAT CODE 10b
  CHECK_INVALID_PARAM(with(fmt), 28, 7);
  Bytes short_len = transport_id("iqn.x", true);
  short_len[3] = 16;
  CHECK_INVALID_PARAM(with(short_len), 30, 7);
  CHECK_INVALID_PARAM(with(transport_id("iqn.1994-05.com.example:host2,i,0x12", true)), 32, -1);
  // The TRANSPORTID PARAMETER DATA LENGTH disagrees with the list.
  Bytes p = params(0, kKeyA, 0x08);
  p.insert(p.end(), {0, 0, 0, 50});
  const Bytes t = transport_id("iqn.x", false);
  p.insert(p.end(), t.begin(), t.end());
  CHECK_SENSE_OF(pr.out(f.nexus, prout_sa::kRegister, 0, p), 0x5, 0x1A, 0x00);
}

TEST_CASE("ALL_TG_PT registers through every target port") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA, 0x04);
  Nexus port2 = f.nexus;
  port2.id = 9;
  port2.relative_port_id = 2;
  port2.target_port_group = 2;
  CHECK(pr.out(port2, prout_sa::kReserve, pr_type::kWriteExclusive, params(kKeyA, 0))->good());
  auto fs = pr.in(f.nexus, prin_sa::kReadFullStatus, 4096);
  CHECK(fs->data_in()[8 + 12] == 0x03);  // ALL_TG_PT, R_HOLDER
  // Without ALL_TG_PT another port is another I_T nexus.
  Fixture g;
  Pr pr2{g};
  pr2.reg(g.nexus, kKeyA);
  Nexus g2 = g.nexus;
  g2.id = 9;
  g2.relative_port_id = 2;
  CHECK_CONFLICT(pr2.out(g2, prout_sa::kReserve, pr_type::kWriteExclusive, params(kKeyA, 0)));
}

TEST_CASE("REPORT CAPABILITIES") {
  Fixture f;
  Pr pr{f};
  auto t = pr.in(f.nexus, prin_sa::kReportCapabilities);
  // No state directory: PTPL_C=0. CRH, SIP_C, ATP_C; TMV, ALLOW COMMANDS 001b; the six types.
  CHECK(t->data_in() == Bytes{0, 8, 0x1C, 0x90, 0xEA, 0x01, 0, 0});
  // APTPL cannot be honoured without somewhere to keep the state.
  CHECK_SENSE_OF(pr.out(f.nexus, prout_sa::kRegister, 0, params(0, kKeyA, 0x01)), 0x5, 0x55, 0x04);
  t = pr.in(f.nexus, prin_sa::kReportCapabilities, 4);
  CHECK(t->data_in() == Bytes{0, 8, 0x1C, 0x90});
  CHECK(t->task.transfer_len == 4);
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/zuma-pr-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

LuParams params_in(const std::string& dir) {
  LuParams p = test::default_params();
  p.state_dir = dir;
  return p;
}

TEST_CASE("APTPL: the state is written, restored at start, and removed with APTPL=0") {
  TempDir dir;
  const std::string file = dir.path + "/lu0.pr";
  {
    Fixture f(params_in(dir.path));
    Pr pr{f};
    CHECK(pr.in(f.nexus, prin_sa::kReportCapabilities)->data_in()[2] == 0x1D);
    pr.reg(f.nexus, kKeyA);  // APTPL=0: nothing written
    CHECK_FALSE(std::filesystem::exists(file));
    pr.reg(f.other, kKeyB, 0x01);  // APTPL=1: the whole state
    pr.reserve(f.nexus, kKeyA, pr_type::kWriteExclusiveRegistrantsOnly);
    CHECK(std::filesystem::exists(file));
    CHECK_FALSE(std::filesystem::exists(file + ".tmp"));
    CHECK(pr.in(f.nexus, prin_sa::kReportCapabilities)->data_in()[3] == 0x91);  // PTPL_A
  }
  {
    Fixture f(params_in(dir.path));  // "restart"
    Pr pr{f};
    auto keys = pr.in(f.nexus, prin_sa::kReadKeys);
    CHECK(slice(keys->data_in(), 4, 8) == Bytes{0, 0, 0, 16});
    auto rr = pr.in(f.nexus, prin_sa::kReadReservation);
    CHECK(slice(rr->data_in(), 8, 16) == be64(kKeyA));
    CHECK(rr->data_in()[21] == pr_type::kWriteExclusiveRegistrantsOnly);
    // The reservation is enforced: an unregistered nexus may not write.
    Nexus third = f.other;
    third.id = 3;
    third.initiator_port = "iqn.1994-05.com.example:host3,i,0x023d00000001";
    CHECK_FALSE(pr.write_ok(third));
    CHECK(pr.write_ok(f.nexus));
    // APTPL=0 in a later REGISTER: the file goes.
    CHECK(pr.out(f.other, prout_sa::kRegister, 0, params(kKeyB, kKeyB))->good());
    CHECK_FALSE(std::filesystem::exists(file));
  }
  {
    Fixture f(params_in(dir.path));
    Pr pr{f};
    CHECK(pr.in(f.nexus, prin_sa::kReadKeys)->data_in() == Bytes(8, 0));
  }
}

TEST_CASE("a corrupt APTPL state file stops the LU from starting") {
  TempDir dir;
  std::ofstream(dir.path + "/lu0.pr") << "zuma-persistent-reservations 1\nreg nonsense\n";
  LuParams p = params_in(dir.path);
  CHECK_THROWS_AS(make_logical_unit(p, std::make_unique<test::FakeBackend>(2048 * 512)),
                  std::runtime_error);
}

// --- RESERVE / RELEASE (6)/(10) --------------------------------------------------------------

const Bytes kReserve6 = {op::kReserve6, 0, 0, 0, 0, 0};
const Bytes kRelease6 = {op::kRelease6, 0, 0, 0, 0, 0};
const Bytes kReserve10 = {op::kReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0};
const Bytes kRelease10 = {op::kRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0};

TEST_CASE("RESERVE (6) and RELEASE (6) between two nexuses") {
  Fixture f;
  Pr pr{f};
  CHECK(run_cdb(f, kReserve6, DataDir::kNone, 0)->good());
  CHECK(run_cdb(f, kReserve6, DataDir::kNone, 0)->good());  // again: fine
  CHECK_CONFLICT(run_cdb(f, kReserve6, DataDir::kNone, 0, {}, 0, &f.other));
  CHECK_CONFLICT(pr.tur(f.other));
  CHECK_FALSE(pr.read_ok(f.other));
  // Allowed: INQUIRY, REPORT LUNS, REQUEST SENSE, RELEASE (which does nothing).
  CHECK(run_cdb(f, {op::kInquiry, 0, 0, 0, 96, 0}, DataDir::kIn, 96, {}, 0, &f.other)->good());
  CHECK(run_cdb(f, {op::kRequestSense, 0, 0, 0, 18, 0}, DataDir::kIn, 18, {}, 0, &f.other)->good());
  CHECK(run_cdb(f, {op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, DataDir::kIn, 256, {}, 0,
                &f.other)
            ->good());
  CHECK(run_cdb(f, kRelease6, DataDir::kNone, 0, {}, 0, &f.other)->good());
  CHECK_CONFLICT(pr.tur(f.other));
  // PERSISTENT RESERVE IN/OUT conflict while it exists, for the holder too (SPC-2).
  CHECK_CONFLICT(pr.in(f.nexus, prin_sa::kReadKeys));
  CHECK(pr.tur(f.nexus)->good());
  CHECK(run_cdb(f, kRelease6, DataDir::kNone, 0)->good());
  CHECK(pr.tur(f.other)->good());
  CHECK(run_cdb(f, kReserve10, DataDir::kNone, 0, {}, 0, &f.other)->good());
  CHECK_CONFLICT(pr.tur(f.nexus));
  CHECK(run_cdb(f, kRelease10, DataDir::kNone, 0, {}, 0, &f.other)->good());
}

TEST_CASE("RESERVE (10) third-party reservations are refused") {
  Fixture f;
  Bytes cdb = kReserve10;
  cdb[1] = 0x10;  // 3RDPTY
  CHECK_INVALID_CDB_OF(run_cdb(f, cdb, DataDir::kNone, 0), 1, 4);
}

TEST_CASE("a RESERVE (6) reservation ends with the nexus or a LU reset") {
  Fixture f;
  Pr pr{f};
  CHECK(run_cdb(f, kReserve6, DataDir::kNone, 0)->good());
  nexus_lost(*f.lu, f.nexus);
  CHECK(pr.tur(f.other)->good());
  CHECK(run_cdb(f, kReserve6, DataDir::kNone, 0, {}, 0, &f.other)->good());
  reset_logical_unit(*f.lu, f.nexus);
  CHECK_SENSE_OF(pr.tur(f.nexus), 0x6, 0x29, 0x03);
  CHECK(pr.tur(f.nexus)->good());
  CHECK_FALSE(f.lu->reservations().spc2_holder().has_value());
}

TEST_CASE("RESERVE (6) with persistent reservations (CRH=1)") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  // Registered, no persistent reservation: conflict.
  CHECK_CONFLICT(run_cdb(f, kReserve6, DataDir::kNone, 0));
  pr.reserve(f.nexus, kKeyA, pr_type::kWriteExclusive);
  // The holder: GOOD and nothing changes.
  CHECK(run_cdb(f, kReserve6, DataDir::kNone, 0)->good());
  CHECK(run_cdb(f, kRelease6, DataDir::kNone, 0)->good());
  CHECK_FALSE(f.lu->reservations().spc2_holder().has_value());
  CHECK(pr.in(f.nexus, prin_sa::kReadReservation)->data_in().size() == 24);
  // Anyone else while a persistent reservation exists: conflict.
  CHECK_CONFLICT(run_cdb(f, kReserve6, DataDir::kNone, 0, {}, 0, &f.other));
}

TEST_CASE("persistent reservations survive a LU reset and the loss of the session") {
  Fixture f;
  Pr pr{f};
  pr.reg(f.nexus, kKeyA);
  pr.reserve(f.nexus, kKeyA, pr_type::kExclusiveAccess);
  reset_logical_unit(*f.lu, f.other);
  nexus_lost(*f.lu, f.nexus);
  // A new session of the same I_T nexus (same initiator port, same target port).
  Nexus again = f.nexus;
  again.id = 42;
  again.task_sets.clear();
  CHECK_SENSE_OF(pr.tur(again), 0x6, 0x29, 0x07);  // I_T NEXUS LOSS OCCURRED (SAM-5)
  CHECK(pr.write_ok(again));
  CHECK_FALSE(pr.read_ok(f.other));
}

// Two nodes exporting one LU (issue 9): each its own LogicalUnit whose reservations share
// one versioned document through an in-memory PrStore with the contract etcd's gives
// (compare-and-swap on the version; wait_applied delivers the version to every other
// node, as the cluster's watch does). The real store is tested in integration.cluster.
struct MemStore {
  std::string doc;
  uint64_t version = 0;
  std::vector<Reservations*> nodes;
  size_t stale = 0;
  std::map<Reservations*, std::vector<uint64_t>> aborted;  // nexuses each node was told to abort
};

struct NodeStore : PrStore {
  MemStore& m;
  std::string name;
  Reservations* self = nullptr;
  int fail_next_with_stale = 0;  // another node's change slips in first
  NodeStore(MemStore& mem, std::string n) : m(mem), name(std::move(n)) {}
  Commit commit(const std::string& doc, uint64_t version, uint64_t* now) override {
    if (fail_next_with_stale > 0) {
      --fail_next_with_stale;
      ++m.stale;
      return Commit::kStale;
    }
    if (version != m.version) {
      ++m.stale;
      return Commit::kStale;
    }
    m.doc = doc;
    *now = ++m.version;
    return Commit::kDone;
  }
  bool load(std::string* doc, uint64_t* version) override {
    *doc = m.doc;
    *version = m.version;
    return true;
  }
  void wait_applied(uint64_t version) override {
    for (Reservations* r : m.nodes)
      if (r != self) {
        std::vector<uint64_t> abort;
        r->apply_shared(m.doc, version, &abort);
        auto& all = m.aborted[r];
        all.insert(all.end(), abort.begin(), abort.end());
      }
  }
  const std::string& node() const override { return name; }
};

TEST_CASE("shared reservations: a change through one node is enforced at the other") {
  MemStore mem;
  Fixture fa, fb;
  // Node B's nexus is another initiator through another target port (port group 2).
  Nexus b_nexus = fb.other;
  b_nexus.relative_port_id = 2;
  b_nexus.target_port = "iqn.2026-11.org.zuma:db,t,0x0002";
  NodeStore sa(mem, "a/1"), sb(mem, "b/1");
  sa.self = &fa.lu->reservations();
  sb.self = &fb.lu->reservations();
  mem.nodes = {sa.self, sb.self};
  std::string err;
  REQUIRE(fa.lu->reservations().set_store(&sa, &err));
  REQUIRE(fb.lu->reservations().set_store(&sb, &err));
  Pr pa{fa}, pb{fb};

  pa.reg(fa.nexus, kKeyA);
  pb.reg(b_nexus, kKeyB);
  CHECK(mem.version == 2);
  // B's view of the keys came from the store.
  auto keys = pb.in(b_nexus, prin_sa::kReadKeys);
  REQUIRE(keys->good());
  CHECK(keys->data_in().size() == 8 + 16);
  pa.reserve(fa.nexus, kKeyA, pr_type::kExclusiveAccess);
  CHECK_FALSE(pb.read_ok(b_nexus));
  CHECK(pa.read_ok(fa.nexus));

  // A stale version (someone else's change first) is reloaded and recomputed.
  sb.fail_next_with_stale = 1;
  CHECK(pb.out(b_nexus, prout_sa::kPreemptAndAbort, pr_type::kExclusiveAccess, params(kKeyB, kKeyA))
            ->good());
  CHECK(mem.stale == 1);
  // PREEMPT AND ABORT through node B: node A is told to abort its preempted nexus's tasks.
  CHECK(mem.aborted[sa.self] == std::vector<uint64_t>{fa.nexus.id});
  CHECK(mem.aborted[sb.self].empty());
  // Node A's nexus was preempted: REGISTRATIONS PREEMPTED there, then conflicts.
  CHECK_SENSE_OF(pa.tur(fa.nexus), 0x6, 0x2A, 0x05);
  CHECK_FALSE(pa.read_ok(fa.nexus));
  CHECK(pb.read_ok(b_nexus));
  CHECK(fa.lu->reservations().state().regs.size() == 1);
  CHECK(fa.lu->reservations().state().generation == fb.lu->reservations().state().generation);

  // RESERVE (6) through node A after B's registration goes: B conflicts; A's node gone
  // (its lease expired): released.
  pb.out(b_nexus, prout_sa::kRegister, 0, params(kKeyB, 0));
  CHECK(run_cdb(fa, kReserve6, DataDir::kNone, 0)->good());
  CHECK_CONFLICT(run_cdb(fb, kReserve6, DataDir::kNone, 0, {}, 0, &b_nexus));
  fb.lu->reservations().node_lost("a/1");
  CHECK(run_cdb(fb, kReserve6, DataDir::kNone, 0, {}, 0, &b_nexus)->good());
  // A damaged document is refused at attach.
  MemStore bad;
  bad.doc = "not a reservation document\n";
  bad.version = 7;
  NodeStore sbad(bad, "c/1");
  Fixture fc;
  CHECK_FALSE(fc.lu->reservations().set_store(&sbad, &err));
  CHECK(err.find("damaged") != std::string::npos);
}

TEST_CASE("shared reservations: an unreachable store answers NOT READY, unavailable") {
  struct Down : PrStore {
    std::string n = "x/1";
    Commit commit(const std::string&, uint64_t, uint64_t*) override { return Commit::kUnavailable; }
    bool load(std::string* d, uint64_t* v) override {
      d->clear();
      *v = 0;
      return true;
    }
    void wait_applied(uint64_t) override {}
    const std::string& node() const override { return n; }
  } down;
  Fixture f;
  std::string err;
  REQUIRE(f.lu->reservations().set_store(&down, &err));
  Pr pr{f};
  CHECK_SENSE_OF(pr.out(f.nexus, prout_sa::kRegister, 0, params(0, kKeyA)), 0x2, 0x04, 0x0C);
}

}  // namespace
}  // namespace zuma::scsi
