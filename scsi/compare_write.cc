// SBC-4 read-modify-write commands: COMPARE AND WRITE and ORWRITE (16).
//
// Both read the medium, work on it and write, holding their LBA range exclusive in the
// LU's range lock from before the read until the write has completed (range_lock.hh): no
// other write-type command (WRITE, WRITE SAME, UNMAP, another COMPARE AND WRITE...) can
// touch those blocks in between, on any I_T nexus or reactor thread. That is the atomicity
// SBC-4 asks of COMPARE AND WRITE (the read, compare and write as one uninterrupted
// operation); reads are not excluded (range_lock.hh).
#include <cstring>

#include "scsi/block_limits.hh"
#include "scsi/cdb.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"
#include "scsi/sbc_op.hh"

namespace zuma::scsi {

using namespace sbc;
using storage::IoOp;

namespace {

void done(Op& op, int result) {
  if (failed(op, result)) return;
  complete(op, CmdResult::good());
}

// --- COMPARE AND WRITE ---
// task.data: the verify instance (blocks), then the write instance (blocks).

void caw_compare(Op& op, int result) {
  if (failed(op, result)) return;
  const size_t len = op.blocks * op.lu->block_size();
  const size_t at = first_difference(op.task->data.data(), op.buf.data(), len);
  if (at != len) {
    // SBC-4 COMPARE AND WRITE: MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION, INFORMATION =
    // the offset of the first byte that differs; nothing is written.
    return complete(op, CmdResult::with_info(Reason::kMiscompareDuringVerify, at));
  }
  submit(op, IoKind::kWrite, IoOp::kWrite, op.lba, op.task->data.data() + len, len, op.fua, done);
}

void caw_read(Op& op, int) {
  // A LU that several nodes export: the other nodes' COMPARE AND WRITEs are excluded too,
  // for as long as this node's range lock is held (docs/DISTRIBUTED.md).
  if (op.lu->params().shared) {
    const uint64_t bs = op.lu->block_size();
    if (const int r = op.lu->backend().lock_for_update(op.lba * bs, op.blocks * bs, true); r < 0)
      return complete(op, io_error(IoKind::kRead, r, op.lba));
    op.backend_locked = true;
  }
  submit(op, IoKind::kRead, IoOp::kRead, op.lba, op.buf.data(), op.blocks * op.lu->block_size(),
         false, caw_compare);
}

// --- ORWRITE ---

void or_write(Op& op, int result) {
  if (failed(op, result)) return;
  // SBC-4 ORWRITE: the medium's data ORed with the Data-Out is what gets written.
  const size_t len = op.blocks * op.lu->block_size();
  uint8_t* m = op.buf.data();
  const uint8_t* d = op.task->data.data();
  for (size_t i = 0; i < len; ++i) m[i] |= d[i];
  submit(op, IoKind::kWrite, IoOp::kWrite, op.lba, m, len, op.fua, done);
}

void or_read(Op& op, int) {
  submit(op, IoKind::kRead, IoOp::kRead, op.lba, op.buf.data(), op.blocks * op.lu->block_size(),
         false, or_write);
}

}  // namespace

CmdResult handle_compare_and_write(Cmd& c) {
  // SBC-4 COMPARE AND WRITE.
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  const uint32_t bs = lu.block_size();
  if (b.flags & 0xE0) return CmdResult::invalid_cdb(1, 7);  // WRPROTECT: no protection info
  // NUMBER OF LOGICAL BLOCKS is one byte: kMaxCompareAndWriteBlocks (255) covers all of it.
  static_assert(kMaxCompareAndWriteBlocks == 0xFF);
  if (out_of_range(b.lba, b.blocks, lu.num_blocks())) return Reason::kLbaOutOfRange;
  const uint64_t need = 2ull * b.blocks * bs;
  c.task.transfer_len = static_cast<uint32_t>(need);
  // The Data-Out must be exactly the verify and write instances. Less cannot be compared
  // (INVALID FIELD IN COMMAND INFORMATION UNIT, as for any short Data-Out); more means the
  // NUMBER OF LOGICAL BLOCKS does not describe what was sent (libiscsi 1.19's
  // CompareAndWrite tests send 256 blocks' worth with the field truncated to 0 and expect
  // INVALID FIELD IN CDB). NUMBER OF LOGICAL BLOCKS 0 with no data: nothing to do (SBC-4).
  if (c.task.data.size() > need) return CmdResult::invalid_cdb(13, 7);
  if (b.blocks == 0) return CmdResult::good();
  if (c.task.data.size() < need) return Reason::kInvalidFieldInCommandIu;
  storage::Buffer medium(uint64_t{b.blocks} * bs);  // may throw: nothing started yet
  Op& op = start_op(c, b.lba, b.blocks);
  op.buf = std::move(medium);
  // FUA, or WCE=0: the write is durable before GOOD. DPO is a cache hint we ignore.
  op.fua = (b.flags & 0x08) || !lu.write_cache();
  lock_range(op, b.lba, b.blocks, RangeLock::Mode::kExclusive, caw_read);
  return CmdResult::pending();
}

CmdResult handle_orwrite(Cmd& c) {
  // SBC-4 ORWRITE (16).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  if (const CmdResult r = check_block_cdb(lu, b); !r.ok()) return r;  // ORPROTECT, length, range
  const uint32_t bs = lu.block_size();
  c.task.transfer_len = b.blocks * bs;
  // As for WRITE: the whole blocks that arrived are processed; a partial block is refused.
  uint32_t blocks = b.blocks;
  if (c.task.data.size() < uint64_t{blocks} * bs) {
    if (c.task.data.size() % bs != 0) return Reason::kInvalidFieldInCommandIu;
    blocks = static_cast<uint32_t>(c.task.data.size() / bs);
  }
  if (blocks == 0) return CmdResult::good();
  storage::Buffer medium(uint64_t{blocks} * bs);
  Op& op = start_op(c, b.lba, blocks);
  op.buf = std::move(medium);
  op.fua = (b.flags & 0x08) || !lu.write_cache();
  lock_range(op, b.lba, blocks, RangeLock::Mode::kExclusive, or_read);
  return CmdResult::pending();
}

}  // namespace zuma::scsi
