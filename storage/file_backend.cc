#include "storage/file_backend.hh"

#include <linux/magic.h>
#include <sys/vfs.h>

#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "storage/io_context.hh"
#include "storage/iovec_util.hh"

namespace zuma::storage {

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

int fallocate_retry(int fd, int mode, uint64_t off, uint64_t len) {
  for (;;) {
    if (::fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

// Which fallocate modes the file system of `fd` implements, tried on bytes that read as
// zeros before and after (a fresh sparse file, or an unnamed O_TMPFILE next to the LU
// file), so the probe never changes data.
struct FallocateSupport {
  bool punch_hole = false;
  bool zero_range = false;
};

FallocateSupport probe_fallocate(int fd, uint64_t len) {
  FallocateSupport s;
  s.punch_hole = fallocate_retry(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, len) == 0;
  s.zero_range = fallocate_retry(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, len) == 0;
  if (s.zero_range && s.punch_hole) {
    // ZERO_RANGE may have allocated (unwritten) blocks in a sparse file: give them back.
    (void)fallocate_retry(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, len);
  }
  return s;
}

FallocateSupport probe_fallocate_dir(const std::filesystem::path& dir) {
  const std::string d = dir.empty() ? std::string(".") : dir.string();
  UniqueFd tmp(::open(d.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!tmp) return {};  // cannot tell: claim nothing (the SCSI layer then hides UNMAP)
  constexpr uint64_t kProbe = 4096;
  if (::ftruncate(tmp.get(), 2 * kProbe) != 0) return {};
  return probe_fallocate(tmp.get(), kProbe);
}

// A block device implements PUNCH_HOLE only as WRITE ZEROES without fallback (Linux
// block/fops.c blkdev_fallocate), which needs the queue to offer write-zeroes.
bool block_device_writes_zeroes(dev_t rdev) {
  const std::string base = fmt::format("/sys/dev/block/{}:{}", major(rdev), minor(rdev));
  // A partition has no queue/ of its own; its disk's is one level up.
  for (const char* rel : {"/queue/write_zeroes_max_bytes", "/../queue/write_zeroes_max_bytes"}) {
    std::ifstream in(base + rel);
    uint64_t v = 0;
    if (in >> v) return v > 0;
  }
  return false;
}

}  // namespace

FileBackend::FileBackend(UniqueFd fd, std::string path, uint64_t size, bool block_device)
    : fd_(std::move(fd)), path_(std::move(path)), size_(size), block_device_(block_device) {  // tmpfs (/dev/shm, /run): reads and writes are memory copies that never wait for a
  // device, and tmpfs does not take RWF_NOWAIT writes, so io_uring would hand every write
  // to a worker thread. Doing them inline on the reactor is cheaper.
  struct statfs fs {};
  memory_file_ = !block_device && ::fstatfs(fd_.get(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
}

std::expected<std::unique_ptr<FileBackend>, std::string> FileBackend::open(const std::string& path,
                                                                           uint64_t size) {
  using R = std::expected<std::unique_ptr<FileBackend>, std::string>;
  if (path.empty()) return R(std::unexpect, "file backend: no path given");

  UniqueFd fd;
  bool created = false;
  for (int attempt = 0; attempt < 2 && !fd; ++attempt) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        return R(std::unexpect, fmt::format("{}: not a regular file or block device", path));
      }
      // O_EXCL on a block device claims it exclusively: a mounted one is refused (EBUSY).
      const int flags = O_RDWR | O_CLOEXEC | (S_ISBLK(st.st_mode) ? O_EXCL : 0);
      fd.reset(::open(path.c_str(), flags));
      if (!fd) return R(std::unexpect, fmt::format("{}: cannot open: {}", path, errno_text(errno)));
      break;
    }
    if (errno != ENOENT) {
      return R(std::unexpect, fmt::format("{}: cannot stat: {}", path, errno_text(errno)));
    }
    if (size == 0) {
      return R(std::unexpect,
               fmt::format("{}: {} (give the LU a size to create it)", path, errno_text(ENOENT)));
    }
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        return R(std::unexpect, fmt::format("{}: cannot create directory {}: {}", path,
                                            parent.string(), ec.message()));
      }
    }
    fd.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) {
      if (errno == EEXIST) continue;  // created by someone else meanwhile: open theirs
      return R(std::unexpect, fmt::format("{}: cannot create: {}", path, errno_text(errno)));
    }
    created = true;
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      const int err = errno;
      ::unlink(path.c_str());
      return R(std::unexpect, fmt::format("{}: cannot size the new file to {} bytes: {}", path,
                                          size, errno_text(err)));
    }
  }
  if (!fd) return R(std::unexpect, fmt::format("{}: cannot open: {}", path, errno_text(EEXIST)));

  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return R(std::unexpect, fmt::format("{}: cannot stat: {}", path, errno_text(errno)));
  }
  uint64_t have = 0;
  const bool block = S_ISBLK(st.st_mode);
  if (block) {
    if (::ioctl(fd.get(), BLKGETSIZE64, &have) != 0) {
      return R(std::unexpect, fmt::format("{}: BLKGETSIZE64: {}", path, errno_text(errno)));
    }
  } else if (S_ISREG(st.st_mode)) {
    have = static_cast<uint64_t>(st.st_size);
  } else {
    return R(std::unexpect, fmt::format("{}: not a regular file or block device", path));
  }
  // Never grow or truncate existing data: a size mismatch is the administrator's call.
  if (have < size) {
    return R(std::unexpect,
             fmt::format("{} is {} bytes, the LU needs {} (zuma never resizes existing data)", path,
                         have, size));
  }
  if (size == 0) size = have;
  if (size == 0) {
    return R(std::unexpect, fmt::format("{} is empty and the LU has no size", path));
  }

  std::unique_ptr<FileBackend> b(new FileBackend(std::move(fd), path, size, block));
  if (block) {
    b->punch_hole_ = block_device_writes_zeroes(st.st_rdev);
    b->zero_range_ = true;  // the kernel writes zeros itself when the device cannot
  } else {
    const FallocateSupport s = created
                                   ? probe_fallocate(b->fd(), std::min<uint64_t>(size, 4096))
                                   : probe_fallocate_dir(std::filesystem::path(path).parent_path());
    b->punch_hole_ = s.punch_hole;
    b->zero_range_ = s.zero_range;
  }
  return b;
}

