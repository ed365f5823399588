// COMPARE AND WRITE and ORWRITE (compare_write.cc) through execute() on the fake backend,
// including their atomicity with respect to other writers (the range lock).
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

Bytes caw(uint64_t lba, uint8_t blocks, uint8_t flags = 0, uint8_t group = 0) {
  Bytes c = cdb16(op::kCompareAndWrite, flags, lba, 0);
  c[13] = blocks;
  c[14] = group;
  return c;
}

Bytes join(const Bytes& a, const Bytes& b) {
  Bytes out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

Bytes medium(const Fixture& f, uint64_t lba, uint64_t blocks) {
  const size_t bs = f.lu->block_size();
  return Bytes(f.backend->data.begin() + lba * bs, f.backend->data.begin() + (lba + blocks) * bs);
}

void put_medium(Fixture& f, uint64_t lba, const Bytes& b) {
  std::memcpy(f.backend->data.data() + lba * f.lu->block_size(), b.data(), b.size());
}

TEST_CASE("COMPARE AND WRITE: equal data is replaced") {
  Fixture f;
  const Bytes a = pattern(1024, 60), b = pattern(1024, 61);
  put_medium(f, 4, a);
  auto t = run_cdb(f, caw(4, 2, 0, 5), DataDir::kOut, 2048, join(a, b));
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 2048);
  CHECK(medium(f, 4, 2) == b);
  REQUIRE(f.backend->calls.size() == 2);
  CHECK(f.backend->calls[0].op == IoOp::kRead);
  CHECK(f.backend->calls[0].offset == 4 * 512);
  CHECK(f.backend->calls[0].length == 1024);
  CHECK(f.backend->calls[1].op == IoOp::kWrite);
  CHECK(f.backend->calls[1].offset == 4 * 512);
  CHECK(f.backend->calls[1].length == 1024);
  CHECK_FALSE(f.backend->calls[1].fua);
  CHECK(f.lu->range_lock().held() == 0);
  // FUA reaches the write; DPO and the obsolete FUA_NV are accepted.
  t = run_cdb(f, caw(4, 2, 0x08), DataDir::kOut, 2048, join(b, a));
  REQUIRE(t->good());
  CHECK(f.backend->calls.back().fua);
  t = run_cdb(f, caw(4, 2, 0x12), DataDir::kOut, 2048, join(a, b));
  REQUIRE(t->good());
  CHECK_FALSE(f.backend->calls.back().fua);
  // 255 blocks, the most the CDB can say; at the last LBA.
  const Bytes big = pattern(255 * 512, 62);
  put_medium(f, 2048 - 255, big);
  t = run_cdb(f, caw(2048 - 255, 255), DataDir::kOut, 2 * 255 * 512,
              join(big, Bytes(255 * 512, 9)));
  REQUIRE(t->good());
  CHECK(medium(f, 2048 - 255, 255) == Bytes(255 * 512, 9));

  LuParams p = test::default_params();
  p.write_cache = false;  // WCE=0: the write is durable before GOOD
  Fixture wt(p);
  t = run_cdb(wt, caw(0, 1), DataDir::kOut, 1024, Bytes(1024, 0));
  REQUIRE(t->good());
  CHECK(wt.backend->calls.back().fua);
}

TEST_CASE("COMPARE AND WRITE: a miscompare writes nothing and says where") {
  Fixture f;
  const Bytes a = pattern(1024, 63);
  put_medium(f, 4, a);
  Bytes verify = a;
  verify[700] ^= 0x20;
  auto t = run_cdb(f, caw(4, 2), DataDir::kOut, 2048, join(verify, Bytes(1024, 1)));
  // MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION, INFORMATION = 700 (2BCh).
  CHECK(t->sense() == Bytes{0xF0, 0, 0x0E, 0, 0, 0x02, 0xBC, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0});
  CHECK(medium(f, 4, 2) == a);
  CHECK(f.backend->calls.size() == 1);  // the read only
  CHECK(f.lu->range_lock().held() == 0);
  // First byte, last byte.
  verify = a;
  verify[0] ^= 1;
  t = run_cdb(f, caw(4, 2), DataDir::kOut, 2048, join(verify, Bytes(1024, 1)));
  CHECK(t->sense() == Bytes{0xF0, 0, 0x0E, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0});
  verify = a;
  verify[1023] ^= 1;
  t = run_cdb(f, caw(4, 2), DataDir::kOut, 2048, join(verify, Bytes(1024, 1)));
  CHECK(t->sense() == Bytes{0xF0, 0, 0x0E, 0, 0, 0x03, 0xFF, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0});
  // Descriptor format (D_SENSE): an information descriptor.
  f.lu->set_mode_params({true, true}, f.nexus.id);  // no MODE PARAMETERS CHANGED for us
  t = run_cdb(f, caw(4, 2), DataDir::kOut, 2048, join(verify, Bytes(1024, 1)));
  CHECK(t->sense() == Bytes{0x72, 0x0E, 0x1D, 0x00, 0, 0, 0, 12, 0x00, 0x0A,
                            0x80, 0,    0,    0,    0, 0, 0, 0,  0x03, 0xFF});
}

