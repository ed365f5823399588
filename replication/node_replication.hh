// One zumad's replication, built from the config's `groups` (docs/CONFIG.md "groups",
// docs/REPLICATION.md "In zumad"): for each primary group a GroupLog with its site links,
// for the secondary groups one ReplicaServer on node.replication_listen.
//
// Startup, on the main thread, in this order: create(); for every LU as it is opened,
// layer() on the stack of its sub-units (below the snapshot layer, DESIGN.md "The shape")
// and bind() on the finished stack; start() before the portals serve.
// Shutdown: quiesce() once the reactors have stopped (group writers post completions to
// their IoContexts; the replica's threads write into the LUs), then the LUs' final flush,
// then drain_links(), then the LUs go, then this object.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hh"
#include "replication/group_log.hh"
#include "replication/replica.hh"
#include "storage/backend.hh"

namespace zuma::replication {

class NodeReplication {
 public:
  // Opens every primary group's log and adds its links (nothing is replayed or sent yet).
  // Throws std::runtime_error with a one-line message.
  static std::unique_ptr<NodeReplication> create(const config::Config& cfg);
  ~NodeReplication();
  NodeReplication(const NodeReplication&) = delete;
  NodeReplication& operator=(const NodeReplication&) = delete;

  // The stack of LU `lu`'s sub-units as the layers above should see it: inside the
  // replication layer if `lu` is in a primary group, else `lower` itself. Throws for a
  // group LU opened after start() (changing one needs a restart: config::diff says so).
  std::unique_ptr<storage::Backend> layer(const std::string& lu, std::unique_ptr<storage::Backend> lower);
  // The top of LU `lu`'s finished stack; for a LU of a secondary group, the backend its
  // primary's records are applied to (not owned; it must live until quiesce()).
  void bind(const std::string& lu, storage::Backend* top);
  // A LU of a secondary group: read-only to initiators (only its primary writes it).
  bool read_only(const std::string& lu) const;

  // Replays each primary group's log into its LUs, starts the links, and starts serving
  // the secondary groups. Throws std::runtime_error.
  void start();
  // No more writes from replication into the LUs: the group writers and the replica
  // listener stop. Idempotent.
  void quiesce();
  // Waits up to `limit` for every connected link to have acknowledged every record
  // (async links ship what the last writes left in the log). Returns false on timeout.
  bool drain_links(std::chrono::milliseconds limit);

  // Prometheus text: log, link and replica state (docs/REPLICATION.md "In zumad").
  std::string metrics_text() const;

  // What `zumactl group list` / `group status` show (any thread).
  struct GroupStatus {
    std::string name;
    bool secondary = false;
    std::vector<std::string> luns;
    GroupLogStats log;  // primary
    struct Link {
      std::string name, peer;
      bool sync = false;
      LinkStats stats;
    };
    std::vector<Link> links;                   // primary
    std::optional<ReplicaGroupStats> replica;  // secondary
  };
  std::vector<GroupStatus> status() const;
  uint16_t listen_port() const { return replica_ ? replica_->port() : 0; }
  bool empty() const { return groups_.empty() && secondary_.empty(); }

 private:
  struct Primary {
    const config::Group* cfg;
    std::unique_ptr<GroupLog> log;
    std::vector<bool> attached;
  };
  struct Secondary {
    const config::Group* cfg;
    std::vector<storage::Backend*> luns;
  };
  NodeReplication() = default;

  config::Config cfg_;  // owns the Group definitions the entries point to
  std::vector<Primary> groups_;
  std::vector<Secondary> secondary_;
  std::map<std::string, std::pair<size_t, uint32_t>> primary_lu_;    // LU -> (group, index)
  std::map<std::string, std::pair<size_t, uint32_t>> secondary_lu_;  // LU -> (group, index)
  std::unique_ptr<ReplicaServer> replica_;
  bool started_ = false;
};

}  // namespace zuma::replication
