// A reactor: one thread, one epoll set, one io_uring (storage::IoContext). It owns the
// connections it was handed and runs everything about them: socket receive and send,
// SCSI execution and backend completions. Nothing it owns is touched by another thread;
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
  bool deferred_queued = false;  // owned by the Reactor
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
  // Called about once a second on the reactor thread (timeouts, pings).
  void add_ticker(std::function<void(std::chrono::steady_clock::time_point)> fn);

  unsigned index() const { return index_; }
  storage::IoContext* io() { return io_.get(); }
  bool on_reactor_thread() const;

 private:
  void loop();
  void drain_posts();

  unsigned index_;
  storage::UniqueFd epoll_fd_;
  storage::UniqueFd wake_fd_;
  std::unique_ptr<storage::IoContext> io_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex posts_mu_;
  std::vector<std::function<void()>> posts_;
  std::vector<Deferred*> deferred_;
  std::vector<std::function<void(std::chrono::steady_clock::time_point)>> tickers_;
};

}  // namespace zuma::target
