// I/O buffers shared by every layer of the data path.
//
// A Buffer is a move-only, 4096-byte aligned byte array (aligned so the file backend can
// use O_DIRECT later). The transport receives Data-Out straight into one, the backend
// reads into one and the transport sends Data-In straight out of it: one buffer per
// command, never copied between layers (STYLE.md 5).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>

namespace zuma::storage {

class Buffer {
 public:
  static constexpr size_t kAlign = 4096;

  Buffer() = default;
  // Allocates `size` bytes, uninitialised. Throws std::bad_alloc on failure.
  explicit Buffer(size_t size) { allocate(size); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  ~Buffer() { std::free(data_); }

  // Makes size() == n; keeps the allocation when it is large enough (contents are then
  // whatever was there). Throws std::bad_alloc on failure.
  void resize(size_t n) {
    if (n > capacity_) allocate(n);
    size_ = n;
  }
  void zero() {
    if (data_) std::memset(data_, 0, size_);
  }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  uint8_t& operator[](size_t i) { return data_[i]; }
  const uint8_t& operator[](size_t i) const { return data_[i]; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

 private:
  void allocate(size_t n) {
    size_t cap = (n + kAlign - 1) / kAlign * kAlign;
    if (cap == 0) cap = kAlign;
    void* p = std::aligned_alloc(kAlign, cap);
    if (!p) throw std::bad_alloc();
    std::free(data_);
    data_ = static_cast<uint8_t*>(p);
    capacity_ = cap;
    size_ = n;
  }

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace zuma::storage
