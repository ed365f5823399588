// The null backend: reads return zeros, writes are dropped, everything succeeds inline.
// For benchmarks of the target itself (no storage cost).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "storage/backend.hh"

namespace zuma::storage {

class NullBackend final : public Backend {
 public:
  explicit NullBackend(uint64_t size) : size_(size) {}

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }
  bool supports(IoOp) const override { return true; }
  void submit(IoRequest& req) override;
  std::string describe() const override;
  // Any size: there is nothing to allocate.
  std::expected<void, std::string> resize(uint64_t bytes, bool reserve) override;

 private:
  std::atomic<uint64_t> size_;
};

}  // namespace zuma::storage
