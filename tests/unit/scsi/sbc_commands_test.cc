// READ/WRITE/VERIFY/SYNCHRONIZE CACHE/READ CAPACITY/START STOP UNIT through execute() on
// a LU over the fake backend.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using storage::IoOp;
using test::Bytes;
using test::cdb10;
using test::cdb12;
using test::cdb16;
using test::Fixture;
using test::pattern;
using test::run_cdb;

Bytes medium(const Fixture& f, uint64_t lba, uint32_t blocks) {
  const size_t bs = f.lu->block_size();
  return Bytes(f.backend->data.begin() + lba * bs, f.backend->data.begin() + (lba + blocks) * bs);
}

TEST_CASE("WRITE then READ round trip, every CDB size") {
  Fixture f;
  struct Case {
    uint8_t wr, rd;
    int size;
  };
  const Case cases[] = {{op::kWrite10, op::kRead10, 10},
                        {op::kWrite12, op::kRead12, 12},
                        {op::kWrite16, op::kRead16, 16}};
  uint8_t seed = 1;
  for (const Case& c : cases) {
    CAPTURE(c.size);
    const uint64_t lba = 100 + seed * 10;
    const Bytes data = pattern(3 * 512, seed++);
    auto make = [&](uint8_t opc, uint8_t flags) {
      return c.size == 10 ? cdb10(opc, flags, lba, 3)
                          : (c.size == 12 ? cdb12(opc, flags, lba, 3) : cdb16(opc, flags, lba, 3));
    };
    auto w = run_cdb(f, make(c.wr, 0), DataDir::kOut, 1536, data);
    REQUIRE(w->good());
    CHECK(w->task.transfer_len == 1536);
    CHECK(w->task.data_in_len == 0);
    CHECK(medium(f, lba, 3) == data);
    REQUIRE(f.backend->calls.size() >= 1);
    CHECK(f.backend->calls.back().op == IoOp::kWrite);
    CHECK(f.backend->calls.back().offset == lba * 512);
    CHECK(f.backend->calls.back().length == 1536);
    CHECK_FALSE(f.backend->calls.back().fua);

    auto r = run_cdb(f, make(c.rd, 0), DataDir::kIn, 1536);
    REQUIRE(r->good());
    CHECK(r->task.transfer_len == 1536);
    CHECK(r->data_in() == data);
  }
}

TEST_CASE("READ(6)/WRITE(6): 21-bit LBA, transfer length 0 means 256 blocks") {
  Fixture f;
  const Bytes data = pattern(256 * 512, 9);
  auto w = f.run({op::kWrite6, 0x00, 0x01, 0x00, 0, 0}, DataDir::kOut, 256 * 512, data);
  REQUIRE(w->good());
  CHECK(w->task.transfer_len == 256 * 512);
  CHECK(medium(f, 256, 256) == data);
  auto r = f.run({op::kRead6, 0x00, 0x01, 0x00, 0, 0}, DataDir::kIn, 256 * 512);
  REQUIRE(r->good());
  CHECK(r->data_in() == data);
  r = f.run({op::kRead6, 0x00, 0x07, 0xFF, 1, 0}, DataDir::kIn, 512);  // last block
  CHECK(r->good());
  r = f.run({op::kRead6, 0x00, 0x08, 0x00, 1, 0}, DataDir::kIn, 512);  // one past
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  r = f.run({op::kRead6, 0x1F, 0xFF, 0xFF, 1, 0}, DataDir::kIn, 512);
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  r = f.run({op::kRead6, 0x20, 0, 0, 1, 0}, DataDir::kIn, 512);  // byte 1 bit 5 reserved
  CHECK_INVALID_CDB(r, 1, 5);
}

TEST_CASE("FUA reaches the backend; DPO accepted; WCE=0 writes through") {
  Fixture f;
  const Bytes data = pattern(512, 3);
  auto w = run_cdb(f, cdb10(op::kWrite10, 0x08, 1, 1), DataDir::kOut, 512, data);
  REQUIRE(w->good());
  CHECK(f.backend->calls.back().fua);
  w = run_cdb(f, cdb16(op::kWrite16, 0x10, 1, 1), DataDir::kOut, 512, data);  // DPO only
  REQUIRE(w->good());
  CHECK_FALSE(f.backend->calls.back().fua);
  w = run_cdb(f, cdb12(op::kWrite12, 0x18, 1, 1), DataDir::kOut, 512, data);
  REQUIRE(w->good());
  CHECK(f.backend->calls.back().fua);
  auto r = run_cdb(f, cdb10(op::kRead10, 0x18, 1, 1), DataDir::kIn, 512);
  CHECK(r->good());
  CHECK(r->data_in() == data);

  LuParams p = test::default_params();
  p.write_cache = false;
  Fixture wt(p);
  w = run_cdb(wt, cdb10(op::kWrite10, 0, 1, 1), DataDir::kOut, 512, data);
  REQUIRE(w->good());
  CHECK(wt.backend->calls.back().fua);
}

