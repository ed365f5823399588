// A pool of per-request records for backends whose requests complete on another thread
// (iscsi, rbd): records are reused, so steady-state I/O allocates none. `Op` has `next`
// (the free list), `impl` (set once to the owner) and `req` (cleared on put). Any thread.
#pragma once

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace zuma::storage {

template <class Op, class Owner>
class OpPool {
 public:
  explicit OpPool(Owner* owner) : owner_(owner) {}

  Op* get() {
    std::lock_guard lock(mu_);
    if (free_ == nullptr) {
      all_.push_back(std::make_unique<Op>());
      all_.back()->impl = owner_;
      return all_.back().get();
    }
    return std::exchange(free_, free_->next);
  }
  void put(Op* op) {
    op->req = nullptr;
    std::lock_guard lock(mu_);
    op->next = free_;
    free_ = op;
  }

 private:
  Owner* owner_;
  std::mutex mu_;
  Op* free_ = nullptr;
  std::vector<std::unique_ptr<Op>> all_;
};

}  // namespace zuma::storage
