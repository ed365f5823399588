// The snapshot store of one LU (DESIGN.md: snapshot/, docs/FORMATS.md): a layer in the
// LU's block path. The live LU, each exported snapshot (read-only) and each clone
// (writable, branching from a snapshot) are storage::Backend views of one store.
//
// Data lives in physical chunks of `chunk_size` bytes: the LU's own backend ("home", where
// every chunk starts) and the store's data area; the metadata (metadata.hh) maps logical
// chunks to them and is kept in a journal with checkpoints (meta_log.hh).
//
// Write path: one shared-lock lookup and one comparison with the newest snapshot's epoch;
// a chunk still shared with a snapshot is redirected once to a new chunk (the rest of the
// chunk copied when the write is partial). Concurrent writes to a chunk being redirected
// wait for it and are resumed on their own reactor (IoContext::post).
//
// Durability: mappings become durable at kFlush, at FUA writes that depend on new
// mappings, and at snapshot creation: data backends are flushed first, then one journal
// record is written (group commit on the store's commit thread; callers without an
// IoContext commit synchronously). Chunks freed by a transaction are reused only once it
// is durable and every I/O that could still touch them has completed.
//
// Errors (-errno from submit): -ENOSPC when a write needs a chunk and none is free (or
// the metadata area is full): SCSI DATA PROTECT 27h/07h; -EROFS on a read-only view;
// -EIO after a metadata write failed (the store then refuses writes).
//
// Operations (create, delete, rollback, clone, diff, list) are synchronous and called
// from a control thread, never a reactor.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "snapshot/meta_log.hh"
#include "snapshot/metadata.hh"
#include "storage/backend.hh"
#include "storage/buffer.hh"
#include "storage/io_context.hh"

namespace zuma::snapshot {

struct StoreOptions {
  std::string name;                     // for log messages (the LU's name)
  uint64_t chunk_size = 64 * 1024;      // power of two, 4 KiB .. 8 MiB
  double warn_fill = 0.90;              // log a warning when this fraction is in use
  size_t reclaim_batch = 4096;          // versions freed per metadata transaction
};

struct SnapshotListing {
  Epoch id = 0;
  std::string name;
  int64_t created = 0;
  uint64_t exclusive_bytes = 0;  // freed if it were deleted
  uint64_t shared_bytes = 0;     // held with the LU or other snapshots
  uint64_t clone = 0;            // the clone it is a snapshot of; 0: of the LU
};

struct StoreStatus {
  uint64_t chunk_size = 0;
  uint64_t total_bytes = 0;      // home + store data
  uint64_t used_bytes = 0;
  uint64_t meta_bytes = 0;       // checkpoint size of the current state
  uint64_t meta_capacity = 0;    // largest checkpoint the metadata area holds
  uint64_t snapshots = 0;  // of the LU and of its clones
  uint64_t clones = 0;
  bool reclaiming = false;
  double warn_fill = 0;  // StoreOptions::warn_fill: the fill fraction that is warned about
};

// A changed byte range (diff).
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const Extent&) const = default;
};

class SnapshotStore : public std::enable_shared_from_this<SnapshotStore> {
 public:
  // `home`: the LU's backend, its size a multiple of chunk_size; `data`: the store's data
  // area (whole chunks are used); `meta`: the metadata area. Recovers after a crash.
  // Error: a one-line message.
  static std::expected<std::shared_ptr<SnapshotStore>, std::string> open(
      std::unique_ptr<storage::Backend> home, std::unique_ptr<storage::Backend> data,
      std::unique_ptr<storage::Backend> meta, const StoreOptions& opts);
  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // Views. The live view is the LU's backend; a snapshot view is read-only.
  std::unique_ptr<storage::Backend> live_view();
  std::expected<std::unique_ptr<storage::Backend>, std::string> snapshot_view(Epoch e);
  std::expected<std::unique_ptr<storage::Backend>, std::string> clone_view(uint64_t clone);

