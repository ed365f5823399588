#include "replication/group_log.hh"

#include "replication/apply.hh"
#include "replication/verify.hh"
#include "storage/sync_io.hh"
#include "storage/thread_name.hh"

#include <linux/futex.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>

#include <fmt/format.h>

namespace zuma::replication {
namespace {

using storage::Backend;
using storage::IoContext;
using storage::IoOp;
using storage::IoRequest;

// The writer sleeps on wake_ with a timeout (held sync writes have deadlines), which
// std::atomic::wait cannot do: a raw futex on the same word, woken the same way.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, int timeout_ms) {
  timespec ts{timeout_ms / 1000, long(timeout_ms % 1000) * 1000000};
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected,
            timeout_ms < 0 ? nullptr : &ts, nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

// Discards and write-zeroes longer than this are logged as several records (the record
// header's length is 32 bits).
constexpr uint64_t kMaxRangeRecord = uint64_t(1) << 30;

}  // namespace

// ---------------------------------------------------------------------------------------
// The replication layer of one LU.

class GroupLog::Layer final : public Backend {
 public:
  Layer(GroupLog* g, uint32_t index, std::unique_ptr<Backend> lower)
      : group_(g), index_(index), lower_(std::move(lower)) {}

  uint64_t size() const override { return lower_->size(); }
  bool supports(IoOp op) const override { return lower_->supports(op); }
  std::string describe() const override {
    return fmt::format("replicated(group {}, lu {}) over {}", group_->name(), index_, lower_->describe());
  }
  int extent_status(uint64_t offset, uint64_t max_len, storage::ExtentStatus* out) const override {
    return lower_->extent_status(offset, max_len, out);
  }
  int space_usage(storage::SpaceUsage* out) const override { return lower_->space_usage(out); }

