// UNMAP, WRITE SAME (10/16/32), GET LBA STATUS (thin.cc) through execute() on the fake backend.
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
using test::cdb16;
using test::Fixture;
using test::pattern;
using test::run_cdb;

LuParams thin_params(uint64_t blocks = 2048, uint32_t bs = 512) {
  LuParams p = test::default_params(blocks, bs);
  p.thin = true;
  return p;
}

// A thin LU whose fake backend deallocates (kDiscard) and tracks holes.
struct Thin : Fixture {
  explicit Thin(LuParams p = thin_params()) : Fixture(std::move(p)) {
    backend->discard = true;
    backend->zeroes = true;
    backend->track_holes = true;
    std::memset(backend->data.data(), 0xAB, backend->data.size());
  }
};

Bytes medium(const Fixture& f, uint64_t lba, uint64_t blocks) {
  const size_t bs = f.lu->block_size();
  return Bytes(f.backend->data.begin() + lba * bs, f.backend->data.begin() + (lba + blocks) * bs);
}

Bytes unmap_cdb(uint16_t plen, uint8_t byte1 = 0) {
  return {
      op::kUnmap, byte1, 0, 0, 0, 0, 0, static_cast<uint8_t>(plen >> 8), static_cast<uint8_t>(plen),
      0};
}

// UNMAP parameter data: header, then one 16-byte descriptor per range.
Bytes unmap_list(std::initializer_list<std::pair<uint64_t, uint32_t>> ranges) {
  Bytes p(8 + 16 * ranges.size(), 0);
  put_be16(p.data(), static_cast<uint16_t>(p.size() - 2));
  put_be16(p.data() + 2, static_cast<uint16_t>(p.size() - 8));
  size_t i = 8;
  for (const auto& [lba, n] : ranges) {
    put_be64(p.data() + i, lba);
    put_be32(p.data() + i + 8, n);
    i += 16;
  }
  return p;
}

std::unique_ptr<test::TestTask> unmap(Fixture& f, const Bytes& list, uint8_t byte1 = 0) {
  return run_cdb(f, unmap_cdb(static_cast<uint16_t>(list.size()), byte1), DataDir::kOut,
                 static_cast<uint32_t>(list.size()), list);
}

struct Call {
  IoOp op;
  uint64_t offset;
  uint64_t length;
};
std::vector<Call> calls(const Fixture& f) {
  std::vector<Call> v;
  for (const auto& c : f.backend->calls) v.push_back({c.op, c.offset, c.length});
  return v;
}
bool operator==(const Call& a, const Call& b) {
  return a.op == b.op && a.offset == b.offset && a.length == b.length;
}

TEST_CASE("UNMAP: aligned granules are discarded, the edges written with zeros") {
  Thin f;
  auto t = unmap(f, unmap_list({{10, 20}}));  // [10, 30): 4 KiB granules of 8 blocks
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 24);
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWrite, 10 * 512, 6 * 512},
                                      {IoOp::kDiscard, 16 * 512, 8 * 512},
                                      {IoOp::kWrite, 24 * 512, 6 * 512}});
  CHECK(medium(f, 10, 20) == Bytes(20 * 512, 0));
  CHECK(medium(f, 9, 1) == Bytes(512, 0xAB));
  CHECK(medium(f, 30, 1) == Bytes(512, 0xAB));
  CHECK_FALSE(f.backend->calls[0].fua);
  CHECK(f.lu->range_lock().held() == 0);

  // Overlapping, unordered, adjacent descriptors are merged: one request for [32, 48).
  f.backend->calls.clear();
  t = unmap(f, unmap_list({{40, 8}, {32, 8}, {36, 4}, {100, 0}}));
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kDiscard, 32 * 512, 16 * 512}});

  // A single block inside a granule: only zeros written.
  f.backend->calls.clear();
  t = unmap(f, unmap_list({{3, 1}}));
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWrite, 3 * 512, 512}});
  CHECK(medium(f, 3, 1) == Bytes(512, 0));

  // 4 KiB blocks: every block is a whole granule.
  Thin f4k(thin_params(256, 4096));
  t = unmap(f4k, unmap_list({{1, 3}}));
  REQUIRE(t->good());
  CHECK(calls(f4k) == std::vector<Call>{{IoOp::kDiscard, 4096, 3 * 4096}});
}

