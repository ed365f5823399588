// execute() order of checks, unit attentions after a reset, nexus loss, flush, and
// several threads on one LU.
#include "scsi/device_server.hh"

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::Bytes;
using test::cdb10;
using test::Fixture;
using test::run_cdb;

const std::initializer_list<uint8_t> kTur = {op::kTestUnitReady, 0, 0, 0, 0, 0};

TEST_CASE("unsupported operation code") {
  Fixture f;
  for (uint8_t opc : {uint8_t{0x01}, uint8_t{0x5C}, uint8_t{0x7E}, uint8_t{0xFF}}) {
    CAPTURE(int(opc));
    auto t = f.run({opc, 0, 0, 0, 0, 0}, DataDir::kNone, 0);
    CHECK_SENSE(t, 0x5, 0x20, 0x00);
    CHECK(t->task.sense[15] == 0);  // no field pointer
    CHECK(t->task.transfer_len == 0);
  }
}

TEST_CASE("variable length CDB (7Fh): an unknown service action points at bytes 8-9") {
  Fixture f;
  auto t = f.run({op::kVariableLength, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0E}, DataDir::kNone, 0);
  CHECK_INVALID_CDB(t, 8, 7);
}

TEST_CASE("UNMAP on a fully provisioned LU: INVALID COMMAND OPERATION CODE") {
  Fixture f;
  auto t = f.run({op::kUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, DataDir::kOut, 24, Bytes(24, 0));
  CHECK_SENSE(t, 0x5, 0x20, 0x00);
  CHECK(t->task.sense[15] == 0);
}

TEST_CASE("outputs are reset by execute") {
  Fixture f;
  auto t = std::make_unique<test::TestTask>();
  t->task.cdb[0] = op::kTestUnitReady;
  t->task.cdb_len = 6;
  t->task.status = 0x55;
  t->task.sense_len = 9;
  t->task.data_in_len = 7;
  t->task.transfer_len = 7;
  t->task.nexus = &f.nexus;
  execute(f.table, t->task);
  CHECK(t->good());
  CHECK(t->task.sense_len == 0);
  CHECK(t->task.data_in_len == 0);
  CHECK(t->task.transfer_len == 0);
}

TEST_CASE("a task without a nexus still works") {
  Fixture f;
  auto t = std::make_unique<test::TestTask>();
  t->task.cdb[0] = op::kInquiry;
  t->task.cdb[4] = 96;
  t->task.cdb_len = 6;
  t->task.dir = DataDir::kIn;
  t->task.expected_len = 96;
  execute(f.table, t->task);
  CHECK(t->good());
  t = std::make_unique<test::TestTask>();
  t->task.cdb = {op::kInquiry, 1, 0x83, 0, 255, 0};
  t->task.cdb_len = 6;
  t->task.dir = DataDir::kIn;
  t->task.expected_len = 255;
  execute(f.table, t->task);
  REQUIRE(t->good());
  CHECK(t->task.data_in_len == 4 + 20 + 44);  // only the LU designators
}

TEST_CASE("invalid field beats a pending unit attention; INQUIRY keeps it") {
  Fixture f;
  REQUIRE(f.run(kTur, DataDir::kNone, 0)->good());
  reset_logical_unit(*f.lu, f.other);
  auto t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 4}, DataDir::kNone, 0);  // NACA
  CHECK_INVALID_CDB(t, 5, 2);
  CHECK(f.run({op::kInquiry, 0, 0, 0, 36, 0})->good());
  CHECK(f.run({op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0})->good());
  t = f.run(kTur, DataDir::kNone, 0);
  CHECK_SENSE(t, 0x6, 0x29, 0x03);
  CHECK(f.run(kTur, DataDir::kNone, 0)->good());
}

// SBC-4 write protection: DATA PROTECT, WRITE PROTECTED, fixed format, no INFORMATION.
const Bytes kWriteProtectedSense = {0x70, 0, 0x07, 0, 0, 0, 0, 10, 0,
                                    0,    0, 0,    0x27, 0, 0, 0, 0, 0};

