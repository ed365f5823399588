// sbc_op.cc: CDB decoding, backend error mapping, comparison.
#include "scsi/sbc_op.hh"

#include <doctest/doctest.h>

#include <cerrno>

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi::sbc {
namespace {

using test::Bytes;

TEST_CASE("decode_block_cdb: every form") {
  struct Case {
    Bytes cdb;
    uint64_t lba;
    uint32_t blocks;
    uint16_t length_byte;
    uint8_t flags;
  };
  Bytes atomic = test::cdb16(op::kWriteAtomic16, 0x08, 0x0102030405060708ull, 0);
  atomic[10] = 0xAA;  // ATOMIC BOUNDARY, not the length
  atomic[12] = 0x01;
  atomic[13] = 0x02;
  Bytes caw = test::cdb16(op::kCompareAndWrite, 0x10, 77, 0);
  caw[13] = 9;
  const Case cases[] = {
      {{op::kRead6, 0xFF, 0x12, 0x34, 0x00, 0}, 0x1F1234, 256, 4, 0},
      {{op::kWrite6, 0x00, 0x00, 0x05, 0x07, 0}, 5, 7, 4, 0},
      {test::cdb10(op::kWriteAndVerify10, 0x02, 0x11223344, 0x5566), 0x11223344, 0x5566, 7, 0x02},
      {test::cdb10(op::kPreFetch10, 0x02, 9, 3), 9, 3, 7, 0x02},
      {test::cdb10(op::kWriteSame10, 0x08, 1, 2), 1, 2, 7, 0x08},
      {test::cdb12(op::kWriteAndVerify12, 0x02, 3, 0x01020304), 3, 0x01020304, 6, 0x02},
      {test::cdb16(op::kOrWrite16, 0x18, 1ull << 40, 5), 1ull << 40, 5, 10, 0x18},
      {test::cdb16(op::kWriteSame16, 0x09, 6, 0x10000), 6, 0x10000, 10, 0x09},
      {atomic, 0x0102030405060708ull, 0x0102, 12, 0x08},
      {caw, 77, 9, 13, 0x10},
  };
  for (const Case& c : cases) {
    CAPTURE(int(c.cdb[0]));
    const BlockCdb b = decode_block_cdb(c.cdb.data());
    CHECK(b.lba == c.lba);
    CHECK(b.blocks == c.blocks);
    CHECK(b.length_byte == c.length_byte);
    CHECK(b.flags == c.flags);
  }
}

TEST_CASE("io_error: backend errors to sense reasons") {
  CHECK(io_error(IoKind::kWrite, -ENOSPC, 5).reason == Reason::kSpaceAllocationFailed);
  CHECK(io_error(IoKind::kWrite, -EDQUOT, 5).reason == Reason::kSpaceAllocationFailed);
  CHECK(io_error(IoKind::kRead, -EAGAIN, 5).reason == Reason::kBusy);
  CHECK(io_error(IoKind::kRead, -EOPNOTSUPP, 5).reason == Reason::kInternalTargetFailure);
  CHECK(io_error(IoKind::kWrite, -EROFS, 5).reason == Reason::kWriteProtected);
  CHECK(io_error(IoKind::kWrite, -ENOTCONN, 5).reason == Reason::kNotReadyBecomingReady);
  const CmdResult r = io_error(IoKind::kRead, -EIO, 5);
  CHECK(r.reason == Reason::kUnrecoveredReadError);
  CHECK(r.has_info);
  CHECK(r.info == 5);
  CHECK(io_error(IoKind::kVerify, -EIO, 5).reason == Reason::kUnrecoveredReadError);
  CHECK(io_error(IoKind::kWrite, -EIO, 5).reason == Reason::kWriteError);
  CHECK(io_error(IoKind::kWrite, -EIO, 5).info == 5);
  CHECK(io_error(IoKind::kFlush, -EIO, 5).reason == Reason::kWriteError);
  CHECK_FALSE(io_error(IoKind::kFlush, -EIO, 5).has_info);
}

TEST_CASE("out_of_range and first_difference") {
  CHECK_FALSE(out_of_range(0, 10, 10));
  CHECK(out_of_range(1, 10, 10));
  CHECK_FALSE(out_of_range(10, 0, 10));
  CHECK(out_of_range(11, 0, 10));
  CHECK(out_of_range(~uint64_t{0}, 2, 10));
  const Bytes a(100, 1);
  Bytes b = a;
  CHECK(first_difference(a.data(), b.data(), 100) == 100);
  b[37] = 2;
  CHECK(first_difference(a.data(), b.data(), 100) == 37);
  CHECK(first_difference(a.data(), b.data(), 37) == 37);
}

}  // namespace
}  // namespace zuma::scsi::sbc
