#include "scsi/sbc_op.hh"

#include <cerrno>
#include <cstring>
#include <new>

#include "scsi/cdb.hh"
#include "scsi/logical_unit.hh"
#include "storage/io_context.hh"

namespace zuma::scsi::sbc {

BlockCdb decode_block_cdb(const uint8_t* cdb) {
  BlockCdb b;
  switch (cdb[0]) {
    case op::kRead6:
    case op::kWrite6:
      // SBC-4 READ (6) / WRITE (6): 21-bit LBA; TRANSFER LENGTH 0 means 256 blocks.
      b.lba = get_be24(cdb + 1) & 0x1FFFFF;
      b.blocks = cdb[4] == 0 ? 256 : cdb[4];
      b.length_byte = 4;
      break;
    case op::kRead10:
    case op::kWrite10:
    case op::kVerify10:
    case op::kWriteAndVerify10:
    case op::kSynchronizeCache10:
    case op::kPreFetch10:
    case op::kWriteSame10:
      b.lba = get_be32(cdb + 2);
      b.blocks = get_be16(cdb + 7);
      b.length_byte = 7;
      b.flags = cdb[1];
      break;
    case op::kRead12:
    case op::kWrite12:
    case op::kVerify12:
    case op::kWriteAndVerify12:
      b.lba = get_be32(cdb + 2);
      b.blocks = get_be32(cdb + 6);
      b.length_byte = 6;
      b.flags = cdb[1];
      break;
    case op::kWriteAtomic16:
      // SBC-4 WRITE ATOMIC (16): ATOMIC BOUNDARY in bytes 10-11, TRANSFER LENGTH in 12-13.
      b.lba = get_be64(cdb + 2);
      b.blocks = get_be16(cdb + 12);
      b.length_byte = 12;
      b.flags = cdb[1];
      break;
    case op::kCompareAndWrite:
      // SBC-4 COMPARE AND WRITE: NUMBER OF LOGICAL BLOCKS in byte 13.
      b.lba = get_be64(cdb + 2);
      b.blocks = cdb[13];
      b.length_byte = 13;
      b.flags = cdb[1];
      break;
    case op::kVariableLength:
      // SBC-4 WRITE SAME (32): LBA in bytes 12-19, NUMBER OF LOGICAL BLOCKS in 28-31.
      b.lba = get_be64(cdb + 12);
      b.blocks = get_be32(cdb + 28);
      b.length_byte = 28;
      b.flags = cdb[10];
      break;
    default:  // the other 16-byte CDBs
      b.lba = get_be64(cdb + 2);
      b.blocks = get_be32(cdb + 10);
      b.length_byte = 10;
      b.flags = cdb[1];
      break;
  }
  return b;
}

CmdResult check_block_cdb(const LogicalUnit& lu, const BlockCdb& b) {
  if (b.flags & 0xE0) return CmdResult::invalid_cdb(1, 7);
  if (b.blocks > lu.max_transfer_blocks()) return CmdResult::invalid_cdb(b.length_byte, 7);
  if (out_of_range(b.lba, b.blocks, lu.num_blocks())) return Reason::kLbaOutOfRange;
  return CmdResult::good();
}

CmdResult io_error(IoKind kind, int err, uint64_t lba) {
  switch (-err) {
    case ENOSPC:
    case EDQUOT:
      return Reason::kSpaceAllocationFailed;
    case ENOMEM:
    case EAGAIN:
    case EBUSY:
      return Reason::kBusy;
    case EINVAL:
    case EFAULT:
    case EBADF:
    case EOPNOTSUPP:
      return Reason::kInternalTargetFailure;
    case ENOTCONN:  // storage::kUnreachable: a remote sub-unit is reconnecting
      return Reason::kNotReadyBecomingReady;
    case EROFS:  // a read-only view (an exported snapshot): SBC-4 4.11, DATA PROTECT 27h/00h
      return Reason::kWriteProtected;
    default:
      break;
  }
  switch (kind) {
    case IoKind::kFlush:
      return Reason::kWriteError;
    case IoKind::kWrite:
      return CmdResult::with_info(Reason::kWriteError, lba);
    default:
      return CmdResult::with_info(Reason::kUnrecoveredReadError, lba);
  }
}

Op& start_op(Cmd& c, uint64_t lba, uint64_t blocks) {
  auto* op = new (c.task.device_scratch.data()) Op{};
  op->task = &c.task;
  op->lu = c.lu;
  op->lba = lba;
  op->blocks = blocks;
  return *op;
}

namespace {

void on_granted(void* arg) {
  Op& op = *static_cast<Op*>(arg);
  op.resumed = true;
  op.step(op, 0);
}

void on_io_done(storage::IoRequest& req, int result) {
  Op& op = *static_cast<Op*>(req.user);
  op.resumed = true;
  op.step(op, result);
}

}  // namespace

void lock_range(Op& op, uint64_t lba, uint64_t blocks, RangeLock::Mode mode, Step next) {
  op.step = next;
  op.locked = true;
  if (op.lu->range_lock().acquire(op.holder, lba, blocks, mode, on_granted, &op)) next(op, 0);
}

void submit(Op& op, IoKind kind, storage::IoOp io, uint64_t lba, uint8_t* buf, uint64_t len,
            bool fua, Step next) {
  op.step = next;
  op.kind = kind;
  storage::IoRequest& r = op.req;
  r = storage::IoRequest{};
  r.op = io;
  r.fua = fua;
  r.user = &op;
  r.done = on_io_done;
  if (io != storage::IoOp::kFlush) {
    r.offset = lba * op.lu->block_size();
    r.length = len;
  }
  if (io == storage::IoOp::kRead || io == storage::IoOp::kWrite) {
    op.iov = {buf, len};
    r.iov = &op.iov;
    r.iovcnt = 1;
  }
  // A request made from a completion or a lock grant goes to the kernel at once: the
  // reactor may already have done its last flush() of this loop iteration, and would
  // otherwise sleep on it. Requests made by a handler wait for the reactor's batched flush.
  storage::IoContext* flush = op.resumed ? storage::IoContext::current() : nullptr;
  op.lu->backend().submit(r);  // may complete, and end the command, before returning
  if (flush) flush->flush();
}

void complete(Op& op, const CmdResult& r) {
  Task& task = *op.task;
  LogicalUnit& lu = *op.lu;
  // Release before the task completes: the holder lives in the task's scratch, which the
  // transport may reuse as soon as on_complete has run.
  if (op.backend_locked) {
    const uint64_t bs = lu.block_size();
    lu.backend().lock_for_update(op.lba * bs, op.blocks * bs, false);
  }
  if (op.locked) lu.range_lock().release(op.holder);
  op.~Op();
  finish(task, r, lu.descriptor_sense());
}

bool failed(Op& op, int result) {
  if (result == 0) return false;
  complete(op, io_error(op.kind, result, op.lba));
  return true;
}

size_t first_difference(const uint8_t* a, const uint8_t* b, size_t n) {
  if (std::memcmp(a, b, n) == 0) return n;
  size_t i = 0;
  while (a[i] == b[i]) ++i;
  return i;
}

}  // namespace zuma::scsi::sbc