TEST_CASE("write-protected LU: every command that writes gets 27h/00h and nothing is written") {
  LuParams p = test::default_params();
  p.read_only = true;
  p.thin = true;  // so that UNMAP and WRITE SAME with UNMAP=1 exist
  Fixture f(p);
  const Bytes block(512, 0xA5);
  const Bytes two(1024, 0xA5);
  Bytes ws32(32, 0);
  ws32[0] = op::kVariableLength;
  ws32[7] = 0x18;
  ws32[9] = sa::kWriteSame32;
  ws32[31] = 1;
  Bytes unmap_list(24, 0);
  unmap_list[1] = 22;
  unmap_list[3] = 16;
  unmap_list[23] = 1;  // LBA 0, one block
  struct Case {
    const char* name;
    Bytes cdb;
    Bytes out;
  };
  const Case cases[] = {
      {"WRITE(6)", {op::kWrite6, 0, 0, 0, 1, 0}, block},
      {"WRITE(10)", test::cdb10(op::kWrite10, 0, 0, 1), block},
      {"WRITE(12)", test::cdb12(op::kWrite12, 0, 0, 1), block},
      {"WRITE(16)", test::cdb16(op::kWrite16, 0, 0, 1), block},
      {"WRITE(16) FUA", test::cdb16(op::kWrite16, 0x08, 0, 1), block},
      {"WRITE AND VERIFY(10)", test::cdb10(op::kWriteAndVerify10, 0x02, 0, 1), block},
      {"WRITE AND VERIFY(12)", test::cdb12(op::kWriteAndVerify12, 0x02, 0, 1), block},
      {"WRITE AND VERIFY(16)", test::cdb16(op::kWriteAndVerify16, 0x02, 0, 1), block},
      {"WRITE SAME(10)", test::cdb10(op::kWriteSame10, 0, 0, 1), block},
      {"WRITE SAME(10) UNMAP, no Data-Out", test::cdb10(op::kWriteSame10, 0x08, 0, 1), {}},
      {"WRITE SAME(16)", test::cdb16(op::kWriteSame16, 0, 0, 1), block},
      {"WRITE SAME(16) UNMAP", test::cdb16(op::kWriteSame16, 0x08, 0, 1), block},
      {"WRITE SAME(16) NDOB", test::cdb16(op::kWriteSame16, 0x01, 0, 1), {}},
      {"WRITE SAME(32)", ws32, block},
      {"UNMAP", {op::kUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, unmap_list},
      {"COMPARE AND WRITE", test::cdb16(op::kCompareAndWrite, 0, 0, 0), two},
      {"ORWRITE(16)", test::cdb16(op::kOrWrite16, 0, 0, 1), block},
      {"WRITE ATOMIC(16)", test::cdb16(op::kWriteAtomic16, 0, 0, 0), Bytes(4096, 1)},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    Bytes cdb = c.cdb;
    if (cdb[0] == op::kCompareAndWrite) cdb[13] = 1;  // NUMBER OF LOGICAL BLOCKS
    if (cdb[0] == op::kWriteAtomic16) cdb[13] = 8;    // TRANSFER LENGTH: 4 KiB
    const uint32_t len = static_cast<uint32_t>(c.out.size());
    auto t = run_cdb(f, cdb, len ? DataDir::kOut : DataDir::kNone, len, c.out);
    CHECK_SENSE(t, 0x7, 0x27, 0x00);
    CHECK(t->sense() == kWriteProtectedSense);
    CHECK(t->task.transfer_len == 0);
  }
  CHECK(f.backend->calls.empty());
  CHECK(f.backend->data == Bytes(f.backend->data.size(), 0));

  // Reads and the commands that change no block still work.
  CHECK(run_cdb(f, test::cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 512)->good());
  CHECK(run_cdb(f, test::cdb10(op::kVerify10, 0, 0, 1), DataDir::kNone, 0)->good());
  CHECK(run_cdb(f, test::cdb10(op::kSynchronizeCache10, 0, 0, 0), DataDir::kNone, 0)->good());
  CHECK(f.run(kTur, DataDir::kNone, 0)->good());
}

TEST_CASE("write-protected LU: CDB errors, unit attentions and reservation conflicts come first") {
  LuParams p = test::default_params();
  p.read_only = true;
  p.power_on_unit_attention = true;
  Fixture f(p);
  const Bytes block(512, 0xA5);
  // A reserved bit (RARC, byte 1 bit 2): INVALID FIELD IN CDB before anything else.
  auto t = run_cdb(f, test::cdb10(op::kWrite10, 0x04, 0, 1), DataDir::kOut, 512, block);
  CHECK_INVALID_CDB(t, 1, 2);
  // The nexus's first command: POWER ON OCCURRED (29h/01h) rather than 27h/00h.
  t = run_cdb(f, test::cdb10(op::kWrite10, 0, 0, 1), DataDir::kOut, 512, block);
  CHECK_SENSE(t, 0x6, 0x29, 0x01);
  t = run_cdb(f, test::cdb10(op::kWrite10, 0, 0, 1), DataDir::kOut, 512, block);
  CHECK(t->sense() == kWriteProtectedSense);
  // Another nexus holds RESERVE (6): RESERVATION CONFLICT, no sense.
  t = f.run(kTur, DataDir::kNone, 0, {}, 0, &f.other);
  CHECK_SENSE(t, 0x6, 0x29, 0x01);
  REQUIRE(f.run({op::kReserve6, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other)->good());
  t = run_cdb(f, test::cdb10(op::kWrite10, 0, 0, 1), DataDir::kOut, 512, block);
  CHECK(t->task.status == status::kReservationConflict);
  CHECK(t->task.sense_len == 0);
  CHECK(f.backend->calls.empty());
}

TEST_CASE("logical unit reset: every known nexus gets one BUS DEVICE RESET") {
  Fixture f;
  Nexus third = f.other;
  third.id = 3;
  REQUIRE(f.run(kTur, DataDir::kNone, 0)->good());
  REQUIRE(f.run(kTur, DataDir::kNone, 0, {}, 0, &f.other)->good());

  reset_logical_unit(*f.lu, f.nexus);

  // The nexus that asked for the reset (SAM-5 (logical unit reset)).
  auto t = run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 512);
  CHECK_SENSE(t, 0x6, 0x29, 0x03);
  CHECK(t->sense() == Bytes{0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x03, 0, 0, 0, 0});
  CHECK(t->task.data_in_len == 0);
  CHECK(run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 512)->good());

  // The other one: REQUEST SENSE reports and clears it, with GOOD status.
  t = f.run({op::kRequestSense, 0, 0, 0, 252, 0}, DataDir::kIn, 252, {}, 0, &f.other);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x03, 0, 0, 0, 0});
  CHECK(f.run(kTur, DataDir::kNone, 0, {}, 0, &f.other)->good());

  // A nexus the LU had not seen: nothing.
  CHECK(f.run(kTur, DataDir::kNone, 0, {}, 0, &third)->good());
}

