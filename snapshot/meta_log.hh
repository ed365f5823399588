// The persistent form of the snapshot metadata (docs/FORMATS.md "Snapshot metadata"):
// two checksummed superblocks, a journal of checksummed, sequence-numbered transactions
// and two checkpoint slots, in one metadata file or device reached through a
// storage::Backend (so tests can put a power-loss simulating backend under it).
//
// Durability: append() and checkpoint() return only after the backend flushed. Recovery
// (open) loads the checkpoint the newest valid superblock names, then replays journal
// records while their magic, sequence number and checksum are right; the first bad one
// is a torn tail (a write cut by the crash) and is cut. A superblock or checkpoint that
// fails its checksum is reported, never used.
//
// Threading: one thread at a time (the store's commit path). The backend is used
// synchronously: call from a thread without an IoContext.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "snapshot/metadata.hh"
#include "storage/backend.hh"

namespace zuma::snapshot {

struct StoreGeometry {
  uint64_t chunk_size = 0;
  uint64_t home_chunks = 0;
  uint64_t store_chunks = 0;
};

class MetaLog {
 public:
  static constexpr uint64_t kSuperblockSize = 4096;
  static constexpr uint64_t kRecordAlign = 512;
  static constexpr uint64_t kMinSize = 64 * 1024;

  // Opens the metadata on `dev` (formatting it when it is all zeros at the start) and
  // recovers the state into *md (built with the same geometry). Error: a one-line message
  // ("...: checksum mismatch" for corruption, a geometry mismatch, an I/O error).
  static std::expected<std::unique_ptr<MetaLog>, std::string> open(
      std::unique_ptr<storage::Backend> dev, const StoreGeometry& geo, Metadata* md);

  // Appends one transaction and makes it durable. 0, -ENOSPC when the journal has no room
  // for it (checkpoint instead), or -errno from the device.
  int append(std::span<const MetaOp> ops);
  // Writes a checkpoint of `state` (Metadata::serialize) to the inactive slot, then the
  // next superblock naming it, and empties the journal. 0, -ENOSPC if it does not fit a
  // slot, or -errno.
  int checkpoint(std::span<const uint8_t> state);

  uint64_t checkpoint_capacity() const { return slot_size_; }
  uint64_t journal_capacity() const { return journal_size_; }
  uint64_t journal_used() const { return write_pos_; }
  uint64_t generation() const { return generation_; }
  uint64_t next_seq() const { return next_seq_; }
  uint64_t records_replayed() const { return replayed_; }
  storage::Backend& device() { return *dev_; }

 private:
  explicit MetaLog(std::unique_ptr<storage::Backend> dev) : dev_(std::move(dev)) {}
  int write_superblock();
  std::optional<std::string> load(const StoreGeometry& geo, Metadata* md);

  std::unique_ptr<storage::Backend> dev_;
  StoreGeometry geo_;
  uint64_t journal_off_ = 0, journal_size_ = 0;
  uint64_t slot_off_[2] = {0, 0};
  uint64_t slot_size_ = 0;
  uint64_t generation_ = 0;
  uint64_t active_slot_ = 0;
  uint64_t cp_len_ = 0, cp_sum_ = 0;
  uint64_t first_seq_ = 1;  // of the journal's first record in this generation
  uint64_t next_seq_ = 1;
  uint64_t write_pos_ = 0;  // bytes of the journal in use
  uint64_t replayed_ = 0;
};

}  // namespace zuma::snapshot
