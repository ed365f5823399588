#include "storage/sync_io.hh"

#include <poll.h>
#include <sys/uio.h>

#include <condition_variable>
#include <mutex>

#include "storage/io_context.hh"

namespace zuma::storage {

int submit_and_wait(Backend& b, IoRequest& req) {
  // The completion may run on another thread: it sets `done` and notifies under the lock,
  // so the waiter cannot return (and end `w`) before the completion is through with it.
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int result = 0;
  } w;
  req.user = &w;
  req.done = [](IoRequest& r, int result) {
    auto* w = static_cast<Wait*>(r.user);
    std::lock_guard lock(w->mu);
    w->result = result;
    w->done = true;
    w->cv.notify_one();
  };
  b.submit(req);
  // On a reactor thread the completion comes from its own ring: drive the ring until it
  // arrives. Elsewhere the backend completed inline, or another thread completes it.
  IoContext* ctx = IoContext::current();
  std::unique_lock lock(w.mu);
  while (!w.done) {
    if (ctx != nullptr) {
      lock.unlock();
      ctx->flush();
      pollfd pfd{ctx->event_fd(), POLLIN, 0};
      ::poll(&pfd, 1, 100);
      ctx->reap();
      lock.lock();
    } else {
      w.cv.wait(lock);
    }
  }
  return w.result;
}

int sync_io(Backend& b, IoOp op, uint64_t offset, void* buf, uint64_t len, bool fua) {
  iovec iov{buf, static_cast<size_t>(len)};
  IoRequest req;
  req.op = op;
  req.fua = fua;
  req.offset = offset;
  req.length = len;
  if (op == IoOp::kRead || op == IoOp::kWrite) {
    req.iov = &iov;
    req.iovcnt = 1;
  }
  return submit_and_wait(b, req);
}

}  // namespace zuma::storage