TEST_CASE("UNMAP: parameter list checks") {
  Thin f;
  // No parameter data, or no descriptors: nothing to do.
  auto t = run_cdb(f, unmap_cdb(0), DataDir::kNone, 0);
  CHECK(t->good());
  t = unmap(f, unmap_list({}));
  CHECK(t->good());
  t = unmap(f, unmap_list({{0, 0}, {2048, 0}}));  // zero blocks, up to the capacity
  CHECK(t->good());
  CHECK(f.backend->calls.empty());
  // Header incomplete: PARAMETER LIST LENGTH ERROR.
  t = run_cdb(f, unmap_cdb(6), DataDir::kOut, 6, Bytes(6, 0));
  CHECK_SENSE(t, 0x5, 0x1A, 0x00);
  // Less Data-Out than the PARAMETER LIST LENGTH.
  const Bytes one = unmap_list({{0, 8}});
  t = run_cdb(f, unmap_cdb(24), DataDir::kOut, 16, test::slice(one, 0, 16));
  CHECK_SENSE(t, 0x5, 0x0E, 0x03);
  // A trailing partial descriptor is ignored; so is what the BLOCK DESCRIPTOR DATA LENGTH
  // leaves out.
  Bytes partial = unmap_list({{0, 8}});
  partial.resize(8 + 16 + 10, 0xFF);
  put_be16(partial.data() + 2, 26);
  t = unmap(f, partial);
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kDiscard, 0, 4096}});
  f.backend->calls.clear();
  Bytes two = unmap_list({{0, 8}, {100, 8}});
  put_be16(two.data() + 2, 16);
  t = unmap(f, two);
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kDiscard, 0, 4096}});
  f.backend->calls.clear();
  // Past the capacity: LBA OUT OF RANGE (nothing deallocated, even the good descriptor).
  t = unmap(f, unmap_list({{0, 8}, {2047, 2}}));
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = unmap(f, unmap_list({{~uint64_t{0}, 1}}));
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  CHECK(f.backend->calls.empty());
  // ANCHOR with ANC_SUP=0; reserved CDB bits.
  t = unmap(f, one, 0x01);
  CHECK_INVALID_CDB(t, 1, 0);
  t = unmap(f, one, 0x02);
  CHECK_INVALID_CDB(t, 1, 1);
  CHECK(f.backend->calls.empty());
}

TEST_CASE("UNMAP: descriptor and block count limits (INVALID FIELD IN PARAMETER LIST)") {
  Thin f(thin_params(4u << 20));  // 4 Mi blocks
  // 257 descriptors: the field pointer names UNMAP BLOCK DESCRIPTOR DATA LENGTH (C/D=0).
  Bytes many(8 + 16 * 257, 0);
  put_be16(many.data(), static_cast<uint16_t>(many.size() - 2));
  put_be16(many.data() + 2, 16 * 257);
  auto t = unmap(f, many);
  CHECK(t->sense() == Bytes{0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0, 0, 0x8F, 0, 2});
  // More than MAXIMUM UNMAP LBA COUNT (2^20 blocks of 512) in all: the pointer names the
  // NUMBER OF LOGICAL BLOCKS of the descriptor that goes over (byte 8 + 16 + 8 = 32).
  t = unmap(f, unmap_list({{0, 600000}, {1000000, 600000}}));
  CHECK(t->sense() == Bytes{0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0, 0, 0x8F, 0, 32});
  t = unmap(f, unmap_list({{0, 1u << 20}}));  // exactly the limit
  CHECK(t->good());
  // 256 descriptors are fine.
  Bytes max(8 + 16 * 256, 0);
  put_be16(max.data(), static_cast<uint16_t>(max.size() - 2));
  put_be16(max.data() + 2, 16 * 256);
  for (size_t i = 0; i < 256; ++i) {
    put_be64(max.data() + 8 + 16 * i, 16 * i);
    put_be32(max.data() + 8 + 16 * i + 8, 8);
  }
  f.backend->calls.clear();
  t = unmap(f, max);
  REQUIRE(t->good());
  CHECK(f.backend->calls.size() == 256);  // not adjacent: one request each
}

