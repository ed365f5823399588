#include "admin/control_server.hh"
#include "storage/thread_name.hh"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace zuma::admin {

namespace {

constexpr size_t kMaxClients = 64;

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    throw std::runtime_error(fmt::format("control socket '{}': path empty or longer than {} bytes",
                                         path, sizeof a.sun_path - 1));
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

// True when a daemon answers on the socket file.
bool someone_listens(const sockaddr_un& a) {
  storage::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return fd && ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
}

}  // namespace

ControlServer::ControlServer(std::string path, const CommandTable& table)
    : path_(std::move(path)), table_(table) {}

ControlServer::~ControlServer() {
  stop();
}

void ControlServer::start() {
  const sockaddr_un addr = socket_address(path_);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw std::runtime_error(fmt::format("control socket {}: exists and is not a socket", path_));
    if (someone_listens(addr))
      throw std::runtime_error(
          fmt::format("control socket {}: another zumad is listening on it", path_));
    ::unlink(path_.c_str());  // stale, left by a daemon that was killed
  }
  listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_) throw std::runtime_error(fmt::format("control socket: {}", strerror(errno)));
  // fchmod before bind has no effect on the file a Unix socket creates; a umask does.
  const mode_t old = ::umask(0177);
  const int r = ::bind(listen_fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  ::umask(old);
  if (r != 0)
    throw std::runtime_error(fmt::format("control socket {}: bind: {}", path_, strerror(err)));
  if (::chmod(path_.c_str(), 0600) != 0 || ::listen(listen_fd_.get(), 16) != 0) {
    const int e = errno;
    ::unlink(path_.c_str());
    throw std::runtime_error(fmt::format("control socket {}: {}", path_, strerror(e)));
  }
  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) throw std::runtime_error(fmt::format("eventfd: {}", strerror(errno)));
  thread_ = std::thread([this] {
    storage::name_this_thread("control");
    loop();
  });
}

void ControlServer::stop() {
  if (thread_.joinable()) {
    stop_ = true;
    uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(wake_fd_.get(), &one, sizeof one);
    thread_.join();
  }
  if (listen_fd_) {
    listen_fd_.reset();
    ::unlink(path_.c_str());
  }
}

std::string ControlServer::dispatch(const std::string& line) const {
  Json req = Json::parse(line, nullptr, false);
  if (req.is_discarded() || !req.is_object() || !req.contains("cmd") || !req["cmd"].is_string())
    return make_error("malformed request: expected {\"cmd\": \"...\", \"args\": {...}}");
  const std::string name = req["cmd"].get<std::string>();
  const Command* cmd = table_.find(name);
  if (!cmd || !cmd->handler) return make_error(fmt::format("unknown command '{}'", name));
  auto args = table_.validate(*cmd, req.value("args", Json::object()));
  if (!args) return make_error(args.error());
  try {
    return make_ok(cmd->handler(*args));
  } catch (const CommandError& e) {
    return make_error(e.what());
  } catch (const std::exception& e) {
    spdlog::error("control: '{}' failed: {}", name, e.what());
    return make_error(fmt::format("{}: internal error: {}", name, e.what()));
  }
}

void ControlServer::loop() {
  struct Client {
    LineChannel ch;
  };
  std::vector<std::unique_ptr<Client>> clients;
  const uid_t me = ::geteuid();
  while (!stop_.load()) {
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    fds.push_back({listen_fd_.get(), POLLIN, 0});
    for (auto& c : clients) fds.push_back({c->ch.fd(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("control socket: poll: {}", strerror(errno));
      return;
    }
    if (fds[0].revents) break;
    std::vector<bool> drop(clients.size(), false);
    for (size_t i = 0; i < clients.size(); ++i) {
      if (!fds[i + 2].revents) continue;
      Client& c = *clients[i];
      const bool open = c.ch.fill();
      bool too_long = false;
      while (auto line = c.ch.next_line(&too_long)) {
        if (line->empty()) continue;
        auto w = c.ch.write_line(dispatch(*line), std::chrono::seconds(10));
        if (!w) {
          drop[i] = true;
          break;
        }
      }
      if (too_long) {
        (void)c.ch.write_line(make_error("request too long"), std::chrono::seconds(1));
        drop[i] = true;
      }
      if (!open) drop[i] = true;
    }
    for (size_t i = clients.size(); i-- > 0;)
      if (drop[i]) clients.erase(clients.begin() + ptrdiff_t(i));
    if (fds[1].revents & POLLIN) {
      for (;;) {
        storage::UniqueFd fd(
            ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) break;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
            (cred.uid != 0 && cred.uid != me)) {
          spdlog::warn("control socket: refused a client with uid {} (pid {})", cred.uid, cred.pid);
          LineChannel ch(std::move(fd));
          (void)ch.write_line(make_error("permission denied: only root and zumad's own user may "
                                         "use the control socket"),
                              std::chrono::milliseconds(100));
          continue;
        }
        if (clients.size() >= kMaxClients) {
          LineChannel ch(std::move(fd));
          (void)ch.write_line(make_error("too many control clients"),
                              std::chrono::milliseconds(100));
          continue;
        }
        clients.push_back(std::make_unique<Client>(Client{LineChannel(std::move(fd))}));
      }
    }
  }
}

}  // namespace zuma::admin
