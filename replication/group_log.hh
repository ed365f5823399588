// A consistency group's write path (DESIGN.md "The shape": LU -> snapshot layer ->
// replication layer -> sub-unit backends). Every write, discard and write-zeroes to any LU
// of the group is first appended to the group's RingLog, which gives it the group-wide
// sequence number, and only then passed to the LU's own backend; the command completes
// when both are done. The log is thus also the group's write-ahead journal: after a crash
// the kept records are replayed into the backends (start()), so a backend never lacks a
// write that the log, and so a remote site, has.
//
// Threads: one writer thread per group owns the RingLog. Reactor threads hand it entries
// through a lock-free queue; it appends everything queued as one batch (group commit),
// calls fdatasync once for all entries that need durability (FUA writes, flushes), and
// posts each completion back to the submitting thread's IoContext. A thread without an
// IoContext (tests, startup) gets synchronous appends instead. The submitting threads'
// IoContexts must outlive the GroupLog (the writer may still be signalling one after the
// completion it posted has run).
//
// Site links (replication/site_link.hh) read the log's batches and ship them; a write
// completes only when every sync link that is holding has acknowledged it.
//
// Log space: a record is needed until every site link has it and until the LU's backend
// has it durably. When the log
// is more than `flush_at_percent` full the writer flushes the group's backends itself
// and releases what is then durable; an append that still finds no room waits for that.
#pragma once
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <xxhash.h>

#include "replication/ring_log.hh"
#include "replication/site_link.hh"
#include "storage/backend.hh"
#include "storage/io_context.hh"

namespace zuma::replication {

class GroupLog;

// One queued append (or, with has_record false, a durability barrier). Intrusive.
struct LogEntry {
  LogEntry* next = nullptr;
  AppendRecord rec{};
  bool has_record = true;
  bool sync = false;  // durable (fdatasync) before completion
  uint64_t seq = 0;   // out: the record's sequence number
  int result = 0;     // out: 0 or -errno
  // out: a link holds writes (a sync link in step, an async one past its fall-behind
  // limits): the write may reach the LU's backend now, but may complete to the initiator
  // only once the links have the record (GroupLog::wait_acks). Entries with an origin only.
  bool hold = false;
  void (*done)(LogEntry& e) = nullptr;
  void* user = nullptr;
  storage::IoContext* origin = nullptr;  // where done() runs; nullptr: on the writer
  storage::PostedWork work{};
};

// A write that waits for the site links' acknowledgement of record `seq` (and of every
// record before it). Intrusive; `done` runs once, on `origin`'s thread.
struct AckWait {
  uint64_t seq = 0;
  storage::IoContext* origin = nullptr;
  void (*done)(AckWait& w) = nullptr;
  void* user = nullptr;
  std::chrono::steady_clock::time_point since{};
  storage::PostedWork work{};
};

// A byte range of one LU of the group (resync: what must be copied).
struct Region {
  uint32_t lu = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const Region&) const = default;
};
// Sorted by LU and offset, overlapping and touching ranges joined.
std::vector<Region> merge_regions(std::vector<Region> v);

struct GroupLogOptions {
  std::string name;       // the group's name, for logs
  RingLogOptions log;
  unsigned flush_at_percent = 50;  // log fill that makes the writer flush and release
};

struct GroupLogStats {
  uint64_t head_seq = 0, next_seq = 0, used_bytes = 0, capacity = 0;
  uint64_t appended_records = 0, appended_batches = 0, syncs = 0, pressure_flushes = 0;
  uint64_t replayed_records = 0;
  uint64_t appended_bytes = 0;  // log bytes written since open (headers included)
  uint64_t inline_appends = 0;  // records appended on the submitting thread (try_append_inline)
};

class GroupLog {
 public:
  static std::expected<std::unique_ptr<GroupLog>, std::string> open(const GroupLogOptions& opt);
  // Stops the writer after it has completed every queued entry. The layers attach()
  // returned must be gone by then.
  ~GroupLog();
  GroupLog(const GroupLog&) = delete;
  GroupLog& operator=(const GroupLog&) = delete;