TEST_CASE("UNMAP: a fully provisioned LU has none") {
  Fixture f;
  auto t = unmap(f, unmap_list({{0, 8}}));
  CHECK(t->sense() == Bytes{0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0});
  CHECK(f.backend->calls.empty());
}

TEST_CASE("UNMAP: backends that cannot deallocate still leave zeros") {
  // No kDiscard: kWriteZeroes.
  Thin z;
  z.backend->discard = false;
  auto t = unmap(z, unmap_list({{16, 16}}));
  REQUIRE(t->good());
  CHECK(calls(z) == std::vector<Call>{{IoOp::kWriteZeroes, 16 * 512, 16 * 512}});
  // Neither: zeros written through a buffer.
  Thin w;
  w.backend->discard = false;
  w.backend->zeroes = false;
  t = unmap(w, unmap_list({{16, 16}}));
  REQUIRE(t->good());
  CHECK(calls(w) == std::vector<Call>{{IoOp::kWrite, 16 * 512, 16 * 512}});
  CHECK(medium(w, 16, 16) == Bytes(16 * 512, 0));
  // kDiscard refused for this range (-EOPNOTSUPP): the next method, same range.
  Thin r;
  r.backend->fail_with = -EOPNOTSUPP;
  r.backend->fail_op = IoOp::kDiscard;
  t = unmap(r, unmap_list({{16, 16}}));
  REQUIRE(t->good());
  CHECK(calls(r) == std::vector<Call>{{IoOp::kDiscard, 16 * 512, 16 * 512},
                                      {IoOp::kWriteZeroes, 16 * 512, 16 * 512}});
  CHECK(medium(r, 16, 16) == Bytes(16 * 512, 0));
  // -EINVAL (a block device whose own block is larger) and no write-zeroes: zeros written.
  Thin e;
  e.backend->zeroes = false;
  e.backend->fail_with = -EINVAL;
  e.backend->fail_op = IoOp::kDiscard;
  t = unmap(e, unmap_list({{16, 16}}));
  REQUIRE(t->good());
  CHECK(calls(e) == std::vector<Call>{{IoOp::kDiscard, 16 * 512, 16 * 512},
                                      {IoOp::kWrite, 16 * 512, 16 * 512}});
  CHECK(medium(e, 16, 16) == Bytes(16 * 512, 0));
}

TEST_CASE("UNMAP: errors and write-through") {
  Thin f;
  f.backend->fail_with = -EIO;
  f.backend->fail_op = IoOp::kDiscard;
  auto t = unmap(f, unmap_list({{0x48, 8}}));
  // WRITE ERROR, INFORMATION = the first LBA of the command.
  CHECK(t->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 0x48, 10, 0, 0, 0, 0, 0x0C, 0, 0, 0, 0, 0});
  CHECK(f.lu->range_lock().held() == 0);
  f.backend->fail_with = -ENOSPC;
  t = unmap(f, unmap_list({{0x48, 8}}));
  CHECK_SENSE(t, 0x7, 0x27, 0x07);
  f.backend->fail_with = 0;

  LuParams p = thin_params();
  p.write_cache = false;  // WCE=0: made durable before GOOD
  Thin wt(p);
  t = unmap(wt, unmap_list({{8, 8}}));
  REQUIRE(t->good());
  CHECK(calls(wt) == std::vector<Call>{{IoOp::kDiscard, 4096, 4096}, {IoOp::kFlush, 0, 0}});
}