TEST_CASE("LBA range checks, overflow-safe") {
  Fixture f;  // 2048 blocks
  auto r = run_cdb(f, cdb10(op::kRead10, 0, 2047, 1), DataDir::kIn, 512);
  CHECK(r->good());
  r = run_cdb(f, cdb10(op::kRead10, 0, 2047, 2), DataDir::kIn, 1024);
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  r = run_cdb(f, cdb10(op::kRead10, 0, 2048, 1), DataDir::kIn, 512);
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  // 0xFFFFFFFFFFFFFFFF + 1 block wraps to 0: still out of range.
  r = run_cdb(f, cdb16(op::kRead16, 0, ~uint64_t{0}, 1), DataDir::kIn, 512);
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  CHECK(r->task.sense[15] == 0);  // no field pointer for LBA OUT OF RANGE
  auto w = run_cdb(f, cdb16(op::kWrite16, 0, ~uint64_t{0}, 1), DataDir::kOut, 512, pattern(512, 1));
  CHECK_SENSE(w, 0x5, 0x21, 0x00);
  r = run_cdb(f, cdb16(op::kRead16, 0, 0x8000000000000000ull, 256), DataDir::kIn, 256 * 512);
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  // Zero blocks: fine at the end of the medium, out of range past it.
  r = run_cdb(f, cdb10(op::kRead10, 0, 2048, 0), DataDir::kIn, 0);
  CHECK(r->good());
  r = run_cdb(f, cdb10(op::kRead10, 0, 2049, 0), DataDir::kIn, 0);
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  r = run_cdb(f, cdb16(op::kRead16, 0, ~uint64_t{0}, 0), DataDir::kIn, 0);
  CHECK_SENSE(r, 0x5, 0x21, 0x00);
  w = run_cdb(f, cdb10(op::kWrite10, 0, 0xFFFFFFFF, 0), DataDir::kOut, 0);
  CHECK_SENSE(w, 0x5, 0x21, 0x00);
  CHECK(f.backend->calls.size() == 1);  // only the good one-block read
}

TEST_CASE("zero-block READ and WRITE do no I/O") {
  Fixture f;
  auto r = run_cdb(f, cdb10(op::kRead10, 0, 0, 0), DataDir::kIn, 0);
  CHECK(r->good());
  CHECK(r->task.transfer_len == 0);
  auto w = run_cdb(f, cdb16(op::kWrite16, 0, 5, 0), DataDir::kOut, 0);
  CHECK(w->good());
  CHECK(f.backend->calls.empty());
}

TEST_CASE("transfer length above the block limits maximum") {
  Fixture f(test::default_params(40000));  // 40000 blocks > 16384
  auto r = run_cdb(f, cdb16(op::kRead16, 0, 0, 16384), DataDir::kIn, 16384 * 512);
  CHECK(r->good());
  r = run_cdb(f, cdb16(op::kRead16, 0, 0, 16385), DataDir::kIn, 16385 * 512);
  CHECK_INVALID_CDB(r, 10, 7);
  r = run_cdb(f, cdb12(op::kRead12, 0, 0, 16385), DataDir::kIn, 16385 * 512);
  CHECK_INVALID_CDB(r, 6, 7);
  auto w = run_cdb(f, cdb10(op::kWrite10, 0, 0, 16385), DataDir::kOut, 0);
  CHECK_INVALID_CDB(w, 7, 7);
  auto v = run_cdb(f, cdb10(op::kVerify10, 0, 0, 16385), DataDir::kNone, 0);
  CHECK_INVALID_CDB(v, 7, 7);
}

TEST_CASE("RDPROTECT/WRPROTECT/VRPROTECT: no protection information") {
  Fixture f;
  for (uint8_t prot = 1; prot < 8; ++prot) {
    CAPTURE(int(prot));
    auto r =
        run_cdb(f, cdb10(op::kRead10, static_cast<uint8_t>(prot << 5), 0, 1), DataDir::kIn, 512);
    CHECK_INVALID_CDB(r, 1, 7);
    auto w = run_cdb(f, cdb16(op::kWrite16, static_cast<uint8_t>(prot << 5), 0, 1), DataDir::kOut,
                     512, pattern(512, 0));
    CHECK_INVALID_CDB(w, 1, 7);
    auto v = run_cdb(f, cdb12(op::kVerify12, static_cast<uint8_t>(prot << 5 | 0x02), 0, 1),
                     DataDir::kOut, 512, pattern(512, 0));
    CHECK_INVALID_CDB(v, 1, 7);
  }
  CHECK(f.backend->calls.empty());
}

TEST_CASE("READ residuals: transfer_len is the CDB's, Data-In what fits") {
  Fixture f;
  const Bytes data = pattern(1024, 5);
  std::memcpy(f.backend->data.data(), data.data(), data.size());

  // Expected length 0: nothing read, overflow of one block.
  auto r = run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 0);
  REQUIRE(r->good());
  CHECK(r->task.transfer_len == 512);
  CHECK(r->task.data_in_len == 0);
  CHECK(f.backend->calls.empty());

  // Expected 10000 for one block: underflow, 512 bytes of data.
  r = run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 10000);
  REQUIRE(r->good());
  CHECK(r->task.transfer_len == 512);
  CHECK(r->data_in() == test::slice(data, 0, 512));

  // Expected 200 for one block: 200 bytes sent, a whole block read.
  r = run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 200);
  REQUIRE(r->good());
  CHECK(r->task.transfer_len == 512);
  CHECK(r->data_in() == test::slice(data, 0, 200));
  CHECK(f.backend->calls.back().length == 512);

  // Two blocks, room for one: one block read and sent.
  r = run_cdb(f, cdb10(op::kRead10, 0, 0, 2), DataDir::kIn, 512);
  REQUIRE(r->good());
  CHECK(r->task.transfer_len == 1024);
  CHECK(r->data_in() == test::slice(data, 0, 512));
  CHECK(f.backend->calls.back().length == 512);

  // A READ sent with the W bit only: GOOD, no Data-In.
  r = run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kOut, 512, pattern(512, 0xA6));
  REQUIRE(r->good());
  CHECK(r->task.data_in_len == 0);
  CHECK(r->task.transfer_len == 512);
}

