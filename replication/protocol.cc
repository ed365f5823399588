#include "replication/protocol.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace zuma::replication::proto {
namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : int(left);
}

int wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return 0;
    if (r == 0) return -ETIMEDOUT;
    if (errno != EINTR) return -errno;
  }
}

int send_all(int fd, const void* buf, size_t len, Clock::time_point deadline) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (len) {
    ssize_t r = ::send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      p += r, len -= size_t(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (int w = wait_fd(fd, POLLOUT, deadline); w < 0) return w;
      continue;
    }
    return r < 0 ? -errno : -ECONNRESET;
  }
  return 0;
}

int recv_all(int fd, void* buf, size_t len, Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len) {
    ssize_t r = ::recv(fd, p, len, MSG_DONTWAIT);
    if (r > 0) {
      p += r, len -= size_t(r);
      continue;
    }
    if (r == 0) return -ECONNRESET;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (int w = wait_fd(fd, POLLIN, deadline); w < 0) return w;
      continue;
    }
    return -errno;
  }
  return 0;
}

thread_local std::string t_tls_error;

// After a failed SSL_read/SSL_write/SSL_peek: what to wait for (POLLIN, POLLOUT), or -errno
// (the reason kept for tls_error()).
int tls_wait_or_fail(SSL* ssl, int ret) {
  const int e = SSL_get_error(ssl, ret);
  if (e == SSL_ERROR_WANT_READ) return POLLIN;
  if (e == SSL_ERROR_WANT_WRITE) return POLLOUT;
  if (e == SSL_ERROR_ZERO_RETURN) return -ECONNRESET;  // close_notify: the peer closed
  const unsigned long err = ERR_peek_error();
  if (e == SSL_ERROR_SYSCALL && !err) {
    const int saved = errno;
    ERR_clear_error();
    return saved && saved != EAGAIN ? -saved : -ECONNRESET;
  }
  if (ERR_GET_LIB(err) == ERR_LIB_SSL &&
      ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    ERR_clear_error();
    return -ECONNRESET;
  }
  char buf[256] = "TLS error";
  if (err) ERR_error_string_n(err, buf, sizeof(buf));
  t_tls_error = buf;
  ERR_clear_error();
  return -EPROTO;
}

// Moves all `len` bytes at `p` with `io` (SSL_write_ex or SSL_read_ex), waiting on the socket
// for what TLS asks for (a write may need a read and the other way round).
template <typename Byte, typename Io>
int tls_all(SSL* ssl, int fd, Byte* p, size_t len, Clock::time_point deadline, Io io) {
  while (len) {
    size_t n = 0;
    ERR_clear_error();
    const int r = io(ssl, p, len, &n);
    if (r == 1) {
      p += n, len -= n;
      continue;
    }
    const int w = tls_wait_or_fail(ssl, r);
    if (w < 0) return w;
    if (int e = wait_fd(fd, short(w), deadline); e < 0) return e;
  }
  return 0;
}

int tls_send_all(SSL* ssl, int fd, const void* buf, size_t len, Clock::time_point deadline) {
  // SSL_MODE_ENABLE_PARTIAL_WRITE: SSL_write_ex returns like send()
  return tls_all(
      ssl, fd, static_cast<const uint8_t*>(buf), len, deadline,
      [](SSL* s, const uint8_t* b, size_t n, size_t* done) { return SSL_write_ex(s, b, n, done); });
}

int tls_recv_all(SSL* ssl, int fd, void* buf, size_t len, Clock::time_point deadline) {
  return tls_all(
      ssl, fd, static_cast<uint8_t*>(buf), len, deadline,
      [](SSL* s, uint8_t* b, size_t n, size_t* done) { return SSL_read_ex(s, b, n, done); });
}

// "host:port" or "[v6]:port" -> host, port.
bool split_address(const std::string& a, std::string* host, std::string* port) {
  if (!a.empty() && a[0] == '[') {
    auto close = a.find(']');
    if (close == std::string::npos || close + 1 >= a.size() || a[close + 1] != ':') return false;
    *host = a.substr(1, close - 1);
    *port = a.substr(close + 2);
  } else {
    auto colon = a.rfind(':');
    if (colon == std::string::npos) return false;
    *host = a.substr(0, colon);
    *port = a.substr(colon + 1);
  }
  return !host->empty() && !port->empty();
}

}  // namespace

void SslFree::operator()(ssl_st* s) const {
  SSL_free(s);
}

bool Conn::buffered() const {
  return ssl_ && SSL_has_pending(ssl_.get());
}