  // Wraps `lower`, the backend of the group's LU number `index` (its position in the
  // group's `luns` list), in the replication layer. Before start() only.
  std::unique_ptr<storage::Backend> attach(uint32_t index, std::unique_ptr<storage::Backend> lower);
  // Adds a site link (before start(); it starts with the group). Error: a message.
  std::expected<void, std::string> add_link(const LinkOptions& opt);
  // Replays the kept records into the attached backends, flushes them, empties the log and
  // starts the writer thread. On the calling thread, synchronously. Error: a message.
  std::expected<void, std::string> start();

  // Stops the writer thread once it has completed every queued entry (sync links are no
  // longer waited for); later submits must come from threads without an IoContext and are
  // synchronous. For shutdown, after the reactors stopped and before their IoContexts go
  // (the writer posts completions to them). The site links keep shipping until the
  // destructor. Idempotent.
  void stop_writer();

  // Roles (docs/REPLICATION.md "Roles"). While not logging (a secondary group, or one
  // being demoted) writes to the group's LUs do not enter the log: those of the replica's
  // threads (ApplyScope) go straight to the LU's backend, any other fails with -EROFS.
  bool logging() const { return logging_.load(std::memory_order_seq_cst); }
  void set_logging(bool on) { logging_.store(on, std::memory_order_seq_cst); }
  // The generations before this log's (log id, last sequence number it had when the next
  // began), oldest first: sent in the HELLO so a peer can tell where the two diverged.
  using Lineage = std::vector<std::pair<uint64_t, uint64_t>>;
  Lineage lineage() const {
    std::lock_guard lk(stats_mu_);
    return lineage_;
  }
  void set_lineage(Lineage l) {
    std::lock_guard lk(stats_mu_);
    lineage_ = std::move(l);
  }
  // A consistent point (bookmarks): new writes wait in the layers (each resubmitted on its
  // own reactor by release_writes()) and hold_writes() returns once none is inside, or false
  // after `limit` (still holding: call release_writes() either way). Control thread.
  bool hold_writes(std::chrono::milliseconds limit);
  void release_writes();
  // Waits up to `limit` until no write is inside the replication layer. False on timeout.
  bool wait_idle(std::chrono::milliseconds limit) const;
  // Stops every site link (each stores what its peer acknowledged).
  void stop_links();
  // Flushes the group's backends and the log. "" or a message.
  std::string flush_lowers();
  // A promotion: with the writer stopped, empties the log under a new log id (the new
  // generation) whose first record is `next_seq`, starts the writer and restarts the links.
  std::expected<void, std::string> start_generation(uint64_t next_seq);
  // The regions written by the records after `after` still in the log (a side's changes
  // since the point where it diverged from its peer), merged. Error: the log no longer
  // holds them all.
  std::expected<std::vector<Region>, std::string> regions_after(uint64_t after) const;
  // Provisioning of LU `lu`'s backend at `offset` (Backend::extent_status): a resync sends
  // deallocated runs as zeros without reading them. 0 or -errno.
  int lower_extent(uint32_t lu, uint64_t offset, uint64_t max_len,
                   storage::ExtentStatus* out) const {
    if (lu >= lowers_.size() || !lowers_[lu]) return -EINVAL;
    return lowers_[lu]->extent_status(offset, max_len, out);
  }
  // Appends a bookmark record named `name` (a consistent point, docs/REPLICATION.md
  // "Bookmarks"), durably, from a thread without an IoContext. Its sequence number, or why not.
  std::expected<uint64_t, std::string> append_bookmark(const std::string& name);
  // Appends a record that changes no data (is_marker: a bookmark, a verify marker) with
  // `payload`, from a thread without an IoContext; durably with `sync`. Its sequence number.
  std::expected<uint64_t, std::string> append_marker(RecordType type,
                                                     std::span<const uint8_t> payload,
                                                     bool sync = false);
  // Online verify (replication/verify.hh): runs `fn` while LU `lu`'s bytes [offset, offset +
  // length) are fenced: new writes that overlap them wait in the layers (each resubmitted on
  // its own reactor afterwards), and every write that entered a layer before the fence has
  // completed (it is in the log and in the LU's backend). Writes elsewhere go on. A thread
  // without an IoContext; one fence at a time. False (fn not run) if the writes in flight
  // did not complete within `limit`.
  bool with_region_fenced(uint32_t lu, uint64_t offset, uint64_t length,
                          std::chrono::milliseconds limit, const std::function<void()>& fn);
  // XXH3-128 of LU `lu`'s bytes below the replication layer (synchronously). 0 or -errno.
  int hash_lower(uint32_t lu, uint64_t offset, uint64_t length, XXH128_hash_t* out) const;
  // The group's site links (for verify), in the order they were added.
  std::vector<SiteLink*> links() const {
    std::vector<SiteLink*> v;
    for (auto& l : links_) v.push_back(l.get());
    return v;
  }
  // Reads `out.size()` bytes at `offset` of LU `lu`'s backend, below the replication layer
  // (a resync's source), synchronously: a thread without an IoContext. 0 or -errno.
  int read_lower(uint32_t lu, uint64_t offset, std::span<uint8_t> out) const;