TEST_CASE("WRITE residuals: only the whole blocks that arrived are written") {
  Fixture f;
  struct Case {
    uint16_t blocks;
    uint32_t edtl;
    bool good;
    uint32_t written;  // blocks
  };
  const Case cases[] = {
      {1, 0, true, 0},      // nothing arrived: GOOD, nothing written (overflow 512)
      {1, 1024, true, 1},   // more than needed: one block written (underflow 512)
      {2, 512, true, 1},    // one of two blocks arrived: it is written (overflow 512)
      {1, 10000, true, 1},  // underflow 9488
      {1, 200, false, 0},   // a partial block: INVALID FIELD IN COMMAND IU, nothing written
      {3, 1000, false, 0},  // one whole block and a partial one: nothing written
  };
  for (const Case& c : cases) {
    CAPTURE(c.blocks);
    CAPTURE(c.edtl);
    std::memset(f.backend->data.data(), 'a', 4096);
    f.backend->calls.clear();
    const Bytes sent(c.edtl, 'b');
    auto w = run_cdb(f, cdb10(op::kWrite10, 0, 0, c.blocks), DataDir::kOut, c.edtl, sent);
    CHECK(w->task.transfer_len == c.blocks * 512u);
    if (c.good) {
      CHECK(w->good());
    } else {
      CHECK_SENSE(w, 0x5, 0x0E, 0x03);
    }
    CHECK(medium(f, 0, c.written) == Bytes(c.written * 512, 'b'));
    CHECK(medium(f, c.written, 8 - c.written) == Bytes((8 - c.written) * 512, 'a'));
    CHECK(f.backend->calls.size() == (c.written ? 1u : 0u));
  }
}

TEST_CASE("VERIFY: medium check, byte compare, miscompare offset") {
  Fixture f;
  const Bytes data = pattern(4 * 512, 11);
  std::memcpy(f.backend->data.data() + 8 * 512, data.data(), data.size());

  // BYTCHK=0: reads the medium, sends nothing.
  auto v = run_cdb(f, cdb10(op::kVerify10, 0x10, 8, 4), DataDir::kNone, 0);
  REQUIRE(v->good());
  CHECK(v->task.transfer_len == 0);
  CHECK(v->task.data_in_len == 0);
  CHECK(f.backend->calls.back().op == IoOp::kRead);
  CHECK(f.backend->calls.back().length == 2048);

  // BYTCHK=1, equal.
  v = run_cdb(f, cdb16(op::kVerify16, 0x02, 8, 4), DataDir::kOut, 2048, data);
  REQUIRE(v->good());
  CHECK(v->task.transfer_len == 2048);

  // BYTCHK=1, one byte differs at 1234.
  Bytes bad = data;
  bad[1234] ^= 'X';
  v = run_cdb(f, cdb12(op::kVerify12, 0x02, 8, 4), DataDir::kOut, 2048, bad);
  CHECK_SENSE(v, 0xE, 0x1D, 0x00);
  CHECK(v->sense() == Bytes{0xF0, 0, 0x0E, 0, 0, 0x04, 0xD2, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0});
  CHECK(v->task.data_in_len == 0);

  // Fewer bytes than the verification length: nothing compared.
  v = run_cdb(f, cdb10(op::kVerify10, 0x02, 8, 4), DataDir::kOut, 1024, test::slice(data, 0, 1024));
  CHECK_SENSE(v, 0x5, 0x0E, 0x03);

  // BYTCHK 10b is reserved.
  v = run_cdb(f, cdb10(op::kVerify10, 0x04, 8, 1), DataDir::kOut, 512, test::slice(data, 0, 512));
  CHECK_INVALID_CDB(v, 1, 2);

  // Zero blocks and range.
  v = run_cdb(f, cdb10(op::kVerify10, 0x02, 0, 0), DataDir::kNone, 0);
  CHECK(v->good());
  v = run_cdb(f, cdb10(op::kVerify10, 0x02, 2049, 0), DataDir::kNone, 0);
  CHECK_SENSE(v, 0x5, 0x21, 0x00);
  v = run_cdb(f, cdb16(op::kVerify16, 0x02, ~uint64_t{0}, 1), DataDir::kOut, 512, pattern(512, 0));
  CHECK_SENSE(v, 0x5, 0x21, 0x00);
}

