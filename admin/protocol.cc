#include "admin/protocol.hh"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace zuma::admin {

namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : int(left.count());
}

}  // namespace

std::expected<void, std::string> LineChannel::write_line(const std::string& line,
                                                         std::chrono::milliseconds timeout) {
  const std::string out = line + '\n';
  const auto deadline = Clock::now() + timeout;
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        ::send(fd_.get(), out.data() + done, out.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_.get(), POLLOUT, 0};
      const int ms = remaining_ms(deadline);
      if (ms == 0 || ::poll(&p, 1, ms) == 0) return std::unexpected("timeout");
      continue;
    }
    return std::unexpected(n == 0 ? std::string("closed") : std::string(strerror(errno)));
  }
  return {};
}

bool LineChannel::fill() {
  char tmp[65536];
  for (;;) {
    ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, MSG_DONTWAIT);
    if (n > 0) {
      buf_.append(tmp, size_t(n));
      if (buf_.size() > kMaxLine + sizeof tmp) return true;  // next_line reports it
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;  // 0 = closed, or an error
  }
}

std::optional<std::string> LineChannel::next_line(bool* too_long) {
  if (too_long) *too_long = false;
  const size_t nl = buf_.find('\n');
  if (nl == std::string::npos) {
    if (buf_.size() > kMaxLine && too_long) *too_long = true;
    return std::nullopt;
  }
  if (nl > kMaxLine) {
    if (too_long) *too_long = true;
    return std::nullopt;
  }
  std::string line = buf_.substr(0, nl);
  buf_.erase(0, nl + 1);
  return line;
}

std::expected<std::string, std::string> LineChannel::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    bool too_long = false;
    if (auto l = next_line(&too_long)) return *l;
    if (too_long) return std::unexpected("line too long");
    pollfd p{fd_.get(), POLLIN, 0};
    const int ms = remaining_ms(deadline);
    int r = ms == 0 ? 0 : ::poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::unexpected(std::string(strerror(errno)));
    if (r == 0) return std::unexpected("timeout");
    if (!fill()) {
      if (auto l = next_line(&too_long)) return *l;
      return std::unexpected("closed");
    }
  }
}

std::expected<Client, std::string> Client::connect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return std::unexpected(fmt::format("cannot connect to '{}': not a usable socket path", path));
  std::memcpy(addr.sun_path, path.data(), path.size());
  storage::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return std::unexpected(fmt::format("socket: {}", strerror(errno)));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return std::unexpected(fmt::format("cannot connect to {}: {}", path, strerror(errno)));
  Client c;
  c.ch_ = LineChannel(std::move(fd));
  return c;
}

std::expected<Client::Reply, std::string> Client::call(const std::string& cmd, const Json& args,
                                                       std::chrono::milliseconds timeout) {
  if (auto w = ch_.write_line(make_request(cmd, args), timeout); !w)
    return std::unexpected("sending to zumad: " + w.error());
  auto line = ch_.read_line(timeout);
  if (!line) return std::unexpected("waiting for zumad: " + line.error());
  Json j = Json::parse(*line, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean())
    return std::unexpected("zumad sent a malformed reply");
  Reply r;
  r.ok = j["ok"].get<bool>();
  if (r.ok)
    r.result = j.value("result", Json());
  else
    r.error = j.value("error", std::string("(no message)"));
  return r;
}

// Invalid UTF-8 (a name read from somewhere odd) is replaced, never thrown.
std::string dump_line(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string make_request(const std::string& cmd, const Json& args) {
  return dump_line(Json{{"cmd", cmd}, {"args", args.is_null() ? Json::object() : args}});
}

std::string make_ok(const Json& result) {
  return dump_line(Json{{"ok", true}, {"result", result}});
}

std::string make_error(const std::string& message) {
  return dump_line(Json{{"ok", false}, {"error", message}});
}

}  // namespace zuma::admin
