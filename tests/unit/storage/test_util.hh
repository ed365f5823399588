// Helpers shared by the storage and replication unit tests (not a test file itself).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "storage/backend.hh"
#include "storage/io_context.hh"

namespace zuma::storage::test {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/zuma-storage-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Polls `cond` until it holds or `limit` has passed (then looks once more).
template <class Pred>
bool eventually(Pred cond, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

// Records how a request completed; pass as IoRequest::user.
struct Done {
  int result = 1;  // 1: not completed
  int calls = 0;
};

inline void record_done(IoRequest& req, int result) {
  auto* d = static_cast<Done*>(req.user);
  d->result = result;
  ++d->calls;
}

inline IoRequest make_req(IoOp op, uint64_t offset, uint64_t length, const iovec* iov, int iovcnt,
                          Done* done) {
  IoRequest r;
  r.op = op;
  r.offset = offset;
  r.length = length;
  r.iov = iov;
  r.iovcnt = iovcnt;
  r.done = &record_done;
  r.user = done;
  return r;
}

// `n` bytes of a pattern that differs with `seed` and position.
inline std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t x = seed * 0x9E3779B1u + static_cast<uint32_t>(i);
    x ^= x >> 15;
    x *= 0x85EBCA77u;
    x ^= x >> 13;
    v[i] = static_cast<uint8_t>(x);
  }
  return v;
}

inline std::vector<uint8_t> read_file(const std::string& path, uint64_t off, size_t n) {
  std::vector<uint8_t> v(n);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + path);
  ssize_t got = ::pread(fd, v.data(), n, static_cast<off_t>(off));
  ::close(fd);
  if (got < 0) throw std::runtime_error("pread " + path);
  v.resize(static_cast<size_t>(got));
  return v;
}

inline void write_file(const std::string& path, uint64_t off, const std::vector<uint8_t>& data) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + path);
  ssize_t put = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
  ::close(fd);
  if (put != static_cast<ssize_t>(data.size())) throw std::runtime_error("pwrite " + path);
}

inline struct stat stat_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("stat " + path);
  return st;
}

// Drives `ctx` the way a reactor does (flush, wait for the eventfd, reap) until `until()`
// holds; false after 10 s.
template <class Pred>
bool drive(IoContext& ctx, Pred until) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!until()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    ctx.flush();
    pollfd p{ctx.event_fd(), POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) ctx.reap();
  }
  return true;
}

// Makes a context current for the scope of the object.
class CurrentContext {
 public:
  explicit CurrentContext(unsigned entries = 64) {
    auto c = IoContext::create(entries);
    if (!c) throw std::runtime_error("io_uring unavailable");
    ctx_ = std::move(*c);
    ctx_->make_current();
  }
  ~CurrentContext() { IoContext::clear_current(); }
  IoContext& operator*() { return *ctx_; }
  IoContext* operator->() { return ctx_.get(); }
  IoContext* get() { return ctx_.get(); }

 private:
  std::unique_ptr<IoContext> ctx_;
};

}  // namespace zuma::storage::test
