// What the SBC handlers share (sbc_commands.cc, thin.cc, compare_write.cc): CDB decoding,
// range checks, backend error mapping, and Op, the state of a command that runs one or
// more backend requests, possibly under the LU's range lock (range_lock.hh).
//
// An Op lives in the task's device_scratch from start_op() to complete(): the data path
// allocates nothing beyond task.data (and Op::buf, for the commands that need a second
// buffer). Every step runs on the task's thread: backend completions come back on the
// submitting thread (backend.hh), and a range lock granted by another thread is handed
// back through this thread's IoContext.
#pragma once

#include <sys/uio.h>

#include <cstdint>

#include "scsi/command.hh"
#include "scsi/range_lock.hh"
#include "storage/backend.hh"
#include "storage/buffer.hh"

namespace zuma::scsi {
class LogicalUnit;
}

namespace zuma::scsi::sbc {

// LBA, transfer length and field positions of a block command's CDB.
struct BlockCdb {
  uint64_t lba = 0;
  uint32_t blocks = 0;
  uint16_t length_byte = 0;  // where the length field starts (for field pointers)
  uint8_t flags = 0;         // byte 1 (xxPROTECT, DPO, FUA, BYTCHK, ...)
};

// Decodes the READ/WRITE/VERIFY/WRITE AND VERIFY/SYNCHRONIZE CACHE/PRE-FETCH/WRITE SAME/
// ORWRITE/WRITE ATOMIC/COMPARE AND WRITE CDB forms.
BlockCdb decode_block_cdb(const uint8_t* cdb);

// SBC-4 (logical block address range): [lba, lba + blocks) must lie within the capacity.
// Written so it cannot overflow (STYLE.md 10).
inline bool out_of_range(uint64_t lba, uint64_t blocks, uint64_t capacity) {
  return blocks > capacity || lba > capacity - blocks;
}

// Common checks of the data-transferring commands: no protection information (SBC-4
// (protection information): with PROTECT=0 a non-zero RDPROTECT/WRPROTECT/VRPROTECT/
// ORPROTECT is an invalid field), the Block Limits MAXIMUM TRANSFER LENGTH, the range.
CmdResult check_block_cdb(const LogicalUnit& lu, const BlockCdb& b);

// How a failed backend request is reported (io_error()).
enum class IoKind : uint8_t { kRead, kWrite, kVerify, kFlush };

// Maps a backend error to the outcome (documented choice, docs/ARCHITECTURE.md):
//   -ENOSPC/-EDQUOT: DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (SBC-4 thin
//                    provisioning resource exhaustion: a thin LU that ran out of space);
//   -ENOMEM/-EAGAIN/-EBUSY: BUSY status (transient; the initiator retries);
//   -EINVAL/-EFAULT/-EBADF/-EOPNOTSUPP: HARDWARE ERROR, INTERNAL TARGET FAILURE (our fault,
//                    not the medium's);
//   anything else (-EIO...): MEDIUM ERROR, UNRECOVERED READ ERROR for reads and verifies,
//                    WRITE ERROR for writes and flushes; INFORMATION = `lba` (the
//                    command's first LBA: the backend does not say which block failed),
//                    none for a flush.
CmdResult io_error(IoKind kind, int err, uint64_t lba);

struct Op;
// A step of a command: runs with the result (0 or -errno) of the backend request that
// completed, or 0 when the range lock was granted.
using Step = void (*)(Op& op, int result);

struct Op {
  storage::IoRequest req;
  iovec iov{};
  Task* task = nullptr;
  LogicalUnit* lu = nullptr;
  Step step = nullptr;  // runs when the request in flight completes / the lock is granted
  uint64_t lba = 0;     // the command's first LBA (sense INFORMATION)
  uint64_t blocks = 0;  // blocks the command covers
  uint64_t pos = 0;     // progress: blocks done, descriptor index, ...
  uint64_t arg = 0;     // command specific
  storage::Buffer buf;  // a second buffer: what the medium holds, a pattern chunk, ...
  RangeLock::Holder holder;
  IoKind kind = IoKind::kWrite;  // how a failure of the request in flight is reported
  bool locked = false;
  bool backend_locked = false;  // lock_for_update held (a shared LU's COMPARE AND WRITE)
  bool resumed = false;  // a step runs from a completion or a lock grant (submit())
  bool fua = false;
  uint8_t flags = 0;  // command specific
};
static_assert(sizeof(Op) <= sizeof(Task::device_scratch));
static_assert(alignof(Op) <= alignof(Task));

// Places a new Op for the command in its scratch. From here on the command ends only
// through complete() (the handler returns CmdResult::pending()).
Op& start_op(Cmd& c, uint64_t lba, uint64_t blocks);

// Runs next(op, 0) once [lba, lba + blocks) of the LU is held in `mode` (blocks >= 1):
// inline when free, else when granted (on this thread). complete() releases it.
void lock_range(Op& op, uint64_t lba, uint64_t blocks, RangeLock::Mode mode, Step next);

// Submits one backend request of `len` bytes at LBA `lba` (buf unused for kFlush,
// kDiscard, kWriteZeroes); next(op, result) runs on completion, possibly before this
// returns. A failure is reported as `kind`.
void submit(Op& op, IoKind kind, storage::IoOp io, uint64_t lba, uint8_t* buf, uint64_t len,
            bool fua, Step next);

// Ends the command with `r`: releases the range lock, destroys the Op, completes the task.
void complete(Op& op, const CmdResult& r);

// When `result` is an error, completes the command with it (io_error(op.kind, ...,
// op.lba)) and returns true.
bool failed(Op& op, int result);

// Offset of the first byte where a and b (n bytes each) differ, or n when equal.
size_t first_difference(const uint8_t* a, const uint8_t* b, size_t n);

}  // namespace zuma::scsi::sbc
