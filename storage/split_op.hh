// The state of one request split into sub-requests on several backends (concat and
// striped layouts, mirrors), completed once with the first error. Internal to storage/.
//
// SplitOps are pooled per thread and reused with the capacity of their vectors, so a split
// costs no heap allocation once the pool has grown to the working set (STYLE.md 5).
// Completions run on the submitting thread (backend.hh), so the thread-local free list needs
// no lock; an op finished on another thread simply joins that thread's list.
#pragma once

#include <atomic>
#include <cstddef>
#include <utility>
#include <vector>

#include "storage/backend.hh"

namespace zuma::storage::detail {

struct SplitOp {
  IoRequest* parent = nullptr;
  // Sub-requests not yet completed, plus one held by start() until it has handed out every
  // sub-request: a part that completes inline cannot finish the parent early.
  std::atomic<unsigned> remaining{0};
  std::atomic<int> first_error{0};
  struct Sub {
    IoRequest req;
    size_t part = 0;       // index into the layout's parts
    size_t iov_begin = 0;  // req.iov's first element in `iovs`
  };
  std::vector<Sub> subs;    // filled before the first is submitted, never resized after
  std::vector<iovec> iovs;  // every sub-request's slice of the parent's iovecs
  SplitOp* next_free = nullptr;

  // Points every data sub-request at its slice of `iovs` (call once `iovs` is complete:
  // it may reallocate while slices are appended).
  void bind_iovs() {
    for (Sub& sub : subs)
      if (sub.req.iovcnt > 0) sub.req.iov = iovs.data() + sub.iov_begin;
  }
};

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

inline thread_local SplitPool t_split_pool;

inline void split_complete_one(SplitOp* op) {
  if (op->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  IoRequest* parent = op->parent;
  const int result = op->first_error.load(std::memory_order_acquire);
  t_split_pool.put(op);  // before done(), which may submit the next request
  parent->done(*parent, result);
}

inline void split_sub_done(IoRequest& sub, int result) {
  auto* op = static_cast<SplitOp*>(sub.user);
  if (result < 0) {
    int none = 0;
    op->first_error.compare_exchange_strong(none, result, std::memory_order_acq_rel);
  }
  split_complete_one(op);
}

// Hands op's sub-requests to parts[sub.part]; the parent completes when the last one does.
template <class Parts>
void split_start(SplitOp* op, IoRequest& parent, Parts& parts) {
  op->parent = &parent;
  op->first_error.store(0, std::memory_order_relaxed);
  op->remaining.store(static_cast<unsigned>(op->subs.size()) + 1, std::memory_order_relaxed);
  for (SplitOp::Sub& sub : op->subs) {
    sub.req.done = &split_sub_done;
    sub.req.user = op;
    parts[sub.part]->submit(sub.req);
  }
  split_complete_one(op);  // drop start()'s hold
}

}  // namespace zuma::storage::detail