TEST_CASE("UNMAP waits for an exclusive holder of its blocks") {
  Thin f;
  f.backend->defer = true;
  // A COMPARE AND WRITE of block 20 in flight (its read deferred).
  Bytes caw = cdb16(op::kCompareAndWrite, 0, 20, 0);
  caw[13] = 1;
  auto c = run_cdb(f, caw, DataDir::kOut, 1024, Bytes(1024, 0xAB));
  REQUIRE(f.backend->deferred.size() == 1);
  auto t = unmap(f, unmap_list({{16, 8}}));
  CHECK(f.backend->deferred.size() == 1);  // waiting
  f.backend->complete_deferred();          // CAW read: matches, writes
  REQUIRE(f.backend->deferred.size() == 1);
  f.backend->complete_deferred();  // CAW write: done; UNMAP starts
  CHECK(c->good());
  REQUIRE(f.backend->deferred.size() == 1);
  f.backend->complete_deferred();
  CHECK(t->good());
  CHECK(medium(f, 16, 8) == Bytes(8 * 512, 0));
}

// --- WRITE SAME ---

Bytes ws10(uint8_t flags, uint32_t lba, uint16_t n) {
  return cdb10(op::kWriteSame10, flags, lba, n);
}
Bytes ws16(uint8_t flags, uint64_t lba, uint32_t n) {
  return cdb16(op::kWriteSame16, flags, lba, n);
}

// WRITE SAME (32): variable length CDB, flags in byte 10 (SBC-4).
Bytes ws32(uint8_t flags, uint64_t lba, uint32_t n) {
  Bytes c(32, 0);
  c[0] = op::kVariableLength;
  c[7] = 0x18;
  c[8] = 0x00;
  c[9] = 0x0D;
  c[10] = flags;
  for (int i = 0; i < 8; ++i) c[12 + i] = static_cast<uint8_t>(lba >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) c[28 + i] = static_cast<uint8_t>(n >> (24 - 8 * i));
  return c;
}

TEST_CASE("WRITE SAME (32): pattern, NDOB, UNMAP, field pointers in byte 10") {
  Thin f;
  const Bytes block = pattern(512, 53);
  auto t = run_cdb(f, ws32(0, 300, 5), DataDir::kOut, 512, block);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 512);
  for (uint64_t lba = 300; lba < 305; ++lba) CHECK(medium(f, lba, 1) == block);
  CHECK(medium(f, 305, 1) == Bytes(512, 0xAB));
  // NDOB: zeros without Data-Out.
  f.backend->calls.clear();
  t = run_cdb(f, ws32(0x01, 64, 8), DataDir::kNone, 0);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 0);
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWriteZeroes, 64 * 512, 8 * 512}});
  // UNMAP: deallocated.
  f.backend->calls.clear();
  t = run_cdb(f, ws32(0x08, 200, 8), DataDir::kOut, 512, Bytes(512, 0));
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kDiscard, 200 * 512, 8 * 512}});
  // WRPROTECT, the range, NUMBER OF LOGICAL BLOCKS beyond the maximum: pointers into the
  // 32-byte CDB.
  f.backend->calls.clear();
  t = run_cdb(f, ws32(0x20, 0, 1), DataDir::kOut, 512, block);
  CHECK_INVALID_CDB(t, 10, 7);
  t = run_cdb(f, ws32(0, 2047, 2), DataDir::kOut, 512, block);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  CHECK(f.backend->calls.empty());
  // A fully provisioned LU: no UNMAP bit.
  Fixture full;
  t = run_cdb(full, ws32(0x08, 0, 1), DataDir::kOut, 512, block);
  CHECK_INVALID_CDB(t, 10, 3);
  t = run_cdb(full, ws32(0, 0, 1), DataDir::kOut, 512, block);
  CHECK(t->good());
}

TEST_CASE("WRITE SAME: a pattern is written to every block") {
  Fixture f(test::default_params(8192));
  const Bytes block = pattern(512, 50);
  auto t = run_cdb(f, ws10(0, 100, 20), DataDir::kOut, 512, block);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 512);
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWrite, 100 * 512, 20 * 512}});
  for (uint64_t lba = 100; lba < 120; ++lba) CHECK(medium(f, lba, 1) == block);
  CHECK(medium(f, 120, 1) == Bytes(512, 0));
  // Through a 1 MiB buffer: 5000 blocks are three writes.
  f.backend->calls.clear();
  t = run_cdb(f, ws16(0, 1000, 5000), DataDir::kOut, 512, block);
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWrite, 1000 * 512, 2048 * 512},
                                      {IoOp::kWrite, 3048 * 512, 2048 * 512},
                                      {IoOp::kWrite, 5096 * 512, 904 * 512}});
  CHECK(medium(f, 5999, 1) == block);
  CHECK(medium(f, 6000, 1) == Bytes(512, 0));
  CHECK(f.lu->range_lock().held() == 0);
}