bool Conn::frame_ready() {
  if (!ssl_) return true;
  if (SSL_pending(ssl_.get()) > 0) return true;
  uint8_t b;
  size_t n = 0;
  ERR_clear_error();
  const int r = SSL_peek_ex(ssl_.get(), &b, 1, &n);
  if (r == 1) return true;
  const int e = SSL_get_error(ssl_.get(), r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
  ERR_clear_error();  // recv_frame meets the error again and reports it
  return true;
}

std::string tls_error() {
  return t_tls_error;
}

bool known_frame(uint16_t type) {
  return (type >= uint16_t(Frame::kHello) && type <= uint16_t(Frame::kBatchHeld)) ||
         (type >= uint16_t(Frame::kAuthChallenge) && type <= uint16_t(Frame::kAuthOk));
}

int send_frame(Conn& c, Frame type, std::span<const uint8_t> payload, int timeout_ms) {
  if (!c.tls()) return send_frame(c.fd(), type, payload, timeout_ms);
  if (payload.size() > kMaxFrame) return -EMSGSIZE;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  FrameHeader h{kMagic, uint16_t(type), 0, uint32_t(payload.size()), 0};
  // A small frame goes as one TLS record (ACKs, the handshake); a large one as two writes,
  // which TLS cuts into 16 KiB records anyway.
  constexpr size_t kJoin = 16384 - sizeof(FrameHeader);
  if (payload.size() <= kJoin) {
    uint8_t one[sizeof(FrameHeader) + kJoin];
    std::memcpy(one, &h, sizeof(h));
    if (!payload.empty()) std::memcpy(one + sizeof(h), payload.data(), payload.size());
    return tls_send_all(c.ssl(), c.fd(), one, sizeof(h) + payload.size(), deadline);
  }
  if (int e = tls_send_all(c.ssl(), c.fd(), &h, sizeof(h), deadline); e < 0) return e;
  return tls_send_all(c.ssl(), c.fd(), payload.data(), payload.size(), deadline);
}

int send_frame(Conn& c, Frame type, const std::string& payload, int timeout_ms) {
  return send_frame(c, type,
                    std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()),
                    timeout_ms);
}

int recv_frame(Conn& c, Frame* type, std::vector<uint8_t>* payload, int timeout_ms,
               uint32_t max_len) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto recv = [&](void* buf, size_t len) {
    return c.tls() ? tls_recv_all(c.ssl(), c.fd(), buf, len, deadline)
                   : recv_all(c.fd(), buf, len, deadline);
  };
  FrameHeader h{};
  if (int r = recv(&h, sizeof(h)); r < 0) return r;
  // Lengths are checked before anything is allocated for them.
  if (h.magic != kMagic || !known_frame(h.type) || h.length > std::min(max_len, kMaxFrame))
    return -EPROTO;
  payload->resize(h.length);
  if (int r = recv(payload->data(), h.length); r < 0) return r;
  *type = Frame(h.type);
  return 0;
}

int send_frame(int fd, Frame type, std::span<const uint8_t> payload, int timeout_ms) {
  if (payload.size() > kMaxFrame) return -EMSGSIZE;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  FrameHeader h{kMagic, uint16_t(type), 0, uint32_t(payload.size()), 0};
  // Header and payload in one sendmsg: two small sends would meet Nagle and delayed ACKs.
  iovec iov[2] = {{&h, sizeof(h)}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = payload.empty() ? 1 : 2;
  ssize_t r;
  do {
    r = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
  size_t sent = r < 0 ? 0 : size_t(r);
  if (sent < sizeof(h)) {
    if (int e = send_all(fd, reinterpret_cast<const uint8_t*>(&h) + sent, sizeof(h) - sent, deadline); e < 0)
      return e;
    sent = sizeof(h);
  }
  const size_t done = sent - sizeof(h);
  return send_all(fd, payload.data() + done, payload.size() - done, deadline);
}

int send_frame(int fd, Frame type, const std::string& payload, int timeout_ms) {
  return send_frame(fd, type, std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()),
                    timeout_ms);
}

int recv_frame(int fd, Frame* type, std::vector<uint8_t>* payload, int timeout_ms) {
  Conn c(fd);
  return recv_frame(c, type, payload, timeout_ms);
}

// A non-blocking socket for a numeric "host:port"; *res is what to bind or connect to.
int open_socket(const std::string& address, bool passive, addrinfo** res) {
  std::string host, port;
  if (!split_address(address, &host, &port)) return -EINVAL;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  *res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, res) != 0 || !*res) return -EINVAL;
  int fd = ::socket((*res)->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    int e = errno;
    ::freeaddrinfo(*res);
    return -e;
  }
  return fd;
}

int connect_to(const std::string& address, int timeout_ms) {
  addrinfo* res = nullptr;
  int fd = open_socket(address, false, &res);
  if (fd < 0) return fd;
  int r = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (r < 0 && errno != EINPROGRESS) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  if (r < 0) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    if (int w = wait_fd(fd, POLLOUT, deadline); w < 0) {
      ::close(fd);
      return w;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      ::close(fd);
      return -err;
    }
  }
  tune_socket(fd);
  return fd;
}

void tune_socket(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // ACKs are small and urgent
  // A peer whose machine or network died (no RST ever comes) is noticed within about 11 s
  // by keepalive probes while the link is idle, and within kUserTimeoutMs while sent data
  // stays unacknowledged; the connection then fails and the link reconnects. A peer process
  // that is only stopped still has its kernel answer: it shows as lag, not as a failure.
  int idle = 5, intvl = 2, cnt = 3;
  unsigned user_timeout = 15000;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

int listen_on(const std::string& address, uint16_t* port_out) {
  addrinfo* res = nullptr;
  int fd = open_socket(address, true, &res);
  if (fd < 0) return fd;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
    int e = errno;
    ::freeaddrinfo(res);
    ::close(fd);
    return -e;
  }
  ::freeaddrinfo(res);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (port_out)
    *port_out = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                         : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

}  // namespace zuma::replication::proto
