// SBC-4 commands: READ/WRITE (6/10/12/16), WRITE ATOMIC (16), VERIFY (10/12/16), WRITE AND
// VERIFY (10/12/16), SYNCHRONIZE CACHE (10/16), PRE-FETCH (10/16), READ CAPACITY (10/16),
// READ DEFECT DATA (10/12), START STOP UNIT.
//
// Thin provisioning (UNMAP, WRITE SAME, GET LBA STATUS) is in thin.cc, COMPARE AND WRITE
// and ORWRITE in compare_write.cc; the machinery they share in sbc_op.hh.
//
// The data path allocates nothing beyond task.data: the backend request and its iovec
// live in the task's device_scratch (sbc::Op), and the backend reads into / writes from
// task.data. Every command that modifies the medium holds its LBA range in the LU's range
// lock from before its first write until its completion (range_lock.hh): WRITE shared,
// WRITE ATOMIC and WRITE AND VERIFY exclusive.
#include <algorithm>
#include <cstring>

#include "scsi/block_limits.hh"
#include "scsi/cdb.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"
#include "scsi/sbc_op.hh"
#include "storage/buffer.hh"

namespace zuma::scsi {

using namespace sbc;
using Mode = RangeLock::Mode;

namespace {

bool has_data_in(const Task& t) {
  return t.dir == DataDir::kIn || t.dir == DataDir::kBidi;
}

// A step that ends the command with GOOD, or with the failure of the request it ran after.
void done(Op& op, int result) {
  if (failed(op, result)) return;
  complete(op, CmdResult::good());
}

// The whole blocks of a write's Data-Out: the blocks the CDB names, or fewer when the
// initiator sent less (Expected Data Transfer Length below the transfer length; the
// transport reports the overflow residual). FCP-4 (FCP_DL smaller than the transfer) a):
// process the command but transfer nothing beyond the expected length, i.e. write the
// whole blocks that arrived; a trailing partial block cannot be written, so then b):
// INVALID FIELD IN COMMAND INFORMATION UNIT, nothing written. libiscsi 1.19's
// test_write10_residuals.c expects the former, later versions accept both.
CmdResult data_out_blocks(const Cmd& c, uint32_t blocks, uint32_t* have) {
  const uint32_t bs = c.lu->block_size();
  *have = blocks;
  if (c.task.data.size() < uint64_t{blocks} * bs) {
    if (c.task.data.size() % bs != 0) return Reason::kInvalidFieldInCommandIu;
    *have = static_cast<uint32_t>(c.task.data.size() / bs);
  }
  return CmdResult::good();
}

// FUA, or a disabled write cache (WCE=0, SBC-4 Caching mode page), makes a write durable
// before GOOD. DPO is a cache hint we ignore.
bool write_through(const LogicalUnit& lu, uint8_t flags) {
  return (flags & 0x08) || !lu.write_cache();
}

void write_locked(Op& op, int) {
  submit(op, IoKind::kWrite, storage::IoOp::kWrite, op.lba, op.task->data.data(),
         op.blocks * op.lu->block_size(), op.fua, done);
}

}  // namespace

CmdResult handle_read(Cmd& c) {
  // SBC-4 READ (6/10/12/16).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  if (const CmdResult r = check_block_cdb(lu, b); !r.ok()) return r;
  const uint32_t bs = lu.block_size();
  const uint32_t bytes = b.blocks * bs;  // <= kMaxTransferBytes
  c.task.transfer_len = bytes;
  // Send what the initiator has room for (the transport reports the overflow residual);
  // read only the blocks that covers. DPO and FUA need no action: a read returns what the
  // last completed write stored, cached or not.
  const uint32_t send = has_data_in(c.task) ? std::min(bytes, c.task.expected_len) : 0;
  c.task.data_in_len = send;
  if (send == 0) return CmdResult::good();
  const uint32_t read_bytes = (send + bs - 1) / bs * bs;
  c.task.data.resize(read_bytes);
  Op& op = start_op(c, b.lba, read_bytes / bs);
  submit(op, IoKind::kRead, storage::IoOp::kRead, b.lba, c.task.data.data(), read_bytes, false,
         done);
  return CmdResult::pending();
}

CmdResult handle_write(Cmd& c) {
  // SBC-4 WRITE (6/10/12/16).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  if (const CmdResult r = check_block_cdb(lu, b); !r.ok()) return r;
  c.task.transfer_len = b.blocks * lu.block_size();
  uint32_t blocks = 0;
  if (const CmdResult r = data_out_blocks(c, b.blocks, &blocks); !r.ok()) return r;
  if (blocks == 0) return CmdResult::good();  // SBC-4: not an error, nothing written
  Op& op = start_op(c, b.lba, blocks);
  op.fua = write_through(lu, b.flags);
  lock_range(op, b.lba, blocks, Mode::kShared, write_locked);
  return CmdResult::pending();
}

CmdResult handle_write_atomic(Cmd& c) {
  // SBC-4 WRITE ATOMIC (16): one atomic write operation (ATOMIC BOUNDARY 0). Atomic with
  // respect to every other writer of those blocks: the range is held exclusive. Checks
  // against the Block Limits atomic fields (block_limits.hh).
  LogicalUnit& lu = *c.lu;
  const uint8_t* cdb = c.cdb();
  const BlockCdb b = decode_block_cdb(cdb);
  const uint32_t bs = lu.block_size();
  if (b.flags & 0xE0) return CmdResult::invalid_cdb(1, 7);
  // MAXIMUM ATOMIC BOUNDARY SIZE 0: atomic boundaries are not supported.
  if (get_be16(cdb + 10) != 0) return CmdResult::invalid_cdb(10, 7);
  // The range first: libiscsi's WriteAtomic16.BeyondEol expects LBA OUT OF RANGE for
  // ranges past the end that are also longer than the atomic maximum.
  if (out_of_range(b.lba, b.blocks, lu.num_blocks())) return Reason::kLbaOutOfRange;
  if (b.blocks > max_atomic_blocks(bs)) return CmdResult::invalid_cdb(12, 7);
  // SBC-4 atomic writes: a starting LBA off the ATOMIC ALIGNMENT, or a TRANSFER LENGTH not
  // a multiple of the ATOMIC TRANSFER LENGTH GRANULARITY, is an invalid field.
  if (const uint32_t unit = atomic_unit_blocks(bs); unit > 1) {
    if (b.lba % unit != 0) return CmdResult::invalid_cdb(2, 7);
    if (b.blocks % unit != 0) return CmdResult::invalid_cdb(12, 7);
  }
  c.task.transfer_len = b.blocks * bs;
  if (b.blocks == 0) return CmdResult::good();
  // All or nothing: with less data than the CDB asks for, nothing is written.
  if (c.task.data.size() < uint64_t{b.blocks} * bs) return Reason::kInvalidFieldInCommandIu;
  Op& op = start_op(c, b.lba, b.blocks);
  op.fua = write_through(lu, b.flags);
  lock_range(op, b.lba, b.blocks, Mode::kExclusive, write_locked);
  return CmdResult::pending();
}

// --- VERIFY and WRITE AND VERIFY ---

namespace {

// BYTCHK values (SBC-4 VERIFY, WRITE AND VERIFY).
constexpr uint8_t kBytchkNone = 0;    // verify the medium only
constexpr uint8_t kBytchkBlocks = 1;  // compare the Data-Out with the medium
constexpr uint8_t kBytchkOne = 3;     // VERIFY: one block compared with every block

// The medium is in op.buf: compare it with the Data-Out (op.flags = BYTCHK). MISCOMPARE
// DURING VERIFY OPERATION with INFORMATION = offset of the first differing byte (SBC-4
// VERIFY, WRITE AND VERIFY). For BYTCHK 11b the offset counts from the start of the range,
// as if the one block had been sent once per block.
void compare_medium(Op& op, int result) {
  if (failed(op, result)) return;
  const uint32_t bs = op.lu->block_size();
  const uint8_t* medium = op.buf.data();
  const uint8_t* data = op.task->data.data();
  const size_t len = op.blocks * bs;
  size_t at = len;
  if (op.flags == kBytchkOne) {
    for (size_t off = 0; off < len && at == len; off += bs) {
      const size_t d = first_difference(data, medium + off, bs);
      if (d != bs) at = off + d;
    }
  } else if (op.flags == kBytchkBlocks) {
    at = first_difference(data, medium, len);
  }
  if (at != len) return complete(op, CmdResult::with_info(Reason::kMiscompareDuringVerify, at));
  complete(op, CmdResult::good());
}

// Reads the range into op.buf, then compares.
void read_back(Op& op, int result) {
  if (failed(op, result)) return;
  submit(op, IoKind::kVerify, storage::IoOp::kRead, op.lba, op.buf.data(),
         op.blocks * op.lu->block_size(), false, compare_medium);
}

void write_then_verify(Op& op, int) {
  // The write is made durable first (FUA): the verification then checks the medium, not a
  // cache (SBC-4 WRITE AND VERIFY).
  submit(op, IoKind::kWrite, storage::IoOp::kWrite, op.lba, op.task->data.data(),
         op.blocks * op.lu->block_size(), true, read_back);
}

}  // namespace

CmdResult handle_verify(Cmd& c) {
  // SBC-4 VERIFY (10/12/16). BYTCHK 00b: read the medium (into task.data, no Data-In is
  // sent); 01b: compare VERIFICATION LENGTH blocks of Data-Out; 10b: reserved; 11b: compare
  // the one block of Data-Out with every block of the range.
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  const uint8_t bytchk = (b.flags >> 1) & 0x03;
  if (bytchk == 2) return CmdResult::invalid_cdb(1, 2);
  if (const CmdResult r = check_block_cdb(lu, b); !r.ok()) return r;
  const uint32_t bs = lu.block_size();
  const uint32_t bytes = b.blocks * bs;
  if (bytchk == kBytchkNone) {
    c.task.transfer_len = 0;
    if (bytes == 0) return CmdResult::good();
    c.task.data.resize(bytes);
    Op& op = start_op(c, b.lba, b.blocks);
    submit(op, IoKind::kVerify, storage::IoOp::kRead, b.lba, c.task.data.data(), bytes, false,
           done);
    return CmdResult::pending();
  }
  const uint32_t want = bytchk == kBytchkOne ? bs : bytes;
  c.task.transfer_len = b.blocks == 0 ? 0 : want;
  if (b.blocks == 0) return CmdResult::good();
  if (c.task.data.size() < want) return Reason::kInvalidFieldInCommandIu;
  storage::Buffer medium(bytes);  // may throw std::bad_alloc: nothing started yet
  Op& op = start_op(c, b.lba, b.blocks);
  op.buf = std::move(medium);
  op.flags = bytchk;
  read_back(op, 0);
  return CmdResult::pending();
}

CmdResult handle_write_and_verify(Cmd& c) {
  // SBC-4 WRITE AND VERIFY (10/12/16): write (durably), then read back and, with BYTCHK 01b,
  // compare with the Data-Out. BYTCHK 1xb is reserved for this command. The range is held
  // exclusive, so no other writer can change the blocks between the write and the check.
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  const uint8_t bytchk = (b.flags >> 1) & 0x03;
  if (bytchk >= 2) return CmdResult::invalid_cdb(1, 2);
  if (const CmdResult r = check_block_cdb(lu, b); !r.ok()) return r;
  c.task.transfer_len = b.blocks * lu.block_size();
  uint32_t blocks = 0;
  if (const CmdResult r = data_out_blocks(c, b.blocks, &blocks); !r.ok()) return r;
  if (blocks == 0) return CmdResult::good();
  storage::Buffer medium(uint64_t{blocks} * lu.block_size());
  Op& op = start_op(c, b.lba, blocks);
  op.buf = std::move(medium);
  op.flags = bytchk;
  lock_range(op, b.lba, blocks, Mode::kExclusive, write_then_verify);
  return CmdResult::pending();
}

CmdResult handle_synchronize_cache(Cmd& c) {
  // SBC-4 SYNCHRONIZE CACHE (10/16): NUMBER OF LOGICAL BLOCKS 0 means through the last LBA. The
  // backend flushes everything, which covers any range. IMMED is honoured by waiting anyway
  // (allowed: it only permits returning early).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  if (out_of_range(b.lba, b.blocks, lu.num_blocks())) return Reason::kLbaOutOfRange;
  Op& op = start_op(c, b.lba, b.blocks);
  submit(op, IoKind::kFlush, storage::IoOp::kFlush, 0, nullptr, 0, false, done);
  return CmdResult::pending();
}

CmdResult handle_prefetch(Cmd& c) {
  // SBC-4 PRE-FETCH (10/16). PREFETCH LENGTH 0: through the last LBA. We keep no cache of our
  // own that could promise the blocks a later read (the page cache may evict them), so the
  // command transfers nothing and ends GOOD, the status SBC-4 gives when the cache cannot hold
  // the range, never CONDITION MET. IMMED changes nothing (nothing to wait for).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  if (out_of_range(b.lba, b.blocks, lu.num_blocks())) return Reason::kLbaOutOfRange;
  return CmdResult::good();
}

CmdResult handle_read_capacity10(Cmd& c) {
  // SBC-4 READ CAPACITY (10). A non-zero LOGICAL BLOCK ADDRESS with PMI=0 is an invalid
  // field (SBC-3; both fields are obsolete in SBC-4). The capacity is fixed, so PMI=1
  // reports the same last LBA.
  const uint8_t* cdb = c.cdb();
  if (!(cdb[8] & 0x01) && get_be32(cdb + 2) != 0) return CmdResult::invalid_cdb(2, 7);
  const LogicalUnit& lu = *c.lu;
  uint8_t* p = data_in_buffer(c.task, 8);
  const uint64_t last = lu.num_blocks() - 1;
  put_be32(p, last > 0xFFFFFFFEu ? 0xFFFFFFFFu : static_cast<uint32_t>(last));
  put_be32(p + 4, lu.block_size());
  set_data_in(c.task, 8, 8);
  return CmdResult::good();
}

CmdResult handle_read_capacity16(Cmd& c) {
  // SBC-4 READ CAPACITY (16).
  const uint8_t* cdb = c.cdb();
  if (!(cdb[14] & 0x01) && get_be64(cdb + 2) != 0) return CmdResult::invalid_cdb(2, 7);
  const LogicalUnit& lu = *c.lu;
  const uint32_t alloc = get_be32(cdb + 10);
  uint8_t* p = data_in_buffer(c.task, 32);
  put_be64(p, lu.num_blocks() - 1);
  put_be32(p + 8, lu.block_size());
  // byte 12: no protection information; byte 13: LOGICAL BLOCKS PER PHYSICAL BLOCK
  // EXPONENT; bytes 14-15: LBPME and LBPRZ for a thin LU, LOWEST ALIGNED LBA 0.
  p[13] = lu.params().lbppb_exponent & 0x0f;
  if (lu.params().thin) p[14] = 0x80 | 0x40;
  set_data_in(c.task, 32, alloc);
  return CmdResult::good();
}

CmdResult handle_read_defect_data(Cmd& c) {
  // SBC-4 READ DEFECT DATA (10/12). A LU on a file or a volume has no defects: the lists asked
  // for are returned empty (PLISTV/GLISTV as requested), in the format asked for, which any
  // empty list satisfies. Format 111b is reserved.
  const uint8_t* cdb = c.cdb();
  const bool ten = cdb[0] == op::kReadDefectData10;
  const uint8_t req = ten ? cdb[2] : cdb[1];
  const uint16_t req_byte = ten ? 2 : 1;
  if ((req & 0x07) == 0x07) return CmdResult::invalid_cdb(req_byte, 2);
  const uint32_t alloc = ten ? get_be16(cdb + 7) : get_be32(cdb + 6);
  const size_t len = ten ? 4 : 8;  // header only; DEFECT LIST LENGTH 0
  uint8_t* p = data_in_buffer(c.task, len);
  p[1] = req & 0x1F;  // PLISTV, GLISTV, DEFECT LIST FORMAT
  // READ DEFECT DATA (12): GENERATION CODE 0 (not supported), DEFECT LIST LENGTH 0.
  set_data_in(c.task, len, alloc);
  return CmdResult::good();
}

CmdResult handle_start_stop_unit(Cmd& c) {
  // SBC-4 START STOP UNIT. Our medium is neither removable nor ever stopped: START=0/1 and IMMED
  // are accepted and change nothing. LOEJ asks to load or eject a medium we cannot
  // remove; POWER CONDITION other than 0h (START_VALID) asks for power states we do not
  // have (no Power Condition mode page): both are invalid fields.
  const uint8_t* cdb = c.cdb();
  if (cdb[4] & 0xF0) return CmdResult::invalid_cdb(4, 7);
  if (cdb[3] & 0x0F) return CmdResult::invalid_cdb(3, 3);
  if (cdb[4] & 0x02) return CmdResult::invalid_cdb(4, 1);
  return CmdResult::good();
}

}  // namespace zuma::scsi
