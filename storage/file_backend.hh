// The file backend: a regular file or a block device (DESIGN.md: storage/).
//
// With an IoContext current on the submitting thread every request goes through its
// io_uring and completes from IoContext::reap() on that thread; without one the request
// runs synchronously (preadv2/pwritev2, fdatasync, fallocate) and completes inline.
//
// Mapping of operations:
//   kRead / kWrite  readv / writev at the same byte offset; fua -> RWF_DSYNC
//   kFlush          fdatasync (IORING_FSYNC_DATASYNC)
//   kDiscard        fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeros and, on a
//                   regular file, its blocks are freed; on a block device the kernel
//                   turns it into WRITE ZEROES with unmap allowed
//   kWriteZeroes    fallocate(ZERO_RANGE | KEEP_SIZE), or PUNCH_HOLE where the file
//                   system has no ZERO_RANGE (tmpfs); a block device falls back to
//                   writing zeros itself
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include "storage/backend.hh"
#include "storage/unique_fd.hh"

namespace zuma::storage {

class FileBackend final : public Backend {
 public:
  // Opens `path` for a LU of `size` bytes (factory.hh BackendSpec "file"):
  //  - missing: creates it (mode 0600, parent directories as needed) as a sparse file of
  //    `size` bytes; size 0 is then an error.
  //  - an existing regular file must hold at least `size` bytes (only the first `size`
  //    are used); it is never grown or truncated. size 0 means the whole file.
  //  - a block device (opened O_EXCL, so a mounted one is refused) must hold at least
  //    `size` bytes; size 0 means the whole device.
  // Error: one line naming the path and the errno text.
  static std::expected<std::unique_ptr<FileBackend>, std::string> open(const std::string& path,
                                                                       uint64_t size);

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }
  bool supports(IoOp op) const override;
  void submit(IoRequest& req) override;
  // Whether reads and non-FUA writes first try RWF_NOWAIT inline (default on); tests that
  // exercise the ring itself turn it off.
  void set_try_inline(bool on) { try_inline_ = on; }
  std::string describe() const override { return "file:" + path_; }
  // An open-file-description lock (fcntl F_OFD_SETLKW, F_WRLCK) on the byte range: other
  // processes' locks of the file exclude it, this process's own do not (the LU's range lock
  // orders those). Local file systems, NFS and cluster file systems with POSIX locks.
  int lock_for_update(uint64_t offset, uint64_t length, bool on) override;
  // Regular file: lseek(SEEK_DATA / SEEK_HOLE), so holes (never written, or punched by
  // kDiscard) are deallocated. File systems that track unwritten extents (ext4, xfs) may
  // report a kWriteZeroes range as a hole too: it reads as zeros either way. A block
  // device reports everything allocated.
  int extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const override;
  // Regular file: allocated = st_blocks * 512, available = the file system's free space for
  // unprivileged users (shared). Block device: its size, nothing more.
  int space_usage(SpaceUsage* out) const override;

  // Regular file: the file becomes exactly `bytes` long (ftruncate). Growing first cuts it
  // to the old size, so whatever lay beyond (a write that raced a shrink, a file larger
  // than the LU) is gone and the new bytes read as zeros; `reserve` then allocates them
  // (fallocate; where the file system cannot, they stay sparse). A block device refuses:
  // its size is the device's.
  std::expected<void, std::string> resize(uint64_t bytes, bool reserve) override;

  int fd() const { return fd_.get(); }
  bool is_block_device() const { return block_device_; }

 private:
  bool try_inline_ = true;
  bool memory_file_ = false;    // on tmpfs: all I/O inline (see the constructor)
  bool nowait_writes_ = true;   // RWF_NOWAIT writes supported, until the kernel says no
  FileBackend(UniqueFd fd, std::string path, uint64_t size, bool block_device);
  // The fallocate(2) mode for kDiscard / kWriteZeroes, or -1 when unsupported.
  int fallocate_mode(IoOp op) const;
  int run_sync(const IoRequest& req) const;
  int rw_sync(const IoRequest& req) const;

  UniqueFd fd_;
  std::string path_;
  std::atomic<uint64_t> size_;
  bool block_device_;
  bool punch_hole_ = false;  // FALLOC_FL_PUNCH_HOLE works here
  bool zero_range_ = false;  // FALLOC_FL_ZERO_RANGE works here
};

}  // namespace zuma::storage