  // Queues `e` (any thread). e.done runs once, later, on e.origin's thread (or inline, on
  // this thread, when it has no IoContext: the append is then synchronous).
  void submit(LogEntry& e);
  // The layer reports that record `seq` is in its backend (any thread).
  void applied(uint64_t seq);
  // After an entry came back with `hold`: w.done runs on w.origin's thread once every link
  // holding writes has acknowledged w.seq (or gave up holding: sync_timeout_ms, then it is
  // degraded), and returns true; false when there is nothing to wait for (w.done never runs).
  // The site link that receives the acknowledgement completes the waits itself, so a sync
  // write's round trip wakes no other thread of the primary but its reactor.
  bool wait_acks(AckWait& w);

  GroupLogStats stats() const;
  std::vector<std::pair<std::string, LinkStats>> link_stats() const;
  const std::string& name() const { return name_; }

  // For site links (any thread).
  // Batches from the one holding record `from` on, as RingLog::read_raw, into the first
  // *len bytes of *buf (grown as needed, never shrunk: no clearing per call). The log lock
  // is held only to find them and to check afterwards that they were not released: the
  // copy does not keep the reactors' appends waiting. 0, -ERANGE (released), -EIO.
  // *last: the last record read.
  int read_raw(uint64_t from, size_t max_bytes, std::vector<uint8_t>* buf, size_t* len,
               size_t* count, uint64_t* last) const;
  uint64_t log_id() const { return log_id_.load(); }
  RingLog::Lag lag(uint64_t acked) const;
  std::vector<uint64_t> lun_sizes() const;
  uint64_t published_next() const { return pub_next_.load(); }  // next sequence to be written
  uint64_t published_head() const { return pub_head_.load(); }  // oldest record kept
  // Wakes the writer (a link changed state).
  void kick();
  // A link's peer acknowledged records (after its acked() moved, seq_cst): completes the
  // waits (wait_acks) that no longer need to wait, on the calling thread.
  void acknowledged();

