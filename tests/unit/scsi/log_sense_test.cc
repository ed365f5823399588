// LOG SENSE (log_sense.cc): supported pages and the Logical Block Provisioning page.
#include <doctest/doctest.h>

#include <cerrno>

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::Bytes;
using test::Fixture;

LuParams thin_params() {
  LuParams p = test::default_params();
  p.thin = true;
  return p;
}

std::unique_ptr<test::TestTask> log_sense(Fixture& f, uint8_t page, uint8_t subpage = 0,
                                          uint16_t pointer = 0, uint16_t alloc = 512,
                                          uint8_t byte1 = 0, uint8_t pc = 1) {
  return f.run({op::kLogSense, byte1, static_cast<uint8_t>(pc << 6 | page), subpage, 0,
                static_cast<uint8_t>(pointer >> 8), static_cast<uint8_t>(pointer),
                static_cast<uint8_t>(alloc >> 8), static_cast<uint8_t>(alloc), 0},
               DataDir::kIn, alloc);
}

TEST_CASE("LOG SENSE: supported pages") {
  Fixture full;
  auto t = log_sense(full, 0x00);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x00, 0x00, 0x00, 0x01, 0x00});
  t = log_sense(full, 0x00, 0xFF);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x40, 0xFF, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFF});

  Fixture thin(thin_params());
  t = log_sense(thin, 0x00);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x00, 0x00, 0x00, 0x02, 0x00, 0x0C});
  t = log_sense(thin, 0x00, 0xFF);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x40, 0xFF, 0x00, 0x06, 0x00, 0x00, 0x00, 0xFF, 0x0C, 0x00});
  // Every PAGE CONTROL value gives the same (no thresholds, no defaults of their own).
  for (uint8_t pc = 0; pc < 4; ++pc) {
    CHECK(log_sense(thin, 0x00, 0, 0, 512, 0, pc)->data_in() ==
          Bytes{0x00, 0x00, 0x00, 0x02, 0x00, 0x0C});
  }
  // ALLOCATION LENGTH truncates.
  t = log_sense(thin, 0x00, 0, 0, 4);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x00, 0x00, 0x00, 0x02});
  CHECK(t->task.transfer_len == 4);
}

TEST_CASE("LOG SENSE: Logical Block Provisioning page") {
  Fixture f(thin_params());
  f.backend->usage = storage::SpaceUsage{1u << 20, 10u << 20, true};
  auto t = log_sense(f, 0x0C);
  REQUIRE(t->good());
  // DS=1; 0001h available 10 MiB = 5000h blocks, SCOPE 10b (shared); 0002h used 1 MiB =
  // 800h blocks, SCOPE 01b (the LU's own).
  CHECK(t->data_in() == Bytes{0x8C, 0x00, 0x00, 0x18, 0x00, 0x01, 0x03, 0x08, 0x00, 0x00,
                              0x50, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x08,
                              0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00});
  // PARAMETER POINTER: from 0002h on; past it, an invalid field.
  t = log_sense(f, 0x0C, 0, 2);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x8C, 0x00, 0x00, 0x0C, 0x00, 0x02, 0x03, 0x08, 0x00, 0x00, 0x08,
                              0x00, 0x01, 0x00, 0x00, 0x00});
  t = log_sense(f, 0x0C, 0, 3);
  CHECK_INVALID_CDB(t, 5, 7);
  // A pool of its own; counts beyond 32 bits saturate; partial blocks round up.
  f.backend->usage = storage::SpaceUsage{513, 1ull << 50, false};
  t = log_sense(f, 0x0C);
  REQUIRE(t->good());
  CHECK(test::slice(t->data_in(), 8, 13) == Bytes{0xFF, 0xFF, 0xFF, 0xFF, 0x01});
  CHECK(test::slice(t->data_in(), 20, 25) == Bytes{0x00, 0x00, 0x00, 0x02, 0x01});
  // The backend cannot tell.
  f.backend->usage_error = -EINVAL;
  t = log_sense(f, 0x0C);
  CHECK_SENSE(t, 0x4, 0x44, 0x00);
}

TEST_CASE("LOG SENSE: pages, subpages and bits we do not have") {
  Fixture full;
  auto t = log_sense(full, 0x0C);  // not on a fully provisioned LU
  CHECK_INVALID_CDB(t, 2, 5);
  Fixture f(thin_params());
  t = log_sense(f, 0x0D);  // temperature: not reported
  CHECK_INVALID_CDB(t, 2, 5);
  t = log_sense(f, 0x00, 0x01);
  CHECK_INVALID_CDB(t, 3, 7);
  t = log_sense(f, 0x0C, 0xFF);
  CHECK_INVALID_CDB(t, 3, 7);
  t = log_sense(f, 0x00, 0, 1);  // the supported pages page has no parameters
  CHECK_INVALID_CDB(t, 5, 7);
  t = log_sense(f, 0x00, 0, 0, 512, 0x01);  // SP: nothing is saveable
  CHECK_INVALID_CDB(t, 1, 0);
  t = log_sense(f, 0x00, 0, 0, 512, 0x02);  // PPC (obsolete)
  CHECK_INVALID_CDB(t, 1, 1);
}

}  // namespace
}  // namespace zuma::scsi