TEST_CASE("SYNCHRONIZE CACHE flushes; range checked") {
  Fixture f;
  auto s = run_cdb(f, cdb10(op::kSynchronizeCache10, 0x02, 0, 0), DataDir::kNone, 0);
  REQUIRE(s->good());
  CHECK(f.backend->calls.back().op == IoOp::kFlush);
  s = run_cdb(f, cdb16(op::kSynchronizeCache16, 0, 2000, 48), DataDir::kNone, 0);
  CHECK(s->good());
  s = run_cdb(f, cdb16(op::kSynchronizeCache16, 0, 2000, 49), DataDir::kNone, 0);
  CHECK_SENSE(s, 0x5, 0x21, 0x00);
  s = run_cdb(f, cdb10(op::kSynchronizeCache10, 0, 2049, 0), DataDir::kNone, 0);
  CHECK_SENSE(s, 0x5, 0x21, 0x00);
  s = run_cdb(f, cdb10(op::kSynchronizeCache10, 0x01, 0, 0), DataDir::kNone, 0);  // obsolete RELADR
  CHECK_INVALID_CDB(s, 1, 0);
  CHECK(f.backend->calls.size() == 2);
}

TEST_CASE("READ CAPACITY(10)") {
  Fixture f;
  auto t = f.run({op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, DataDir::kIn, 8);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00});
  t = f.run({op::kReadCapacity10, 0, 0, 0, 0, 5, 0, 0, 0, 0});  // LBA with PMI=0
  CHECK_INVALID_CDB(t, 2, 7);
  t = f.run({op::kReadCapacity10, 0, 0, 0, 0, 5, 0, 0, 1, 0});  // PMI=1
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00});
  t = f.run({op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, DataDir::kIn, 4);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 8);
  CHECK(t->task.data_in_len == 4);

  // 2^32 + 1 blocks: RETURNED LOGICAL BLOCK ADDRESS saturates at FFFFFFFFh.
  Fixture big(test::default_params((1ull << 32) + 1, 512), 0, 1 << 20);
  t = big.run({op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, DataDir::kIn, 8);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x02, 0x00});
  // 2^32 blocks: last LBA FFFFFFFFh is itself the saturated value.
  Fixture edge(test::default_params(1ull << 32, 512), 0, 1 << 20);
  t = edge.run({op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, DataDir::kIn, 8);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x02, 0x00});
}

TEST_CASE("READ CAPACITY(16)") {
  Fixture big(test::default_params((1ull << 32) + 1, 4096), 0, 1 << 20);
  auto t = big.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0, 0,
                              0, 0, 0, 0,    0, 0, 0, 0, 0, 0, 0,    0,    0, 0, 0, 0});
  // Allocation lengths below 32 truncate (0..15 included).
  for (uint8_t alloc = 0; alloc < 16; ++alloc) {
    t = big.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, alloc, 0, 0});
    REQUIRE(t->good());
    CHECK(t->task.transfer_len == alloc);
  }
  // LBA without PMI.
  t = big.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 32, 0, 0});
  CHECK_INVALID_CDB(t, 2, 7);
  t = big.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 32, 1, 0});
  CHECK(t->good());
  t = big.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 2, 0});
  CHECK_INVALID_CDB(t, 14, 1);

  LuParams p = test::default_params();
  p.thin = true;
  Fixture thin(p);
  t = thin.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0, 0, 0, 0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00, 0, 0, 0xC0, 0,
                              0, 0, 0, 0, 0, 0, 0,    0,    0, 0, 0,    0,    0, 0, 0,    0});
}

TEST_CASE("START STOP UNIT") {
  Fixture f;
  for (uint8_t b4 : {0x00, 0x01, 0x04, 0x05}) {
    CAPTURE(int(b4));
    CHECK(f.run({op::kStartStopUnit, 0, 0, 0, b4, 0}, DataDir::kNone, 0)->good());
    CHECK(f.run({op::kStartStopUnit, 1, 0, 0, b4, 0}, DataDir::kNone, 0)->good());  // IMMED
  }
  // The medium stays ready after a stop.
  CHECK(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0)->good());
  auto t = f.run({op::kStartStopUnit, 0, 0, 0, 0x02, 0}, DataDir::kNone, 0);  // LOEJ
  CHECK_INVALID_CDB(t, 4, 1);
  t = f.run({op::kStartStopUnit, 0, 0, 0, 0x11, 0}, DataDir::kNone, 0);  // power condition
  CHECK_INVALID_CDB(t, 4, 7);
  t = f.run({op::kStartStopUnit, 0, 0, 1, 0x01, 0}, DataDir::kNone, 0);  // modifier
  CHECK_INVALID_CDB(t, 3, 3);
  t = f.run({op::kStartStopUnit, 0, 0, 0, 0x08, 0}, DataDir::kNone, 0);  // reserved
  CHECK_INVALID_CDB(t, 4, 3);
}

