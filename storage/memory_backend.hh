// The memory backend: a LU held in RAM, for tests and benchmarks (lost at exit).
//
// Memory is taken lazily in chunks of kChunkSize bytes, so a large LU costs nothing until
// it is written; a chunk never written reads as zeros. kDiscard / kWriteZeroes free the
// chunks they cover whole and zero the parts of the others. Every request completes
// inline. Safe for concurrent requests from several threads: chunk allocation is a
// compare-and-swap, and freeing a chunk excludes readers and writers of it (striped
// reader/writer locks), so a discard racing a read never frees memory in use. What
// overlapping concurrent writes leave behind is the initiator's business.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "storage/backend.hh"

namespace zuma::storage {

class MemoryBackend final : public Backend {
 public:
  static constexpr uint64_t kChunkSize = 1 << 20;

  // Throws std::bad_alloc when even the chunk table does not fit.
  explicit MemoryBackend(uint64_t size);
  ~MemoryBackend() override;
  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;

  uint64_t size() const override { return table_.load(std::memory_order_acquire)->size; }
  bool supports(IoOp op) const override;
  void submit(IoRequest& req) override;
  std::string describe() const override;
  // Chunks never written (or freed whole by kDiscard / kWriteZeroes) are deallocated.
  int extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const override;
  // allocated_bytes(); the rest of the size is available (not shared).
  int space_usage(SpaceUsage* out) const override;
  // A new chunk table, swapped in while every stripe is held exclusively (so no request is
  // inside a chunk meanwhile); chunks beyond a shrunk end are freed. `reserve` is ignored:
  // memory is taken on first write.
  std::expected<void, std::string> resize(uint64_t bytes, bool reserve) override;

  // Bytes of RAM currently held for data (a multiple of the chunk size, except for the
  // last chunk).
  uint64_t allocated_bytes() const { return allocated_.load(std::memory_order_relaxed); }

 private:
  static constexpr size_t kStripes = 64;
  struct alignas(64) Stripe {
    std::shared_mutex mu;
  };
  // The chunks of one size. Requests read table_ only while holding a stripe; a resize
  // replaces it while holding all of them. Replaced tables are kept until destruction
  // (extent_status reads without a stripe), at 8 bytes per MiB of LU.
  struct Table {
    uint64_t size = 0;
    uint64_t nchunks = 0;
    std::unique_ptr<std::atomic<uint8_t*>[]> chunks;
  };

  static std::unique_ptr<Table> make_table(uint64_t size);
  static uint64_t chunk_len(const Table& t, uint64_t idx);
  int execute(const IoRequest& req);
  uint8_t* get_or_alloc(Table& t, uint64_t idx);
  std::shared_mutex& stripe(uint64_t idx) { return stripes_[idx % kStripes].mu; }

  std::atomic<Table*> table_;
  std::vector<std::unique_ptr<Table>> tables_;  // every table made; under resize_mu_
  std::mutex resize_mu_;
  std::array<Stripe, kStripes> stripes_;
  std::atomic<uint64_t> allocated_{0};
};

}  // namespace zuma::storage
