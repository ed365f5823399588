// zumad's side of the control socket: accepts zumactl connections on a Unix socket and
// runs their requests through the command table's handlers.
//
// Security: the socket is created with mode 0600 (umask cannot widen it: it is chmod-ed
// before listen) and every connecting peer's uid is checked with SO_PEERCRED: only root
// and zumad's own effective uid are served; others are told so and disconnected.
// Threading: one thread of its own serves every client (poll); handlers run on it, one at
// a time, so they never race each other. They reach reactor-owned state only through the
// server's cross-thread calls (target::Server).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "admin/command_table.hh"
#include "storage/unique_fd.hh"

namespace zuma::admin {

class ControlServer {
 public:
  ControlServer(std::string path, const CommandTable& table);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds (replacing a stale socket file no daemon answers on) and starts the thread.
  // Throws std::runtime_error naming the path (startup is an edge: STYLE.md 8).
  void start();
  // Stops the thread, closes every client and removes the socket file.
  void stop();
  const std::string& path() const { return path_; }

  // Runs one request line and returns the reply line (also used by tests).
  std::string dispatch(const std::string& line) const;

 private:
  void loop();

  std::string path_;
  const CommandTable& table_;
  storage::UniqueFd listen_fd_;
  storage::UniqueFd wake_fd_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace zuma::admin
