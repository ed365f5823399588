// SBC-4 commands: READ/WRITE (6/10/12/16), VERIFY (10/12/16), SYNCHRONIZE CACHE
// (10/16), READ CAPACITY (10/16), START STOP UNIT.
//
// The data path allocates nothing beyond task.data: the backend request and its iovec
// live in the task's device_scratch, and the backend reads into / writes from task.data.
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "scsi/cdb.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"
#include "storage/buffer.hh"

namespace zuma::scsi {
namespace {

// LBA, transfer length and field positions of a READ/WRITE/VERIFY/SYNCHRONIZE CACHE CDB.
struct BlockCdb {
  uint64_t lba = 0;
  uint32_t blocks = 0;
  uint16_t length_byte = 0;  // where the TRANSFER LENGTH field starts (for field pointers)
  uint8_t flags = 0;         // byte 1 (RDPROTECT/WRPROTECT/VRPROTECT, DPO, FUA, BYTCHK)
};

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
    case op::kSynchronizeCache10:
      b.lba = get_be32(cdb + 2);
      b.blocks = get_be16(cdb + 7);
      b.length_byte = 7;
      b.flags = cdb[1];
      break;
    case op::kRead12:
    case op::kWrite12:
    case op::kVerify12:
      b.lba = get_be32(cdb + 2);
      b.blocks = get_be32(cdb + 6);
      b.length_byte = 6;
      b.flags = cdb[1];
      break;
    default:  // 16-byte CDBs
      b.lba = get_be64(cdb + 2);
      b.blocks = get_be32(cdb + 10);
      b.length_byte = 10;
      b.flags = cdb[1];
      break;
  }
  return b;
}

// SBC-4 (logical block address range): the range [lba, lba + blocks) must lie within the capacity.
// Written so it cannot overflow (STYLE.md 10).
bool out_of_range(uint64_t lba, uint64_t blocks, uint64_t capacity) {
  return blocks > capacity || lba > capacity - blocks;
}

// Common checks of READ/WRITE/VERIFY: no protection information (SBC-4 (protection information):
// with PROTECT=0 a non-zero RDPROTECT/WRPROTECT/VRPROTECT is an invalid field), the Block Limits
// MAXIMUM TRANSFER LENGTH (SBC-4 Block Limits VPD page), then the LBA range.
CmdResult check_block_cdb(const LogicalUnit& lu, const BlockCdb& b) {
  if (b.flags & 0xE0) return CmdResult::invalid_cdb(1, 7);
  if (b.blocks > lu.max_transfer_blocks()) return CmdResult::invalid_cdb(b.length_byte, 7);
  if (out_of_range(b.lba, b.blocks, lu.num_blocks())) return Reason::kLbaOutOfRange;
  return CmdResult::good();
}

enum class IoKind : uint8_t { kRead, kWrite, kVerifyMedium, kVerifyCompare, kFlush };

// What an in-flight command keeps, placed in Task::device_scratch.
struct IoCtx {
  storage::IoRequest req;
  iovec iov;
  Task* task;
  LogicalUnit* lu;
  uint64_t lba;
  IoKind kind;
  storage::Buffer medium;  // VERIFY with BYTCHK=1: what the medium holds
};
static_assert(sizeof(IoCtx) <= sizeof(Task::device_scratch));
static_assert(alignof(IoCtx) <= alignof(Task));

// Maps a backend error to the outcome reported (documented choice):
//   -ENOSPC/-EDQUOT: DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (SBC-4 (thin provisioning,
//   resource exhaustion),
//                    a thin LU that ran out of space);
//   -ENOMEM/-EAGAIN/-EBUSY: BUSY status (transient; the initiator retries);
//   -EINVAL/-EFAULT/-EBADF/-EOPNOTSUPP: HARDWARE ERROR, INTERNAL TARGET FAILURE (our
//                    fault, not the medium's);
//   anything else (-EIO...): MEDIUM ERROR, UNRECOVERED READ ERROR for reads and verifies,
//                    WRITE ERROR for writes and flushes; INFORMATION = the command's
//                    first LBA for reads and writes (the backend does not say which
//                    block failed), none for a flush.
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

void io_done(storage::IoRequest& req, int result) {
  auto* ctx = static_cast<IoCtx*>(req.user);
  Task& task = *ctx->task;
  LogicalUnit& lu = *ctx->lu;
  CmdResult r = CmdResult::good();
  if (result != 0) {
    r = io_error(ctx->kind, result, ctx->lba);
  } else if (ctx->kind == IoKind::kVerifyCompare) {
    // SBC-4 VERIFY: MISCOMPARE with INFORMATION = offset of the first differing byte.
    const uint8_t* a = task.data.data();
    const uint8_t* m = ctx->medium.data();
    const size_t len = ctx->medium.size();
    if (std::memcmp(a, m, len) != 0) {
      size_t i = 0;
      while (a[i] == m[i]) ++i;
      r = CmdResult::with_info(Reason::kMiscompareDuringVerify, i);
    }
  }
  ctx->~IoCtx();
  finish(task, r, lu.descriptor_sense());
}