TEST_CASE("backend errors become sense data") {
  Fixture f;
  f.backend->fail_with = -EIO;
  auto r = run_cdb(f, cdb10(op::kRead10, 0, 0x123, 2), DataDir::kIn, 1024);
  CHECK_SENSE(r, 0x3, 0x11, 0x00);
  CHECK(r->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0x01, 0x23, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0});
  CHECK(r->task.data_in_len == 0);
  auto w = run_cdb(f, cdb10(op::kWrite10, 0, 0x45, 1), DataDir::kOut, 512, pattern(512, 0));
  CHECK_SENSE(w, 0x3, 0x0C, 0x00);
  CHECK(w->task.sense[0] == 0xF0);
  CHECK(w->task.sense[6] == 0x45);
  auto v = run_cdb(f, cdb10(op::kVerify10, 0, 7, 1), DataDir::kNone, 0);
  CHECK_SENSE(v, 0x3, 0x11, 0x00);
  auto s = run_cdb(f, cdb10(op::kSynchronizeCache10, 0, 0, 0), DataDir::kNone, 0);
  CHECK_SENSE(s, 0x3, 0x0C, 0x00);
  CHECK(s->task.sense[0] == 0x70);  // no INFORMATION for a flush

  f.backend->fail_with = -ENOSPC;
  w = run_cdb(f, cdb10(op::kWrite10, 0, 0, 1), DataDir::kOut, 512, pattern(512, 0));
  CHECK_SENSE(w, 0x7, 0x27, 0x07);
  f.backend->fail_with = -EINVAL;
  r = run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 512);
  CHECK_SENSE(r, 0x4, 0x44, 0x00);
  f.backend->fail_with = -ENOMEM;
  r = run_cdb(f, cdb10(op::kRead10, 0, 0, 1), DataDir::kIn, 512);
  CHECK(r->completions == 1);
  CHECK(r->task.status == status::kBusy);
  CHECK(r->task.sense_len == 0);

  // Big LBA in descriptor format keeps all 64 bits of INFORMATION.
  Fixture big(test::default_params(1ull << 40, 512), 0, 1 << 20);
  big.lu->set_mode_params({true, true}, 0);
  big.backend->fail_with = -EIO;
  r = run_cdb(big, cdb16(op::kRead16, 0, 0x123456789Aull, 1), DataDir::kIn, 512);
  CHECK(r->sense() == Bytes{0x72, 0x03, 0x11, 0x00, 0, 0,    0,    12,   0x00, 0x0A,
                            0x80, 0,    0,    0,    0, 0x12, 0x34, 0x56, 0x78, 0x9A});
}

TEST_CASE("completions that come later") {
  Fixture f;
  f.backend->defer = true;
  const Bytes data = pattern(1024, 21);
  auto w = run_cdb(f, cdb10(op::kWrite10, 0x08, 4, 2), DataDir::kOut, 1024, data);
  auto r = run_cdb(f, cdb16(op::kRead16, 0, 4, 2), DataDir::kIn, 1024);
  auto v = run_cdb(f, cdb10(op::kVerify10, 0x02, 4, 2), DataDir::kOut, 1024, data);
  CHECK(w->completions == 0);
  CHECK(r->completions == 0);
  CHECK(v->completions == 0);
  REQUIRE(f.backend->deferred.size() == 3);
  f.backend->complete_deferred();
  CHECK(w->good());
  CHECK(r->good());
  CHECK(r->data_in() == data);  // the fake copied at submit, after the write
  CHECK(v->good());

  f.backend->fail_with = -EIO;
  r = run_cdb(f, cdb10(op::kRead10, 0, 4, 1), DataDir::kIn, 512);
  CHECK(r->completions == 0);
  f.backend->complete_deferred();
  CHECK_SENSE(r, 0x3, 0x11, 0x00);
}

}  // namespace
}  // namespace zuma::scsi

// --- SBC: VERIFY BYTCHK 11b, WRITE AND VERIFY, WRITE ATOMIC, PRE-FETCH, READ DEFECT DATA,
// and the range lock that writes take ---

