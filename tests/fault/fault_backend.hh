// Test backends for the snapshot store's crash tests (header-only; not part of zumad).
//
// SharedBackend forwards to a backend that outlives it, so a test can close a store and
// open it again on the same bytes. FaultBackend simulates a volatile write cache: every
// write, discard or zero-fill not yet followed by a kFlush is remembered with the bytes it
// replaced, and power_loss() undoes a random suffix of them (writes reach the medium in
// order up to the cut; the write at the cut may be torn at a 512-byte boundary), as
// RocksDB's FaultInjectionTestFS drops unsynced data. Synchronous: the inner backend must
// complete inline (MemoryBackend does).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "storage/backend.hh"
#include "storage/iovec_util.hh"

namespace zuma::test {

class SharedBackend final : public storage::Backend {
 public:
  explicit SharedBackend(std::shared_ptr<storage::Backend> inner) : inner_(std::move(inner)) {}
  uint64_t size() const override { return inner_->size(); }
  bool supports(storage::IoOp op) const override { return inner_->supports(op); }
  void submit(storage::IoRequest& req) override { inner_->submit(req); }
  std::string describe() const override { return "shared:" + inner_->describe(); }
  int extent_status(uint64_t o, uint64_t m, storage::ExtentStatus* out) const override {
    return inner_->extent_status(o, m, out);
  }

 private:
  std::shared_ptr<storage::Backend> inner_;
};

class FaultBackend final : public storage::Backend {
 public:
  explicit FaultBackend(std::shared_ptr<storage::Backend> inner) : inner_(std::move(inner)) {}
  uint64_t size() const override { return inner_->size(); }
  bool supports(storage::IoOp op) const override { return inner_->supports(op); }
  std::string describe() const override { return "fault:" + inner_->describe(); }

  void submit(storage::IoRequest& req) override {
    if (req.op == storage::IoOp::kFlush) {
      std::lock_guard lock(mu_);
      if (fail_flush_) return req.done(req, -EIO);
      undo_.clear();
      return inner_->submit(req);
    }
    if (req.op != storage::IoOp::kRead && req.offset + req.length <= inner_->size()) {
      std::lock_guard lock(mu_);
      Undo u{req.offset, std::vector<uint8_t>(req.length)};
      read_inner(req.offset, u.old.data(), req.length);
      undo_.push_back(std::move(u));
      if (req.fua) undo_.clear();  // FUA: durable on completion (this and what came before)
    }
    inner_->submit(req);
  }

  // Forgets a random suffix of the unsynced writes (see above). Returns how many it undid.
  size_t power_loss(std::mt19937_64& rng) {
    std::lock_guard lock(mu_);
    if (undo_.empty()) return 0;
    const size_t keep = std::uniform_int_distribution<size_t>(0, undo_.size())(rng);
    for (size_t i = undo_.size(); i-- > keep;) {
      const Undo& u = undo_[i];
      uint64_t off = 0, len = u.old.size();
      if (i == keep && len > 512 && rng() % 2) {  // torn: the first part reached the medium
        off = (std::uniform_int_distribution<uint64_t>(1, len - 1)(rng)) / 512 * 512;
        len -= off;
      }
      write_inner(u.offset + off, u.old.data() + off, len);
    }
    const size_t undone = undo_.size() - keep;
    undo_.clear();
    return undone;
  }
  size_t unsynced() const {
    std::lock_guard lock(mu_);
    return undo_.size();
  }
  void set_fail_flush(bool on) {
    std::lock_guard lock(mu_);
    fail_flush_ = on;
  }

 private:
  struct Undo {
    uint64_t offset;
    std::vector<uint8_t> old;
  };
  static void noop(storage::IoRequest&, int) {}
  void read_inner(uint64_t off, uint8_t* p, uint64_t len) {
    iovec iov{p, len};
    storage::IoRequest r;
    r.op = storage::IoOp::kRead;
    r.offset = off;
    r.length = len;
    r.iov = &iov;
    r.iovcnt = 1;
    r.done = noop;
    inner_->submit(r);
  }
  void write_inner(uint64_t off, const uint8_t* p, uint64_t len) {
    iovec iov{const_cast<uint8_t*>(p), len};
    storage::IoRequest r;
    r.op = storage::IoOp::kWrite;
    r.offset = off;
    r.length = len;
    r.iov = &iov;
    r.iovcnt = 1;
    r.done = noop;
    inner_->submit(r);
  }

  std::shared_ptr<storage::Backend> inner_;
  mutable std::mutex mu_;
  std::vector<Undo> undo_;
  bool fail_flush_ = false;
};

}  // namespace zuma::test