bool FileBackend::supports(IoOp op) const {
  switch (op) {
    case IoOp::kRead:
    case IoOp::kWrite:
    case IoOp::kFlush:
      return true;
    case IoOp::kDiscard:
    case IoOp::kWriteZeroes:
      return fallocate_mode(op) >= 0;
  }
  return false;
}

int FileBackend::fallocate_mode(IoOp op) const {
  if (op == IoOp::kDiscard) {
    return punch_hole_ ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : -1;
  }
  if (op == IoOp::kWriteZeroes) {
    if (zero_range_) return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    if (punch_hole_) return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  }
  return -1;
}

void FileBackend::submit(IoRequest& req) {
  if (req.op != IoOp::kFlush) {
    // Overflow-safe range check (the caller guarantees it; a bad one must not touch data
    // beyond the LU).
    if (req.offset + req.length < req.offset || req.offset + req.length > size()) {
      req.done(req, -EINVAL);
      return;
    }
    if (req.length == 0) {
      req.done(req, 0);
      return;
    }
  }
  int mode = 0;
  if (req.op == IoOp::kDiscard || req.op == IoOp::kWriteZeroes) {
    mode = fallocate_mode(req.op);
    if (mode < 0) {
      req.done(req, -EOPNOTSUPP);
      return;
    }
  }

  IoContext* ctx = IoContext::current();
  if (ctx == nullptr) {
    req.done(req, run_sync(req));
    return;
  }
  // Page-cache (and tmpfs) hits first, inline: preadv2/pwritev2 with RWF_NOWAIT never
  // block, and a hit costs one system call with no trip through the ring or its worker
  // threads (tmpfs writes would otherwise be punted to io-wq). Anything short of a
  // complete transfer goes to the ring whole: reading or writing the same bytes again is
  // harmless. FUA writes always go to the ring (RWF_DSYNC waits for the device).
  if (memory_file_ && try_inline_) {
    req.done(req, run_sync(req));
    return;
  }
  if (try_inline_ && (req.op == IoOp::kRead || (req.op == IoOp::kWrite && !req.fua && nowait_writes_)) &&
      iov_total(req.iov, req.iovcnt) == req.length) {
    const ssize_t r =
        req.op == IoOp::kRead
            ? ::preadv2(fd_.get(), req.iov, req.iovcnt, static_cast<off_t>(req.offset), RWF_NOWAIT)
            : ::pwritev2(fd_.get(), req.iov, req.iovcnt, static_cast<off_t>(req.offset), RWF_NOWAIT);
    if (r >= 0 && static_cast<uint64_t>(r) == req.length) {
      req.done(req, 0);
      return;
    }
    // A file system without non-blocking buffered writes says so every time: stop asking.
    if (r < 0 && errno == EOPNOTSUPP && req.op == IoOp::kWrite) nowait_writes_ = false;
  }
  switch (req.op) {
    case IoOp::kRead:
      ctx->queue_rw(req, fd_.get(), 0);
      return;
    case IoOp::kWrite:
      ctx->queue_rw(req, fd_.get(), req.fua ? RWF_DSYNC : 0);
      return;
    case IoOp::kFlush:
      io_uring_prep_fsync(ctx->get_sqe(req), fd_.get(), IORING_FSYNC_DATASYNC);
      return;
    case IoOp::kDiscard:
    case IoOp::kWriteZeroes:
      io_uring_prep_fallocate(ctx->get_sqe(req), fd_.get(), mode, static_cast<off_t>(req.offset),
                              static_cast<off_t>(req.length));
      return;
  }
  req.done(req, -EINVAL);
}