namespace zuma::scsi {
namespace {

using storage::IoOp;
using test::Bytes;
using test::cdb10;
using test::cdb12;
using test::cdb16;
using test::Fixture;
using test::pattern;
using test::run_cdb;

Bytes medium_of(const Fixture& f, uint64_t lba, uint32_t blocks) {
  const size_t bs = f.lu->block_size();
  return Bytes(f.backend->data.begin() + lba * bs, f.backend->data.begin() + (lba + blocks) * bs);
}

void put_medium(Fixture& f, uint64_t lba, const Bytes& b) {
  std::memcpy(f.backend->data.data() + lba * f.lu->block_size(), b.data(), b.size());
}

TEST_CASE("VERIFY BYTCHK 11b: the one block of Data-Out against every block") {
  Fixture f;
  const Bytes block = pattern(512, 40);
  for (uint64_t lba = 8; lba < 12; ++lba) put_medium(f, lba, block);
  for (auto make : {+[] { return cdb10(op::kVerify10, 0x06, 8, 4); },
                    +[] { return cdb12(op::kVerify12, 0x06, 8, 4); },
                    +[] { return cdb16(op::kVerify16, 0x06, 8, 4); }}) {
    auto v = run_cdb(f, make(), DataDir::kOut, 512, block);
    REQUIRE(v->good());
    CHECK(v->task.transfer_len == 512);  // one block of Data-Out
    CHECK(f.backend->calls.back().op == IoOp::kRead);
    CHECK(f.backend->calls.back().offset == 8 * 512);
    CHECK(f.backend->calls.back().length == 4 * 512);
  }
  // The third block differs at its byte 7: INFORMATION = 2 * 512 + 7 (offset in the range).
  Bytes bad = block;
  bad[7] ^= 1;
  put_medium(f, 10, bad);
  auto v = run_cdb(f, cdb16(op::kVerify16, 0x06, 8, 4), DataDir::kOut, 512, block);
  CHECK(v->sense() == Bytes{0xF0, 0, 0x0E, 0, 0, 0x04, 0x07, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0});
  // Less than one block of Data-Out; zero blocks (nothing transferred).
  v = run_cdb(f, cdb10(op::kVerify10, 0x06, 8, 4), DataDir::kOut, 100, Bytes(100, 1));
  CHECK_SENSE(v, 0x5, 0x0E, 0x03);
  v = run_cdb(f, cdb10(op::kVerify10, 0x06, 8, 0), DataDir::kNone, 0);
  CHECK(v->good());
  CHECK(v->task.transfer_len == 0);
  // Range and the medium error path.
  v = run_cdb(f, cdb10(op::kVerify10, 0x06, 2047, 2), DataDir::kOut, 512, block);
  CHECK_SENSE(v, 0x5, 0x21, 0x00);
  f.backend->fail_with = -EIO;
  v = run_cdb(f, cdb10(op::kVerify10, 0x06, 9, 1), DataDir::kOut, 512, block);
  CHECK(v->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 9, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0});
}

TEST_CASE("WRITE AND VERIFY: durable write, read back, compare with BYTCHK 01b") {
  Fixture f;
  struct Form {
    Bytes cdb;
  };
  const Bytes data = pattern(1024, 41);
  const Form forms[] = {{cdb10(op::kWriteAndVerify10, 0x02, 5, 2)},
                        {cdb12(op::kWriteAndVerify12, 0x02, 5, 2)},
                        {cdb16(op::kWriteAndVerify16, 0x12, 5, 2)},  // DPO accepted
                        {cdb10(op::kWriteAndVerify10, 0x00, 5, 2)}};  // BYTCHK 00b
  for (const Form& form : forms) {
    f.backend->calls.clear();
    std::memset(f.backend->data.data(), 0, 8192);
    auto w = run_cdb(f, form.cdb, DataDir::kOut, 1024, data);
    REQUIRE(w->good());
    CHECK(w->task.transfer_len == 1024);
    CHECK(medium_of(f, 5, 2) == data);
    REQUIRE(f.backend->calls.size() == 2);
    CHECK(f.backend->calls[0].op == IoOp::kWrite);
    CHECK(f.backend->calls[0].fua);  // durable before it is verified
    CHECK(f.backend->calls[0].offset == 5 * 512);
    CHECK(f.backend->calls[1].op == IoOp::kRead);
    CHECK(f.backend->calls[1].offset == 5 * 512);
    CHECK(f.backend->calls[1].length == 1024);
  }
  CHECK(f.lu->range_lock().held() == 0);

  // BYTCHK 1xb reserved; WRPROTECT; byte 1 bit 3 (no FUA in this CDB) is reserved.
  auto w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x04, 5, 1), DataDir::kOut, 512, data);
  CHECK_INVALID_CDB(w, 1, 2);
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x06, 5, 1), DataDir::kOut, 512, data);
  CHECK_INVALID_CDB(w, 1, 2);
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x22, 5, 1), DataDir::kOut, 512, data);
  CHECK_INVALID_CDB(w, 1, 7);
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x0A, 5, 1), DataDir::kOut, 512, data);
  CHECK_INVALID_CDB(w, 1, 3);
  w = run_cdb(f, cdb16(op::kWriteAndVerify16, 0x02, 2047, 2), DataDir::kOut, 1024, data);
  CHECK_SENSE(w, 0x5, 0x21, 0x00);

  // Residuals as for WRITE: the whole blocks that arrived; a partial block is refused.
  f.backend->calls.clear();
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x02, 20, 2), DataDir::kOut, 512,
              test::slice(data, 0, 512));
  REQUIRE(w->good());
  CHECK(w->task.transfer_len == 1024);
  CHECK(f.backend->calls.size() == 2);
  CHECK(f.backend->calls[0].length == 512);
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x02, 20, 1), DataDir::kOut, 200, Bytes(200, 1));
  CHECK_SENSE(w, 0x5, 0x0E, 0x03);
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x02, 20, 0), DataDir::kNone, 0);
  CHECK(w->good());

  // The medium does not hold what was written (changed between the write and the read):
  // MISCOMPARE with the offset of the first differing byte.
  f.backend->defer = true;
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x02, 30, 2), DataDir::kOut, 1024, data);
  REQUIRE(f.backend->deferred.size() == 1);  // the write
  f.backend->data[30 * 512 + 600] ^= 0xFF;
  f.backend->complete_deferred();
  REQUIRE(f.backend->deferred.size() == 1);  // the read back
  f.backend->complete_deferred();
  CHECK(w->sense() == Bytes{0xF0, 0, 0x0E, 0, 0, 0x02, 0x58, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0});
  f.backend->defer = false;

  // Backend failures: the write (WRITE ERROR), the read back (UNRECOVERED READ ERROR).
  f.backend->fail_with = -EIO;
  f.backend->fail_op = IoOp::kWrite;
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x02, 0x42, 1), DataDir::kOut, 512, data);
  CHECK(w->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 0x42, 10, 0, 0, 0, 0, 0x0C, 0, 0, 0, 0, 0});
  f.backend->fail_op = IoOp::kRead;
  w = run_cdb(f, cdb10(op::kWriteAndVerify10, 0x02, 0x42, 1), DataDir::kOut, 512, data);
  CHECK(w->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 0x42, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0});
  CHECK(f.lu->range_lock().held() == 0);
}