  void submit(IoRequest& req) override {
    if (req.op == IoOp::kRead) {
      lower_->submit(req);
      return;
    }
    // Counted before `logging` and `holding` are looked at: set_logging(false) or
    // hold_writes(), then wait_idle(), sees every write that got past them.
    group_->inflight_.fetch_add(1, std::memory_order_seq_cst);
    if (group_->holding_.load(std::memory_order_seq_cst) && !ApplyScope::active()) {
      group_->inflight_.fetch_sub(1, std::memory_order_seq_cst);
      if (group_->park(this, req)) return;
      group_->inflight_.fetch_add(1, std::memory_order_seq_cst);  // released meanwhile
    }
    if (!group_->logging_.load(std::memory_order_seq_cst)) {
      group_->inflight_.fetch_sub(1, std::memory_order_seq_cst);
      // Secondary: only the replica's own writes (apply, resync) reach the LU; a flush
      // changes nothing.
      if (ApplyScope::active() || req.op == IoOp::kFlush)
        lower_->submit(req);
      else
        req.done(req, -EROFS);
      return;
    }
    if (req.op == IoOp::kWrite && req.length > std::numeric_limits<uint32_t>::max()) {
      group_->inflight_.fetch_sub(1, std::memory_order_seq_cst);
      req.done(req, -EINVAL);  // the log's records hold at most 4 GiB - 1 (far above any transfer limit)
      return;
    }
    // Online verify (with_region_fenced): counted in the current epoch, then a write that
    // overlaps the fenced region waits for the fence's end.
    uint32_t epoch = 0;
    for (;;) {
      const uint32_t e = group_->vepoch_.load(std::memory_order_seq_cst);
      epoch = e & 1;
      group_->vcount_[epoch].fetch_add(1, std::memory_order_seq_cst);
      if (group_->vepoch_.load(std::memory_order_seq_cst) == e) break;
      group_->vcount_[epoch].fetch_sub(1, std::memory_order_seq_cst);  // flipped meanwhile
    }
    if (req.op != IoOp::kFlush && group_->fence_on_.load(std::memory_order_seq_cst) &&
        group_->fenced(index_, req.offset, req.length)) {
      group_->vcount_[epoch].fetch_sub(1, std::memory_order_seq_cst);
      group_->inflight_.fetch_sub(1, std::memory_order_seq_cst);
      if (!group_->park_fenced(this, req)) submit(req);  // the fence ended meanwhile
      return;
    }
    // Overlapping writes one at a time (admit()): the layer below may complete two
    // overlapping requests in either order, and the log must hold them in the order the
    // primary's image applied them, or the secondary (applying in log order) would end with
    // other data in the overlap.
    if (req.op != IoOp::kFlush && !admit(req)) {
      group_->vcount_[epoch].fetch_sub(1, std::memory_order_seq_cst);
      group_->inflight_.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
    Op* op = get_op();
    op->overlap = req.op != IoOp::kFlush;
    op->epoch = epoch;
    op->layer = this;
    op->orig = &req;
    op->seqs.clear();
    op->need_ack = op->acked = op->lower_done = false;
    op->next_off = req.offset;
    op->end_off = req.offset + req.length;
    log_next(*op);
  }

 private:
  struct Op {
    Layer* layer = nullptr;
    IoRequest* orig = nullptr;
    LogEntry entry{};
    IoRequest lower{};
    std::vector<uint64_t> seqs;  // the records this request was logged as
    uint64_t next_off = 0, end_off = 0;
    uint32_t epoch = 0;    // the verify epoch it is counted in
    bool overlap = false;  // registered by admit(): retire() at the end
    // A write the links hold: it completes once both its backend write and the links'
    // acknowledgement are done, in either order (both on the submitting thread).
    AckWait ack{};
    bool need_ack = false, acked = false, lower_done = false;
    int lower_result = 0;
  };

  // Writes in flight here (from admit() to retire()), and those parked behind them. A write
  // that overlaps one in flight is parked, and resubmitted on its own reactor when one
  // ends (defined below GroupLog::Held).
  bool admit(IoRequest& req);
  void retire(uint64_t offset, uint64_t length);
  std::mutex ov_mu_;
  std::vector<std::pair<uint64_t, uint64_t>> ov_inflight_;  // [begin, end)
  std::vector<Held*> ov_parked_;

  // Ops are completed on the thread that submitted them, so a thread-local pool makes
  // them allocation-free in steady state.
  static std::vector<std::unique_ptr<Op>>& pool() {
    thread_local std::vector<std::unique_ptr<Op>> p;
    return p;
  }
  static Op* get_op() {
    auto& p = pool();
    if (p.empty()) {
      auto op = std::make_unique<Op>();
      op->seqs.reserve(4);
      return op.release();
    }
    Op* op = p.back().release();
    p.pop_back();
    return op;
  }
  static void put_op(Op* op) { pool().emplace_back(op); }

  // Logs the next piece of the request (one record; several for a huge discard), or a
  // durability barrier for a flush.
  void log_next(Op& op) {
    const IoRequest& r = *op.orig;
    LogEntry& e = op.entry;
    e = LogEntry{};
    e.user = &op;
    e.done = &Layer::on_logged;
    e.sync = r.fua || r.op == IoOp::kFlush;
    if (r.op == IoOp::kFlush) {
      e.has_record = false;
    } else if (r.op == IoOp::kWrite) {
      e.rec = AppendRecord{RecordType::kWrite, index_, r.offset, uint32_t(r.length), r.iov, r.iovcnt};
      op.next_off = op.end_off;
    } else {
      const uint64_t len = std::min(op.end_off - op.next_off, kMaxRangeRecord);
      e.rec = AppendRecord{r.op == IoOp::kDiscard ? RecordType::kDiscard : RecordType::kWriteZeroes, index_,
                           op.next_off, uint32_t(len), nullptr, 0};
      op.next_off += len;
    }
    group_->submit(e);
  }

  static void on_logged(LogEntry& e) {
    Op& op = *static_cast<Op*>(e.user);
    Layer& self = *op.layer;
    if (e.result < 0) {
      // Pieces logged before the failure never reach the backend: report them applied so
      // the window moves on (replay after a crash would write them; they are a prefix of
      // a request that failed, which SBC allows to be partly done).
      for (uint64_t s : op.seqs) self.group_->applied(s);
      finish(op, e.result);
      return;
    }
    if (e.has_record) op.seqs.push_back(e.seq);
    if (op.next_off < op.end_off) {
      self.log_next(op);
      return;
    }
    if (e.hold) {
      // Acknowledgements are cumulative: the last piece's covers the request. The backend
      // write goes ahead meanwhile (the log already has the record: write-ahead holds).
      op.ack = AckWait{};
      op.ack.seq = e.seq;
      op.ack.origin = e.origin;
      op.ack.user = &op;
      op.ack.done = &Layer::on_acked;
      op.need_ack = self.group_->wait_acks(op.ack);
    }
    op.lower = *op.orig;
    op.lower.user = &op;
    op.lower.done = &Layer::on_lower_done;
    self.lower_->submit(op.lower);
  }

  static void on_lower_done(IoRequest& r, int result) {
    Op& op = *static_cast<Op*>(r.user);
    for (uint64_t s : op.seqs) op.layer->group_->applied(s);
    op.lower_done = true;
    op.lower_result = result;
    if (!op.need_ack || op.acked) finish(op, result);
  }

  static void on_acked(AckWait& w) {
    Op& op = *static_cast<Op*>(w.user);
    op.acked = true;
    if (op.lower_done) finish(op, op.lower_result);
  }

  static void finish(Op& op, int result) {
    IoRequest* orig = op.orig;
    GroupLog* g = op.layer->group_;
    const uint32_t epoch = op.epoch;
    if (op.overlap) op.layer->retire(orig->offset, orig->length);
    op.orig = nullptr;
    put_op(&op);
    orig->done(*orig, result);
    g->vcount_[epoch].fetch_sub(1, std::memory_order_seq_cst);
    g->inflight_.fetch_sub(1, std::memory_order_seq_cst);
  }

  GroupLog* group_;
  uint32_t index_;
  std::unique_ptr<Backend> lower_;
};

// ---------------------------------------------------------------------------------------

std::expected<std::unique_ptr<GroupLog>, std::string> GroupLog::open(const GroupLogOptions& opt) {
  auto log = RingLog::open(opt.log);
  if (!log) return std::unexpected(log.error());
  std::unique_ptr<GroupLog> g(new GroupLog());
  g->name_ = opt.name;
  g->flush_at_percent_ = std::clamp(opt.flush_at_percent, 1u, 95u);
  g->log_ = std::move(*log);
  g->log_id_.store(g->log_->log_id());
  g->publish();
  g->applied_bits_ = std::make_unique<std::atomic<uint8_t>[]>(kWindow);
  for (uint64_t i = 0; i < kWindow; ++i) g->applied_bits_[i].store(0, std::memory_order_relaxed);
  const auto& rec = g->log_->recovery();
  if (rec.cut)
    spdlog::warn("group {}: log {}: cut at recovery: {}", g->name_, opt.log.path, rec.cut_reason);
  return g;
}

void GroupLog::stop_writer() {
  if (!writer_.joinable()) return;
  stop_.store(true);
  kick();
  writer_.join();
}

struct GroupLog::Held {
  Backend* layer;
  IoRequest* req;
  storage::PostedWork work{};
};

bool GroupLog::Layer::admit(IoRequest& req) {
  const uint64_t b = req.offset, e = req.offset + std::max<uint64_t>(req.length, 1);
  std::lock_guard lk(ov_mu_);
  for (const auto& [ib, ie] : ov_inflight_) {
    if (b < ie && ib < e) {
      ov_parked_.push_back(new Held{this, &req});
      ov_parked_.back()->work.arg = IoContext::current();  // where it is resubmitted
      return false;
    }
  }
  ov_inflight_.emplace_back(b, e);
  return true;
}

void GroupLog::Layer::retire(uint64_t offset, uint64_t length) {
  const std::pair<uint64_t, uint64_t> x{offset, offset + std::max<uint64_t>(length, 1)};
  std::vector<Held*> again;
  {
    std::lock_guard lk(ov_mu_);
    auto it = std::find(ov_inflight_.begin(), ov_inflight_.end(), x);
    if (it != ov_inflight_.end()) {
      *it = ov_inflight_.back();
      ov_inflight_.pop_back();
    }
    if (ov_parked_.empty()) return;
    // Every parked write tries again (in the order they came); one that still overlaps
    // parks again.
    again.swap(ov_parked_);
  }
  group_->resubmit(again);
}

bool GroupLog::park(Backend* layer, IoRequest& req) {
  std::lock_guard lk(held_mu_);
  if (!holding_.load(std::memory_order_seq_cst)) return false;
  held_writes_.push_back(new Held{layer, &req});
  held_writes_.back()->work.arg = IoContext::current();  // where it is resubmitted
  return true;
}

bool GroupLog::hold_writes(std::chrono::milliseconds limit) {
  holding_.store(true, std::memory_order_seq_cst);
  return wait_idle(limit);
}

void GroupLog::release_writes() {
  std::vector<Held*> held;
  {
    std::lock_guard lk(held_mu_);
    holding_.store(false, std::memory_order_seq_cst);
    held.swap(held_writes_);
  }
  resubmit(held);
}

bool GroupLog::fenced(uint32_t lu, uint64_t offset, uint64_t length) const {
  const uint64_t end = offset + std::max<uint64_t>(length, 1);
  return fence_lu_.load(std::memory_order_relaxed) == lu &&
         offset < fence_end_.load(std::memory_order_relaxed) &&
         end > fence_begin_.load(std::memory_order_relaxed);
}

bool GroupLog::park_fenced(Backend* layer, IoRequest& req) {
  std::lock_guard lk(held_mu_);
  if (!fence_on_.load(std::memory_order_seq_cst)) return false;
  fenced_writes_.push_back(new Held{layer, &req});
  fenced_writes_.back()->work.arg = IoContext::current();
  return true;
}

bool GroupLog::with_region_fenced(uint32_t lu, uint64_t offset, uint64_t length,
                                  std::chrono::milliseconds limit,
                                  const std::function<void()>& fn) {
  std::lock_guard one(fence_mu_);
  fence_lu_.store(lu, std::memory_order_relaxed);
  fence_begin_.store(offset, std::memory_order_relaxed);
  fence_end_.store(offset + length, std::memory_order_relaxed);
  fence_on_.store(true, std::memory_order_seq_cst);
  // Every write counted in the old epoch may have missed the fence: wait until they are done.
  const uint32_t old = vepoch_.fetch_add(1, std::memory_order_seq_cst) & 1;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool drained = true;
  while (vcount_[old].load(std::memory_order_seq_cst) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      drained = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  if (drained) fn();
  std::vector<Held*> held;
  {
    std::lock_guard lk(held_mu_);
    fence_on_.store(false, std::memory_order_seq_cst);
    held.swap(fenced_writes_);
  }
  resubmit(held);
  return drained;
}

int GroupLog::hash_lower(uint32_t lu, uint64_t offset, uint64_t length, XXH128_hash_t* out) const {
  if (lu >= lowers_.size() || !lowers_[lu]) return -EINVAL;
  return hash_region(*lowers_[lu], offset, length, out);
}

void GroupLog::resubmit(std::vector<Held*>& held) {
  for (Held* h : held) {
    auto* origin = static_cast<IoContext*>(h->work.arg);
    h->work.arg = h;
    h->work.run = [](void* arg) {
      std::unique_ptr<Held> w(static_cast<Held*>(arg));
      w->layer->submit(*w->req);
    };
    if (origin)
      origin->post(h->work);  // the request's own reactor: its completion runs there
    else
      h->work.run(h);
  }
}

bool GroupLog::wait_idle(std::chrono::milliseconds limit) const {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (inflight_.load(std::memory_order_seq_cst) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

void GroupLog::stop_links() {
  for (auto& l : links_) l->stop();
}

std::string GroupLog::flush_backends(const char* why) const {
  for (Backend* b : lowers_) {
    IoRequest req{IoOp::kFlush};
    if (int r = storage::submit_and_wait(*b, req); r < 0)
      return fmt::format("group {}: flushing {}{}: {}", name_, b->describe(), why,
                         std::strerror(-r));
  }
  return "";
}

std::string GroupLog::flush_lowers() {
  if (auto e = flush_backends(""); !e.empty()) return e;
  std::lock_guard lk(log_mu_);
  if (int r = log_->sync(); r < 0)
    return fmt::format("group {}: syncing the log: {}", name_, std::strerror(-r));
  if (int r = log_->checkpoint(); r < 0)
    return fmt::format("group {}: writing the log superblock: {}", name_, std::strerror(-r));
  return "";
}

std::expected<void, std::string> GroupLog::start_generation(uint64_t next_seq) {
  if (writer_.joinable()) return std::unexpected(fmt::format("group {}: the log is in use", name_));
  for (size_t i = 0; i < lowers_.size(); ++i)
    if (!lowers_[i])
      return std::unexpected(fmt::format("group {}: LU {} of the group is not attached", name_, i));
  {
    std::lock_guard lk(log_mu_);
    if (int r = log_->reformat(next_seq); r < 0)
      return std::unexpected(
          fmt::format("group {}: starting a new log: {}", name_, std::strerror(-r)));
    log_id_.store(log_->log_id());
    publish();
  }
  for (uint64_t i = 0; i < kWindow; ++i) applied_bits_[i].store(0, std::memory_order_relaxed);
  applied_upto_ = next_seq - 1;
  stop_.store(false);
  {
    std::lock_guard lk(ack_mu_);
    acks_stopped_ = false;
  }
  started_ = true;
  logging_.store(true, std::memory_order_seq_cst);
  writer_ = std::thread([this] { writer_loop(); });
  // The peers had every record before next_seq (they follow the old generation up to it,
  // or are told otherwise by their WELCOME).
  for (auto& l : links_) l->restart(next_seq - 1);
  return {};
}

std::expected<std::vector<Region>, std::string> GroupLog::regions_after(uint64_t after) const {
  std::lock_guard lk(log_mu_);
  std::vector<Region> out;
  if (after + 1 >= log_->next_seq()) return out;
  if (after + 1 < log_->head_seq())
    return std::unexpected(
        fmt::format("group {}: the log no longer holds records {}..{} (it starts at {})", name_,
                    after + 1, log_->head_seq() - 1, log_->head_seq()));
  int r = log_->read(after + 1, [&](const RecordView& v) {
    if (!is_marker(v.type)) out.push_back(Region{v.lu, v.offset, v.length});
    return true;
  });
  if (r < 0)
    return std::unexpected(fmt::format("group {}: reading the log: {}", name_, std::strerror(-r)));
  return merge_regions(std::move(out));
}

std::expected<uint64_t, std::string> GroupLog::append_bookmark(const std::string& name) {
  if (name.empty() || name.size() > 4096)
    return std::unexpected(std::string("a bookmark needs a name of 1..4096 bytes"));
  return append_marker(RecordType::kBookmark,
                       std::span(reinterpret_cast<const uint8_t*>(name.data()), name.size()), true);
}

std::expected<uint64_t, std::string> GroupLog::append_marker(RecordType type,
                                                             std::span<const uint8_t> payload,
                                                             bool sync) {
  iovec v{const_cast<uint8_t*>(payload.data()), payload.size()};
  LogEntry e{};
  e.rec = AppendRecord{type, 0, 0, uint32_t(payload.size()), &v, 1};
  e.sync = sync;
  e.done = [](LogEntry&) {};
  submit(e);  // synchronous: this thread has no IoContext
  if (e.result < 0)
    return std::unexpected(fmt::format("group {}: appending a {} record: {}", name_,
                                       type == RecordType::kVerify ? "verify" : "bookmark",
                                       std::strerror(-e.result)));
  applied(e.seq);  // nothing to write below
  return e.seq;
}

int GroupLog::read_lower(uint32_t lu, uint64_t offset, std::span<uint8_t> out) const {
  if (lu >= lowers_.size() || !lowers_[lu]) return -EINVAL;
  iovec v{out.data(), out.size()};
  IoRequest req{IoOp::kRead};
  req.offset = offset;
  req.length = out.size();
  req.iov = &v;
  req.iovcnt = 1;
  return storage::submit_and_wait(*lowers_[lu], req);
}

std::vector<Region> merge_regions(std::vector<Region> v) {
  std::sort(v.begin(), v.end(), [](const Region& a, const Region& b) {
    return a.lu != b.lu ? a.lu < b.lu : a.offset < b.offset;
  });
  std::vector<Region> out;
  for (const Region& r : v) {
    if (r.length == 0) continue;
    if (!out.empty() && out.back().lu == r.lu &&
        r.offset <= out.back().offset + out.back().length) {
      out.back().length =
          std::max(out.back().offset + out.back().length, r.offset + r.length) - out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

GroupLog::~GroupLog() {
  for (auto& l : links_) l->stop();
  stop_writer();
  if (log_) {
    log_->sync();
    log_->checkpoint();
  }
}

std::unique_ptr<Backend> GroupLog::attach(uint32_t index, std::unique_ptr<Backend> lower) {
  if (lowers_.size() <= index) lowers_.resize(index + 1, nullptr);
  lowers_[index] = lower.get();
  return std::make_unique<Layer>(this, index, std::move(lower));
}

std::expected<void, std::string> GroupLog::add_link(const LinkOptions& opt) {
  if (started_) return std::unexpected(fmt::format("group {}: links are added before the group starts", name_));
  for (auto& l : links_)
    if (l->name() == opt.name) return std::unexpected(fmt::format("group {}: two links named {}", name_, opt.name));
  auto l = SiteLink::create(*this, opt);
  if (!l) return std::unexpected(l.error());
  links_.push_back(std::move(*l));
  return {};
}

std::vector<uint64_t> GroupLog::lun_sizes() const {
  std::vector<uint64_t> v;
  for (auto* b : lowers_) v.push_back(b ? b->size() : 0);
  return v;
}

int GroupLog::read_raw(uint64_t from, size_t max_bytes, std::vector<uint8_t>* buf, size_t* len,
                       size_t* count, uint64_t* last) const {
  *len = *count = 0;
  *last = 0;
  RingLog::RawExtents ext;
  {
    std::lock_guard lk(log_mu_);
    if (int r = log_->raw_extents(from, max_bytes, &ext); r < 0) return r;
  }
  if (buf->size() < ext.bytes) buf->resize(ext.bytes);
  const int r = log_->read_extents(ext, buf->data());
  {
    // Released meanwhile (a link in bitmap mode): the space may have been reused.
    std::lock_guard lk(log_mu_);
    if (log_->head_seq() > from) return -ERANGE;
  }
  if (r < 0) return r;
  *len = ext.bytes;
  *count = ext.first_seqs.size();
  *last = ext.last_seq;
  return 0;
}

RingLog::Lag GroupLog::lag(uint64_t acked) const {
  std::lock_guard lk(log_mu_);
  return log_->lag(acked);
}

void GroupLog::kick() {
  // The writer loads wake_ before it says it sleeps: a kick that finds it awake has either
  // been seen, or changed wake_ so that its futex_wait returns at once.
  wake_.fetch_add(1, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst)) futex_wake(wake_);
}

void GroupLog::acknowledged() {
  // Log space is released on the writer's next batch; only the waits need the news, and
  // they are completed here, on the link's thread (wait_acks checks under ack_mu_).
  complete_waits(false);
}

void GroupLog::publish() {
  pub_head_.store(log_->head_seq());
  pub_next_.store(log_->next_seq());
}

uint64_t GroupLog::links_acked_min() const {
  uint64_t m = std::numeric_limits<uint64_t>::max();
  for (auto& l : links_)
    if (!l->in_bitmap_mode()) m = std::min(m, l->acked());  // its map takes over (bitmap_cover)
  return m;
}

uint64_t GroupLog::bitmap_cover(uint64_t upto) {
  for (auto& l : links_) {
    if (!l->bitmap_policy()) continue;
    upto = l->cover(upto, [this](uint64_t from, uint64_t to) {
      std::vector<Region> out;
      if (from < log_->head_seq()) from = log_->head_seq();
      log_->read(from, [&](const RecordView& v) {
        if (v.seq > to) return false;
        if (!is_marker(v.type)) out.push_back(Region{v.lu, v.offset, v.length});
        return true;
      });
      return out;
    });
  }
  return upto;
}

std::vector<std::pair<std::string, LinkStats>> GroupLog::link_stats() const {
  std::vector<std::pair<std::string, LinkStats>> v;
  for (auto& l : links_) v.emplace_back(l->name(), l->stats());
  return v;
}

std::expected<void, std::string> GroupLog::start() {
  for (size_t i = 0; i < lowers_.size(); ++i)
    if (!lowers_[i]) return std::unexpected(fmt::format("group {}: LU {} of the group is not attached", name_, i));
  // Replay: the log is written before the backends, so they may lack its tail.
  uint64_t replayed = 0;
  std::string err;
  int r = log_->read(log_->head_seq(), [&](const RecordView& v) {
    if (is_marker(v.type)) return true;
    if (v.lu >= lowers_.size()) {
      err = fmt::format("group {}: log record {} is for LU {} but the group has {} LUs (was a LU removed "
                        "from the group while the log still held its writes?)",
                        name_, v.seq, v.lu, lowers_.size());
      return false;
    }
    if (auto e = apply_record(*lowers_[v.lu], v); !e.empty()) {
      err = fmt::format("group {}: replaying the log: {}", name_, e);
      return false;
    }
    ++replayed;
    return true;
  });
  if (r < 0 && err.empty()) err = fmt::format("group {}: reading the log: {}", name_, std::strerror(-r));
  if (!err.empty()) return std::unexpected(err);
  if (auto e = flush_backends(""); !e.empty()) return std::unexpected(e);
  // The backends have everything now; the links still need what they have not acknowledged.
  uint64_t upto = std::min(log_->next_seq() - 1, links_acked_min());
  if (upto >= log_->head_seq()) upto = bitmap_cover(upto);
  if (upto >= log_->head_seq()) log_->release(upto);
  if (int c = log_->checkpoint(); c < 0)
    return std::unexpected(fmt::format("group {}: writing the log superblock: {}", name_, std::strerror(-c)));
  applied_upto_ = log_->next_seq() - 1;
  {
    std::lock_guard lk(stats_mu_);
    stats_.replayed_records = replayed;
  }
  if (replayed) spdlog::info("group {}: replayed {} log records into the group's LUs", name_, replayed);
  publish();
  for (auto& l : links_) links_may_hold_ |= l->may_hold();
  started_ = true;
  writer_ = std::thread([this] { writer_loop(); });
  for (auto& l : links_) l->start();
  return {};
}

struct GroupLog::Pending {
  GroupLog* group = nullptr;
  LogEntry* head = nullptr;  // in submission order, through LogEntry::next
  LogEntry** tail = &head;
  storage::PostedWork hook{};
};

void GroupLog::submit(LogEntry& e) {
  e.next = nullptr;
  e.origin = IoContext::current();
  if (!started_ || !e.origin) {
    // Synchronous: no waiting for sync links here (startup and tests only).
    std::vector<LogEntry*> one{&e};
    {
      std::unique_lock lk(log_mu_);
      process(one, lk);
    }
    e.done(e);
    return;
  }
  if (e.has_record && !e.sync) {
    // Gathered until the end of the reactor's pass (IoContext::defer_batch): the records
    // one pass of PDUs produced go to the log as one batch, one write.
    Pending& p = pending_for();
    const bool arm = p.head == nullptr;
    *p.tail = &e;
    p.tail = &e.next;
    if (arm) e.origin->defer_batch(p.hook);
    return;
  }
  enqueue(&e, &e);
}

void GroupLog::enqueue(LogEntry* first, LogEntry* last) {
  // The writer takes the stack whole and reverses it: a chain first..last (in submission
  // order, linked through next) goes on reversed, to come off in order.
  LogEntry* rev = nullptr;
  for (LogEntry* e = first; e;) {
    LogEntry* next = e == last ? nullptr : e->next;
    e->next = rev;
    rev = e;
    e = next;
  }
  LogEntry* head = queue_.load(std::memory_order_relaxed);
  do {
    first->next = head;
  } while (!queue_.compare_exchange_weak(head, rev, std::memory_order_seq_cst,
                                         std::memory_order_relaxed));
  if (sleeping_.load(std::memory_order_seq_cst)) kick();
}

GroupLog::Pending& GroupLog::pending_for() {
  // One per (thread, group); a thread has one IoContext. Groups are few.
  thread_local std::vector<std::unique_ptr<Pending>> mine;
  for (auto& p : mine)
    if (p->group == this) return *p;
  auto p = std::make_unique<Pending>();
  p->group = this;
  p->hook.arg = p.get();
  p->hook.run = [](void* a) {
    Pending& pd = *static_cast<Pending*>(a);
    LogEntry* list = pd.head;
    pd.head = nullptr;
    pd.tail = &pd.head;  // what the completions below submit is the next batch
    pd.group->append_gathered(list);
  };
  mine.push_back(std::move(p));
  return *mine.back();
}

void GroupLog::append_gathered(LogEntry* list) {
  // Local, not thread_local: the completions try_append_inline runs may drive this
  // thread's IoContext (a synchronous flush does) and so come back here.
  std::vector<LogEntry*> batch;
  batch.reserve(32);
  for (LogEntry* e = list; e; e = e->next) batch.push_back(e);
  const size_t done = try_append_inline(batch);
  if (done == batch.size()) return;
  enqueue(batch[done], batch.back());
}

size_t GroupLog::try_append_inline(std::vector<LogEntry*>& batch) {
  // Only while the writer is idle: under load its batches are cheaper per record, and a
  // record appended here must not jump ahead of one queued before it was submitted.
  if (!sleeping_.load(std::memory_order_seq_cst) || queue_.load(std::memory_order_seq_cst))
    return 0;
  bool holding = false;
  for (auto& l : links_) {
    l->check_fallbehind();
    holding |= l->holding();  // the writes then wait for the links (wait_acks)
  }
  std::unique_lock lk(log_mu_, std::try_to_lock);
  if (!lk.owns_lock()) return 0;
  advance_applied();
  if (log_->next_seq() + batch.size() > applied_upto_ + kWindow) return 0;
  if (log_->used_bytes() * 100 >= log_->capacity() * flush_at_percent_)
    return 0;  // the writer flushes
  thread_local std::vector<AppendRecord> recs;
  size_t done = 0, batches = 0;
  while (done < batch.size()) {
    const size_t n = std::min<size_t>(batch.size() - done, RingLog::kMaxRecordsPerBatch);
    recs.clear();
    for (size_t i = 0; i < n; ++i) recs.push_back(batch[done + i]->rec);
    uint64_t first = 0;
    const int r = log_->append(recs, &first);
    if (r == -ENOSPC) break;  // the rest goes to the writer, which makes room
    for (size_t i = 0; i < n; ++i) {
      LogEntry& e = *batch[done + i];
      e.result = r;
      e.seq = r == 0 ? first + i : 0;
      e.hold = holding && r == 0;
    }
    if (r == 0) ++batches;
    done += n;
  }
  if (done == 0) return 0;
  {
    std::lock_guard sl(stats_mu_);
    stats_.appended_batches += batches;
    for (size_t i = 0; i < done; ++i)
      if (batch[i]->result == 0) ++stats_.appended_records, ++stats_.inline_appends;
  }
  publish();
  lk.unlock();
  for (auto& l : links_) l->notify();
  for (size_t i = 0; i < done; ++i) batch[i]->done(*batch[i]);
  return done;
}

void GroupLog::applied(uint64_t seq) { applied_bits_[seq % kWindow].store(1, std::memory_order_release); }

void GroupLog::advance_applied() {
  while (applied_upto_ + 1 < log_->next_seq() &&
         applied_bits_[(applied_upto_ + 1) % kWindow].exchange(0, std::memory_order_acquire))
    ++applied_upto_;
}

void GroupLog::writer_loop() {
  storage::name_this_thread("log/" + name_);
  std::vector<LogEntry*> batch;
  for (;;) {
    LogEntry* list = queue_.exchange(nullptr, std::memory_order_acq_rel);
    if (list) {
      // The stack holds the newest first: reverse to submission order.
      batch.clear();
      for (LogEntry* e = list; e; e = e->next) batch.push_back(e);
      std::reverse(batch.begin(), batch.end());
      {
        std::unique_lock lk(log_mu_);
        process(batch, lk);
      }
      bool holding = false;
      for (auto& l : links_) {
        l->check_fallbehind();
        holding |= l->holding();
      }
      for (LogEntry* e : batch) {
        // A write waits for the links only if it succeeded locally (Layer::on_logged).
        e->hold = holding && e->result == 0 && e->origin;
        complete(*e);
      }
    }
    if (stop_.load() && !list) {
      // Sync links are no longer waited for.
      complete_waits(true);
      break;
    }
    complete_waits(false);  // deadlines
    if (list) continue;
    const uint32_t w = wake_.load(std::memory_order_seq_cst);
    sleeping_.store(true, std::memory_order_seq_cst);
    if (queue_.load(std::memory_order_seq_cst) == nullptr && !stop_.load())
      futex_wait(wake_, w, links_may_hold_ ? 20 : -1);  // held writes have deadlines
    sleeping_.store(false, std::memory_order_seq_cst);
  }
}

bool GroupLog::wait_acks(AckWait& w) {
  w.since = std::chrono::steady_clock::now();
  std::lock_guard lk(ack_mu_);
  // Checked under the lock a link takes after it moved acked(): an acknowledgement is
  // either seen here or finds the wait in the list.
  if (acks_stopped_ || !ack_pending(w, w.since, false)) return false;
  ack_waits_.push_back(&w);
  has_waits_.store(true, std::memory_order_seq_cst);
  return true;
}

bool GroupLog::ack_pending(const AckWait& w, std::chrono::steady_clock::time_point now,
                           bool stopping) {
  if (stopping) return false;
  bool wait = false;
  for (auto& l : links_) {
    if (!l->holding() || l->acked() >= w.seq) continue;
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - w.since);
    if (l->may_time_out() && waited >= std::chrono::milliseconds(l->sync_timeout_ms()))
      l->degrade(fmt::format("no acknowledgement of record {} for {} ms", w.seq, waited.count()));
    else
      wait = true;
  }
  return wait;
}

void GroupLog::complete_waits(bool stopping) {
  if (!has_waits_.load(std::memory_order_seq_cst) && !stopping) return;
  const auto now = std::chrono::steady_clock::now();
  std::vector<AckWait*> done;
  {
    std::lock_guard lk(ack_mu_);
    if (stopping) acks_stopped_ = true;
    auto keep = std::partition(ack_waits_.begin(), ack_waits_.end(),
                               [&](AckWait* w) { return ack_pending(*w, now, stopping); });
    done.assign(keep, ack_waits_.end());
    ack_waits_.erase(keep, ack_waits_.end());
    has_waits_.store(!ack_waits_.empty(), std::memory_order_seq_cst);
  }
  for (AckWait* w : done) {
    w->work.run = [](void* a) {
      auto& aw = *static_cast<AckWait*>(a);
      aw.done(aw);
    };
    w->work.arg = w;
    w->origin->post(w->work);
  }
}

void GroupLog::complete(LogEntry& e) {
  if (!e.origin) {
    e.done(e);
    return;
  }
  e.work.run = [](void* a) {
    auto& en = *static_cast<LogEntry*>(a);
    en.done(en);
  };
  e.work.arg = &e;
  e.origin->post(e.work);
}

bool GroupLog::relieve_pressure(bool force) {
  advance_applied();
  uint64_t upto = std::min(applied_upto_, links_acked_min());
  if (upto < log_->head_seq()) return false;  // nothing releasable
  if (!force && log_->used_bytes() * 100 < log_->capacity() * flush_at_percent_) return false;
  upto = bitmap_cover(upto);  // links in bitmap mode: their maps get the regions first
  if (upto < log_->head_seq()) return false;
  if (auto e = flush_backends(" to free log space"); !e.empty()) {
    spdlog::error("{}", e);
    return false;
  }
  log_->release(upto);
  publish();
  std::lock_guard lk(stats_mu_);
  ++stats_.pressure_flushes;
  return true;
}

int GroupLog::append_one_batch(std::vector<LogEntry*>& entries, size_t begin, size_t end,
                               std::unique_lock<std::mutex>& lk) {
  std::vector<AppendRecord> recs;
  recs.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) recs.push_back(entries[i]->rec);
  uint64_t first = 0;
  int r = log_->append(recs, &first);
  // No room: make the backends durable and release what they and the links hold, then
  // wait for writes still on their way to a backend and for link acknowledgements
  // (bounded: 30 s, then the writes fail; the fall-behind policies will act earlier).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (r == -ENOSPC) {
    // A full log is a fall-behind too: links with the `bitmap` policy that hold records
    // stop doing so.
    for (auto& l : links_)
      if (l->bitmap_policy() && !l->in_bitmap_mode() && l->acked() + 1 < log_->next_seq())
        l->enter_bitmap("the log is full");
    relieve_pressure(true);
    r = log_->append(recs, &first);
    if (r != -ENOSPC) break;
    if (std::chrono::steady_clock::now() > deadline) {
      spdlog::error("group {}: log {} is full and nothing can be released: failing {} writes", name_, log_->path(),
                    recs.size());
      break;
    }
    lk.unlock();  // the links read the log meanwhile
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    lk.lock();
  }
  for (size_t i = begin; i < end; ++i) {
    entries[i]->result = r;
    entries[i]->seq = r == 0 ? first + (i - begin) : 0;
  }
  if (r == 0) {
    std::lock_guard lk(stats_mu_);
    stats_.appended_records += recs.size();
    ++stats_.appended_batches;
  }
  return r;
}

void GroupLog::process(std::vector<LogEntry*>& batch, std::unique_lock<std::mutex>& lk) {
  advance_applied();
  bool want_sync = false;
  size_t i = 0;
  while (i < batch.size()) {
    if (!batch[i]->has_record) {
      batch[i]->result = 0;
      batch[i]->seq = log_->next_seq() - 1;  // a barrier waits for every record before it
      want_sync |= batch[i]->sync;
      ++i;
      continue;
    }
    size_t j = i;
    while (j < batch.size() && batch[j]->has_record && j - i < RingLog::kMaxRecordsPerBatch) ++j;
    // Keep appended-but-unapplied records within the applied window.
    while (log_->next_seq() + (j - i) > applied_upto_ + kWindow) {
      lk.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      lk.lock();
      advance_applied();
    }
    append_one_batch(batch, i, j, lk);
    for (size_t k = i; k < j; ++k) want_sync |= batch[k]->sync;
    i = j;
  }
  publish();
  for (auto& l : links_) l->notify();
  if (want_sync) {
    const int r = log_->sync();
    for (LogEntry* e : batch)
      if (e->sync && e->result == 0) e->result = r;
    std::lock_guard lk(stats_mu_);
    ++stats_.syncs;
  }
  relieve_pressure(false);
}

GroupLogStats GroupLog::stats() const {
  std::lock_guard lk(log_mu_);  // lock order: log_mu_, then stats_mu_
  std::lock_guard lk2(stats_mu_);
  GroupLogStats s = stats_;
  s.head_seq = log_->head_seq();
  s.next_seq = log_->next_seq();
  s.used_bytes = log_->used_bytes();
  s.capacity = log_->capacity();
  s.appended_bytes = log_->appended_bytes();
  return s;
}

}  // namespace zuma::replication
