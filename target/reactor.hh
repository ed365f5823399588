// A reactor: one thread, one epoll set, one io_uring (storage::IoContext). It owns the
// connections it was handed and runs everything about them: socket receive and send,
// SCSI execution and backend completions. The thread sleeps in the ring
// (IoContext::wait): socket receives are ring operations, and the epoll set (listeners,
// wakeups, sockets waiting to become writable) is itself polled through the ring, so one
// io_uring_enter both submits the iteration's work and waits for the next. Nothing it owns is touched by another thread;
// other threads talk to it only through post() (shared-nothing, DESIGN.md / issue 5).
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "storage/io_context.hh"
#include "storage/unique_fd.hh"

namespace zuma::target {

class Reactor;

// Something with a file descriptor registered in a reactor's epoll set.
class EventHandler {
 public:
  virtual ~EventHandler() = default;
  virtual void on_event(uint32_t events) = 0;
};

// Work a reactor runs once at the end of the current loop iteration (batched socket
// writes, deferred receive when a connection hit its per-wakeup PDU budget).
class Deferred {
 public:
  virtual ~Deferred() = default;
  virtual void run_deferred() = 0;
  // Runs right before the reactor's next sleep, after which nothing else runs before
  // the ring takes what was queued (Reactor::before_sleep).
  virtual void before_sleep() {}
  bool deferred_queued = false;  // owned by the Reactor
  bool sleep_queued = false;     // owned by the Reactor
};

class Reactor {
 public:
  explicit Reactor(unsigned index);
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  void start();
  // Asks the loop to end after the current iteration and joins the thread.
  void stop_and_join();

  // Runs fn on the reactor thread (thread-safe).
  void post(std::function<void()> fn);

  // Reactor-thread only:
  void add(int fd, uint32_t events, EventHandler* h);
  void modify(int fd, uint32_t events, EventHandler* h);
  void remove(int fd);
  void defer(Deferred* d);
  // d->before_sleep() runs once right before the thread next sleeps in the ring: work
  // queued there (a socket send pointing into buffers that may still move until then)
  // goes to the kernel in the same system call as the sleep.
  void before_sleep(Deferred* d);
  // Called about once a second on the reactor thread (timeouts, pings).
  void add_ticker(std::function<void(std::chrono::steady_clock::time_point)> fn);

  unsigned index() const { return index_; }
  storage::IoContext* io() { return io_.get(); }
  bool on_reactor_thread() const;

 private:
  void loop();
  void drain_posts();
  void dispatch_epoll();

  unsigned index_;
  storage::UniqueFd epoll_fd_;
  storage::UniqueFd wake_fd_;
  std::unique_ptr<storage::IoContext> io_;
  storage::RawOp epoll_poll_;   // POLL_ADD of epoll_fd_ in the ring, re-armed after each use
  bool epoll_armed_ = false;
  bool epoll_ready_ = false;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex posts_mu_;
  std::vector<std::function<void()>> posts_;
  std::vector<Deferred*> deferred_;
  std::vector<Deferred*> presleep_;
  std::vector<std::function<void(std::chrono::steady_clock::time_point)>> tickers_;
};

}  // namespace zuma::target