TEST_CASE("WRITE ATOMIC (16): limits from the Block Limits page") {
  Fixture f(test::default_params(8192));  // 512-byte blocks: atomic unit 8 blocks, at most 2048
  auto wa = [](uint64_t lba, uint16_t blocks, uint8_t flags = 0, uint16_t boundary = 0) {
    Bytes c = cdb16(op::kWriteAtomic16, flags, lba, 0);
    c[10] = static_cast<uint8_t>(boundary >> 8);
    c[11] = static_cast<uint8_t>(boundary);
    c[12] = static_cast<uint8_t>(blocks >> 8);
    c[13] = static_cast<uint8_t>(blocks);
    return c;
  };
  const Bytes data = pattern(8 * 512, 42);
  auto t = run_cdb(f, wa(16, 8), DataDir::kOut, 4096, data);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 4096);
  CHECK(medium_of(f, 16, 8) == data);
  CHECK(f.backend->calls.back().op == IoOp::kWrite);
  CHECK(f.backend->calls.back().offset == 16 * 512);
  CHECK_FALSE(f.backend->calls.back().fua);
  t = run_cdb(f, wa(16, 8, 0x18), DataDir::kOut, 4096, data);  // DPO, FUA
  REQUIRE(t->good());
  CHECK(f.backend->calls.back().fua);
  const size_t calls = f.backend->calls.size();

  t = run_cdb(f, wa(12, 8), DataDir::kOut, 4096, data);  // misaligned
  CHECK_INVALID_CDB(t, 2, 7);
  t = run_cdb(f, wa(16, 4), DataDir::kOut, 2048, test::slice(data, 0, 2048));  // granularity
  CHECK_INVALID_CDB(t, 12, 7);
  t = run_cdb(f, wa(0, 2056), DataDir::kOut, 0);  // above MAXIMUM ATOMIC TRANSFER LENGTH
  CHECK_INVALID_CDB(t, 12, 7);
  t = run_cdb(f, wa(16, 8, 0, 1), DataDir::kOut, 4096, data);  // ATOMIC BOUNDARY
  CHECK_INVALID_CDB(t, 10, 7);
  t = run_cdb(f, wa(16, 8, 0x20), DataDir::kOut, 4096, data);  // WRPROTECT
  CHECK_INVALID_CDB(t, 1, 7);
  t = run_cdb(f, wa(16, 8, 0x04), DataDir::kOut, 4096, data);  // reserved
  CHECK_INVALID_CDB(t, 1, 2);
  t = run_cdb(f, wa(8184, 16), DataDir::kOut, 8192, Bytes(8192, 0));
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, wa(0xFFFFFFFFFFFFFFF8ull, 8), DataDir::kOut, 4096, data);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, wa(8200, 0), DataDir::kNone, 0);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  // Past the end and longer than the maximum: the range is checked first.
  t = run_cdb(f, wa(8184, 4096), DataDir::kOut, 0);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  // Misaligned and past the end.
  t = run_cdb(f, wa(8191, 8), DataDir::kOut, 4096, data);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, wa(0, 0), DataDir::kNone, 0);
  CHECK(t->good());
  // All or nothing: with less Data-Out than the transfer length nothing is written.
  t = run_cdb(f, wa(16, 16), DataDir::kOut, 4096, data);
  CHECK_SENSE(t, 0x5, 0x0E, 0x03);
  CHECK(f.backend->calls.size() == calls);

  // 4 KiB blocks: one block is a whole unit; no alignment or granularity.
  Fixture f4k(test::default_params(1024, 4096));
  t = run_cdb(f4k, wa(1, 1), DataDir::kOut, 4096, data);
  CHECK(t->good());
  t = run_cdb(f4k, wa(0, 257), DataDir::kOut, 0);
  CHECK_INVALID_CDB(t, 12, 7);
}

TEST_CASE("WRITE ATOMIC and WRITE AND VERIFY exclude overlapping writes until they complete") {
  Fixture f;
  f.backend->defer = true;
  const Bytes a = pattern(4096, 1), b = pattern(512, 2);
  auto atomic = run_cdb(f, [] {
    Bytes c = cdb16(op::kWriteAtomic16, 0, 8, 0);
    c[13] = 8;
    return c;
  }(), DataDir::kOut, 4096, a);
  REQUIRE(f.backend->deferred.size() == 1);
  // An overlapping WRITE waits: nothing reaches the backend.
  auto w = run_cdb(f, cdb10(op::kWrite10, 0, 12, 1), DataDir::kOut, 512, b);
  CHECK(f.backend->deferred.size() == 1);
  CHECK(f.lu->range_lock().waiting() == 1);
  // A write elsewhere, and a read of the same blocks, do not wait.
  auto other = run_cdb(f, cdb10(op::kWrite10, 0, 100, 1), DataDir::kOut, 512, b);
  auto r = run_cdb(f, cdb10(op::kRead10, 0, 8, 1), DataDir::kIn, 512);
  CHECK(f.backend->deferred.size() == 3);
  f.backend->complete_deferred();  // the atomic write completes: the waiting WRITE starts
  CHECK(atomic->good());
  CHECK(other->good());
  CHECK(r->good());
  CHECK(w->completions == 0);
  REQUIRE(f.backend->deferred.size() == 1);
  f.backend->complete_deferred();
  CHECK(w->good());
  Bytes want = a;
  std::memcpy(want.data() + 4 * 512, b.data(), 512);
  CHECK(medium_of(f, 8, 8) == want);  // the WRITE came after
  CHECK(f.lu->range_lock().held() == 0);
}

