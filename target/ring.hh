// A FIFO of reusable slots: push_back() hands out a slot reset by the caller-supplied
// reset(), pop_front() keeps the slot's memory (e.g. a vector's capacity) for reuse. It
// grows by doubling and never shrinks, so a connection's transmit queue stops allocating
// once it has seen its peak depth (STYLE.md 5).
//
// A reference from push_back()/front()/operator[] stays valid until the next push_back().
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace zuma::target {

template <typename T>
class Ring {
 public:
  explicit Ring(size_t initial = 16) : slots_(initial) {}

  template <typename Reset>
  T& push_back(Reset&& reset) {
    if (size_ == slots_.size()) grow();
    T& t = slots_[(head_ + size_) & (slots_.size() - 1)];
    reset(t);
    ++size_;
    return t;
  }
  T& front() { return slots_[head_]; }
  void pop_front() {
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
  }
  T& operator[](size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() {
    head_ = 0;
    size_ = 0;
  }

 private:
  void grow() {
    std::vector<T> bigger(slots_.size() * 2);
    for (size_t i = 0; i < size_; ++i) bigger[i] = std::move((*this)[i]);
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;  // size is a power of two
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace zuma::target
