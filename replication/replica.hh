// The secondary side of site links: a listener that primaries connect to, one connection
// per group at a time. Records are applied to the group's LUs strictly in sequence order
// (a gap closes the connection), so the secondary's image is always the primary's image at
// some earlier point across the whole group (write-order fidelity). After each burst of
// batches the LUs are flushed, the applied sequence is stored durably, then acknowledged:
// an ACK promises that everything up to it survives a crash of the secondary.
//
// Threads: an accept thread and one thread per connection; backends are used from those
// threads, which have no IoContext, so every backend call completes inline.
#pragma once
#include <atomic>
#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "replication/seq_state.hh"
#include "storage/backend.hh"
#include "storage/unique_fd.hh"

namespace zuma::replication {

struct ReplicaGroupOptions {
  std::string name;
  std::string state_path;                  // applied sequence and the primary's log id
  std::vector<storage::Backend*> luns;     // this side's LUs, in the group's order; not owned
};

struct ReplicaGroupStats {
  uint64_t applied = 0;  // highest sequence applied durably
  uint64_t log_id = 0;   // the primary log this replica follows
  uint64_t batches = 0, records = 0, bytes = 0, acks = 0;
  bool connected = false;
  std::string last_error;
};

class ReplicaServer {
 public:
  // Listens on `address` ("127.0.0.1:0": a free port). Error: a message.
  static std::expected<std::unique_ptr<ReplicaServer>, std::string> start(const std::string& address);
  // Stops accepting, closes every connection, joins the threads.
  ~ReplicaServer();
  ReplicaServer(const ReplicaServer&) = delete;
  ReplicaServer& operator=(const ReplicaServer&) = delete;

  uint16_t port() const { return port_; }
  // Serves a group from now on. The LUs must outlive the server. Error: a message.
  std::expected<void, std::string> add_group(const ReplicaGroupOptions& opt);
  std::optional<ReplicaGroupStats> stats(const std::string& group) const;

 private:
  struct Group {
    std::string name;
    std::vector<storage::Backend*> luns;
    SeqStateFile state;
    bool busy = false;  // a primary is connected
    ReplicaGroupStats stats;
  };
  ReplicaServer() = default;
  void accept_loop();
  void serve(int fd, std::string peer);
  // Applies a burst; returns an error message or "".
  std::string apply_batch(Group& g, std::span<const uint8_t> batch, uint64_t* applied);
  std::string make_durable(Group& g, uint64_t applied);

  storage::UniqueFd listen_fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  mutable std::mutex mu_;  // groups_ (the map and each group's busy/stats), conns_
  std::map<std::string, std::unique_ptr<Group>> groups_;
  struct Conn {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Conn> conns_;
  std::vector<int> conn_fds_;
};

}  // namespace zuma::replication
