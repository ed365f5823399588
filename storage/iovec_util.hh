// Small helpers over scatter/gather lists (struct iovec arrays), shared by the backends.
//
// None of them allocates except iov_slice(), which appends to a caller-owned vector (keep
// the vector around to reuse its capacity).
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace zuma::storage {

// Total bytes described by iov[0..cnt).
inline uint64_t iov_total(const iovec* iov, int cnt) {
  uint64_t n = 0;
  for (int i = 0; i < cnt; ++i) n += iov[i].iov_len;
  return n;
}

// Walks an iovec array byte-wise without modifying it.
class IovCursor {
 public:
  IovCursor(const iovec* iov, int cnt) : iov_(iov), cnt_(cnt) { skip_empty(); }

  bool at_end() const { return idx_ >= cnt_; }
  // The contiguous bytes at the cursor (empty at the end).
  uint8_t* data() const { return static_cast<uint8_t*>(iov_[idx_].iov_base) + off_; }
  size_t contiguous() const { return at_end() ? 0 : iov_[idx_].iov_len - off_; }

  // Moves forward by up to n bytes; returns how many it moved.
  uint64_t advance(uint64_t n) {
    uint64_t moved = 0;
    while (n > 0 && !at_end()) {
      const size_t step = static_cast<size_t>(std::min<uint64_t>(n, contiguous()));
      off_ += step;
      moved += step;
      n -= step;
      skip_empty();
    }
    return moved;
  }

  // Visits up to n bytes as contiguous pieces fn(uint8_t* p, size_t len), advancing past
  // them; returns how many bytes it visited.
  template <class Fn>
  uint64_t for_each(uint64_t n, Fn&& fn) {
    uint64_t seen = 0;
    while (n > 0 && !at_end()) {
      const size_t step = static_cast<size_t>(std::min<uint64_t>(n, contiguous()));
      fn(data(), step);
      off_ += step;
      seen += step;
      n -= step;
      skip_empty();
    }
    return seen;
  }

 private:
  void skip_empty() {
    while (idx_ < cnt_ && off_ >= iov_[idx_].iov_len) {
      ++idx_;
      off_ = 0;
    }
  }

  const iovec* iov_;
  int cnt_;
  int idx_ = 0;
  size_t off_ = 0;
};

// Appends to `out` the iovecs describing bytes [skip, skip + len) of iov[0..cnt); returns
// the number of bytes described (less than len only when the list is too short).
inline uint64_t iov_slice(const iovec* iov, int cnt, uint64_t skip, uint64_t len,
                          std::vector<iovec>& out) {
  IovCursor c(iov, cnt);
  if (c.advance(skip) != skip) return 0;
  return c.for_each(len, [&](uint8_t* p, size_t n) { out.push_back(iovec{p, n}); });
}

// Fills bytes [skip, skip + len) of the list with zeros.
inline void iov_zero(const iovec* iov, int cnt, uint64_t skip, uint64_t len) {
  IovCursor c(iov, cnt);
  if (c.advance(skip) != skip) return;
  c.for_each(len, [](uint8_t* p, size_t n) { std::memset(p, 0, n); });
}

}  // namespace zuma::storage
