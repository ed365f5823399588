// The block-device interface that logical units sit on (DESIGN.md: storage/).
//
// Threading contract: a Backend may be shared by several reactor threads. submit() is
// called on a reactor thread; the completion (req.done) runs later on the *same* thread,
// or inline inside submit() for backends that complete synchronously (memory, null, or
// the file backend when the calling thread has no IoContext). Callers must cope with
// both. A Backend never blocks the calling thread on I/O when the thread has an
// IoContext (io_uring).
//
// Offsets and lengths are in bytes. The caller guarantees offset + length <= size().
// Ownership: the iovecs and the memory they point to belong to the caller and must stay
// valid until done() runs; the Backend never frees them.
#pragma once

#include <sys/uio.h>

#include <cerrno>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>

namespace zuma::storage {

enum class IoOp : uint8_t {
  kRead,
  kWrite,
  kFlush,        // make every completed write durable (fdatasync); offset/length ignored
  kDiscard,      // deallocate; reads of the range return zeros afterwards
  kWriteZeroes,  // make the range read as zeros (may deallocate)
};

// Provisioning state of a run of bytes (Backend::extent_status; SBC-4 logical block
// provisioning: GET LBA STATUS).
struct ExtentStatus {
  uint64_t length = 0;    // bytes from the queried offset that share `allocated`
  bool allocated = true;  // false: holds no storage and reads as zeros
};

// Storage a backend holds and could still obtain (Backend::space_usage; SBC-4 Logical Block
// Provisioning log page).
struct SpaceUsage {
  uint64_t allocated_bytes = 0;   // storage held for this backend's data
  uint64_t available_bytes = 0;   // storage it could still allocate (shared with others)
  bool available_shared = false;  // available_bytes is a pool other backends draw from too
};

// The result of a request whose backend cannot be reached now (a remote sub-unit while its
// session is down or being re-established): the LU reports NOT READY (scsi/sbc_op.cc), and
// the same request may succeed later.
inline constexpr int kUnreachable = -ENOTCONN;

struct IoRequest;
using IoDone = void (*)(IoRequest& req, int result);  // result: 0 or -errno

struct IoRequest {
  IoOp op = IoOp::kRead;
  bool fua = false;  // kWrite: durable before completion (RWF_DSYNC)
  uint64_t offset = 0;
  uint64_t length = 0;
  const iovec* iov = nullptr;  // kRead/kWrite: scatter/gather list covering `length`
  int iovcnt = 0;
  IoDone done = nullptr;
  void* user = nullptr;  // the caller's context, untouched by the backend
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Size in bytes; changes only through resize(). Any thread.
  virtual uint64_t size() const = 0;
  // Capability query (STYLE.md 4): kRead, kWrite and kFlush are always supported.
  virtual bool supports(IoOp op) const = 0;
  // Starts the request; completes exactly once through req.done (see threading contract).
  virtual void submit(IoRequest& req) = 0;
  // A short human-readable description for logs, e.g. "file:/var/a.img".
  virtual std::string describe() const = 0;

  // Provisioning of the bytes at `offset` (< size()): fills *out with the length (1..max_len)
  // of the run starting there whose bytes are all allocated or all deallocated. Returns 0 or
  // -errno. Synchronous and cheap (metadata only: lseek SEEK_DATA/SEEK_HOLE, a chunk table),
  // though a file system may read metadata from disk. Default: everything allocated.
  virtual int extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const {
    (void)offset;
    *out = ExtentStatus{max_len, true};
    return 0;
  }
  // Changes size() to `bytes` (zumactl resize lun) while requests run on other threads:
  // requests inside both the old and the new size are unaffected; one that reaches beyond
  // the new end of a shrink fails (-EINVAL) or lands in bytes that are then lost. Growing:
  // the new bytes read as zeros; `reserve` allocates their storage now (full provisioning)
  // rather than on first write. Shrinking loses the bytes beyond the new end. The caller
  // serialises resizes of one backend. Error: one line saying why (naming the backend).
  // Default: this backend cannot change its size.
  virtual std::expected<void, std::string> resize(uint64_t bytes, bool reserve) {
    (void)bytes;
    (void)reserve;
    return std::unexpected(describe() + ": this kind of backend cannot change its size");
  }
  // Excludes other processes that open the same storage from [offset, offset + length)
  // (`on`), or lets them in again (!on): COMPARE AND WRITE on a LU that several nodes export
  // (issue 9) keeps the read, compare and write atomic across them. Blocks until granted;
  // returns 0 or -errno. Default: nothing to exclude (storage no other process writes).
  virtual int lock_for_update(uint64_t offset, uint64_t length, bool on) {
    (void)offset;
    (void)length;
    (void)on;
    return 0;
  }
  // Space held and obtainable. Returns 0 or -errno. Synchronous. Default: the whole size
  // allocated, nothing more available.
  virtual int space_usage(SpaceUsage* out) const {
    *out = SpaceUsage{size(), 0, false};
    return 0;
  }
};

}  // namespace zuma::storage
