#include "storage/memory_backend.hh"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "storage/iovec_util.hh"

namespace zuma::storage {

MemoryBackend::MemoryBackend(uint64_t size)
    : size_(size),
      nchunks_(size / kChunkSize + (size % kChunkSize != 0 ? 1 : 0)),  // no overflow
      chunks_(new std::atomic<uint8_t*>[nchunks_]) {
  for (uint64_t i = 0; i < nchunks_; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

MemoryBackend::~MemoryBackend() {
  for (uint64_t i = 0; i < nchunks_; ++i) std::free(chunks_[i].load(std::memory_order_relaxed));
}

std::string MemoryBackend::describe() const {
  return fmt::format("memory:{}", size_);
}

bool MemoryBackend::supports(IoOp) const {
  return true;
}

uint64_t MemoryBackend::chunk_len(uint64_t idx) const {
  return std::min(kChunkSize, size_ - idx * kChunkSize);
}

// Call with the chunk's stripe held (shared is enough): frees happen only exclusively.
uint8_t* MemoryBackend::get_or_alloc(uint64_t idx) {
  uint8_t* p = chunks_[idx].load(std::memory_order_acquire);
  if (p != nullptr) return p;
  const uint64_t len = chunk_len(idx);
  auto* fresh = static_cast<uint8_t*>(std::calloc(1, len));
  if (fresh == nullptr) return nullptr;
  if (chunks_[idx].compare_exchange_strong(p, fresh, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
    allocated_.fetch_add(len, std::memory_order_relaxed);
    return fresh;
  }
  std::free(fresh);  // another thread won the race; p is its chunk
  return p;
}

int MemoryBackend::extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const {
  const uint64_t len = std::min(max_len, size_ > offset ? size_ - offset : 0);
  *out = ExtentStatus{len, true};
  if (len == 0) return 0;
  uint64_t idx = offset / kChunkSize;
  const bool allocated = chunks_[idx].load(std::memory_order_acquire) != nullptr;
  uint64_t run = std::min(len, (idx + 1) * kChunkSize - offset);
  for (++idx; run < len && idx < nchunks_; ++idx) {
    if ((chunks_[idx].load(std::memory_order_acquire) != nullptr) != allocated) break;
    run = std::min(len, run + kChunkSize);
  }
  *out = ExtentStatus{run, allocated};
  return 0;
}

int MemoryBackend::space_usage(SpaceUsage* out) const {
  const uint64_t used = allocated_bytes();
  *out = SpaceUsage{used, size_ - std::min(used, size_), false};
  return 0;
}

void MemoryBackend::submit(IoRequest& req) {
  req.done(req, execute(req));
}

int MemoryBackend::execute(const IoRequest& req) {
  if (req.op == IoOp::kFlush) return 0;
  if (req.offset + req.length < req.offset || req.offset + req.length > size_) return -EINVAL;
  if ((req.op == IoOp::kRead || req.op == IoOp::kWrite) &&
      iov_total(req.iov, req.iovcnt) < req.length) {
    return -EINVAL;
  }
  IovCursor cur(req.iov, req.iovcnt);
  uint64_t off = req.offset;
  uint64_t left = req.length;
  while (left > 0) {
    const uint64_t idx = off / kChunkSize;
    const uint64_t within = off % kChunkSize;
    const uint64_t clen = chunk_len(idx);
    const uint64_t n = std::min(left, clen - within);
    switch (req.op) {
      case IoOp::kRead: {
        std::shared_lock lock(stripe(idx));
        const uint8_t* src = chunks_[idx].load(std::memory_order_acquire);
        if (src == nullptr) {
          cur.for_each(n, [](uint8_t* p, size_t len) { std::memset(p, 0, len); });
        } else {
          src += within;
          cur.for_each(n, [&](uint8_t* p, size_t len) {
            std::memcpy(p, src, len);
            src += len;
          });
        }
        break;
      }
      case IoOp::kWrite: {
        std::shared_lock lock(stripe(idx));
        uint8_t* dst = get_or_alloc(idx);
        if (dst == nullptr) return -ENOMEM;
        dst += within;
        cur.for_each(n, [&](uint8_t* p, size_t len) {
          std::memcpy(dst, p, len);
          dst += len;
        });
        break;
      }
      case IoOp::kDiscard:
      case IoOp::kWriteZeroes:
        if (within == 0 && n == clen) {
          std::unique_lock lock(stripe(idx));
          if (uint8_t* p = chunks_[idx].exchange(nullptr, std::memory_order_acq_rel)) {
            std::free(p);
            allocated_.fetch_sub(clen, std::memory_order_relaxed);
          }
        } else {
          std::shared_lock lock(stripe(idx));
          if (uint8_t* p = chunks_[idx].load(std::memory_order_acquire)) {
            std::memset(p + within, 0, n);
          }
        }
        break;
      case IoOp::kFlush:
        return 0;
    }
    off += n;
    left -= n;
  }
  return 0;
}

}  // namespace zuma::storage