int FileBackend::extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const {
  const uint64_t size = this->size();
  const uint64_t len = std::min(max_len, size > offset ? size - offset : 0);
  *out = ExtentStatus{len, true};
  if (block_device_ || len == 0) return 0;
  const off_t off = static_cast<off_t>(offset);
  const off_t data = ::lseek(fd_.get(), off, SEEK_DATA);
  if (data < 0) {
    // ENXIO: no data at or after offset (the rest of the file is a hole). EINVAL: the file
    // system cannot tell; everything counts as allocated then.
    if (errno == ENXIO) out->allocated = false;
    return errno == ENXIO || errno == EINVAL || errno == EOPNOTSUPP ? 0 : -errno;
  }
  if (data > off) {
    out->allocated = false;
    out->length = std::min(len, static_cast<uint64_t>(data - off));
    return 0;
  }
  const off_t hole = ::lseek(fd_.get(), off, SEEK_HOLE);
  if (hole < 0) return errno == ENXIO || errno == EINVAL ? 0 : -errno;
  if (hole > off) out->length = std::min(len, static_cast<uint64_t>(hole - off));
  return 0;
}

int FileBackend::space_usage(SpaceUsage* out) const {
  const uint64_t size = this->size();
  *out = SpaceUsage{size, 0, false};
  if (block_device_) return 0;
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return -errno;
  out->allocated_bytes = std::min<uint64_t>(static_cast<uint64_t>(st.st_blocks) * 512, size);
  struct statvfs vfs {};
  if (::fstatvfs(fd_.get(), &vfs) != 0) return -errno;
  out->available_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  out->available_shared = true;
  return 0;
}

