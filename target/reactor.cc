#include "target/reactor.hh"
#include "storage/thread_name.hh"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>

namespace zuma::target {
namespace {

// Marker pointers for the reactor's own descriptors in epoll data.
EventHandler* const kWakeTag = reinterpret_cast<EventHandler*>(1);
EventHandler* const kIoTag = reinterpret_cast<EventHandler*>(2);

void drain_eventfd(int fd) {
  uint64_t v;
  while (::read(fd, &v, sizeof v) == sizeof v) {
  }
}

}  // namespace

Reactor::Reactor(unsigned index) : index_(index) {
  epoll_fd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_) throw std::runtime_error(std::string("epoll_create1: ") + strerror(errno));
  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) throw std::runtime_error(std::string("eventfd: ") + strerror(errno));
  auto io = storage::IoContext::create(512);
  if (!io) throw std::runtime_error(std::string("io_uring setup: ") + strerror(-io.error()));
  io_ = std::move(*io);
  add(wake_fd_.get(), EPOLLIN, kWakeTag);
  // Edge-triggered and never read: every completion signal is one wakeup, and the ring
  // itself is what gets polled (IoContext::poll).
  add(io_->event_fd(), EPOLLIN | EPOLLET, kIoTag);
}

Reactor::~Reactor() { stop_and_join(); }

void Reactor::start() {
  thread_ = std::thread([this] {
    storage::name_this_thread("reactor/" + std::to_string(index_));
    loop();
  });
}

void Reactor::stop_and_join() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wake_fd_.get(), &one, sizeof one);
  thread_.join();
}

bool Reactor::on_reactor_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

void Reactor::post(std::function<void()> fn) {
  {
    std::lock_guard lock(posts_mu_);
    posts_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wake_fd_.get(), &one, sizeof one);
}

void Reactor::add(int fd, uint32_t events, EventHandler* h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    spdlog::error("reactor {}: epoll add fd {}: {}", index_, fd, strerror(errno));
}

void Reactor::modify(int fd, uint32_t events, EventHandler* h) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = h;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    spdlog::error("reactor {}: epoll mod fd {}: {}", index_, fd, strerror(errno));
}

void Reactor::remove(int fd) { ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void Reactor::defer(Deferred* d) {
  if (d->deferred_queued) return;
  d->deferred_queued = true;
  deferred_.push_back(d);
}

void Reactor::add_ticker(std::function<void(std::chrono::steady_clock::time_point)> fn) {
  tickers_.push_back(std::move(fn));
}

void Reactor::drain_posts() {
  std::vector<std::function<void()>> work;
  {
    std::lock_guard lock(posts_mu_);
    work.swap(posts_);
  }
  for (auto& fn : work) fn();
}

void Reactor::loop() {
  io_->make_current();
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  auto next_tick = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  std::vector<Deferred*> running;
  while (!stop_.load(std::memory_order_relaxed)) {
    const int timeout = deferred_.empty() && !io_->has_batched() ? 1000 : 0;
    int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::critical("reactor {}: epoll_wait: {}", index_, strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      EventHandler* h = static_cast<EventHandler*>(events[i].data.ptr);
      if (h == kWakeTag) {
        drain_eventfd(wake_fd_.get());
        drain_posts();
      } else if (h == kIoTag) {
        io_->poll();
      } else {
        h->on_event(events[i].events);
      }
    }
    // Work layers deferred to the end of this pass (the replication log's batch of what
    // these events submitted) runs before the batched sends, so its completions join them.
    io_->run_batched();
    // Completions that arrived while handling sockets join this iteration's batched
    // socket writes.
    if (io_->in_flight() > 0) io_->poll();
    // Deferred work (batched sends) runs; submissions go to the kernel in one call; what
    // completed during that call (page-cache hits do) is answered right away, without a
    // trip through epoll. Bounded: a few rounds, then the next iteration.
    for (int round = 0; round < 4; ++round) {
      running.swap(deferred_);
      for (Deferred* d : running) {
        d->deferred_queued = false;
        d->run_deferred();
      }
      running.clear();
      io_->flush();
      if (io_->in_flight() == 0 || io_->poll() == 0) break;
    }
    // Sleep with the ring's eventfd armed only when requests are outstanding; re-check
    // after arming so a completion that raced the toggle is not left waiting.
    if (io_->in_flight() > 0) {
      io_->set_eventfd_enabled(true);
      // Completions and posted work run here may submit more I/O (multi-step commands,
      // range-lock grants): it goes to the kernel before the thread sleeps.
      if (io_->poll() > 0) io_->flush();
    } else {
      io_->set_eventfd_enabled(false);
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= next_tick) {
      next_tick = now + std::chrono::seconds(1);
      for (auto& t : tickers_) t(now);
    }
  }
  drain_posts();
  io_->run_batched();
  storage::IoContext::clear_current();
}

}  // namespace zuma::target
