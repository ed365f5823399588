// Per-thread asynchronous I/O context: one io_uring owned by one reactor thread.
//
// A reactor creates one IoContext, makes it current on its thread, polls event_fd() in
// its event loop, calls reap() when it is readable and flush() once per loop iteration
// (so submissions made while handling a batch of PDUs go to the kernel in one syscall).
// Backends find the context through IoContext::current(); a thread with none (unit
// tests, the config checker) gets synchronous I/O instead.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>

#include "storage/unique_fd.hh"

struct io_uring;
struct io_uring_sqe;

namespace zuma::storage {

struct IoRequest;

// Work handed to an IoContext's thread (IoContext::post). Intrusive: whoever posts it owns
// the node and keeps it alive until run(arg) has been called; the context only links it.
struct PostedWork {
  PostedWork* next = nullptr;  // owned by the context while posted
  void (*run)(void* arg) = nullptr;
  void* arg = nullptr;
};

class IoContext {
 public:
  // Creates a ring with `entries` submission slots. Error: -errno.
  static std::expected<std::unique_ptr<IoContext>, int> create(unsigned entries = 256);
  // Destroying a context with requests in flight first waits for them and runs their
  // done() callbacks (every request completes exactly once).
  ~IoContext();
  IoContext(const IoContext&) = delete;
  IoContext& operator=(const IoContext&) = delete;

  // The calling thread's context, or nullptr.
  static IoContext* current();
  // Makes this the calling thread's context (nullptr-safe: clear_current()).
  void make_current();
  static void clear_current();

  // Readable (eventfd) when completions are waiting; poll it for EPOLLIN.
  int event_fd() const { return event_fd_.get(); }
  // A submission slot whose user_data will be set to `req`; submits pending ones first
  // if the ring is full. Never returns nullptr.
  // On completion done(req, res < 0 ? res : 0) runs from reap(); a kRead/kWrite whose
  // result is a byte count below req.length completes with -EIO (use queue_rw() to have
  // short transfers finished instead).
  io_uring_sqe* get_sqe(IoRequest& req);
  // Runs the work deferred to the end of this pass (defer_batch), then hands every
  // prepared submission to the kernel. Cheap when there are none.
  void flush();
  // One-shot work for the end of the owner loop's current pass: w.run(w.arg) runs at the
  // next run_batched() (a reactor calls it after handling its events, before its batched
  // sends) or flush(), in the order deferred. Owner thread only, no allocation. Lets a
  // layer gather what one pass submitted and handle it at once (the replication log
  // appends it as one batch: one write instead of one per command).
  void defer_batch(PostedWork& w);
  void run_batched();
  bool has_batched() const { return batch_head_ != nullptr; }
  // Runs the done() callback of every finished request; returns how many. Safe to call
  // when nothing is ready (one non-blocking eventfd read). done() may submit new requests
  // (they wait for the next flush()). Call flush() after reap() before sleeping.
  unsigned reap();
  // Runs the done() callbacks of requests that have finished, like reap(), but without
  // reading the eventfd: for a reactor that registers event_fd() edge-triggered and looks
  // for completions itself right after flush() (page-cache hits complete during the
  // submission, and are answered in the same loop iteration).
  unsigned poll();
  // Whether the ring signals event_fd() on new completions (a store to memory shared with
  // the kernel, no system call). A reactor turns it off while it polls and on before it
  // sleeps with requests in flight.
  void set_eventfd_enabled(bool on);
  // Requests submitted and not yet completed.
  uint64_t in_flight() const { return in_flight_; }

  // Thread-safe, callable from any thread (this one included): w.run(w.arg) runs later on
  // this context's thread, from reap() or poll() (a write to event_fd() wakes the owner's
  // loop, whether or not the ring's own signalling is enabled), in the order posted. Never
  // inline. Used to resume work on the thread that owns it, e.g. a SCSI task
  // waiting for a range lock that another reactor released (scsi/range_lock.hh). No
  // allocation: the node is the caller's. The destructor runs whatever is still posted.
  void post(PostedWork& w);

  // Queues req (kRead or kWrite, `length` bytes of req.iov at file offset req.offset) as
  // a readv/writev on fd, with `rw_flags` (e.g. RWF_DSYNC) as the per-I/O flags. Unlike a
  // bare get_sqe(), the context finishes short transfers itself: it resubmits the rest,
  // and a read that reaches end of file fills the rest of the buffers with zeros. done()
  // then runs once with 0 or -errno (-EIO for a write that makes no progress, -EINVAL
  // when req.iov holds fewer than `length` bytes: that one, and length 0 with 0, complete
  // inline).
  // No heap allocation in steady state (operation records are pooled per context).
  void queue_rw(IoRequest& req, int fd, int rw_flags = 0);

 private:
  struct State;
  struct RwOp;
  IoContext() = default;
  io_uring_sqe* raw_sqe(uint64_t user_data);
  void submit_pending();
  size_t harvest();
  unsigned dispatch(uint64_t user_data, int res);
  bool finish_rw(RwOp& op, int res, int* result);
  unsigned run_posted();
  void prep_rw(RwOp& op);
  std::unique_ptr<State> state_;
  std::unique_ptr<io_uring> ring_;
  UniqueFd event_fd_;
  unsigned pending_ = 0;
  bool eventfd_enabled_ = true;
  uint64_t in_flight_ = 0;
  PostedWork* batch_head_ = nullptr;  // defer_batch(), in order
  PostedWork** batch_tail_ = &batch_head_;
};

}  // namespace zuma::storage