TEST_CASE("WRITE SAME: zeros, NDOB, UNMAP") {
  Thin f;
  const Bytes zero(512, 0);
  // Zeros: one write-zeroes request.
  auto t = run_cdb(f, ws10(0, 8, 16), DataDir::kOut, 512, zero);
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWriteZeroes, 8 * 512, 16 * 512}});
  // NDOB (16 only): no Data-Out, zeros.
  f.backend->calls.clear();
  t = run_cdb(f, ws16(0x01, 64, 8), DataDir::kNone, 0);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 0);
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWriteZeroes, 64 * 512, 8 * 512}});
  // UNMAP: deallocated (whatever the block holds: SBC-4 lets a thin LU deallocate), edges
  // written with zeros.
  f.backend->calls.clear();
  t = run_cdb(f, ws16(0x08, 4, 12), DataDir::kOut, 512, Bytes(512, 0xFF));
  REQUIRE(t->good());
  CHECK(calls(f) ==
        std::vector<Call>{{IoOp::kWrite, 4 * 512, 4 * 512}, {IoOp::kDiscard, 8 * 512, 8 * 512}});
  CHECK(medium(f, 4, 12) == Bytes(12 * 512, 0));
  f.backend->calls.clear();
  t = run_cdb(f, ws10(0x08, 200, 8), DataDir::kOut, 512, zero);
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kDiscard, 200 * 512, 8 * 512}});
  // A backend without write-zeroes gets a zeroed buffer.
  Fixture plain;
  t = run_cdb(plain, ws10(0, 8, 16), DataDir::kOut, 512, zero);
  REQUIRE(t->good());
  CHECK(calls(plain) == std::vector<Call>{{IoOp::kWrite, 8 * 512, 16 * 512}});
}

TEST_CASE("WRITE SAME: NUMBER OF BLOCKS 0 writes to the end (WSNZ=0); MAXIMUM WRITE SAME LENGTH") {
  Fixture f;  // 2048 blocks
  const Bytes block = pattern(512, 51);
  auto t = run_cdb(f, ws10(0, 2000, 0), DataDir::kOut, 512, block);
  REQUIRE(t->good());
  CHECK(calls(f) == std::vector<Call>{{IoOp::kWrite, 2000 * 512, 48 * 512}});
  f.backend->calls.clear();
  t = run_cdb(f, ws10(0, 2048, 0), DataDir::kOut, 512, block);  // nothing left
  CHECK(t->good());
  CHECK(f.backend->calls.empty());
  t = run_cdb(f, ws10(0, 2049, 0), DataDir::kOut, 512, block);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);

  Fixture big(test::default_params(0x20000), 0, 1 << 20);      // 131072 blocks, 1 MiB stored
  t = run_cdb(big, ws10(0, 0, 0), DataDir::kOut, 512, block);  // 131072 > 65535
  CHECK_INVALID_CDB(t, 7, 7);
  t = run_cdb(big, ws16(0, 0, 0x10000), DataDir::kOut, 512, block);
  CHECK_INVALID_CDB(t, 10, 7);
  t = run_cdb(big, ws10(0, 0x20000 - 0x10000, 0), DataDir::kOut, 512, block);
  CHECK_INVALID_CDB(t, 7, 7);
  CHECK(big.backend->calls.empty());
}

