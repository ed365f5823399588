#include "snapshot/snapshot_store.hh"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "storage/iovec_util.hh"
#include "storage/sync_io.hh"

namespace zuma::snapshot {

using storage::IoOp;
using storage::IoRequest;

struct SnapshotStore::Piece {
  Op* op = nullptr;
  uint64_t chunk = 0;
  uint64_t within = 0;  // offset inside the chunk
  uint64_t len = 0;
  std::vector<iovec> src;  // the caller's bytes for this piece (a read's destination)
  IoRequest req;
  storage::Buffer bounce;  // redirect-on-write of part of a chunk: the whole new chunk
  iovec biov{};
  Phys old_phys = kZeroPhys;
  Phys new_phys = kZeroPhys;
  int stage = 0;  // redirect: 1 reading the old chunk, 2 writing the new one
  Piece* next_waiter = nullptr;
  storage::PostedWork work;
};

struct SnapshotStore::Op {
  SnapshotStore* s = nullptr;
  Target t;
  IoRequest* parent = nullptr;
  storage::IoContext* ctx = nullptr;  // the submitting thread's (completions go there)
  std::vector<Piece> pieces;  // the first `npieces` are this request's (capacity reused)
  size_t npieces = 0;
  std::atomic<size_t> remaining{0};
  std::atomic<int> error{0};
  int phase = 0;
  bool counted_write = false;  // counted in writes_inflight_ or (counted_read) reads_inflight_
  bool counted_read = false;
  std::atomic<bool> commit_after{false};  // FUA over mappings not yet durable
  int result = 0;
  storage::PostedWork work;
};

namespace {

// Ops are recycled per thread (STYLE.md 5: no per-I/O heap allocation in steady state):
// their piece vectors, iovec lists and bounce buffers keep their capacity.
constexpr size_t kOpPoolMax = 256;

bool modifies(IoOp op) {
  return op == IoOp::kWrite || op == IoOp::kDiscard || op == IoOp::kWriteZeroes;
}

int64_t now_unix() {
  return static_cast<int64_t>(std::time(nullptr));
}

}  // namespace

std::vector<SnapshotStore::Op*>& SnapshotStore::op_pool() {
  struct Pool {
    std::vector<Op*> free;
    ~Pool() {
      for (Op* op : free) delete op;
    }
  };
  thread_local Pool pool;
  return pool.free;
}

SnapshotStore::Op* SnapshotStore::new_op() {
  auto& pool = op_pool();
  Op* op;
  if (pool.empty()) {
    op = new Op();
  } else {
    op = pool.back();
    pool.pop_back();
  }
  op->npieces = 0;
  op->error.store(0);
  op->phase = 0;
  op->counted_write = false;
  op->counted_read = false;
  op->commit_after = false;
  op->result = 0;
  op->work = storage::PostedWork{};
  return op;
}

void SnapshotStore::free_op(Op* op) {
  auto& pool = op_pool();
  if (pool.size() >= kOpPoolMax) {
    delete op;
  } else {
    pool.push_back(op);
  }
}

// ---- views --------------------------------------------------------------------------

class SnapshotStore::View final : public storage::Backend {
 public:
  View(std::shared_ptr<SnapshotStore> s, Target t) : s_(std::move(s)), t_(t) {}
  ~View() override {
    if (t_.kind != Target::kLive) s_->release_view(t_.kind, t_.id);
  }
  uint64_t size() const override { return s_->size_; }
  bool supports(IoOp op) const override {
    return t_.kind != Target::kSnapshot || op == IoOp::kRead || op == IoOp::kWrite ||
           op == IoOp::kFlush;
  }
  void submit(IoRequest& req) override { s_->submit(t_, req); }
  std::string describe() const override {
    switch (t_.kind) {
      case Target::kLive:
        return fmt::format("snapshot-store:{}", s_->opts_.name);
      case Target::kSnapshot:
        return fmt::format("snapshot:{}@{}", s_->opts_.name, t_.id);
      default:
        return fmt::format("clone:{}#{}", s_->opts_.name, t_.id);
    }
  }
  int extent_status(uint64_t offset, uint64_t max_len, storage::ExtentStatus* out) const override {
    std::shared_lock lock(s_->mu_);
    const uint64_t cs = s_->cs_;
    const uint64_t len = std::min(max_len, s_->size_ > offset ? s_->size_ - offset : 0);
    auto phys = [&](uint64_t c) { return s_->resolve_locked(t_, c); };
    uint64_t c = offset / cs;
    const bool allocated = phys(c) != kZeroPhys;
    uint64_t run = std::min(len, (c + 1) * cs - offset);
    for (++c; run < len && (phys(c) != kZeroPhys) == allocated; ++c) run = std::min(len, run + cs);
    *out = storage::ExtentStatus{run, allocated};
    return 0;
  }
  int space_usage(storage::SpaceUsage* out) const override {
    std::shared_lock lock(s_->mu_);
    const SpaceStats st = s_->md_->space();
    *out = storage::SpaceUsage{st.used_chunks * s_->cs_, (st.total_chunks - st.used_chunks) * s_->cs_,
                               true};
    return 0;
  }

