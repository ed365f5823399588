#include "tests/integration/fault_proxy.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace zuma::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kChunk = 64 * 1024;
constexpr size_t kMaxQueued = 4 << 20;  // per direction; past it the proxy stops reading
// The proxy's own socket buffers, fixed (no autotuning, which on loopback grows a receive
// buffer to tens of MiB): a blackholed path then holds a known bound of bytes, at most the
// sender's socket buffer plus this plus kMaxQueued, as a partitioned network does.
constexpr int kSockBuf = 256 * 1024;

void fix_buffers(int fd) {
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kSockBuf, sizeof kSockBuf);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSockBuf, sizeof kSockBuf);
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// Closes with RST (SO_LINGER 0) or FIN.
void close_fd(int& fd, bool reset) {
  if (fd < 0) return;
  if (reset) {
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  ::close(fd);
  fd = -1;
}

// Connects to 127.0.0.1:port within 2 s; -1 on failure.
int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  fix_buffers(fd);  // before connect: the window scale is agreed in the handshake
  sockaddr_in sa = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno != EINPROGRESS) return ::close(fd), -1;
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (::poll(&p, 1, 2000) != 1 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
        err != 0)
      return ::close(fd), -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

struct Chunk {
  Clock::time_point due;
  std::vector<uint8_t> bytes;
  size_t off = 0;
};

// One direction of a connection: bytes read from `from`, queued, written to `to`.
struct Flow {
  std::deque<Chunk> queue;
  size_t queued = 0;
  bool eof = false;   // `from` said FIN
  bool shut = false;  // FIN passed on to `to`
};

struct Conn {
  int client = -1, server = -1;
  Flow up, down;  // client -> server, server -> client
  bool dead = false;
};

}  // namespace

struct FaultProxy::Impl {
  uint16_t target = 0;
  uint16_t port = 0;
  int listen_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::atomic<bool> stop{false};
  // Proxy thread only.
  std::list<Conn> conns;
  std::vector<int> silent;  // target sides of kClientOnly cuts
  bool blackholed = false;
  std::chrono::milliseconds delay{0};
  // Commands run on the proxy thread; callers wait for them.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::function<void()>> cmds;
  uint64_t queued_cmds = 0, done_cmds = 0;
  std::atomic<uint64_t> accepted{0};
  std::atomic<size_t> open{0};

  void listen_now() {
    listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd < 0) throw std::runtime_error("proxy: socket failed");
    int one = 1;
    ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    fix_buffers(listen_fd);  // accepted connections inherit them
    sockaddr_in sa = loopback(port);
    // The port may be in use for a moment after refuse() (another test's free_port()).
    for (int tries = 0;; ++tries) {
      if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) break;
      if (tries == 50) {
        const std::string why = std::strerror(errno);
        close_fd(listen_fd, false);
        throw std::runtime_error("proxy: bind 127.0.0.1:" + std::to_string(port) + ": " + why);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (::listen(listen_fd, 64) != 0) throw std::runtime_error("proxy: listen failed");
    socklen_t len = sizeof sa;
    ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
  }

  void run(std::function<void()> f) {
    std::unique_lock lk(mu);
    const uint64_t mine = ++queued_cmds;
    cmds.push_back(std::move(f));
    uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
    cv.wait(lk, [&] { return done_cmds >= mine; });
  }

  void run_commands() {
    std::vector<std::function<void()>> todo;
    uint64_t n;
    {
      std::lock_guard lk(mu);
      todo.swap(cmds);
      n = queued_cmds;
    }
    for (auto& f : todo) f();
    std::lock_guard lk(mu);
    done_cmds = n;
    cv.notify_all();
  }