TEST_CASE("WRITE SAME: field and Data-Out checks") {
  Thin f;
  const Bytes block = pattern(512, 52);
  auto t = run_cdb(f, ws10(0x10, 0, 1), DataDir::kOut, 512, block);  // ANCHOR, UNMAP=0
  CHECK_INVALID_CDB(t, 1, 4);
  t = run_cdb(f, ws16(0x18, 0, 1), DataDir::kOut, 512, block);  // ANCHOR with ANC_SUP=0
  CHECK_INVALID_CDB(t, 1, 4);
  t = run_cdb(f, ws10(0x40, 0, 1), DataDir::kOut, 512, block);  // WRPROTECT
  CHECK_INVALID_CDB(t, 1, 7);
  t = run_cdb(f, ws10(0x01, 0, 1), DataDir::kOut, 512, block);  // no NDOB in (10)
  CHECK_INVALID_CDB(t, 1, 0);
  t = run_cdb(f, ws16(0x02, 0, 1), DataDir::kOut, 512, block);  // reserved
  CHECK_INVALID_CDB(t, 1, 1);
  t = run_cdb(f, ws16(0, 2047, 2), DataDir::kOut, 512, block);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, ws16(0, ~uint64_t{0}, 1), DataDir::kOut, 512, block);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  // Data-Out other than one block.
  t = run_cdb(f, ws10(0, 0, 1), DataDir::kOut, 256, Bytes(256, 1));
  CHECK_SENSE(t, 0x5, 0x0E, 0x03);
  t = run_cdb(f, ws10(0, 0, 1), DataDir::kOut, 1024, Bytes(1024, 1));
  CHECK_SENSE(t, 0x5, 0x24, 0x00);
  CHECK(t->task.sense[15] == 0);  // no field pointer: no one field is wrong
  CHECK(f.backend->calls.empty());

  Fixture full;  // UNMAP is for thin LUs only
  t = run_cdb(full, ws16(0x08, 0, 1), DataDir::kOut, 512, block);
  CHECK_INVALID_CDB(t, 1, 3);
}

TEST_CASE("WRITE SAME: errors, write-through, range lock") {
  Fixture f(test::default_params(8192));
  const Bytes block = pattern(512, 53);
  f.backend->fail_with = -EIO;
  auto t = run_cdb(f, ws16(0, 0x1234, 3000), DataDir::kOut, 512, block);
  CHECK(t->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x0C, 0, 0, 0, 0, 0});
  CHECK(f.backend->calls.size() == 1);  // stopped at the first failure
  CHECK(f.lu->range_lock().held() == 0);
  f.backend->fail_with = 0;

  LuParams p = test::default_params();
  p.write_cache = false;
  Fixture wt(p);
  t = run_cdb(wt, ws10(0, 8, 2), DataDir::kOut, 512, block);
  REQUIRE(t->good());
  CHECK(calls(wt) == std::vector<Call>{{IoOp::kWrite, 8 * 512, 1024}, {IoOp::kFlush, 0, 0}});

  // Chunks complete later: the range stays held until the last one.
  f.backend->defer = true;
  f.backend->calls.clear();
  t = run_cdb(f, ws16(0, 0, 3000), DataDir::kOut, 512, block);
  REQUIRE(f.backend->deferred.size() == 1);
  CHECK(f.lu->range_lock().held() == 1);
  f.backend->complete_deferred();
  REQUIRE(f.backend->deferred.size() == 1);
  CHECK(t->completions == 0);
  f.backend->complete_deferred();
  CHECK(t->good());
  CHECK(f.lu->range_lock().held() == 0);
}

// --- GET LBA STATUS ---

Bytes gls(uint64_t lba, uint32_t alloc) {
  Bytes c = cdb16(op::kServiceActionIn16, 0x12, lba, alloc);
  return c;
}

Bytes descriptor(uint64_t lba, uint32_t n, uint8_t status) {
  Bytes d(16, 0);
  put_be64(d.data(), lba);
  put_be32(d.data() + 8, n);
  d[12] = status;
  return d;
}