TEST_CASE("COMPARE AND WRITE: field, length and Data-Out checks") {
  Fixture f;  // 2048 blocks
  const Bytes two(1024, 0);
  // NUMBER OF LOGICAL BLOCKS 0: nothing to do.
  auto t = run_cdb(f, caw(0, 0), DataDir::kNone, 0);
  CHECK(t->good());
  CHECK(t->task.transfer_len == 0);
  // 0 with Data-Out (libiscsi sends 256 blocks' worth with the field wrapped to 0).
  t = run_cdb(f, caw(0, 0), DataDir::kOut, 512, Bytes(512, 0));
  CHECK_INVALID_CDB(t, 13, 7);
  // More Data-Out than the two instances: the field does not describe it.
  t = run_cdb(f, caw(0, 1), DataDir::kOut, 2048, Bytes(2048, 0));
  CHECK_INVALID_CDB(t, 13, 7);
  // Less: nothing can be compared.
  t = run_cdb(f, caw(0, 3), DataDir::kOut, 2048, Bytes(2048, 0));
  CHECK_SENSE(t, 0x5, 0x0E, 0x03);
  t = run_cdb(f, caw(2047, 2), DataDir::kOut, 2048, Bytes(2048, 0));
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, caw(~uint64_t{0}, 1), DataDir::kOut, 1024, two);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, caw(0, 1, 0x20), DataDir::kOut, 1024, two);  // WRPROTECT
  CHECK_INVALID_CDB(t, 1, 7);
  t = run_cdb(f, caw(0, 1, 0x04), DataDir::kOut, 1024, two);  // reserved
  CHECK_INVALID_CDB(t, 1, 2);
  Bytes c = caw(0, 1);
  c[11] = 1;  // reserved byte
  t = run_cdb(f, c, DataDir::kOut, 1024, two);
  CHECK_INVALID_CDB(t, 11, 0);
  CHECK(f.backend->calls.empty());
}

TEST_CASE("COMPARE AND WRITE: backend errors") {
  Fixture f;
  f.backend->fail_with = -EIO;
  f.backend->fail_op = IoOp::kRead;
  auto t = run_cdb(f, caw(0x21, 1), DataDir::kOut, 1024, Bytes(1024, 0));
  CHECK(t->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 0x21, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0});
  f.backend->fail_op = IoOp::kWrite;
  t = run_cdb(f, caw(0x21, 1), DataDir::kOut, 1024, Bytes(1024, 0));
  CHECK(t->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 0x21, 10, 0, 0, 0, 0, 0x0C, 0, 0, 0, 0, 0});
  f.backend->fail_with = -ENOSPC;
  t = run_cdb(f, caw(0x21, 1), DataDir::kOut, 1024, Bytes(1024, 0));
  CHECK_SENSE(t, 0x7, 0x27, 0x07);
  CHECK(f.lu->range_lock().held() == 0);
}

TEST_CASE("COMPARE AND WRITE is atomic: overlapping writers wait, others do not") {
  Fixture f;
  f.backend->defer = true;
  const Bytes zero(512, 0), one(512, 1), two(512, 2);
  // CAW 0 -> 1 on block 10: its read is in flight.
  auto c1 = run_cdb(f, caw(10, 1), DataDir::kOut, 1024, join(zero, one));
  REQUIRE(f.backend->deferred.size() == 1);
  // A WRITE of block 10 and a second CAW (1 -> 2) wait; a WRITE of block 11 and a READ of
  // block 10 go ahead.
  auto w = run_cdb(f, cdb10(op::kWrite10, 0, 10, 1), DataDir::kOut, 512, Bytes(512, 7));
  auto c2 = run_cdb(f, caw(10, 1), DataDir::kOut, 1024, join(one, two));
  auto w11 = run_cdb(f, cdb10(op::kWrite10, 0, 11, 1), DataDir::kOut, 512, Bytes(512, 8));
  auto r = run_cdb(f, cdb10(op::kRead10, 0, 10, 1), DataDir::kIn, 512);
  CHECK(f.backend->deferred.size() == 3);
  CHECK(f.lu->range_lock().waiting() == 2);
  f.backend->complete_deferred();  // c1 read (matches: c1 writes), w11, r
  CHECK(w11->good());
  CHECK(r->good());
  CHECK(r->data_in() == zero);
  REQUIRE(f.backend->deferred.size() == 1);  // c1's write
  CHECK(f.backend->calls.back().op == IoOp::kWrite);
  f.backend->complete_deferred();  // c1 done: the WRITE (queued first) goes
  CHECK(c1->good());
  CHECK(w->completions == 0);
  CHECK(c2->completions == 0);
  REQUIRE(f.backend->deferred.size() == 1);
  f.backend->complete_deferred();  // the WRITE done: c2 reads
  CHECK(w->good());
  REQUIRE(f.backend->deferred.size() == 1);
  f.backend->complete_deferred();
  // c2 compared with what the WRITE left (7s), not with c1's 1s: MISCOMPARE at byte 0.
  CHECK_SENSE(c2, 0xE, 0x1D, 0x00);
  CHECK(medium(f, 10, 1) == Bytes(512, 7));
  CHECK(f.lu->range_lock().held() == 0);
  CHECK(f.lu->range_lock().waiting() == 0);
}