TEST_CASE("PRE-FETCH (10/16): range checked, nothing transferred, GOOD") {
  Fixture f;  // 2048 blocks
  auto p = run_cdb(f, cdb10(op::kPreFetch10, 0, 0, 1), DataDir::kNone, 0);
  CHECK(p->good());
  CHECK(p->task.status == status::kGood);  // not CONDITION MET: no cache to promise it
  p = run_cdb(f, cdb10(op::kPreFetch10, 0x02, 2047, 1), DataDir::kNone, 0);  // IMMED
  CHECK(p->good());
  Bytes grouped = cdb10(op::kPreFetch10, 0, 0, 1);
  grouped[6] = 3;
  CHECK(run_cdb(f, grouped, DataDir::kNone, 0)->good());
  p = run_cdb(f, cdb10(op::kPreFetch10, 0, 2048, 0), DataDir::kNone, 0);  // 0: to the end
  CHECK(p->good());
  p = run_cdb(f, cdb10(op::kPreFetch10, 0, 2049, 0), DataDir::kNone, 0);
  CHECK_SENSE(p, 0x5, 0x21, 0x00);
  p = run_cdb(f, cdb10(op::kPreFetch10, 0, 2047, 2), DataDir::kNone, 0);
  CHECK_SENSE(p, 0x5, 0x21, 0x00);
  p = run_cdb(f, cdb16(op::kPreFetch16, 0, ~uint64_t{0}, 1), DataDir::kNone, 0);
  CHECK_SENSE(p, 0x5, 0x21, 0x00);
  p = run_cdb(f, cdb16(op::kPreFetch16, 0x02, 100, 1000), DataDir::kNone, 0);
  CHECK(p->good());
  p = run_cdb(f, cdb10(op::kPreFetch10, 0x01, 0, 1), DataDir::kNone, 0);  // obsolete bit 0
  CHECK_INVALID_CDB(p, 1, 0);
  CHECK(f.backend->calls.empty());
}

TEST_CASE("READ DEFECT DATA (10/12): empty lists in the format asked for") {
  Fixture f;
  auto t = f.run({op::kReadDefectData10, 0, 0x18, 0, 0, 0, 0, 0, 32, 0}, DataDir::kIn, 32);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x18, 0, 0});  // PLISTV, GLISTV, short block format
  t = f.run({op::kReadDefectData10, 0, 0x05, 0, 0, 0, 0, 0, 32, 0}, DataDir::kIn, 32);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x05, 0, 0});
  t = f.run({op::kReadDefectData10, 0, 0x13, 0, 0, 0, 0, 0, 2, 0}, DataDir::kIn, 2);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x13});
  CHECK(t->task.transfer_len == 2);
  t = f.run({op::kReadDefectData10, 0, 0x07, 0, 0, 0, 0, 0, 32, 0}, DataDir::kIn, 32);
  CHECK_INVALID_CDB(t, 2, 2);  // format 111b reserved
  t = f.run({op::kReadDefectData10, 0, 0x20, 0, 0, 0, 0, 0, 32, 0}, DataDir::kIn, 32);
  CHECK_INVALID_CDB(t, 2, 5);

  t = f.run({op::kReadDefectData12, 0x13, 0, 0, 0, 9, 0, 0, 0, 32, 0, 0}, DataDir::kIn, 32);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x13, 0, 0, 0, 0, 0, 0});  // GENERATION CODE 0, length 0
  t = f.run({op::kReadDefectData12, 0x0F, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, DataDir::kIn, 32);
  CHECK_INVALID_CDB(t, 1, 2);
  t = f.run({op::kReadDefectData12, 0x00, 0, 0, 0, 0, 0, 0, 0, 32, 1, 0}, DataDir::kIn, 32);
  CHECK_INVALID_CDB(t, 10, 0);
  CHECK(f.backend->calls.empty());
}

TEST_CASE("WRITE takes the range shared: writes do not wait for each other") {
  Fixture f;
  f.backend->defer = true;
  const Bytes d = pattern(1024, 7);
  auto a = run_cdb(f, cdb10(op::kWrite10, 0, 0, 2), DataDir::kOut, 1024, d);
  auto b = run_cdb(f, cdb16(op::kWrite16, 0, 1, 2), DataDir::kOut, 1024, d);
  CHECK(f.backend->deferred.size() == 2);
  CHECK(f.lu->range_lock().held() == 2);
  f.backend->complete_deferred();
  CHECK(a->good());
  CHECK(b->good());
  CHECK(f.lu->range_lock().held() == 0);
  // A failed write releases its range too.
  f.backend->defer = false;
  f.backend->fail_with = -EIO;
  a = run_cdb(f, cdb10(op::kWrite10, 0, 0, 2), DataDir::kOut, 1024, d);
  CHECK_SENSE(a, 0x3, 0x0C, 0x00);
  CHECK(f.lu->range_lock().held() == 0);
}

}  // namespace
}  // namespace zuma::scsi