Bytes header(uint32_t descriptors) {
  Bytes h(8, 0);
  put_be32(h.data(), 4 + 16 * descriptors);
  return h;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST_CASE("GET LBA STATUS: a fully provisioned LU is mapped throughout") {
  Fixture f;
  auto t = run_cdb(f, gls(0, 24), DataDir::kIn, 24);
  REQUIRE(t->good());
  CHECK(t->data_in() == concat({header(1), descriptor(0, 2048, 0)}));
  t = run_cdb(f, gls(2047, 1024), DataDir::kIn, 1024);
  REQUIRE(t->good());
  CHECK(t->data_in() == concat({header(1), descriptor(2047, 1, 0)}));
  t = run_cdb(f, gls(2048, 24), DataDir::kIn, 24);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, gls(~uint64_t{0}, 24), DataDir::kIn, 24);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  // Truncated by the ALLOCATION LENGTH; PARAMETER DATA LENGTH still says 20.
  t = run_cdb(f, gls(0, 10), DataDir::kIn, 10);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0, 0, 20, 0, 0, 0, 0, 0, 0});
  t = run_cdb(f, gls(0, 0), DataDir::kIn, 0);
  CHECK(t->good());
  CHECK(t->task.transfer_len == 0);
  // Byte 14 is reserved here.
  Bytes c = gls(0, 24);
  c[14] = 1;
  t = run_cdb(f, c, DataDir::kIn, 24);
  CHECK_INVALID_CDB(t, 14, 0);
}

TEST_CASE("GET LBA STATUS: a thin LU reports what the backend deallocated") {
  Thin f;
  REQUIRE(unmap(f, unmap_list({{16, 8}, {40, 16}}))->good());
  auto t = run_cdb(f, gls(0, 8 + 16 * 8), DataDir::kIn, 8 + 16 * 8);
  REQUIRE(t->good());
  CHECK(t->data_in() ==
        concat({header(5), descriptor(0, 16, 0), descriptor(16, 8, 1), descriptor(24, 16, 0),
                descriptor(40, 16, 1), descriptor(56, 2048 - 56, 0)}));
  // Room for two descriptors: the first two runs.
  t = run_cdb(f, gls(0, 8 + 16 * 2), DataDir::kIn, 8 + 16 * 2);
  REQUIRE(t->good());
  CHECK(t->data_in() == concat({header(2), descriptor(0, 16, 0), descriptor(16, 8, 1)}));
  // From the middle of a hole.
  t = run_cdb(f, gls(19, 24), DataDir::kIn, 24);
  REQUIRE(t->good());
  CHECK(t->data_in() == concat({header(1), descriptor(19, 5, 1)}));
  // A write maps blocks again.
  REQUIRE(run_cdb(f, cdb10(op::kWrite10, 0, 44, 1), DataDir::kOut, 512, Bytes(512, 1))->good());
  t = run_cdb(f, gls(40, 8 + 16 * 3), DataDir::kIn, 8 + 16 * 3);
  REQUIRE(t->good());
  CHECK(t->data_in() ==
        concat({header(3), descriptor(40, 4, 1), descriptor(44, 1, 0), descriptor(45, 11, 1)}));
  // The backend cannot tell: MEDIUM ERROR with the starting LBA.
  f.backend->extent_error = -EIO;
  t = run_cdb(f, gls(7, 24), DataDir::kIn, 24);
  CHECK(t->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 7, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0});
}

TEST_CASE("GET LBA STATUS: a block only partly deallocated counts as mapped") {
  Thin f(thin_params(64, 4096));  // holes tracked per 512 bytes, blocks of 4096
  f.backend->holes.assign(f.backend->data.size() / 512, false);
  f.backend->holes[1] = true;      // inside block 0
  f.backend->holes[8 + 0] = true;  // the first half of block 1
  f.backend->holes[8 + 1] = true;
  for (size_t u = 16; u < 32; ++u) f.backend->holes[u] = true;  // blocks 2 and 3, whole
  auto t = run_cdb(f, gls(0, 8 + 16 * 4), DataDir::kIn, 8 + 16 * 4);
  REQUIRE(t->good());
  CHECK(t->data_in() ==
        concat({header(3), descriptor(0, 2, 0), descriptor(2, 2, 1), descriptor(4, 60, 0)}));
}

}  // namespace
}  // namespace zuma::scsi
