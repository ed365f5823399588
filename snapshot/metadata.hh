// The snapshot store's metadata (docs/FORMATS.md): which physical chunk holds each logical
// chunk of the live LU, of every snapshot and of every clone; the chunk allocator; and the
// operations that change them, recorded as MetaOps for the journal (meta_log.hh).
//
// Model (redirect-on-write with epochs): every mapping carries the epoch it was born in. A
// snapshot is an epoch number: creating one records `current` and increments it (O(1)).
// A live write to a chunk whose mapping was born at or before the newest snapshot's epoch
// needs a new chunk (once: the new mapping is born in `current`, newer than every
// snapshot); the old version is retired into the history with death = `current`, or freed
// at once when no snapshot epoch lies in [birth, death). Snapshot S reads the version alive
// at S (birth <= S < death). The write path's only snapshot-related cost is one comparison
// with the newest snapshot's epoch, whatever their number.
//
// Clones (docs/FORMATS.md): a clone is a line of its own over its base snapshot (of the LU
// or of another clone). Its own mappings carry birth epochs too, and its snapshots take
// epochs from the same counter, so the same rules apply within the line: a clone write
// redirects a chunk at most once after the clone's newest snapshot, and an epoch names one
// snapshot store-wide, whichever line it belongs to.
//
// Physical chunks: [0, home_chunks) are the LU's own backend (chunk c starts at home: a
// mapping never written is {phys = c, birth = 0}); [home_chunks, home_chunks +
// store_chunks) are the store's data area. Freed chunks of either kind are reused.
//
// Not thread-safe: SnapshotStore serialises access.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zuma::snapshot {

using Epoch = uint64_t;
using Phys = uint64_t;
inline constexpr Phys kZeroPhys = ~0ull;  // holds no storage, reads as zeros
inline constexpr Epoch kLive = ~0ull;     // "now" in diff(), death of a live mapping

struct Mapping {
  Phys phys = 0;
  Epoch birth = 0;
};

struct SnapshotInfo {
  Epoch epoch = 0;      // also the snapshot's id
  int64_t created = 0;  // Unix seconds
  std::string name;     // unique among snapshots; may be empty
};

struct CloneInfo {
  uint64_t id = 0;
  Epoch base = 0;  // the snapshot it branches from (pinned while the clone exists)
  int64_t created = 0;
  std::string name;
};

// One journal operation. Replaying the ops of committed transactions in order on the last
// checkpoint reproduces the metadata.
enum class OpType : uint8_t {
  kMap = 1,        // live[a] = {phys b, birth c}
  kRetire = 2,     // history += (chunk a, birth b) -> {death c, phys d}
  kDrop = 3,       // history -= (chunk a, birth b)
  kSnap = 4,       // snapshot epoch a, created b, name; current = a + 1
  kUnsnap = 5,     // snapshot a deleted; its space is reclaimed next (reclaim pending)
  kReclaimed = 6,  // reclaim of deleted snapshot a finished
  kClone = 7,      // clone id a of snapshot b, created c, name
  kCloneMap = 8,   // clone a: chunk b -> phys c
  kUnclone = 9,    // clone a deleted (its chunks freed)
  // Clone lines (checkpoint version 2). kCloneMap's d is the new mapping's birth; replaying it
  // retires or frees the clone's old version exactly as clone_map() did.
  kCloneSnap = 10,  // snapshot epoch a of clone b, created c, name; current = a + 1
  kCloneDrop = 11,  // clone a: history -= (chunk b, birth c)
};

struct MetaOp {
  OpType type = OpType::kMap;
  uint64_t a = 0, b = 0, c = 0, d = 0;
  std::string name;
};

// A run of changed logical chunks (diff()).
struct ChunkRun {
  uint64_t first = 0;
  uint64_t count = 0;
  bool operator==(const ChunkRun&) const = default;
};

struct SpaceStats {
  uint64_t total_chunks = 0;  // home + store
  uint64_t used_chunks = 0;   // referenced, or freed but not yet committed
};

// A clone's own line: its mappings, retired versions its snapshots see, its snapshots.
struct CloneLine {
  struct Version {
    Epoch death = 0;
    Phys phys = 0;
  };
  std::unordered_map<uint64_t, Mapping> own;                // chunk -> current version
  std::map<std::pair<uint64_t, Epoch>, Version> history;    // (chunk, birth)
  std::set<std::pair<Epoch, uint64_t>> own_by_birth;        // (birth, chunk)
  std::set<std::pair<Epoch, uint64_t>> by_birth;            // history: (birth, chunk)
  std::set<std::tuple<Epoch, uint64_t, Epoch>> by_death;    // history: (death, chunk, birth)
  std::map<Epoch, SnapshotInfo> snaps;
  Epoch newest() const { return snaps.empty() ? 0 : snaps.rbegin()->first; }
  bool has_snapshot_in(Epoch b, Epoch d) const {
    auto it = snaps.lower_bound(b);
    return it != snaps.end() && it->first < d;
  }
};