 private:
  class Layer;
  struct Held;  // a write waiting for release_writes() or the end of a verify fence
  GroupLog() = default;
  void writer_loop();
  void process(std::vector<LogEntry*>& batch, std::unique_lock<std::mutex>& lk);
  // On the submitting reactor at the end of its pass, while the writer sleeps with nothing
  // queued: appends the records the pass gathered itself (as one batch) and completes them
  // there, sparing the two thread switches of a hand-off. Returns how many of `batch` (in
  // order) it appended and completed; the rest goes to the writer (the log past its flush
  // mark or out of room, the log lock busy, the writer busy). FUA writes and flushes always
  // go to the writer.
  size_t try_append_inline(std::vector<LogEntry*>& batch);
  struct Pending;  // a reactor's records gathered for the end of its pass
  Pending& pending_for();
  void append_gathered(LogEntry* list);
  // Queues the chain first..last (linked through next, in order) for the writer.
  void enqueue(LogEntry* first, LogEntry* last);
  // Keeps `req` (to `layer`) for release_writes(); false if no longer holding.
  bool park(storage::Backend* layer, storage::IoRequest& req);
  // Runs the waits that may end: acknowledged by every holding link, or (after
  // sync_timeout_ms) no longer held by a link that is then degraded; all of them when
  // stopping. Any thread.
  void complete_waits(bool stopping);
  bool ack_pending(const AckWait& w, std::chrono::steady_clock::time_point now, bool stopping);
  // Online verify's fence: parks `req` for the end of the fence; false if it has ended.
  bool park_fenced(storage::Backend* layer, storage::IoRequest& req);
  // Whether a write to LU `lu` at [offset, offset + length) overlaps the current fence.
  bool fenced(uint32_t lu, uint64_t offset, uint64_t length) const;
  static void resubmit(std::vector<Held*>& held);
  // Flushes every attached backend: "" or "group G: flushing B<why>: error".
  std::string flush_backends(const char* why) const;
  uint64_t links_acked_min() const;  // records every link has (UINT64_MAX without links)
  // How far the log may release towards `upto` given the links with the `bitmap` policy
  // (those in bitmap mode first record the regions in their maps). Log lock held.
  uint64_t bitmap_cover(uint64_t upto);
  void publish();
  void complete(LogEntry& e);
  void advance_applied();
  bool relieve_pressure(bool force);
  int append_one_batch(std::vector<LogEntry*>& entries, size_t begin, size_t end, std::unique_lock<std::mutex>& lk);

  std::string name_;
  unsigned flush_at_percent_ = 50;
  std::unique_ptr<RingLog> log_;
  mutable std::mutex log_mu_;  // the writer thread, synchronous submitters, stats(); before stats_mu_
  std::vector<storage::Backend*> lowers_;
  std::atomic<uint64_t> log_id_{0};
  std::atomic<bool> logging_{true};
  std::atomic<int64_t> inflight_{0};  // writes inside the layers (see Layer::submit)
  std::atomic<bool> holding_{false};  // hold_writes() .. release_writes()
  std::mutex held_mu_;
  std::vector<Held*> held_writes_;
  // Online verify. Each write inside a layer is counted in vcount_[its epoch]; a fence is set,
  // then the epoch flipped, then the old epoch's count drained: every write that may have
  // looked at the fence before it was set has completed, and every later one saw it
  // (Layer::submit re-checks the epoch after counting itself, as SRCU readers do).
  std::atomic<uint32_t> vepoch_{0};
  std::atomic<int64_t> vcount_[2] = {0, 0};
  std::atomic<bool> fence_on_{false};
  // Written only while fence_on_ is false (one fence at a time). A layer that reads them
  // while the next fence is being set is one the next fence's drain waits for.
  std::atomic<uint64_t> fence_lu_{0}, fence_begin_{0}, fence_end_{0};
  std::mutex fence_mu_;               // one fence at a time
  std::vector<Held*> fenced_writes_;  // held_mu_
  std::vector<std::unique_ptr<SiteLink>> links_;
  std::atomic<uint64_t> pub_next_{1}, pub_head_{1};
  // Appended entries waiting for sync links (writer thread only), with when they started.
  std::mutex ack_mu_;                   // ack_waits_, acks_stopped_
  std::vector<AckWait*> ack_waits_;     // writes waiting for the links (wait_acks)
  bool acks_stopped_ = false;           // the writer stopped: nothing waits any more
  std::atomic<bool> has_waits_{false};  // ack_waits_ is not empty (for acknowledged())
  bool links_may_hold_ = false;         // a sync link, or limits: the writer checks deadlines

  std::atomic<LogEntry*> queue_{nullptr};
  std::atomic<uint32_t> wake_{0};
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_{false};
  std::thread writer_;
  bool started_ = false;

  // Which appended records have reached their backend: bit (seq % kWindow). The writer
  // advances applied_upto_ over the set bits; it appends no record more than kWindow ahead.
  static constexpr uint64_t kWindow = 1 << 16;
  std::unique_ptr<std::atomic<uint8_t>[]> applied_bits_;
  uint64_t applied_upto_ = 0;  // every record <= this is in its backend (writer's view)

  mutable std::mutex stats_mu_;
  GroupLogStats stats_;
  Lineage lineage_;
};

}  // namespace zuma::replication
