#include "storage/io_context.hh"

#include <liburing.h>
#include <sched.h>
#include <sys/eventfd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <spdlog/spdlog.h>

#include "storage/backend.hh"
#include "storage/iovec_util.hh"

namespace zuma::storage {

namespace {

thread_local IoContext* t_current = nullptr;

// user_data of a request queued through queue_rw() points to its RwOp with this bit set;
// a bare get_sqe() request carries the IoRequest* itself (both are 8-byte aligned).
constexpr uint64_t kRwTag = 1;
// Completions run per reap() before it yields back to the event loop (and re-arms the
// eventfd so the loop comes back for the rest).
constexpr unsigned kReapBudget = 4096;
constexpr unsigned kPeekBatch = 64;

void signal_eventfd(int fd) {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(fd, &one, sizeof one);
}

}  // namespace

// One readv/writev queued by queue_rw(), alive until its request completes.
struct IoContext::RwOp {
  IoRequest* req = nullptr;
  int fd = -1;
  int rw_flags = 0;
  uint64_t done_bytes = 0;
  // When set, the transfer uses `rest` (the part of req.iov still to go) instead of
  // req.iov: after a short transfer, or when req.iov is longer than req.length.
  bool use_rest = false;
  std::vector<iovec> rest;
  RwOp* next_free = nullptr;
};

struct IoContext::State {
  struct Completion {
    uint64_t user_data;
    int res;
  };
  std::vector<std::unique_ptr<RwOp>> ops;  // every RwOp ever made; reused through free
  RwOp* free = nullptr;
  // CQEs copied out of the ring and not yet dispatched. Copying them out before any
  // done() runs keeps the CQ consistent whatever the callbacks do (submit, reap again).
  std::vector<Completion> ready;
  size_t ready_head = 0;
  // post(): a lock-free LIFO stack of PostedWork pushed by any thread, taken whole by the
  // owner (run_posted) and run in posting order.
  std::atomic<PostedWork*> posted{nullptr};

  RwOp* get_op() {
    if (free == nullptr) {
      ops.push_back(std::make_unique<RwOp>());
      return ops.back().get();
    }
    RwOp* op = free;
    free = op->next_free;
    op->next_free = nullptr;
    return op;
  }
  void put_op(RwOp* op) {
    op->req = nullptr;
    op->next_free = free;
    free = op;
  }
};

std::expected<std::unique_ptr<IoContext>, int> IoContext::create(unsigned entries) {
  if (entries == 0) return std::unexpected(-EINVAL);
  auto ring = std::make_unique<io_uring>();
  io_uring_params params{};
  // SUBMIT_ALL (5.18): one bad SQE does not stop the rest of a batch being submitted.
  params.flags = IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL;
  int r = io_uring_queue_init_params(entries, ring.get(), &params);
  if (r == -EINVAL) {
    params = io_uring_params{};
    params.flags = IORING_SETUP_CLAMP;
    r = io_uring_queue_init_params(entries, ring.get(), &params);
  }
  if (r < 0) return std::unexpected(r);

  std::unique_ptr<IoContext> ctx(new IoContext());
  ctx->state_ = std::make_unique<State>();
  ctx->ring_ = std::move(ring);  // from here on ~IoContext tears the ring down
  ctx->event_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!ctx->event_fd_) return std::unexpected(-errno);
  r = io_uring_register_eventfd(ctx->ring_.get(), ctx->event_fd_.get());
  if (r < 0) return std::unexpected(r);
  ctx->state_->ready.reserve(2 * params.cq_entries);
  return ctx;
}

IoContext::~IoContext() {
  // Work posted to this context runs exactly once, here at the latest.
  while (state_ && state_->posted.load(std::memory_order_acquire) != nullptr) run_posted();
  run_batched();
  if (ring_) {
    // Every request completes exactly once (backend.hh): wait for what is in flight.
    while (in_flight_ > 0) {
      flush();
      io_uring_cqe* cqe = nullptr;
      const int r = io_uring_wait_cqe(ring_.get(), &cqe);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -ETIME) {
        spdlog::error("io_uring: waiting for {} requests in flight: {}", in_flight_,
                      std::strerror(-r));
        break;
      }
      reap();
    }
    io_uring_queue_exit(ring_.get());
  }
  if (t_current == this) t_current = nullptr;
}

