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
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hh"
#include "replication/group_log.hh"
#include "replication/seq_state.hh"
#include "storage/backend.hh"
#include "storage/unique_fd.hh"

namespace zuma::replication {

namespace proto {
class Conn;
}

// What a primary says of itself in its HELLO.
struct HelloInfo {
  std::string peer;  // host:port it connected from
  uint64_t log_id = 0;
  uint64_t last = 0;                                   // its last sequence number
  uint64_t head = 0;  // the oldest record its log still holds (0: not said)
  std::vector<std::pair<uint64_t, uint64_t>> lineage;  // earlier generations: (log id, end)
  // A link in bitmap mode: the regions of the records its log released before this side
  // had them.
  std::optional<std::vector<Region>> dirty;
  // Regions an online verify found different (`group verify --repair`): to be resynced.
  std::optional<std::vector<Region>> repair;
};

// The group owner's answer to a HELLO (roles: docs/REPLICATION.md "Roles").
struct Admission {
  std::string error;     // non-empty: refused with this message
  uint64_t applied = 0;  // the primary resumes after this; the group follows its log from now on
  // Ranges the primary sends before its records; while a resync runs the group's image is
  // inconsistent (the owner keeps that durably) until it has applied up to the primary's
  // RESYNC_DONE point, when on_consistent is called.
  std::optional<std::vector<Region>> resync;
};

struct ReplicaGroupOptions {
  std::string name;
  std::string state_path;                  // applied sequence and the primary's log id
  std::vector<storage::Backend*> luns;     // this side's LUs, in the group's order; not owned
  // Decides on every HELLO that passed the basic checks (group, sizes), given what the group
  // holds. Without it: the same log id (or none yet) is admitted, any other is refused.
  std::function<Admission(const HelloInfo&, const SeqState&)> admit;
  std::function<void()> on_consistent;
  // A bookmark record was reached: every record before it is applied (apply thread).
  // `consistent` is false while a resync runs: the image is then not that point.
  std::function<void(const std::string& name, uint64_t seq, bool consistent)> on_bookmark;
  // A bookmark's snapshots are to go (the primary's bookmark schedule retention).
  std::function<void(const std::string& name, uint64_t seq)> on_bookmark_remove;
  // How long after its first unacknowledged frame an async link is acknowledged (each
  // acknowledgement flushes the LUs and stores the applied sequence).
  std::chrono::microseconds async_ack_delay{1000};
};

struct ReplicaGroupStats {
  uint64_t applied = 0;  // highest sequence applied durably
  uint64_t log_id = 0;   // the primary log this replica follows
  uint64_t batches = 0, records = 0, bytes = 0, acks = 0;
  bool connected = false;
  std::string last_error;
  bool resyncing = false;     // ranges arriving, or applying up to the resync's end point
  uint64_t resync_bytes = 0;  // range bytes received in the current (or last) resync
  // Online verify: regions hashed for the primary's verify markers since start, and those
  // whose checksum differed from the primary's.
  uint64_t verify_regions = 0, verify_mismatched = 0;
};

// The secret a group has here (docs/REPLICATION.md "Authentication"), looked up for each
// HELLO: a primary's link must prove it. Not `known`: no such group here (the HELLO is
// refused for that). `error`: the secret cannot be read now (the HELLO is refused).
struct GroupSecret {
  bool known = false;
  std::string secret;  // "": the group has none, and the primary must have none either
  std::string error;
};

class ReplicaServer {
 public:
  // Listens on `address` ("127.0.0.1:0": a free port), with TLS when `tls` is given (every
  // connection must then be TLS; link_tls.hh). Error: a message.
  static std::expected<std::unique_ptr<ReplicaServer>, std::string> start(
      const std::string& address, std::optional<config::ReplicationTls> tls = std::nullopt);
  // Stops accepting, closes every connection, joins the threads.
  ~ReplicaServer();
  ReplicaServer(const ReplicaServer&) = delete;
  ReplicaServer& operator=(const ReplicaServer&) = delete;

  uint16_t port() const { return port_; }
  // Serves a group from now on. The LUs must outlive the server. Error: a message.
  std::expected<void, std::string> add_group(const ReplicaGroupOptions& opt);
  std::optional<ReplicaGroupStats> stats(const std::string& group) const;
  // Stops serving a group (a promotion): refused while a primary is connected unless
  // `force`, which closes that connection first. Error: a message.
  std::expected<void, std::string> remove_group(const std::string& group, bool force);
  // Answers HELLOs for groups this server does not serve (e.g. primary on this node): the
  // refusal message, "" for the generic one. Set before primaries connect.
  void set_unserved(std::function<std::string(const std::string& group, const HelloInfo&)> fn) {
    unserved_ = std::move(fn);
  }
  // Where a HELLO's group's secret comes from (any connection thread). Without it no group
  // has a secret. Set before primaries connect.
  void set_secrets(std::function<GroupSecret(const std::string& group)> fn) {
    secrets_ = std::move(fn);
  }
  // Connections refused by TLS or authentication since start, and the last such refusal.
  uint64_t auth_failures() const { return auth_failures_.load(std::memory_order_relaxed); }
  std::string last_refusal() const;

 private:
  struct Group {
    std::string name;
    std::vector<storage::Backend*> luns;
    SeqStateFile state;
    bool busy = false;  // a primary is connected
    ReplicaGroupStats stats;
    std::function<Admission(const HelloInfo&, const SeqState&)> admit;
    std::function<void()> on_consistent;
    std::function<void(const std::string&, uint64_t, bool)> on_bookmark;
    std::function<void(const std::string&, uint64_t)> on_bookmark_remove;
    std::chrono::microseconds async_ack_delay;  // ReplicaGroupOptions' (add_group)
    bool resyncing = false;  // ranges or records up to the resync's end point still to come
    int fd = -1;  // the connection while busy
    std::string link{};  // and its link's name: a HELLO from that link again replaces it
  };
  ReplicaServer() = default;
  void accept_loop();
  void serve(int fd, std::string peer);  // TLS (when set), then serve_conn
  void serve_conn(proto::Conn& conn, const std::string& peer);
  void refused(const std::string& peer, const std::string& group, const std::string& why);
  // Applies a burst; returns an error message or "".
  // Verify markers reached append their VERIFY_RESULT payloads to *replies.
  std::string apply_batch(Group& g, std::span<const uint8_t> batch, uint64_t* applied,
                          std::vector<std::vector<uint8_t>>* replies);
  std::vector<uint8_t> verify(Group& g, std::span<const uint8_t> marker, uint64_t seq);
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
  std::function<std::string(const std::string&, const HelloInfo&)> unserved_;
  std::function<GroupSecret(const std::string&)> secrets_;
  std::optional<config::ReplicationTls> tls_;
  std::atomic<uint64_t> auth_failures_{0};
  std::string last_refusal_;  // mu_
};

}  // namespace zuma::replication
