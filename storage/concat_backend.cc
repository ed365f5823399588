// make_concat (factory.hh): one address space made of several backends in order.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "storage/backend.hh"
#include "storage/factory.hh"
#include "storage/iovec_util.hh"

namespace zuma::storage {

namespace {

// The state of one request split over several parts (or moved to a part that does not
// start at 0). Pooled per thread and reused, so a split costs no heap allocation once the
// pool and the vectors inside have grown to the working set.
struct SplitOp {
  IoRequest* parent = nullptr;
  // Sub-requests not yet completed, plus one held by submit() until it has handed out
  // every sub-request: a part that completes inline cannot finish the parent early.
  std::atomic<unsigned> remaining{0};
  std::atomic<int> first_error{0};
  struct Sub {
    IoRequest req;
    size_t part = 0;       // index into ConcatBackend::parts_
    size_t iov_begin = 0;  // req.iov's first element in `iovs`
  };
  std::vector<Sub> subs;    // sized before the first is submitted, never resized after
  std::vector<iovec> iovs;  // every sub-request's slice of the parent's iovecs
  SplitOp* next_free = nullptr;
};

// Completions run on the submitting thread (backend.hh), so a thread-local free list
// needs no lock; an op finished on another thread simply joins that thread's list.
class SplitPool {
 public:
  ~SplitPool() {
    while (head_ != nullptr) delete std::exchange(head_, head_->next_free);
  }
  SplitOp* get() {
    if (head_ == nullptr) return new SplitOp();
    return std::exchange(head_, head_->next_free);
  }
  void put(SplitOp* op) {
    op->parent = nullptr;
    op->subs.clear();
    op->iovs.clear();
    op->next_free = head_;
    head_ = op;
  }