IoContext* IoContext::current() {
  return t_current;
}
void IoContext::make_current() {
  t_current = this;
}
void IoContext::clear_current() {
  t_current = nullptr;
}

io_uring_sqe* IoContext::raw_sqe(uint64_t user_data) {
  io_uring_sqe* sqe;
  while ((sqe = io_uring_get_sqe(ring_.get())) == nullptr) submit_pending();
  // io_uring_prep_*() leave user_data alone, so the caller may prepare after this.
  io_uring_sqe_set_data64(sqe, user_data);
  ++pending_;
  return sqe;
}

io_uring_sqe* IoContext::get_sqe(IoRequest& req) {
  io_uring_sqe* sqe = raw_sqe(reinterpret_cast<uintptr_t>(&req));
  ++in_flight_;
  return sqe;
}

void IoContext::queue_rw(IoRequest& req, int fd, int rw_flags) {
  const uint64_t total = iov_total(req.iov, req.iovcnt);
  if (total < req.length) {
    req.done(req, -EINVAL);
    return;
  }
  if (req.length == 0) {
    req.done(req, 0);
    return;
  }
  RwOp* op = state_->get_op();
  op->req = &req;
  op->fd = fd;
  op->rw_flags = rw_flags;
  op->done_bytes = 0;
  op->rest.clear();
  // Never transfer more than req.length, whatever the iovecs add up to.
  op->use_rest = total != req.length;
  if (op->use_rest) iov_slice(req.iov, req.iovcnt, 0, req.length, op->rest);
  ++in_flight_;
  prep_rw(*op);
}

void IoContext::prep_rw(RwOp& op) {
  io_uring_sqe* sqe = raw_sqe(reinterpret_cast<uintptr_t>(&op) | kRwTag);
  const IoRequest& req = *op.req;
  const iovec* iov = op.use_rest ? op.rest.data() : req.iov;
  const unsigned cnt =
      op.use_rest ? static_cast<unsigned>(op.rest.size()) : static_cast<unsigned>(req.iovcnt);
  const uint64_t off = req.offset + op.done_bytes;
  if (req.op == IoOp::kRead) {
    io_uring_prep_readv(sqe, op.fd, iov, cnt, off);
  } else {
    io_uring_prep_writev(sqe, op.fd, iov, cnt, off);
  }
  sqe->rw_flags = op.rw_flags;
}

// Returns true when op's request is finished (its result in *result), false when the rest
// of a short transfer was queued again.
bool IoContext::finish_rw(RwOp& op, int res, int* result) {
  IoRequest& req = *op.req;
  if (res < 0) {
    *result = res;
    return true;
  }
  op.done_bytes += static_cast<uint64_t>(res);
  if (op.done_bytes >= req.length) {
    *result = 0;
    return true;
  }
  if (res == 0) {
    if (req.op == IoOp::kRead) {
      // End of file (the file shrank under us): what lies beyond reads as zeros.
      iov_zero(req.iov, req.iovcnt, op.done_bytes, req.length - op.done_bytes);
      *result = 0;
    } else {
      *result = -EIO;  // a write that makes no progress would loop forever
    }
    return true;
  }
  op.rest.clear();
  iov_slice(req.iov, req.iovcnt, op.done_bytes, req.length - op.done_bytes, op.rest);
  op.use_rest = true;
  prep_rw(op);
  return false;
}

unsigned IoContext::dispatch(uint64_t user_data, int res) {
  if (user_data == 0) return 0;
  if (user_data & kRwTag) {
    RwOp* op = reinterpret_cast<RwOp*>(user_data & ~kRwTag);
    int result = 0;
    if (!finish_rw(*op, res, &result)) return 0;
    IoRequest* req = op->req;
    state_->put_op(op);  // before done(), which may queue the next request
    --in_flight_;
    req->done(*req, result);
    return 1;
  }
  IoRequest* req = reinterpret_cast<IoRequest*>(user_data);
  int result = res < 0 ? res : 0;
  if (res >= 0 && (req->op == IoOp::kRead || req->op == IoOp::kWrite) &&
      static_cast<uint64_t>(res) < req->length) {
    result = -EIO;
  }
  --in_flight_;
  req->done(*req, result);
  return 1;
}