  // Operations. Errors: one-line messages.
  // Quiesces writes, flushes, records the snapshot and commits it. `clone` (name or id):
  // a snapshot of that clone instead of the LU.
  std::expected<Epoch, std::string> create(const std::string& name, const std::string& clone = "");
  // Forgets the snapshot at once; its chunks are reclaimed in the background.
  std::expected<void, std::string> remove(const std::string& name_or_id);
  // Makes the live LU (or, for a clone's snapshot, that clone) hold what the snapshot holds.
  // All I/O of the LU and its clones is quiesced meanwhile: commands in flight complete on
  // the old content, later ones wait and run on the new. Copies the changed chunks.
  std::expected<void, std::string> rollback(const std::string& name_or_id);
  // `fn` runs when a rollback changed the LU (clone 0) or clone `clone`, before any waiting
  // command runs on the new content: zumad establishes the LU's unit attention there
  // (scsi/ is not reachable from this layer). Replaces an earlier listener. Called on the
  // thread doing the rollback.
  //
  // Which unit attention: UNIT ATTENTION, 28h/00h NOT READY TO READY CHANGE, MEDIUM MAY HAVE
  // CHANGED, for every I_T nexus of the LU (SAM-5 unit attention condition: established for
  // every nexus an event affects). SPC-5 reports 28h/00h when the medium may have been
  // replaced, which is what a rollback is to an initiator: same capacity and identity, other
  // data, so any cached blocks are stale. SCST's vdisk reports the same UA when an
  // administrator swaps the backing file; 2Ah/09h (capacity) or 3Fh/03h (inquiry data) would
  // claim changes that did not happen. Commands in flight when the rollback starts complete
  // on the old content; commands that arrive meanwhile wait (the layer's freeze) and run on
  // the new content, and each nexus gets the UA on its next command after the rollback.
  void set_rollback_listener(uint64_t clone, std::function<void()> fn);
  std::expected<uint64_t, std::string> clone(const std::string& snapshot, const std::string& name);
  std::expected<void, std::string> remove_clone(uint64_t clone);
  // Byte extents that differ between snapshot `from` and `to` ("" or "live": the LU now; for
  // a clone's snapshots, the clone now). Both must belong to the same LU or clone.
  std::expected<std::vector<Extent>, std::string> diff(const std::string& from,
                                                       const std::string& to);
  std::vector<SnapshotListing> list(bool with_usage = true);
  std::vector<CloneInfo> clones();
  std::optional<uint64_t> find_clone(const std::string& name_or_id);
  std::optional<Epoch> find(const std::string& name_or_id);
  StoreStatus status();
  // Makes everything written so far durable (what kFlush does). 0 or -errno.
  int sync();
  // Waits until background reclaim has finished (tests, shutdown).
  void wait_reclaimed();

  uint64_t size() const { return size_; }
  uint64_t chunk_size() const { return cs_; }
  const std::string& name() const { return opts_.name; }

 private:
  struct Target {
    enum Kind : uint8_t { kLive, kSnapshot, kClone } kind = kLive;
    uint64_t id = 0;  // snapshot epoch or clone id
  };
  struct Op;
  struct Piece;
  class View;
  friend class View;

  SnapshotStore() = default;
  static Op* new_op();
  static void free_op(Op* op);
  static std::vector<Op*>& op_pool();
  void submit(Target t, storage::IoRequest& req);
  void start_op(Op* op);
  void start_piece(Piece* p);
  void piece_io(Piece* p, storage::IoOp io, Phys phys, uint64_t within, const iovec* iov,
                int iovcnt, uint64_t len, bool fua);
  static void piece_done(storage::IoRequest& req, int result);
  void row_step(Piece* p, int result);
  void finish_piece(Piece* p, int result);
  void finish_op(Op* op);
  void resume(Piece* p);
  void resume_op(Op* op);
  storage::Backend& backend_for(Phys p, uint64_t* offset);
  Phys resolve_locked(Target t, uint64_t chunk) const;  // caller holds mu_
  bool meta_full_for_write() const;
  void warn_meta_full();
  void release_view(uint8_t kind, uint64_t id);

  void commit_thread();
  int commit_round();
  void enqueue_commit(Op* op);
  enum : int { kFreezeNone = 0, kFreezeWrites = 1, kFreezeAll = 2 };
  void freeze(int what);
  void thaw();
  void notify_rollback(uint64_t clone);
  void check_fill();

  StoreOptions opts_;
  uint64_t cs_ = 0;
  uint64_t size_ = 0;
  std::unique_ptr<storage::Backend> home_, data_;
  std::unique_ptr<MetaLog> log_;
  std::unique_ptr<Metadata> md_;
  storage::Buffer zeros_;  // one chunk of zeros (partial discards)

  mutable std::shared_mutex mu_;  // md_, rows_
  std::map<std::pair<uint64_t, uint64_t>, Piece*> rows_;  // (clone id or 0, chunk) -> waiters
  std::map<std::pair<uint8_t, uint64_t>, int> exported_;  // views of snapshots / clones
  // Freed chunks wait for their transaction to be durable and for the I/O that may still
  // use them to drain (io_count_ of the phase they were freed in).
  std::atomic<uint64_t> io_count_[2] = {0, 0};
  int phase_ = 0;        // under mu_
  int limbo_phase_ = 1;  // under mu_
  std::vector<Phys> limbo_, next_free_;
  std::atomic<bool> committing_{false};
  std::atomic<bool> failed_{false};

  // Quiescing I/O of the LU and its clones (snapshot creation: writes; rollback: all).
  std::atomic<uint64_t> writes_inflight_{0};
  std::atomic<uint64_t> reads_inflight_{0};
  std::atomic<int> frozen_{kFreezeNone};
  std::mutex freeze_mu_;
  std::vector<Op*> frozen_q_;

  std::mutex admin_mu_;   // one operation at a time
  std::mutex commit_mu_;  // one commit round at a time
  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<Op*> commit_q_;
  bool stop_ = false;
  bool reclaim_wanted_ = false;
  bool kick_ = false;
  std::condition_variable reclaimed_cv_;
  std::thread committer_;
  std::atomic<bool> warned_full_{false};
  std::atomic<bool> warned_meta_{false};
  std::mutex listeners_mu_;
  std::map<uint64_t, std::function<void()>> listeners_;
};

}  // namespace zuma::snapshot