TEST_CASE("ORWRITE (16): the medium ORed with the Data-Out") {
  Fixture f;
  put_medium(f, 8, Bytes(1024, 0x0F));
  Bytes data(1024, 0xF0);
  data[5] = 0x01;
  auto t = run_cdb(f, cdb16(op::kOrWrite16, 0, 8, 2), DataDir::kOut, 1024, data);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 1024);
  Bytes want(1024, 0xFF);
  want[5] = 0x0F;
  CHECK(medium(f, 8, 2) == want);
  REQUIRE(f.backend->calls.size() == 2);
  CHECK(f.backend->calls[0].op == IoOp::kRead);
  CHECK(f.backend->calls[1].op == IoOp::kWrite);
  CHECK_FALSE(f.backend->calls[1].fua);
  t = run_cdb(f, cdb16(op::kOrWrite16, 0x18, 8, 2), DataDir::kOut, 1024, data);  // DPO, FUA
  REQUIRE(t->good());
  CHECK(f.backend->calls.back().fua);
  CHECK(f.lu->range_lock().held() == 0);

  // Zero blocks, range, ORPROTECT, transfer length limit.
  f.backend->calls.clear();
  t = run_cdb(f, cdb16(op::kOrWrite16, 0, 0, 0), DataDir::kNone, 0);
  CHECK(t->good());
  t = run_cdb(f, cdb16(op::kOrWrite16, 0, 2049, 0), DataDir::kNone, 0);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, cdb16(op::kOrWrite16, 0, 2047, 2), DataDir::kOut, 1024, data);
  CHECK_SENSE(t, 0x5, 0x21, 0x00);
  t = run_cdb(f, cdb16(op::kOrWrite16, 0x60, 0, 1), DataDir::kOut, 512, Bytes(512, 1));
  CHECK_INVALID_CDB(t, 1, 7);
  t = run_cdb(f, cdb16(op::kOrWrite16, 0, 0, 16385), DataDir::kOut, 0);
  CHECK_INVALID_CDB(t, 10, 7);
  // Short Data-Out: the whole blocks that arrived; a partial block is refused.
  t = run_cdb(f, cdb16(op::kOrWrite16, 0, 100, 2), DataDir::kOut, 512, Bytes(512, 0x80));
  REQUIRE(t->good());
  CHECK(f.backend->calls.back().length == 512);
  t = run_cdb(f, cdb16(op::kOrWrite16, 0, 100, 1), DataDir::kOut, 100, Bytes(100, 1));
  CHECK_SENSE(t, 0x5, 0x0E, 0x03);
  // Errors.
  f.backend->fail_with = -EIO;
  f.backend->fail_op = IoOp::kRead;
  t = run_cdb(f, cdb16(op::kOrWrite16, 0, 0x33, 1), DataDir::kOut, 512, Bytes(512, 1));
  CHECK(t->sense() == Bytes{0xF0, 0, 0x03, 0, 0, 0, 0x33, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0});
  CHECK(f.lu->range_lock().held() == 0);
}

TEST_CASE("REPORT SUPPORTED OPERATION CODES shows DPO/FUA for the SBC write commands") {
  Fixture f;
  auto one = [&](uint8_t opcode) {
    auto t = f.run({op::kMaintenanceIn, 0x0C, 0x01, opcode, 0, 0, 0, 0, 0x01, 0, 0, 0});
    REQUIRE(t->good());
    return t->data_in();
  };
  CHECK(one(op::kCompareAndWrite) == Bytes{0,    0x03, 0,    16,   0x89, 0xFA, 0xFF,
                                           0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                           0,    0,    0,    0xFF, 0x3F, 0x00});
  CHECK(one(op::kOrWrite16)[5] == 0xFA);
  CHECK(one(op::kWriteAtomic16)[5] == 0xF8);
  CHECK(one(op::kWriteAndVerify10)[5] == 0xF6);    // DPO, no FUA
  CHECK(one(op::kWriteSame16)[5] == 0xE1);         // no UNMAP on a fully provisioned LU, NDOB
  CHECK(one(op::kUnmap) == Bytes{0, 0x01, 0, 0});  // not supported there
}

}  // namespace
}  // namespace zuma::scsi