TEST_CASE("reset with descriptor sense") {
  Fixture f;
  f.lu->set_mode_params({true, true}, 0);
  REQUIRE(f.run(kTur, DataDir::kNone, 0)->good());
  reset_logical_unit(*f.lu, f.other);
  auto t = f.run(kTur, DataDir::kNone, 0);
  CHECK(t->sense() == Bytes{0x72, 0x06, 0x29, 0x03, 0, 0, 0, 0});
}

TEST_CASE("nexus loss drops its unit attentions") {
  Fixture f;
  REQUIRE(f.run(kTur, DataDir::kNone, 0, {}, 0, &f.other)->good());
  reset_logical_unit(*f.lu, f.nexus);
  nexus_lost(*f.lu, f.other);
  CHECK(f.lu->unit_attentions().known_count() == 1);
  // The reset's 29h/03h is gone; the same names again report the loss (SAM-5), once.
  auto t = f.run(kTur, DataDir::kNone, 0, {}, 0, &f.other);
  CHECK_SENSE(t, 0x6, 0x29, 0x07);
  CHECK(f.run(kTur, DataDir::kNone, 0, {}, 0, &f.other)->good());
}

TEST_CASE("one LU under two LUNs and two tables shares its state") {
  Fixture f;
  LunTable t2;
  t2.luns[7] = f.lu;
  REQUIRE(f.run(kTur, DataDir::kNone, 0)->good());
  reset_logical_unit(*f.lu, f.other);
  auto task = std::make_unique<test::TestTask>();
  task->task.cdb = {op::kTestUnitReady};
  task->task.cdb_len = 6;
  task->task.lun = 7;
  task->task.nexus = &f.nexus;
  execute(t2, task->task);
  CHECK_SENSE(task, 0x6, 0x29, 0x03);
  CHECK(f.run(kTur, DataDir::kNone, 0)->good());
}