class Metadata {
 public:
  Metadata(uint64_t home_chunks, uint64_t store_chunks);

  uint64_t home_chunks() const { return home_; }
  uint64_t store_chunks() const { return store_; }
  Epoch current_epoch() const { return current_; }
  // The newest snapshot's epoch, 0 when there is none (epochs start at 1).
  Epoch newest_snapshot() const { return newest_; }

  const Mapping& live(uint64_t chunk) const { return live_[chunk]; }
  // True when a live write to `chunk` may go to its current physical chunk.
  bool writable_in_place(uint64_t chunk) const {
    const Mapping& m = live_[chunk];
    return m.phys != kZeroPhys && (newest_ == 0 || m.birth > newest_);
  }
  // The physical chunk holding `chunk` as of snapshot epoch `e` (kZeroPhys: zeros).
  Phys lookup(Epoch e, uint64_t chunk) const;
  // The same for any snapshot, of the LU or of a clone.
  Phys snapshot_lookup(Epoch e, uint64_t chunk) const;
  // The same for a clone (its own chunks, else its base snapshot's).
  Phys clone_lookup(uint64_t clone, uint64_t chunk) const;
  // The clone's own chunk, or nullopt when it still shares the base snapshot's.
  std::optional<Phys> clone_own(uint64_t clone, uint64_t chunk) const;
  // The clone's own chunk when a write may go there in place (no snapshot of the clone
  // shares it), else nullopt.
  std::optional<Phys> clone_writable_in_place(uint64_t clone, uint64_t chunk) const;

  // ---- allocator ----
  // A free physical chunk, marked used; nullopt when the store is full.
  std::optional<Phys> allocate();
  // Returns a chunk allocate() gave that was never published (a failed write).
  void unallocate(Phys p);
  SpaceStats space() const { return {home_ + store_, used_count_}; }

  // ---- changes (each records ops; freed chunks go to the pending-free list) ----
  // The live chunk now lives in `phys` (a new chunk from allocate(), or kZeroPhys for a
  // deallocated chunk), born in the current epoch; the old version is retired or freed.
  void remap_live(uint64_t chunk, Phys phys);
  // Error: a one-line message (duplicate name, too many snapshots).
  std::optional<std::string> create_snapshot(const std::string& name, int64_t created,
                                             Epoch* epoch);
  // A snapshot of clone `clone` (its epoch from the same counter). O(1).
  std::optional<std::string> create_clone_snapshot(uint64_t clone, const std::string& name,
                                                   int64_t created, Epoch* epoch);
  // Deletes a snapshot of the LU or of a clone.
  std::optional<std::string> delete_snapshot(Epoch e);
  // Frees up to `budget` versions no snapshot needs any more after deletions; true when
  // nothing is left to reclaim.
  bool reclaim(size_t budget);
  bool reclaim_pending() const { return !reclaim_.empty(); }
  std::optional<std::string> create_clone(Epoch base, const std::string& name, int64_t created,
                                          uint64_t* id);
  // The clone's chunk now lives in `phys` (born now); the old own version is retired when
  // a snapshot of the clone sees it, else freed.
  void clone_map(uint64_t clone, uint64_t chunk, Phys phys);
  // Error: a snapshot of the clone is the base of another clone.
  std::optional<std::string> delete_clone(uint64_t clone);

