#include "storage/memory_backend.hh"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "storage/iovec_util.hh"

namespace zuma::storage {

std::unique_ptr<MemoryBackend::Table> MemoryBackend::make_table(uint64_t size) {
  auto t = std::make_unique<Table>();
  t->size = size;
  t->nchunks = size / kChunkSize + (size % kChunkSize != 0 ? 1 : 0);  // no overflow
  t->chunks.reset(new std::atomic<uint8_t*>[t->nchunks]);
  for (uint64_t i = 0; i < t->nchunks; ++i) t->chunks[i].store(nullptr, std::memory_order_relaxed);
  return t;
}

MemoryBackend::MemoryBackend(uint64_t size) {
  tables_.push_back(make_table(size));
  table_.store(tables_.back().get(), std::memory_order_release);
}

MemoryBackend::~MemoryBackend() {
  // Only the current table owns chunks: a resize moved or freed those of the others.
  const Table& t = *table_.load(std::memory_order_acquire);
  for (uint64_t i = 0; i < t.nchunks; ++i) std::free(t.chunks[i].load(std::memory_order_relaxed));
}

std::string MemoryBackend::describe() const {
  return fmt::format("memory:{}", size());
}

bool MemoryBackend::supports(IoOp) const {
  return true;
}

uint64_t MemoryBackend::chunk_len(const Table& t, uint64_t idx) {
  return std::min(kChunkSize, t.size - idx * kChunkSize);
}

// Call with the chunk's stripe held (shared is enough): frees happen only exclusively.
uint8_t* MemoryBackend::get_or_alloc(Table& t, uint64_t idx) {
  uint8_t* p = t.chunks[idx].load(std::memory_order_acquire);
  if (p != nullptr) return p;
  const uint64_t len = chunk_len(t, idx);
  auto* fresh = static_cast<uint8_t*>(std::calloc(1, len));
  if (fresh == nullptr) return nullptr;
  if (t.chunks[idx].compare_exchange_strong(p, fresh, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
    allocated_.fetch_add(len, std::memory_order_relaxed);
    return fresh;
  }
  std::free(fresh);  // another thread won the race; p is its chunk
  return p;
}

int MemoryBackend::extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const {
  const Table& t = *table_.load(std::memory_order_acquire);
  const uint64_t len = std::min(max_len, t.size > offset ? t.size - offset : 0);
  *out = ExtentStatus{len, true};
  if (len == 0) return 0;
  uint64_t idx = offset / kChunkSize;
  const bool allocated = t.chunks[idx].load(std::memory_order_acquire) != nullptr;
  uint64_t run = std::min(len, (idx + 1) * kChunkSize - offset);
  for (++idx; run < len && idx < t.nchunks; ++idx) {
    if ((t.chunks[idx].load(std::memory_order_acquire) != nullptr) != allocated) break;
    run = std::min(len, run + kChunkSize);
  }
  *out = ExtentStatus{run, allocated};
  return 0;
}

int MemoryBackend::space_usage(SpaceUsage* out) const {
  const uint64_t used = allocated_bytes();
  const uint64_t size = this->size();
  *out = SpaceUsage{used, size - std::min(used, size), false};
  return 0;
}

std::expected<void, std::string> MemoryBackend::resize(uint64_t bytes, bool) {
  if (bytes == 0) return std::unexpected(describe() + ": the size must not be 0");
  std::lock_guard serial(resize_mu_);
  Table& old = *table_.load(std::memory_order_acquire);
  if (bytes == old.size) return {};
  std::unique_ptr<Table> t;
  try {
    t = make_table(bytes);
  } catch (const std::bad_alloc&) {
    return std::unexpected(describe() + ": no memory for the chunk table");
  }
  // Every stripe, in order (requests hold one at a time): no request is inside a chunk.
  std::array<std::unique_lock<std::shared_mutex>, kStripes> held;
  for (size_t i = 0; i < kStripes; ++i) held[i] = std::unique_lock(stripes_[i].mu);
  const uint64_t common = std::min(old.nchunks, t->nchunks);
  // The last common chunk changes length when it was or becomes the partial last one.
  uint8_t* edge = nullptr;
  const uint64_t old_len = common ? chunk_len(old, common - 1) : 0;
  const uint64_t new_len = common ? chunk_len(*t, common - 1) : 0;
  if (common && old_len != new_len) {
    if (uint8_t* p = old.chunks[common - 1].load(std::memory_order_relaxed)) {
      edge = static_cast<uint8_t*>(std::calloc(1, new_len));  // the grown part reads as zeros
      if (edge == nullptr) return std::unexpected(describe() + ": out of memory");
      std::memcpy(edge, p, std::min(old_len, new_len));
      std::free(p);
      allocated_.fetch_add(new_len - old_len, std::memory_order_relaxed);  // may wrap: modular
    }
  }
  for (uint64_t i = 0; i < common; ++i)
    t->chunks[i].store(old.chunks[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  if (edge) t->chunks[common - 1].store(edge, std::memory_order_relaxed);
  for (uint64_t i = common; i < old.nchunks; ++i) {
    if (uint8_t* p = old.chunks[i].exchange(nullptr, std::memory_order_relaxed)) {
      std::free(p);
      allocated_.fetch_sub(chunk_len(old, i), std::memory_order_relaxed);
    }
  }
  table_.store(t.get(), std::memory_order_release);
  tables_.push_back(std::move(t));
  return {};
}

void MemoryBackend::submit(IoRequest& req) {
  req.done(req, execute(req));
}

int MemoryBackend::execute(const IoRequest& req) {
  if (req.op == IoOp::kFlush) return 0;
  if (req.offset + req.length < req.offset || req.offset + req.length > size()) return -EINVAL;
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
    // The table is read under the chunk's stripe (see resize()). kDiscard/kWriteZeroes
    // take it exclusive: they may free the chunk.
    const bool exclusive = req.op == IoOp::kDiscard || req.op == IoOp::kWriteZeroes;
    std::shared_lock<std::shared_mutex> shared;
    std::unique_lock<std::shared_mutex> unique;
    if (exclusive)
      unique = std::unique_lock(stripe(idx));
    else
      shared = std::shared_lock(stripe(idx));
    Table& t = *table_.load(std::memory_order_acquire);
    if (off + left > t.size) return -EINVAL;  // shrunk since the request started
    const uint64_t clen = chunk_len(t, idx);
    const uint64_t n = std::min(left, clen - within);
    switch (req.op) {
      case IoOp::kRead: {
        const uint8_t* src = t.chunks[idx].load(std::memory_order_acquire);
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
        uint8_t* dst = get_or_alloc(t, idx);
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
          if (uint8_t* p = t.chunks[idx].exchange(nullptr, std::memory_order_acq_rel)) {
            std::free(p);
            allocated_.fetch_sub(clen, std::memory_order_relaxed);
          }
        } else if (uint8_t* p = t.chunks[idx].load(std::memory_order_acquire)) {
          std::memset(p + within, 0, n);
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