std::expected<void, std::string> FileBackend::resize(uint64_t bytes, bool reserve) {
  using R = std::expected<void, std::string>;
  if (block_device_) {
    return R(std::unexpect, fmt::format("{} is a block device: its size is the device's, not "
                                        "zuma's to change",
                                        path_));
  }
  if (bytes == 0) return R(std::unexpect, fmt::format("{}: the size must not be 0", path_));
  const uint64_t old = size();
  if (bytes == old) return {};
  auto truncate = [&](uint64_t to) -> int {
    for (;;) {
      if (::ftruncate(fd_.get(), static_cast<off_t>(to)) == 0) return 0;
      if (errno != EINTR) return errno;
    }
  };
  if (bytes < old) {
    // The LU stopped using the bytes beyond `bytes` before this call (LogicalUnit::resize).
    size_.store(bytes, std::memory_order_relaxed);
    if (int e = truncate(bytes)) {
      size_.store(old, std::memory_order_relaxed);
      return R(std::unexpect, fmt::format("{}: cannot truncate to {} bytes: {}", path_, bytes,
                                          errno_text(e)));
    }
    return {};
  }
  int e = truncate(old);  // drops what lay beyond the LU's end
  if (e == 0) e = truncate(bytes);
  if (e != 0) {
    (void)truncate(old);
    return R(std::unexpect, fmt::format("{}: cannot grow to {} bytes: {}", path_, bytes,
                                        errno_text(e)));
  }
  if (reserve) {
    const int r = fallocate_retry(fd_.get(), 0, old, bytes - old);
    // A file system without fallocate keeps the new bytes sparse; anything else (ENOSPC)
    // means the full-provisioned LU cannot have them.
    if (r != 0 && r != -EOPNOTSUPP) {
      (void)truncate(old);
      return R(std::unexpect, fmt::format("{}: cannot allocate {} more bytes: {}", path_,
                                          bytes - old, errno_text(-r)));
    }
  }
  size_.store(bytes, std::memory_order_relaxed);
  return {};
}

int FileBackend::run_sync(const IoRequest& req) const {
  switch (req.op) {
    case IoOp::kRead:
    case IoOp::kWrite:
      return rw_sync(req);
    case IoOp::kFlush:
      for (;;) {
        if (::fdatasync(fd_.get()) == 0) return 0;
        if (errno != EINTR) return -errno;
      }
    case IoOp::kDiscard:
    case IoOp::kWriteZeroes:
      return fallocate_retry(fd_.get(), fallocate_mode(req.op), req.offset, req.length);
  }
  return -EINVAL;
}

int FileBackend::rw_sync(const IoRequest& req) const {
  const uint64_t total = iov_total(req.iov, req.iovcnt);
  if (total < req.length) return -EINVAL;
  const bool read = req.op == IoOp::kRead;
  const int flags = !read && req.fua ? RWF_DSYNC : 0;
  const iovec* iov = req.iov;
  int cnt = req.iovcnt;
  std::vector<iovec> rest;  // only used after a short transfer or for an over-long list
  if (total != req.length) {
    iov_slice(req.iov, req.iovcnt, 0, req.length, rest);
    iov = rest.data();
    cnt = static_cast<int>(rest.size());
  }
  uint64_t done = 0;
  while (done < req.length) {
    const off_t off = static_cast<off_t>(req.offset + done);
    const ssize_t n =
        read ? ::preadv2(fd_.get(), iov, cnt, off, 0) : ::pwritev2(fd_.get(), iov, cnt, off, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) {
      if (!read) return -EIO;  // no progress: would loop forever
      // End of file (the file shrank under us): the rest reads as zeros.
      iov_zero(req.iov, req.iovcnt, done, req.length - done);
      return 0;
    }
    done += static_cast<uint64_t>(n);
    if (done < req.length) {
      rest.clear();
      iov_slice(req.iov, req.iovcnt, done, req.length - done, rest);
      iov = rest.data();
      cnt = static_cast<int>(rest.size());
    }
  }
  return 0;
}

int FileBackend::lock_for_update(uint64_t offset, uint64_t length, bool on) {
  struct flock l {};
  l.l_type = on ? F_WRLCK : F_UNLCK;
  l.l_whence = SEEK_SET;
  l.l_start = static_cast<off_t>(offset);
  l.l_len = static_cast<off_t>(length);
  while (::fcntl(fd_.get(), on ? F_OFD_SETLKW : F_OFD_SETLK, &l) != 0) {
    if (errno != EINTR) return -errno;
  }
  return 0;
}

}  // namespace zuma::storage