size_t IoContext::harvest() {
  io_uring_cqe* cqes[kPeekBatch];
  size_t got = 0;
  for (;;) {
    // peek_batch also flushes CQEs the kernel kept aside when the CQ overflowed.
    const unsigned n = io_uring_peek_batch_cqe(ring_.get(), cqes, kPeekBatch);
    if (n == 0) break;
    for (unsigned i = 0; i < n; ++i) {
      state_->ready.push_back({io_uring_cqe_get_data64(cqes[i]), cqes[i]->res});
    }
    io_uring_cq_advance(ring_.get(), n);
    got += n;
  }
  return got;
}

void IoContext::submit_pending() {
  while (io_uring_sq_ready(ring_.get()) > 0) {
    const int r = io_uring_submit(ring_.get());
    if (r > 0) continue;
    if (r == 0 || r == -EBUSY || r == -EAGAIN || r == -EINTR) {
      // The kernel wants CQ space or memory: move completions out of the ring (they run
      // from the next reap(); the eventfd makes sure the loop comes back), then retry.
      if (harvest() > 0) {
        signal_eventfd(event_fd_.get());
      } else if (r != -EINTR) {
        sched_yield();
      }
      continue;
    }
    // Only a bug (bad ring fd, corrupted ring) gets here; nothing sensible remains.
    spdlog::critical("io_uring_submit: {}", std::strerror(-r));
    std::abort();
  }
  pending_ = 0;
}

void IoContext::post(PostedWork& w) {
  PostedWork* head = state_->posted.load(std::memory_order_relaxed);
  do {
    w.next = head;
  } while (!state_->posted.compare_exchange_weak(head, &w, std::memory_order_release,
                                                 std::memory_order_relaxed));
  // Only a push onto an empty stack signals. A node pushed onto a non-empty stack lies above
  // the node whose push found it empty; that node is still there, so the owner has not yet
  // taken the stack in answer to that push's signal, and will take this node with it.
  if (head == nullptr) signal_eventfd(event_fd_.get());
}

unsigned IoContext::run_posted() {
  PostedWork* list = state_->posted.exchange(nullptr, std::memory_order_acquire);
  // The stack holds the newest first: reverse it to run in posting order.
  PostedWork* fifo = nullptr;
  while (list != nullptr) {
    PostedWork* next = list->next;
    list->next = fifo;
    fifo = list;
    list = next;
  }
  unsigned n = 0;
  while (fifo != nullptr) {
    PostedWork* w = fifo;
    fifo = w->next;  // before run(), which may free or repost the node
    w->next = nullptr;
    w->run(w->arg);
    ++n;
  }
  return n;
}

void IoContext::flush() {
  run_batched();
  if (pending_ > 0) submit_pending();
}

void IoContext::defer_batch(PostedWork& w) {
  w.next = nullptr;
  *batch_tail_ = &w;
  batch_tail_ = &w.next;
}

void IoContext::run_batched() {
  // What a run defers goes to the next round.
  while (batch_head_) {
    PostedWork* w = batch_head_;
    batch_head_ = nullptr;
    batch_tail_ = &batch_head_;
    while (w) {
      PostedWork* next = w->next;
      w->run(w->arg);
      w = next;
    }
  }
}

unsigned IoContext::reap() {
  // Drain the counter first: a CQE posted after this read re-arms it, so none is missed.
  uint64_t counter;
  [[maybe_unused]] ssize_t r = ::read(event_fd_.get(), &counter, sizeof counter);
  return poll();
}

void IoContext::set_eventfd_enabled(bool on) {
  if (on == eventfd_enabled_) return;
  eventfd_enabled_ = on;
  io_uring_cq_eventfd_toggle(ring_.get(), on);
}

unsigned IoContext::poll() {
  State& st = *state_;
  unsigned count = 0;
  unsigned handled = 0;
  // Work other threads posted (see post()).
  if (st.posted.load(std::memory_order_acquire) != nullptr) count += run_posted();
  harvest();
  for (;;) {
    // Index-based: done() may append (a nested harvest) or even reap() again.
    while (st.ready_head < st.ready.size()) {
      const State::Completion c = st.ready[st.ready_head++];
      count += dispatch(c.user_data, c.res);
      ++handled;
    }
    st.ready.clear();
    st.ready_head = 0;
    if (handled >= kReapBudget) {
      signal_eventfd(event_fd_.get());  // more may be waiting: come back next iteration
      break;
    }
    if (harvest() == 0) break;
  }
  return count;
}

}  // namespace zuma::storage