// Starts the backend request. The completion may run before this returns, so neither
// this nor its caller may touch the task afterwards.
CmdResult submit(Cmd& c, IoKind kind, storage::IoOp op, uint64_t lba, uint8_t* buf, size_t len,
                 bool fua) {
  storage::Buffer medium;
  if (kind == IoKind::kVerifyCompare) {
    medium.resize(len);  // may throw std::bad_alloc: before anything is started
    buf = medium.data();
  }
  auto* ctx = new (c.task.device_scratch.data()) IoCtx{};
  ctx->task = &c.task;
  ctx->lu = c.lu;
  ctx->lba = lba;
  ctx->kind = kind;
  ctx->medium = std::move(medium);
  ctx->req.op = op;
  ctx->req.fua = fua;
  ctx->req.user = ctx;
  ctx->req.done = io_done;
  if (op != storage::IoOp::kFlush) {
    ctx->req.offset = lba * c.lu->block_size();
    ctx->req.length = len;
    ctx->iov = {buf, len};
    ctx->req.iov = &ctx->iov;
    ctx->req.iovcnt = 1;
  }
  c.lu->backend().submit(ctx->req);
  return CmdResult::pending();
}

bool has_data_in(const Task& t) {
  return t.dir == DataDir::kIn || t.dir == DataDir::kBidi;
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
  return submit(c, IoKind::kRead, storage::IoOp::kRead, b.lba, c.task.data.data(), read_bytes,
                false);
}

CmdResult handle_write(Cmd& c) {
  // SBC-4 WRITE (6/10/12/16).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  if (const CmdResult r = check_block_cdb(lu, b); !r.ok()) return r;
  const uint32_t bytes = b.blocks * lu.block_size();
  c.task.transfer_len = bytes;
  if (bytes == 0) return CmdResult::good();  // SBC-4: not an error, nothing written
  // The initiator sent less than the command needs (Expected Data Transfer Length below
  // the transfer length; the transport reports the overflow residual). FCP-4 (FCP_DL smaller than
  // the transfer) a): process the command but transfer nothing beyond the expected length, i.e.
  // write the whole blocks that arrived; a trailing partial block cannot be written, so then b):
  // INVALID FIELD IN COMMAND INFORMATION UNIT, nothing written. libiscsi 1.19's
  // test_write10_residuals.c expects the former, later versions accept both.
  uint32_t len = bytes;
  if (c.task.data.size() < bytes) {
    if (c.task.data.size() % lu.block_size() != 0) return Reason::kInvalidFieldInCommandIu;
    len = static_cast<uint32_t>(c.task.data.size());
    if (len == 0) return CmdResult::good();
  }
  // FUA, or a disabled write cache (WCE=0, SBC-4 Caching mode page), makes the write durable before
  // GOOD. DPO is a cache hint we ignore.
  const bool fua = (b.flags & 0x08) || !lu.write_cache();
  return submit(c, IoKind::kWrite, storage::IoOp::kWrite, b.lba, c.task.data.data(), len, fua);
}

CmdResult handle_verify(Cmd& c) {
  // SBC-4 VERIFY (10/12/16).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  const uint8_t bytchk = (b.flags >> 1) & 0x03;
  // BYTCHK 10b is reserved for VERIFY; 11b (one block compared with every block) is not
  // implemented yet.
  if (bytchk >= 2) return CmdResult::invalid_cdb(1, 2);
  if (const CmdResult r = check_block_cdb(lu, b); !r.ok()) return r;
  const uint32_t bytes = b.blocks * lu.block_size();
  if (bytchk == 0) {
    // Verify the medium: read it (into task.data, no Data-In is sent).
    c.task.transfer_len = 0;
    if (bytes == 0) return CmdResult::good();
    c.task.data.resize(bytes);
    return submit(c, IoKind::kVerifyMedium, storage::IoOp::kRead, b.lba, c.task.data.data(), bytes,
                  false);
  }
  c.task.transfer_len = bytes;
  if (bytes == 0) return CmdResult::good();
  if (c.task.data.size() < bytes) return Reason::kInvalidFieldInCommandIu;
  return submit(c, IoKind::kVerifyCompare, storage::IoOp::kRead, b.lba, nullptr, bytes, false);
}

CmdResult handle_synchronize_cache(Cmd& c) {
  // SBC-4 SYNCHRONIZE CACHE (10/16): NUMBER OF LOGICAL BLOCKS 0 means through the last LBA. The
  // backend flushes everything, which covers any range. IMMED is honoured by waiting anyway
  // (allowed: it only permits returning early).
  LogicalUnit& lu = *c.lu;
  const BlockCdb b = decode_block_cdb(c.cdb());
  if (out_of_range(b.lba, b.blocks, lu.num_blocks())) return Reason::kLbaOutOfRange;
  return submit(c, IoKind::kFlush, storage::IoOp::kFlush, b.lba, nullptr, 0, false);
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
  // EXPONENT 0; bytes 14-15: LBPME and LBPRZ for a thin LU, LOWEST ALIGNED LBA 0.
  if (lu.params().thin) p[14] = 0x80 | 0x40;
  set_data_in(c.task, 32, alloc);
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