 private:
  SplitOp* head_ = nullptr;
};

thread_local SplitPool t_pool;

void complete_one(SplitOp* op) {
  if (op->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  IoRequest* parent = op->parent;
  const int result = op->first_error.load(std::memory_order_acquire);
  t_pool.put(op);  // before done(), which may submit the next request
  parent->done(*parent, result);
}

void sub_done(IoRequest& sub, int result) {
  auto* op = static_cast<SplitOp*>(sub.user);
  if (result < 0) {
    int none = 0;
    op->first_error.compare_exchange_strong(none, result, std::memory_order_acq_rel);
  }
  complete_one(op);
}

class ConcatBackend final : public Backend {
 public:
  explicit ConcatBackend(std::vector<std::unique_ptr<Backend>> parts) : parts_(std::move(parts)) {
    starts_.reserve(parts_.size() + 1);
    uint64_t at = 0;
    for (const auto& p : parts_) {
      starts_.push_back(at);
      at += p->size();
    }
    starts_.push_back(at);
  }

  uint64_t size() const override { return starts_.back(); }

  bool supports(IoOp op) const override {
    return std::all_of(parts_.begin(), parts_.end(),
                       [op](const auto& p) { return p->supports(op); });
  }

  int extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const override {
    if (offset >= size()) {
      *out = ExtentStatus{0, true};
      return 0;
    }
    const size_t p = part_at(offset);
    const uint64_t within = offset - starts_[p];
    return parts_[p]->extent_status(within, std::min(max_len, starts_[p + 1] - offset), out);
  }

  // Allocated: the sum. Available: the sum of the parts' own pools plus the largest shared
  // pool (parts on one file system share it; counting it once per part would overstate).
  int space_usage(SpaceUsage* out) const override {
    SpaceUsage total{0, 0, false};
    uint64_t shared = 0;
    for (const auto& part : parts_) {
      SpaceUsage u;
      if (const int r = part->space_usage(&u); r < 0) return r;
      total.allocated_bytes += u.allocated_bytes;
      if (u.available_shared) {
        shared = std::max(shared, u.available_bytes);
        total.available_shared = true;
      } else {
        total.available_bytes += u.available_bytes;
      }
    }
    total.available_bytes += shared;
    *out = total;
    return 0;
  }

  std::string describe() const override {
    std::string s = "concat(";
    for (size_t i = 0; i < parts_.size(); ++i) {
      if (i > 0) s += ", ";
      s += parts_[i]->describe();
    }
    return s + ")";
  }

  void submit(IoRequest& req) override {
    if (req.op == IoOp::kFlush) {
      if (parts_.size() == 1) return parts_[0]->submit(req);
      SplitOp* op = t_pool.get();
      op->subs.resize(parts_.size());
      for (size_t p = 0; p < parts_.size(); ++p) {
        op->subs[p] = SplitOp::Sub{};
        op->subs[p].req.op = IoOp::kFlush;
        op->subs[p].part = p;
      }
      return start(op, req);
    }

    const uint64_t end = req.offset + req.length;
    if (end < req.offset || end > size()) return req.done(req, -EINVAL);
    if (req.length == 0) return req.done(req, 0);
    const bool data = req.op == IoOp::kRead || req.op == IoOp::kWrite;
    if (data && iov_total(req.iov, req.iovcnt) < req.length) return req.done(req, -EINVAL);

    const size_t first = part_at(req.offset);
    const size_t last = part_at(end - 1);
    if (first == last && starts_[first] == 0) {
      return parts_[first]->submit(req);  // same offsets: hand the request on as it is
    }

    SplitOp* op = t_pool.get();
    if (first == last) {
      // Wholly inside one part: only the offset changes; the iovecs stay the parent's.
      op->subs.resize(1);
      SplitOp::Sub& sub = op->subs[0];
      sub = SplitOp::Sub{};
      sub.req = req;
      sub.req.offset = req.offset - starts_[first];
      sub.part = first;
      return start(op, req);
    }
    op->subs.resize(last - first + 1);
    size_t n = 0;
    for (size_t p = first; p <= last; ++p) {
      const uint64_t lo = std::max(req.offset, starts_[p]);
      const uint64_t hi = std::min(end, starts_[p + 1]);
      if (hi <= lo) continue;  // an empty part inside the range
      SplitOp::Sub& sub = op->subs[n++];
      sub = SplitOp::Sub{};
      sub.req.op = req.op;
      sub.req.fua = req.fua;
      sub.req.offset = lo - starts_[p];
      sub.req.length = hi - lo;
      sub.part = p;
      if (data) {
        sub.iov_begin = op->iovs.size();
        iov_slice(req.iov, req.iovcnt, lo - req.offset, hi - lo, op->iovs);
        sub.req.iovcnt = static_cast<int>(op->iovs.size() - sub.iov_begin);
      }
    }
    op->subs.resize(n);
    if (data) {
      // Only now: op->iovs may have reallocated while the slices were appended.
      for (SplitOp::Sub& sub : op->subs) sub.req.iov = op->iovs.data() + sub.iov_begin;
    }
    start(op, req);
  }

 private:
  // The part holding byte `off` (< size()); empty parts hold nothing.
  size_t part_at(uint64_t off) const {
    const auto it = std::upper_bound(starts_.begin(), starts_.end(), off);
    return static_cast<size_t>(it - starts_.begin()) - 1;
  }

  // Hands op's sub-requests to their parts; the parent completes when the last one does.
  void start(SplitOp* op, IoRequest& parent) {
    op->parent = &parent;
    op->first_error.store(0, std::memory_order_relaxed);
    op->remaining.store(static_cast<unsigned>(op->subs.size()) + 1, std::memory_order_relaxed);
    for (SplitOp::Sub& sub : op->subs) {
      sub.req.done = &sub_done;
      sub.req.user = op;
      parts_[sub.part]->submit(sub.req);
    }
    complete_one(op);  // drop submit()'s hold
  }

  std::vector<std::unique_ptr<Backend>> parts_;
  std::vector<uint64_t> starts_;  // starts_[i]: first byte of part i; back(): size()
};

}  // namespace

std::unique_ptr<Backend> make_concat(std::vector<std::unique_ptr<Backend>> parts) {
  std::erase_if(parts, [](const auto& p) { return p == nullptr; });
  if (parts.size() == 1) return std::move(parts[0]);  // nothing to concatenate
  return std::make_unique<ConcatBackend>(std::move(parts));
}

}  // namespace zuma::storage