  void accept_one() {
    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) return;
    ++accepted;
    int s = connect_to(target);
    if (s < 0) {  // the target is down: so is the path
      close_fd(c, true);
      return;
    }
    int one = 1;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn& k = conns.emplace_back();
    k.client = c;
    k.server = s;
  }

  // Reads what `from` has into `f` (with its due time). False: the connection failed.
  bool pull(int from, Flow& f) {
    while (f.queued < kMaxQueued && !f.eof) {
      Chunk ch;
      ch.bytes.resize(kChunk);
      ssize_t n = ::read(from, ch.bytes.data(), ch.bytes.size());
      if (n < 0) return errno == EAGAIN || errno == EINTR;
      if (n == 0) {
        f.eof = true;
        break;
      }
      ch.bytes.resize(size_t(n));
      ch.due = Clock::now() + delay;
      f.queued += size_t(n);
      f.queue.push_back(std::move(ch));
    }
    return true;
  }

  // Writes what is due of `f` to `to`. False: the connection failed.
  bool push(int to, Flow& f) {
    const auto now = Clock::now();
    while (!f.queue.empty() && f.queue.front().due <= now) {
      Chunk& ch = f.queue.front();
      ssize_t n = ::send(to, ch.bytes.data() + ch.off, ch.bytes.size() - ch.off, MSG_NOSIGNAL);
      if (n < 0) return errno == EAGAIN || errno == EINTR;
      ch.off += size_t(n);
      f.queued -= size_t(n);
      if (ch.off < ch.bytes.size()) return true;
      f.queue.pop_front();
    }
    if (f.eof && f.queue.empty() && !f.shut) {
      ::shutdown(to, SHUT_WR);
      f.shut = true;
    }
    return true;
  }

  void kill(Conn& k, bool reset) {
    close_fd(k.client, reset);
    close_fd(k.server, reset);
    k.dead = true;
  }

  void cut_all(Cut how) {
    for (Conn& k : conns) {
      if (how == Cut::kClientOnly) {
        close_fd(k.client, true);
        silent.push_back(k.server);
        k.server = -1;
        k.dead = true;
      } else {
        kill(k, how == Cut::kReset);
      }
    }
    conns.clear();
  }

  static short wants(const Flow& in, const Flow& out, Clock::time_point now) {
    short ev = 0;
    if (!in.eof && in.queued < kMaxQueued) ev |= POLLIN;
    if (!out.queue.empty() && out.queue.front().due <= now) ev |= POLLOUT;
    return ev;
  }

  void loop() {
    std::vector<pollfd> fds;
    while (!stop.load()) {
      fds.clear();
      fds.push_back({wake_fd, POLLIN, 0});
      fds.push_back({listen_fd, short(listen_fd >= 0 ? POLLIN : 0), 0});
      auto next_due = Clock::time_point::max();
      const auto now = Clock::now();
      for (Conn& k : conns) {
        // Blackholed: negative fds, which poll() ignores (not even a reset is seen).
        fds.push_back({blackholed ? -1 : k.client, wants(k.up, k.down, now), 0});
        fds.push_back({blackholed ? -1 : k.server, wants(k.down, k.up, now), 0});
        for (Flow* f : {&k.up, &k.down})
          if (!f->queue.empty()) next_due = std::min(next_due, f->queue.front().due);
      }
      int timeout = 200;
      if (next_due != Clock::time_point::max()) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(next_due - Clock::now()).count();
        timeout = int(std::clamp<int64_t>(left, 0, 200));
      }
      if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) break;
      if (fds[0].revents & POLLIN) {
        uint64_t v;
        (void)!::read(wake_fd, &v, sizeof v);
        run_commands();
        continue;  // the connection list may have changed under fds
      }
      if (listen_fd >= 0 && (fds[1].revents & POLLIN)) accept_one();
      size_t i = 2;
      for (Conn& k : conns) {
        if (i + 1 >= fds.size()) break;  // accepted during this round
        const short ce = fds[i++].revents, se = fds[i++].revents;
        if (blackholed) continue;
        bool ok = true;
        if (ce & (POLLIN | POLLHUP | POLLERR)) ok = ok && pull(k.client, k.up);
        if (se & (POLLIN | POLLHUP | POLLERR)) ok = ok && pull(k.server, k.down);
        ok = ok && push(k.server, k.up) && push(k.client, k.down);
        if (!ok) kill(k, true);  // one side reset: so is the other
        if (k.up.shut && k.down.shut) kill(k, false);
      }
      conns.remove_if([](const Conn& k) { return k.dead; });
      open.store(conns.size());
    }
  }
};

FaultProxy::FaultProxy(uint16_t target_port) : impl_(std::make_unique<Impl>()) {
  impl_->target = target_port;
  impl_->listen_now();
  impl_->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl_->wake_fd < 0) throw std::runtime_error("proxy: eventfd failed");
  impl_->thread = std::thread([this] { impl_->loop(); });
}

FaultProxy::~FaultProxy() {
  impl_->stop.store(true);
  uint64_t one = 1;
  (void)!::write(impl_->wake_fd, &one, sizeof one);
  impl_->thread.join();
  impl_->cut_all(Cut::kReset);
  for (int& fd : impl_->silent) close_fd(fd, true);
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
  ::close(impl_->wake_fd);
}

uint16_t FaultProxy::port() const {
  return impl_->port;
}

void FaultProxy::cut(Cut how) {
  impl_->run([this, how] { impl_->cut_all(how); });
}

void FaultProxy::refuse() {
  impl_->run([this] {
    if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
    impl_->listen_fd = -1;
  });
}

void FaultProxy::blackhole() {
  impl_->run([this] { impl_->blackholed = true; });
}

void FaultProxy::delay(std::chrono::milliseconds d) {
  impl_->run([this, d] { impl_->delay = d; });
}

void FaultProxy::restore() {
  std::string error;
  impl_->run([this, &error] {
    impl_->blackholed = false;
    impl_->delay = std::chrono::milliseconds(0);
    try {
      if (impl_->listen_fd < 0) impl_->listen_now();
    } catch (const std::exception& e) {  // thrown on the caller's thread instead
      error = e.what();
    }
  });
  if (!error.empty()) throw std::runtime_error(error);
}

uint64_t FaultProxy::accepted() const {
  return impl_->accepted.load();
}

size_t FaultProxy::open_connections() const {
  return impl_->open.load();
}

}  // namespace zuma::test