 private:
  std::shared_ptr<SnapshotStore> s_;
  Target t_;
};

// ---- open / close ---------------------------------------------------------------------

std::expected<std::shared_ptr<SnapshotStore>, std::string> SnapshotStore::open(
    std::unique_ptr<storage::Backend> home, std::unique_ptr<storage::Backend> data,
    std::unique_ptr<storage::Backend> meta, const StoreOptions& opts) {
  using R = std::expected<std::shared_ptr<SnapshotStore>, std::string>;
  const uint64_t cs = opts.chunk_size;
  if (cs < 4096 || cs > (8u << 20) || (cs & (cs - 1)) != 0)
    return R(std::unexpect, fmt::format("chunk size {} is not a power of two in 4KiB..8MiB", cs));
  if (home->size() == 0 || home->size() % cs != 0)
    return R(std::unexpect, fmt::format("the LU size {} is not a multiple of the chunk size {}",
                                        home->size(), cs));
  std::shared_ptr<SnapshotStore> s(new SnapshotStore());
  s->opts_ = opts;
  s->cs_ = cs;
  s->size_ = home->size();
  StoreGeometry geo{cs, home->size() / cs, data->size() / cs};
  s->md_ = std::make_unique<Metadata>(geo.home_chunks, geo.store_chunks);
  auto log = MetaLog::open(std::move(meta), geo, s->md_.get());
  if (!log) return R(std::unexpect, std::move(log.error()));
  s->log_ = std::move(*log);
  s->home_ = std::move(home);
  s->data_ = std::move(data);
  s->zeros_.resize(cs);
  s->zeros_.zero();
  s->reclaim_wanted_ = s->md_->reclaim_pending();
  s->committer_ = std::thread([p = s.get()] { p->commit_thread(); });
  if (s->log_->records_replayed() > 0)
    spdlog::info("snapshot store '{}': recovered {} journal records (generation {})", opts.name,
                 s->log_->records_replayed(), s->log_->generation());
  s->check_fill();
  return R(std::move(s));
}

SnapshotStore::~SnapshotStore() {
  {
    std::lock_guard lock(q_mu_);
    stop_ = true;
  }
  q_cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  if (!failed_) commit_round();
}

std::unique_ptr<storage::Backend> SnapshotStore::live_view() {
  return std::make_unique<View>(shared_from_this(), Target{Target::kLive, 0});
}

std::expected<std::unique_ptr<storage::Backend>, std::string> SnapshotStore::snapshot_view(Epoch e) {
  std::lock_guard admin(admin_mu_);
  std::unique_lock lock(mu_);
  if (!md_->snapshot_exists(e)) return std::unexpected(fmt::format("no snapshot {}", e));
  ++exported_[{Target::kSnapshot, e}];
  return std::make_unique<View>(shared_from_this(), Target{Target::kSnapshot, e});
}

std::expected<std::unique_ptr<storage::Backend>, std::string> SnapshotStore::clone_view(
    uint64_t clone) {
  std::lock_guard admin(admin_mu_);
  std::unique_lock lock(mu_);
  if (!md_->clones().count(clone)) return std::unexpected(fmt::format("no clone {}", clone));
  ++exported_[{Target::kClone, clone}];
  return std::make_unique<View>(shared_from_this(), Target{Target::kClone, clone});
}

// ---- the I/O path ---------------------------------------------------------------------

Phys SnapshotStore::resolve_locked(Target t, uint64_t chunk) const {
  switch (t.kind) {
    case Target::kLive:
      return md_->live(chunk).phys;
    case Target::kSnapshot:
      return md_->snapshot_lookup(t.id, chunk);
    default:
      return md_->clone_lookup(t.id, chunk);
  }
}

storage::Backend& SnapshotStore::backend_for(Phys p, uint64_t* offset) {
  const uint64_t home = md_->home_chunks();
  if (p < home) {
    *offset = p * cs_;
    return *home_;
  }
  *offset = (p - home) * cs_;
  return *data_;
}

bool SnapshotStore::meta_full_for_write() const {
  // Room for the checkpoint of the state after this change, with a margin for the
  // snapshot records and transactions in flight.
  const uint64_t cap = log_->checkpoint_capacity();
  return md_->serialized_size() + std::min<uint64_t>(64 * 1024, cap / 8) > cap;
}

void SnapshotStore::submit(Target t, IoRequest& req) {
  if (req.op == IoOp::kFlush) {
    if (t.kind == Target::kSnapshot) return req.done(req, 0);
    if (failed_) return req.done(req, -EIO);
    storage::IoContext* ctx = storage::IoContext::current();
    if (ctx == nullptr) return req.done(req, commit_round());
    Op* op = new_op();
    op->s = this;
    op->t = t;
    op->parent = &req;
    op->ctx = ctx;
    enqueue_commit(op);
    return;
  }
  if (req.offset + req.length < req.offset || req.offset + req.length > size_)
    return req.done(req, -EINVAL);
  if ((req.op == IoOp::kRead || req.op == IoOp::kWrite) &&
      storage::iov_total(req.iov, req.iovcnt) < req.length)
    return req.done(req, -EINVAL);
  if (modifies(req.op)) {
    if (t.kind == Target::kSnapshot) return req.done(req, -EROFS);
    if (failed_) return req.done(req, -EIO);
  }
  if (req.length == 0) return req.done(req, 0);
  Op* op = new_op();
  op->s = this;
  op->t = t;
  op->parent = &req;
  op->ctx = storage::IoContext::current();
  const uint64_t first = req.offset / cs_;
  const uint64_t last = (req.offset + req.length - 1) / cs_;
  op->npieces = last - first + 1;
  if (op->pieces.size() < op->npieces) op->pieces.resize(op->npieces);
  uint64_t off = req.offset, skip = 0;
  for (size_t i = 0; i < op->npieces; ++i) {
    Piece& p = op->pieces[i];
    p.op = op;
    p.src.clear();
    p.stage = 0;
    p.next_waiter = nullptr;
    p.old_phys = p.new_phys = kZeroPhys;
    p.chunk = off / cs_;
    p.within = off % cs_;
    p.len = std::min(req.offset + req.length - off, cs_ - p.within);
    if (req.op == IoOp::kRead || req.op == IoOp::kWrite) {
      storage::iov_slice(req.iov, req.iovcnt, skip, p.len, p.src);
    } else if (p.len != cs_) {
      p.src.push_back({zeros_.data(), p.len});  // partial deallocation: write zeros
    }
    off += p.len;
    skip += p.len;
  }
  start_op(op);
}

void SnapshotStore::start_op(Op* op) {
  if (op->t.kind != Target::kSnapshot && !op->counted_write) {
    // Quiescing: a write (of the LU or a clone) either counts as in flight before the freeze
    // or waits until the thaw, so a snapshot never holds half of one. A rollback freezes
    // reads as well, so that no command reads a mix of the content before and after it.
    const bool write = modifies(op->parent->op);
    std::atomic<uint64_t>& count = write ? writes_inflight_ : reads_inflight_;
    const int stops = write ? kFreezeWrites : kFreezeAll;
    for (;;) {
      count.fetch_add(1);
      if (frozen_.load() < stops) break;
      count.fetch_sub(1);
      std::lock_guard g(freeze_mu_);
      if (frozen_.load() >= stops) {
        frozen_q_.push_back(op);
        return;
      }
    }
    op->counted_write = true;
    op->counted_read = !write;
  }
  {
    std::shared_lock lock(mu_);
    op->phase = phase_;
    io_count_[op->phase].fetch_add(1);
  }
  op->remaining.store(op->npieces + 1);
  for (size_t i = 0; i < op->npieces; ++i) start_piece(&op->pieces[i]);
  if (op->remaining.fetch_sub(1) == 1) finish_op(op);
}

void SnapshotStore::piece_io(Piece* p, IoOp io, Phys phys, uint64_t within, const iovec* iov,
                             int iovcnt, uint64_t len, bool fua) {
  uint64_t base = 0;
  storage::Backend& b = backend_for(phys, &base);
  p->req = IoRequest{};
  p->req.op = io;
  p->req.fua = fua;
  p->req.offset = base + within;
  p->req.length = len;
  p->req.iov = iov;
  p->req.iovcnt = iovcnt;
  p->req.done = &SnapshotStore::piece_done;
  p->req.user = p;
  b.submit(p->req);
}

void SnapshotStore::piece_done(IoRequest& req, int result) {
  auto* p = static_cast<Piece*>(req.user);
  if (p->stage != 0) return p->op->s->row_step(p, result);
  p->op->s->finish_piece(p, result);
}

void SnapshotStore::start_piece(Piece* p) {
  Op* op = p->op;
  const Target t = op->t;
  const IoOp kind = op->parent->op;
  const int srccnt = static_cast<int>(p->src.size());
  if (kind == IoOp::kRead) {
    Phys phys;
    {
      std::shared_lock lock(mu_);
      phys = resolve_locked(t, p->chunk);
    }
    if (phys == kZeroPhys) {
      storage::iov_zero(p->src.data(), srccnt, 0, p->len);
      return finish_piece(p, 0);
    }
    return piece_io(p, IoOp::kRead, phys, p->within, p->src.data(), srccnt, p->len, false);
  }
  const bool whole = p->within == 0 && p->len == cs_;
  const bool dealloc = kind != IoOp::kWrite && whole;
  const bool fua = op->parent->fua;
  const std::pair<uint64_t, uint64_t> key{t.kind == Target::kClone ? t.id : 0, p->chunk};
  auto in_place = [&]() -> std::optional<Phys> {
    if (dealloc) return std::nullopt;
    if (t.kind == Target::kLive) {
      if (md_->writable_in_place(p->chunk)) return md_->live(p->chunk).phys;
      return std::nullopt;
    }
    return md_->clone_writable_in_place(t.id, p->chunk);
  };
  {
    std::shared_lock lock(mu_);
    if (auto phys = in_place()) {
      // A FUA write is durable only once its chunk's mapping is: commit afterwards while
      // mappings are pending.
      if (fua && (md_->has_pending() || committing_)) op->commit_after = true;
      lock.unlock();
      return piece_io(p, IoOp::kWrite, *phys, p->within, p->src.data(), srccnt, p->len, fua);
    }
  }
  std::unique_lock lock(mu_);
  if (auto phys = in_place()) {
    if (fua && (md_->has_pending() || committing_)) op->commit_after = true;
    lock.unlock();
    return piece_io(p, IoOp::kWrite, *phys, p->within, p->src.data(), srccnt, p->len, fua);
  }
  if (auto it = rows_.find(key); it != rows_.end()) {
    // The chunk is being redirected by another write: wait for it, then start again.
    p->next_waiter = it->second;
    it->second = p;
    return;
  }
  if (dealloc) {
    if (t.kind == Target::kLive) {
      if (md_->live(p->chunk).phys != kZeroPhys) md_->remap_live(p->chunk, kZeroPhys);
    } else {
      md_->clone_map(t.id, p->chunk, kZeroPhys);
    }
    lock.unlock();
    return finish_piece(p, 0);
  }
  if (meta_full_for_write()) {
    lock.unlock();
    warn_meta_full();
    return finish_piece(p, -ENOSPC);
  }
  auto fresh = md_->allocate();
  if (!fresh) {
    lock.unlock();
    {
      std::lock_guard q(q_mu_);
      kick_ = true;  // chunks freed by the last transactions become usable after a commit
    }
    q_cv_.notify_one();
    check_fill();
    return finish_piece(p, -ENOSPC);
  }
  rows_.emplace(key, nullptr);
  p->old_phys = resolve_locked(t, p->chunk);
  p->new_phys = *fresh;
  lock.unlock();
  if (fua) op->commit_after = true;
  check_fill();
  if (whole) {
    p->stage = 2;
    return piece_io(p, IoOp::kWrite, p->new_phys, 0, p->src.data(), srccnt, p->len, false);
  }
  p->bounce.resize(cs_);
  p->biov = {p->bounce.data(), cs_};
  if (p->old_phys == kZeroPhys) {
    p->bounce.zero();
    return row_step(p, 0);  // as if the old chunk (zeros) had been read
  }
  p->stage = 1;
  piece_io(p, IoOp::kRead, p->old_phys, 0, &p->biov, 1, cs_, false);
}

void SnapshotStore::row_step(Piece* p, int result) {
  Op* op = p->op;
  const Target t = op->t;
  const std::pair<uint64_t, uint64_t> key{t.kind == Target::kClone ? t.id : 0, p->chunk};
  if (result == 0 && p->stage <= 1) {
    // The old chunk is in the bounce buffer: lay the new bytes over it, write it all.
    uint8_t* dst = p->bounce.data() + p->within;
    storage::IovCursor cur(p->src.data(), static_cast<int>(p->src.size()));
    cur.for_each(p->len, [&](uint8_t* s, size_t n) {
      std::memcpy(dst, s, n);
      dst += n;
    });
    p->stage = 2;
    return piece_io(p, IoOp::kWrite, p->new_phys, 0, &p->biov, 1, cs_, false);
  }
  Piece* waiters = nullptr;
  {
    std::unique_lock lock(mu_);
    if (result == 0) {
      if (t.kind == Target::kLive) {
        md_->remap_live(p->chunk, p->new_phys);
      } else {
        md_->clone_map(t.id, p->chunk, p->new_phys);
      }
    } else {
      md_->unallocate(p->new_phys);
    }
    auto it = rows_.find(key);
    waiters = it->second;
    rows_.erase(it);
  }
  p->stage = 0;
  while (waiters) {
    Piece* w = waiters;
    waiters = w->next_waiter;
    w->next_waiter = nullptr;
    resume(w);
  }
  finish_piece(p, result);
}

void SnapshotStore::resume(Piece* p) {
  storage::IoContext* ctx = p->op->ctx;
  if (ctx == nullptr || ctx == storage::IoContext::current()) return start_piece(p);
  p->work.run = [](void* arg) {
    auto* piece = static_cast<Piece*>(arg);
    piece->op->s->start_piece(piece);
  };
  p->work.arg = p;
  ctx->post(p->work);
}

void SnapshotStore::resume_op(Op* op) {
  if (op->ctx == nullptr || op->ctx == storage::IoContext::current()) return start_op(op);
  op->work.run = [](void* arg) {
    auto* o = static_cast<Op*>(arg);
    o->s->start_op(o);
  };
  op->work.arg = op;
  op->ctx->post(op->work);
}

void SnapshotStore::finish_piece(Piece* p, int result) {
  Op* op = p->op;
  if (result != 0) {
    int expected = 0;
    op->error.compare_exchange_strong(expected, result);
  }
  if (op->remaining.fetch_sub(1) == 1) finish_op(op);
}

void SnapshotStore::finish_op(Op* op) {
  if (op->counted_write) (op->counted_read ? reads_inflight_ : writes_inflight_).fetch_sub(1);
  io_count_[op->phase].fetch_sub(1);
  const int err = op->error.load();
  if (err == 0 && op->commit_after) {
    if (op->ctx != nullptr) return enqueue_commit(op);
    const int r = commit_round();
    IoRequest* parent = op->parent;
    free_op(op);
    return parent->done(*parent, r);
  }
  IoRequest* parent = op->parent;
  free_op(op);
  parent->done(*parent, err);
}

// ---- commits --------------------------------------------------------------------------

void SnapshotStore::enqueue_commit(Op* op) {
  {
    std::lock_guard lock(q_mu_);
    commit_q_.push_back(op);
  }
  q_cv_.notify_one();
}

void SnapshotStore::commit_thread() {
  for (;;) {
    std::vector<Op*> batch;
    bool reclaim = false;
    {
      std::unique_lock lock(q_mu_);
      q_cv_.wait_for(lock, std::chrono::seconds(1), [&] {
        return stop_ || !commit_q_.empty() || reclaim_wanted_ || kick_;
      });
      if (stop_ && commit_q_.empty()) return;
      batch.assign(commit_q_.begin(), commit_q_.end());
      commit_q_.clear();
      reclaim = batch.empty() && reclaim_wanted_;
      kick_ = false;
    }
    if (reclaim) {
      bool done;
      {
        std::unique_lock lock(mu_);
        done = md_->reclaim(opts_.reclaim_batch);
      }
      commit_round();
      if (done) {
        std::lock_guard lock(q_mu_);
        reclaim_wanted_ = false;
        reclaimed_cv_.notify_all();
      }
      continue;
    }
    // Idle rounds release freed chunks whose I/O has drained; they cost nothing when
    // nothing is pending.
    const int r = commit_round();
    for (Op* op : batch) {
      op->result = r;
      op->work.run = [](void* arg) {
        auto* o = static_cast<Op*>(arg);
        IoRequest* parent = o->parent;
        const int res = o->result;
        free_op(o);
        parent->done(*parent, res);
      };
      op->work.arg = op;
      op->ctx->post(op->work);
    }
  }
}

int SnapshotStore::commit_round() {
  std::lock_guard round(commit_mu_);
  if (failed_) return -EIO;
  std::vector<MetaOp> ops;
  std::vector<Phys> frees;
  std::vector<uint8_t> cp;
  {
    std::unique_lock lock(mu_);
    md_->take_pending(&ops, &frees);
    next_free_.insert(next_free_.end(), frees.begin(), frees.end());
    if (!ops.empty()) {
      std::vector<uint8_t> enc;
      encode_ops(ops, &enc);
      if (enc.size() + 1024 > log_->journal_capacity() - log_->journal_used()) {
        md_->serialize(&cp);  // the state exactly as of these ops
      }
      committing_ = true;
    }
    // Chunks freed before the previous phase flip are reusable once no I/O that resolved
    // its mapping before then is still running (and their transaction is durable: it was
    // written by an earlier round).
    if (io_count_[limbo_phase_].load() == 0) {
      md_->release(limbo_);
      limbo_.clear();
      if (!ops.empty() || !next_free_.empty()) {
        // next_free_ becomes durable with this round's write (or was already).
        limbo_.swap(next_free_);
        limbo_phase_ = phase_;
        phase_ ^= 1;
      }
    }
  }
  int r = storage::sync_io(*home_, IoOp::kFlush, 0, nullptr, 0);  // data before the metadata
  if (r == 0) r = storage::sync_io(*data_, IoOp::kFlush, 0, nullptr, 0);
  if (r != 0) {
    committing_ = false;
    // Nothing was published: the mappings stay pending for the next round.
    spdlog::error("snapshot store '{}': data flush failed: {}", opts_.name, std::strerror(-r));
    if (!ops.empty()) failed_ = true;
    return r;
  }
  if (ops.empty()) return 0;
  r = cp.empty() ? log_->append(ops) : log_->checkpoint(cp);
  if (r == -ENOSPC && cp.empty()) {
    // The estimate missed: checkpoint the current state after flushing again.
    std::unique_lock lock(mu_);
    std::vector<MetaOp> more;
    std::vector<Phys> more_frees;
    md_->take_pending(&more, &more_frees);
    next_free_.insert(next_free_.end(), more_frees.begin(), more_frees.end());
    md_->serialize(&cp);
    lock.unlock();
    r = storage::sync_io(*home_, IoOp::kFlush, 0, nullptr, 0);
    if (r == 0) r = storage::sync_io(*data_, IoOp::kFlush, 0, nullptr, 0);
    if (r == 0) r = log_->checkpoint(cp);
  }
  committing_ = false;
  if (r != 0) {
    failed_ = true;
    spdlog::error("snapshot store '{}': metadata commit failed ({}); writes are refused from now",
                  opts_.name, std::strerror(-r));
    return r == -ENOSPC ? -ENOSPC : -EIO;
  }
  return 0;
}

void SnapshotStore::check_fill() {
  SpaceStats st;
  {
    std::shared_lock lock(mu_);
    st = md_->space();
  }
  const double fill = st.total_chunks ? double(st.used_chunks) / double(st.total_chunks) : 1.0;
  if (fill >= opts_.warn_fill && !warned_full_.exchange(true)) {
    spdlog::warn("snapshot store '{}': {:.0f}% of {} chunks in use (warning at {:.0f}%)", opts_.name,
                 fill * 100, st.total_chunks, opts_.warn_fill * 100);
  } else if (fill < opts_.warn_fill * 0.95) {
    warned_full_ = false;
  }
}

void SnapshotStore::warn_meta_full() {
  if (!warned_meta_.exchange(true))
    spdlog::warn("snapshot store '{}': metadata area full; writes needing new chunks fail, "
                 "delete snapshots to make room",
                 opts_.name);
}

// ---- quiescing ------------------------------------------------------------------------

void SnapshotStore::freeze(int what) {
  frozen_.store(what);
  while (writes_inflight_.load() != 0 || (what == kFreezeAll && reads_inflight_.load() != 0))
    std::this_thread::sleep_for(std::chrono::microseconds(50));
}

void SnapshotStore::thaw() {
  std::vector<Op*> q;
  {
    std::lock_guard g(freeze_mu_);
    frozen_.store(kFreezeNone);
    q.swap(frozen_q_);
  }
  for (Op* op : q) resume_op(op);
}

// ---- operations -----------------------------------------------------------------------

std::optional<Epoch> SnapshotStore::find(const std::string& name_or_id) {
  std::shared_lock lock(mu_);
  return md_->find_snapshot(name_or_id);
}

std::optional<uint64_t> SnapshotStore::find_clone(const std::string& name_or_id) {
  std::shared_lock lock(mu_);
  for (const auto& [id, c] : md_->clones())
    if ((!c.name.empty() && c.name == name_or_id) || std::to_string(id) == name_or_id) return id;
  return std::nullopt;
}

std::expected<Epoch, std::string> SnapshotStore::create(const std::string& name,
                                                        const std::string& clone) {
  std::lock_guard admin(admin_mu_);
  if (failed_) return std::unexpected(std::string("the store failed a metadata write"));
  uint64_t clone_id = 0;
  if (!clone.empty()) {
    auto id = find_clone(clone);
    if (!id) return std::unexpected(fmt::format("no clone '{}'", clone));
    clone_id = *id;
  }
  {
    std::shared_lock lock(mu_);
    // A snapshot costs little metadata itself but pins versions: keep a quarter free.
    const uint64_t need = md_->serialized_size() + 300;
    if (need > log_->checkpoint_capacity() / 4 * 3)
      return std::unexpected(fmt::format(
          "metadata area full ({} of {} bytes used): delete snapshots or enlarge store.meta",
          md_->serialized_size(), log_->checkpoint_capacity()));
  }
  freeze(kFreezeWrites);
  Epoch e = 0;
  std::optional<std::string> err;
  {
    std::unique_lock lock(mu_);
    err = clone_id == 0 ? md_->create_snapshot(name, now_unix(), &e)
                        : md_->create_clone_snapshot(clone_id, name, now_unix(), &e);
  }
  int r = err ? 0 : commit_round();
  thaw();
  if (err) return std::unexpected(*err);
  if (r != 0) return std::unexpected(fmt::format("cannot commit the snapshot: {}", std::strerror(-r)));
  if (clone_id == 0) {
    spdlog::info("snapshot store '{}': snapshot {} '{}' created", opts_.name, e, name);
  } else {
    spdlog::info("snapshot store '{}': snapshot {} '{}' of clone {} created", opts_.name, e, name,
                 clone_id);
  }
  return e;
}

std::expected<void, std::string> SnapshotStore::remove(const std::string& name_or_id) {
  std::lock_guard admin(admin_mu_);
  std::optional<std::string> err;
  {
    std::unique_lock lock(mu_);
    auto e = md_->find_snapshot(name_or_id);
    if (!e) return std::unexpected(fmt::format("no snapshot '{}'", name_or_id));
    if (auto it = exported_.find({Target::kSnapshot, *e}); it != exported_.end() && it->second > 0)
      return std::unexpected(fmt::format("snapshot '{}' is exported as a LU", name_or_id));
    err = md_->delete_snapshot(*e);
  }
  if (err) return std::unexpected(*err);
  if (int r = commit_round(); r != 0)
    return std::unexpected(fmt::format("cannot commit: {}", std::strerror(-r)));
  {
    std::lock_guard lock(q_mu_);
    reclaim_wanted_ = true;
  }
  q_cv_.notify_one();
  return {};
}

void SnapshotStore::wait_reclaimed() {
  std::unique_lock lock(q_mu_);
  reclaimed_cv_.wait(lock, [&] { return !reclaim_wanted_ || stop_; });
}

void SnapshotStore::set_rollback_listener(uint64_t clone, std::function<void()> fn) {
  std::lock_guard lock(listeners_mu_);
  listeners_[clone] = std::move(fn);
}

std::expected<void, std::string> SnapshotStore::rollback(const std::string& name_or_id) {
  std::lock_guard admin(admin_mu_);
  if (failed_) return std::unexpected(std::string("the store failed a metadata write"));
  auto e = find(name_or_id);
  if (!e) return std::unexpected(fmt::format("no snapshot '{}'", name_or_id));
  uint64_t owner;
  {
    std::shared_lock lock(mu_);
    owner = md_->snapshot_owner(*e);  // 0: the LU; else the clone rolled back
  }
  // Commands in flight finish on the old content; new ones (reads too) wait for the new one
  // (see set_rollback_listener for what the initiator is told).
  freeze(kFreezeAll);
  bool changed = false;
  struct Thaw {
    SnapshotStore* s;
    uint64_t owner;
    const bool* changed;
    ~Thaw() {
      // Even a rollback that failed half-way has changed chunks.
      if (*changed) s->notify_rollback(owner);
      s->thaw();
    }
  } thaw_guard{this, owner, &changed};
  std::vector<ChunkRun> runs;
  uint64_t copies = 0;
  {
    std::shared_lock lock(mu_);
    auto err = owner == 0 ? md_->diff(*e, kLive, &runs) : md_->clone_diff(owner, *e, kLive, &runs);
    if (err) return std::unexpected(*err);
    for (const ChunkRun& r : runs)
      for (uint64_t c = r.first; c < r.first + r.count; ++c)
        copies += md_->snapshot_lookup(*e, c) != kZeroPhys;
    const SpaceStats st = md_->space();
    if (copies > st.total_chunks - st.used_chunks)
      return std::unexpected(fmt::format("rollback needs {} free chunks, {} are free", copies,
                                         st.total_chunks - st.used_chunks));
  }
  auto remap = [&](uint64_t c, Phys p) {
    changed = true;
    if (owner == 0) {
      md_->remap_live(c, p);
    } else {
      md_->clone_map(owner, c, p);
    }
  };
  storage::Buffer buf(cs_);
  for (const ChunkRun& run : runs) {
    for (uint64_t c = run.first; c < run.first + run.count; ++c) {
      Phys src;
      std::optional<Phys> dst;
      {
        std::unique_lock lock(mu_);
        src = md_->snapshot_lookup(*e, c);
        if (src == kZeroPhys) {
          if (resolve_locked(owner == 0 ? Target{Target::kLive, 0} : Target{Target::kClone, owner}, c) !=
              kZeroPhys)
            remap(c, kZeroPhys);
          continue;
        }
        dst = md_->allocate();
      }
      if (!dst) return std::unexpected(std::string("rollback: out of space"));
      uint64_t so = 0, dof = 0;
      storage::Backend& sb = backend_for(src, &so);
      storage::Backend& db = backend_for(*dst, &dof);
      int r = storage::sync_io(sb, IoOp::kRead, so, buf.data(), cs_);
      if (r == 0) r = storage::sync_io(db, IoOp::kWrite, dof, buf.data(), cs_);
      std::unique_lock lock(mu_);
      if (r != 0) {
        md_->unallocate(*dst);
        return std::unexpected(fmt::format("rollback: chunk {}: {}", c, std::strerror(-r)));
      }
      remap(c, *dst);
    }
  }
  if (int r = commit_round(); r != 0)
    return std::unexpected(fmt::format("cannot commit: {}", std::strerror(-r)));
  if (owner == 0) {
    spdlog::info("snapshot store '{}': rolled back to snapshot {} ({} chunks)", opts_.name, *e, copies);
  } else {
    spdlog::info("snapshot store '{}': clone {} rolled back to snapshot {} ({} chunks)", opts_.name,
                 owner, *e, copies);
  }
  return {};
}

void SnapshotStore::notify_rollback(uint64_t clone) {
  std::function<void()> fn;
  {
    std::lock_guard lock(listeners_mu_);
    if (auto it = listeners_.find(clone); it != listeners_.end()) fn = it->second;
  }
  if (fn) fn();
}

std::expected<uint64_t, std::string> SnapshotStore::clone(const std::string& snapshot,
                                                          const std::string& name) {
  std::lock_guard admin(admin_mu_);
  uint64_t id = 0;
  {
    std::unique_lock lock(mu_);
    auto e = md_->find_snapshot(snapshot);
    if (!e) return std::unexpected(fmt::format("no snapshot '{}'", snapshot));
    if (auto err = md_->create_clone(*e, name, now_unix(), &id)) return std::unexpected(*err);
  }
  if (int r = commit_round(); r != 0)
    return std::unexpected(fmt::format("cannot commit: {}", std::strerror(-r)));
  return id;
}

std::expected<void, std::string> SnapshotStore::remove_clone(uint64_t clone) {
  std::lock_guard admin(admin_mu_);
  {
    std::unique_lock lock(mu_);
    if (auto it = exported_.find({Target::kClone, clone}); it != exported_.end() && it->second > 0)
      return std::unexpected(fmt::format("clone {} is exported as a LU", clone));
    for (const auto& [e, info] : md_->clone_snapshots(clone))
      if (auto it = exported_.find({Target::kSnapshot, e}); it != exported_.end() && it->second > 0)
        return std::unexpected(
            fmt::format("snapshot {} of clone {} is exported as a LU", e, clone));
    if (auto err = md_->delete_clone(clone)) return std::unexpected(*err);
  }
  if (int r = commit_round(); r != 0)
    return std::unexpected(fmt::format("cannot commit: {}", std::strerror(-r)));
  return {};
}

std::expected<std::vector<Extent>, std::string> SnapshotStore::diff(const std::string& from,
                                                                    const std::string& to) {
  std::shared_lock lock(mu_);
  auto a = md_->find_snapshot(from);
  if (!a) return std::unexpected(fmt::format("no snapshot '{}'", from));
  const uint64_t owner = md_->snapshot_owner(*a);
  Epoch b = kLive;  // the LU now, or for a clone's snapshot the clone now
  if (!to.empty() && to != "live") {
    auto e = md_->find_snapshot(to);
    if (!e) return std::unexpected(fmt::format("no snapshot '{}'", to));
    if (md_->snapshot_owner(*e) != owner)
      return std::unexpected(fmt::format("'{}' and '{}' are not snapshots of the same LU or clone",
                                         from, to));
    b = *e;
  }
  std::vector<ChunkRun> runs;
  auto err = owner == 0 ? md_->diff(*a, b, &runs) : md_->clone_diff(owner, *a, b, &runs);
  if (err) return std::unexpected(*err);
  std::vector<Extent> out;
  out.reserve(runs.size());
  for (const ChunkRun& r : runs) out.push_back({r.first * cs_, r.count * cs_});
  return out;
}

std::vector<SnapshotListing> SnapshotStore::list(bool with_usage) {
  std::shared_lock lock(mu_);
  std::vector<SnapshotListing> out;
  for (const auto& [e, s] : md_->snapshots()) {
    SnapshotListing l{e, s.name, s.created, 0, 0};
    if (with_usage) {
      uint64_t ex = 0, sh = 0;
      md_->snapshot_usage(e, &ex, &sh);
      l.exclusive_bytes = ex * cs_;
      l.shared_bytes = sh * cs_;
    }
    out.push_back(std::move(l));
  }
  for (const auto& [id, c] : md_->clones()) {
    for (const auto& [e, s] : md_->clone_snapshots(id)) {
      SnapshotListing l{e, s.name, s.created, 0, 0, id};
      if (with_usage) {
        uint64_t ex = 0, sh = 0;
        md_->clone_snapshot_usage(e, &ex, &sh);
        l.exclusive_bytes = ex * cs_;
        l.shared_bytes = sh * cs_;
      }
      out.push_back(std::move(l));
    }
  }
  return out;
}

std::vector<CloneInfo> SnapshotStore::clones() {
  std::shared_lock lock(mu_);
  std::vector<CloneInfo> out;
  for (const auto& [id, c] : md_->clones()) out.push_back(c);
  return out;
}

StoreStatus SnapshotStore::status() {
  std::shared_lock lock(mu_);
  const SpaceStats st = md_->space();
  StoreStatus s;
  s.chunk_size = cs_;
  s.total_bytes = st.total_chunks * cs_;
  s.used_bytes = st.used_chunks * cs_;
  s.meta_bytes = md_->serialized_size();
  s.meta_capacity = log_->checkpoint_capacity();
  s.snapshots = md_->snapshots().size();
  for (const auto& [id, c] : md_->clones()) s.snapshots += md_->clone_snapshots(id).size();
  s.clones = md_->clones().size();
  s.reclaiming = md_->reclaim_pending();
  s.warn_fill = opts_.warn_fill;
  return s;
}

int SnapshotStore::sync() {
  return commit_round();
}

void SnapshotStore::release_view(uint8_t kind, uint64_t id) {
  std::unique_lock lock(mu_);
  auto it = exported_.find({kind, id});
  if (it != exported_.end() && --it->second == 0) exported_.erase(it);
}

}  // namespace zuma::snapshot
