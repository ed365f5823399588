// The null backend: reads return zeros, writes are dropped, everything succeeds inline.
// For benchmarks of the target itself (no storage cost).
#pragma once

#include <cstdint>
#include <string>

#include "storage/backend.hh"

namespace zuma::storage {

class NullBackend final : public Backend {
 public:
  explicit NullBackend(uint64_t size) : size_(size) {}

  uint64_t size() const override { return size_; }
  bool supports(IoOp) const override { return true; }
  void submit(IoRequest& req) override;
  std::string describe() const override;

 private:
  uint64_t size_;
};

}  // namespace zuma::storage