  // ---- queries ----
  const std::map<Epoch, SnapshotInfo>& snapshots() const { return snaps_; }
  // Any snapshot, of the LU or of a clone.
  std::optional<Epoch> find_snapshot(const std::string& name_or_epoch) const;
  bool snapshot_exists(Epoch e) const;
  // The clone a snapshot belongs to, 0 for the LU's (e must exist).
  uint64_t snapshot_owner(Epoch e) const;
  const std::map<uint64_t, CloneInfo>& clones() const { return clones_; }
  // A clone's snapshots (empty for an unknown clone).
  const std::map<Epoch, SnapshotInfo>& clone_snapshots(uint64_t clone) const;
  // Logical chunks whose content at `to` (a snapshot epoch or kLive) may differ from
  // snapshot `from` (< to): versions born in (from, to] and alive at `to`. Time
  // proportional to the number of such versions. Error: unknown snapshot or from >= to.
  std::optional<std::string> diff(Epoch from, Epoch to, std::vector<ChunkRun>* out) const;
  // The same within a clone's line: `from` a snapshot of the clone, `to` a later one or
  // kLive (the clone now).
  std::optional<std::string> clone_diff(uint64_t clone, Epoch from, Epoch to,
                                        std::vector<ChunkRun>* out) const;
  // Chunks held only by snapshot e (freed if it were deleted) and chunks it shares with
  // the live LU or other snapshots. O(history of the chunk versions alive at e).
  void snapshot_usage(Epoch e, uint64_t* exclusive, uint64_t* shared) const;
  void clone_snapshot_usage(Epoch e, uint64_t* exclusive, uint64_t* shared) const;
  // True when a snapshot epoch lies in [b, d).
  bool has_snapshot_in(Epoch b, Epoch d) const;
  size_t history_size() const { return history_.size(); }
  size_t explicit_live() const { return explicit_live_; }

  // ---- transactions ----
  // Takes the ops and frees recorded since the last call.
  void take_pending(std::vector<MetaOp>* ops, std::vector<Phys>* frees);
  bool has_pending() const { return !ops_.empty(); }
  // Chunks freed by a transaction that is now durable become allocatable.
  void release(std::span<const Phys> frees);

  // ---- persistence ----
  // Bytes serialize() would produce now (cheap estimate, exact for the fixed parts).
  uint64_t serialized_size() const;
  void serialize(std::vector<uint8_t>* out) const;
  // Replaces the state with a serialized one; error: a one-line message.
  std::optional<std::string> deserialize(std::span<const uint8_t> in);
  // Applies one journal op (replay). Error: an op that does not fit the state.
  std::optional<std::string> apply(const MetaOp& op);
  // Rebuilds the allocator from the mappings (after deserialize + replay).
  void rebuild_allocator();

 private:
  using Key = std::pair<uint64_t, Epoch>;  // (chunk, birth)
  struct Version {
    Epoch death = 0;
    Phys phys = 0;
  };
  void record(MetaOp op) {
    if (recording_) ops_.push_back(std::move(op));
  }
  void free_phys(Phys p);
  void set_live(uint64_t chunk, Mapping m);
  void add_version(uint64_t chunk, Epoch birth, Epoch death, Phys phys);
  void drop_version(uint64_t chunk, Epoch birth);
  void add_snapshot(SnapshotInfo s);
  void refresh_newest();
  bool pinned(Epoch e) const;
  bool name_taken(const std::string& name, Epoch* e) const;
  void clone_map_at(uint64_t clone, uint64_t chunk, Phys phys, Epoch birth);
  void clone_drop(uint64_t clone, uint64_t chunk, Epoch birth);
  void unsnap(Epoch e);
  bool reclaim_clone(Epoch e, size_t* budget);
  void erase_clone(uint64_t clone);

  uint64_t home_ = 0, store_ = 0;
  Epoch current_ = 1;
  Epoch newest_ = 0;
  std::vector<Mapping> live_;
  uint64_t explicit_live_ = 0;               // mappings other than {c, 0}
  std::set<std::pair<Epoch, uint64_t>> live_by_birth_;  // explicit live mappings
  std::map<Key, Version> history_;
  std::set<std::pair<Epoch, uint64_t>> by_birth_;            // history: (birth, chunk)
  std::set<std::tuple<Epoch, uint64_t, Epoch>> by_death_;    // history: (death, chunk, birth)
  std::map<Epoch, SnapshotInfo> snaps_;
  std::set<Epoch> reclaim_;                                  // deleted, space not yet reclaimed
  std::map<uint64_t, CloneInfo> clones_;
  std::unordered_map<uint64_t, CloneLine> lines_;
  // Owner clone of each clone snapshot epoch, kept until a deleted one is reclaimed.
  std::unordered_map<Epoch, uint64_t> clone_snap_owner_;
  uint64_t next_clone_ = 1;
  uint64_t names_bytes_ = 0;

  std::vector<bool> used_;
  uint64_t used_count_ = 0;
  uint64_t cursor_ = 0;

  bool recording_ = true;
  std::vector<MetaOp> ops_;
  std::vector<Phys> frees_;
};

// Encodes ops as the payload of one journal record / decodes one (error: a message).
void encode_ops(std::span<const MetaOp> ops, std::vector<uint8_t>* out);
std::optional<std::string> decode_ops(std::span<const uint8_t> in, std::vector<MetaOp>* out);

}  // namespace zuma::snapshot