TEST_CASE("flush_logical_unit") {
  Fixture f;
  CHECK(flush_logical_unit(*f.lu) == 0);
  CHECK(f.backend->calls.back().op == storage::IoOp::kFlush);
  f.backend->fail_with = -EIO;
  CHECK(flush_logical_unit(*f.lu) == -EIO);
  f.backend->fail_with = 0;

  // Completed by another thread.
  f.backend->defer = true;
  std::thread completer([&] {
    while (true) {
      {
        std::lock_guard lock(f.backend->mu);
        if (!f.backend->deferred.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    f.backend->complete_deferred();
  });
  CHECK(flush_logical_unit(*f.lu) == 0);
  completer.join();
}

TEST_CASE("several threads on one LU, with resets and mode changes") {
  Fixture f(test::default_params(4096));
  constexpr int kThreads = 4;
  constexpr int kIters = 300;
  std::atomic<int> uas{0}, failures{0}, resets{0};
  std::atomic<bool> stop{false};
  std::vector<Nexus> nexuses(kThreads, f.nexus);
  for (int i = 0; i < kThreads; ++i) nexuses[i].id = 100 + i;
  std::thread resetter([&] {
    bool d = false;
    while (!stop.load()) {
      reset_logical_unit(*f.lu, f.nexus);
      {
        std::lock_guard lock(f.lu->mode_mutex());
        f.lu->set_mode_params({true, d = !d}, f.nexus.id);
      }
      resets.fetch_add(1);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  for (int i = 0; i < kThreads; ++i) {
    workers.emplace_back([&, i] {
      const uint32_t lba = i * 64;
      for (int it = 0; it < kIters; ++it) {
        const Bytes data = test::pattern(8 * 512, static_cast<uint8_t>(i * 31 + it));
        while (true) {
          auto w =
              run_cdb(f, cdb10(op::kWrite10, 0, lba, 8), DataDir::kOut, 4096, data, 0, &nexuses[i]);
          if (w->task.status == status::kCheckCondition && w->key() == 0x6) {
            uas.fetch_add(1);
            continue;
          }
          if (w->task.aborted) continue;  // a reset aborted it: an initiator retries
          if (!w->good()) failures.fetch_add(1);
          break;
        }
        while (true) {
          auto r =
              run_cdb(f, cdb10(op::kRead10, 0, lba, 8), DataDir::kIn, 4096, {}, 0, &nexuses[i]);
          if (r->task.status == status::kCheckCondition && r->key() == 0x6) {
            uas.fetch_add(1);
            continue;
          }
          if (r->task.aborted) continue;
          if (!r->good() || r->data_in() != data) failures.fetch_add(1);
          break;
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  stop.store(true);
  resetter.join();
  CHECK(failures.load() == 0);
  CHECK(resets.load() > 0);

  // Afterwards every worker's nexus is known: one more reset reaches each exactly once.
  f.lu->set_mode_params({true, false}, f.nexus.id);
  for (const Nexus& n : nexuses) {
    while (!f.run(kTur, DataDir::kNone, 0, {}, 0, &n)->good()) {
    }
  }
  reset_logical_unit(*f.lu, f.nexus);
  for (const Nexus& n : nexuses) {
    auto t = f.run(kTur, DataDir::kNone, 0, {}, 0, &n);
    CHECK_SENSE(t, 0x6, 0x29, 0x03);
    CHECK(f.run(kTur, DataDir::kNone, 0, {}, 0, &n)->good());
  }
}

}  // namespace
}  // namespace zuma::scsi
