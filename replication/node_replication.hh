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
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.hh"
#include "replication/group_log.hh"
#include "replication/replica.hh"
#include "replication/verify.hh"
#include "storage/backend.hh"

namespace zuma::replication {

// A group's role on this node, kept in <data_dir>/replication/<group>.role (JSON, replaced
// atomically); without the file, the config's `role` (docs/REPLICATION.md "Roles").
struct RoleState {
  bool primary = true;
  GroupLog::Lineage lineage;   // generations before the current one, oldest first
  bool discard = false;        // secondary: a primary may overwrite this side's own changes
  bool consistent = true;      // false while a resync is unfinished
  std::vector<Region> resync;  // the ranges of that resync
  std::string resync_snapshot;  // the snapshot of each LU taken before it ("" none)
};

class NodeReplication {
 public:
  // Opens every group's log (where it has one) and adds its links (nothing is replayed or
  // sent yet). Throws std::runtime_error with a one-line message.
  static std::unique_ptr<NodeReplication> create(const config::Config& cfg);
  ~NodeReplication();
  NodeReplication(const NodeReplication&) = delete;
  NodeReplication& operator=(const NodeReplication&) = delete;

  // The stack of LU `lu`'s sub-units as the layers above should see it: inside the
  // replication layer if `lu` is in a group with a log here, else `lower` itself. Throws
  // for a group LU opened after start() (changing one needs a restart: config::diff says so).
  std::unique_ptr<storage::Backend> layer(const std::string& lu, std::unique_ptr<storage::Backend> lower);
  // The top of LU `lu`'s finished stack: where a secondary applies its primary's records
  // (not owned; it must live until quiesce()).
  void bind(const std::string& lu, storage::Backend* top);
  // A LU of a group that is secondary now: write protected to initiators.
  bool read_only(const std::string& lu) const;
  // Called with (LU, protected) when a role change protects or frees a group's LUs. Set
  // before start().
  void set_protect(std::function<void(const std::string&, bool)> fn) { protect_ = std::move(fn); }

  // Snapshots of a group's LUs for bookmarks (zumad gives them: snapshot/ is not reachable
  // from here). Each returns "" or why not.
  struct SnapshotHooks {
    std::function<std::string(const std::string& lu)> check;  // the LU can be snapshotted
    std::function<std::string(const std::string& lu, const std::string& name)> create;
    std::function<std::string(const std::string& lu, const std::string& name)> remove;
    // The names of the LU's snapshots, oldest first (bookmark schedules' retention).
    std::function<std::vector<std::string>(const std::string& lu)> list;
  };
  void set_snapshots(SnapshotHooks h) { snapshots_ = std::move(h); }

  // Replays each primary group's log into its LUs, starts the links, and starts serving
  // the secondary groups. Throws std::runtime_error.
  void start();
  // No more writes from replication into the LUs: the group writers and the replica
  // listener stop. Idempotent.
  void quiesce();
  // Waits up to `limit` for every connected link to have acknowledged every record
  // (async links ship what the last writes left in the log). Returns false on timeout.
  bool drain_links(std::chrono::milliseconds limit);

  // Role changes (zumactl group promote / demote / discard; control thread). "" or why not.
  // promote: this secondary becomes primary of a new generation; refused while its primary
  //   is connected or its image is inconsistent (a resync unfinished), unless `force`.
  // demote: the primary stops taking writes, waits up to `wait` until every link has every
  //   record (refused if one cannot, unless `force`), and becomes secondary.
  // discard: this side gives up its changes since it diverged from the other: a primary is
  //   demoted without waiting for its links; the next primary to connect resyncs the ranges
  //   those changes touched.
  std::string promote(const std::string& group, bool force);
  std::string demote(const std::string& group, bool force, std::chrono::milliseconds wait);
  std::string discard(const std::string& group);
  // links[].resync_rate changed by `config reload` (0: no limit). "" or why not.
  std::string set_resync_rate(const std::string& group, const std::string& link,
                              uint64_t bytes_per_second);
  // A consistent point (zumactl group bookmark): writes to every LU of the group are held,
  // a bookmark record is logged, every LU is snapshotted as `name`, writes go on; each
  // secondary snapshots its LUs as `name` when it applies the record. Every LU of the group
  // needs `snapshots:`. Returns the record's sequence number, or why not.
  std::expected<uint64_t, std::string> bookmark(const std::string& group, const std::string& name);

  // Online verify (zumactl group verify; docs/REPLICATION.md "Online verify"): compares every
  // region of the group's LUs with the peers of `link` (empty: every link) while writes go
  // on; runs in the background (progress and result in status()). With `repair`, mismatching
  // regions are then resynced. One verify per group at a time. Its id, or why not.
  std::expected<uint64_t, std::string> verify(const std::string& group, const std::string& link,
                                              bool repair);
  // Stops what runs in the background (verifies, bookmark schedules) before the portals
  // stop: a verify's fence parks writes for their reactors.
  void stop_background();

  // Prometheus text: log, link and replica state (docs/REPLICATION.md "In zumad").
  std::string metrics_text() const;

  // What `zumactl group list` / `group status` show (any thread).
  struct GroupStatus {
    std::string name;
    bool secondary = false;
    std::vector<std::string> luns;
    uint64_t generation = 0;  // primary: its log id; secondary: the log it follows
    bool consistent = true;
    std::string split_brain;      // why, while one is reported
    uint64_t resync_pending = 0;  // secondary: bytes of an unfinished resync's ranges
    GroupLogStats log;  // primary
    struct Link {
      std::string name, peer;
      bool sync = false;
      LinkStats stats;
    };
    std::vector<Link> links;                   // primary
    std::optional<ReplicaGroupStats> replica;  // secondary
    std::string listener_refusal;              // secondary: the listener's last TLS/auth refusal
    std::optional<VerifyStatus> verify;        // the running or last verify, if any
    uint64_t bookmarks_taken = 0, bookmarks_pruned = 0;  // by schedule, since start
  };
  std::vector<GroupStatus> status() const;
  uint16_t listen_port() const { return replica_ ? replica_->port() : 0; }
  bool empty() const { return groups_.empty(); }

 private:
  struct Group {
    const config::Group* cfg;
    std::unique_ptr<GroupLog> log;  // when the group has a log on this node
    std::vector<bool> attached;
    std::vector<storage::Backend*> tops;
    RoleState role;                   // mu_
    mutable std::string split_brain;  // mu_ (status() clears it once a link is through)
    std::shared_ptr<Verifier> verifier;  // verify_mu_: the running or last verify
    // Bookmark schedules (cfg->bookmarks): when each is due next (the scheduler's thread).
    std::vector<std::chrono::steady_clock::time_point> bookmark_due;
    std::shared_ptr<std::atomic<uint64_t>> bookmarks_taken =
        std::make_shared<std::atomic<uint64_t>>(0);
    std::shared_ptr<std::atomic<uint64_t>> bookmarks_pruned =
        std::make_shared<std::atomic<uint64_t>>(0);
  };
  NodeReplication() = default;
  std::string role_path(const Group& g) const;
  std::string store_role(Group& g, const RoleState& r);  // "" or why not
  Group* find(const std::string& name);
  // The group if it is primary here; else why not, ending with `instead` (what to do).
  std::expected<Group*, std::string> find_primary(const std::string& group,
                                                  std::string_view instead);
  void serve_secondary(Group& g);  // adds it to the replica server
  Admission admit(Group& g, const HelloInfo& h, const SeqState& st);
  void set_protected(Group& g, bool on);
  std::string stop_primary(Group& g, bool discard, bool force, std::chrono::milliseconds wait);

  config::Config cfg_;  // owns the Group definitions the entries point to
  std::vector<Group> groups_;
  std::map<std::string, std::pair<size_t, uint32_t>> lu_;  // LU -> (group, index)
  std::unique_ptr<ReplicaServer> replica_;
  std::function<void(const std::string&, bool)> protect_;
  SnapshotHooks snapshots_;
  mutable std::mutex mu_;  // role state and split-brain notes (status() reads them)
  std::mutex change_mu_;   // one role change at a time
  mutable std::mutex verify_mu_;  // each group's verifier pointer
  // Bookmark schedules (docs/REPLICATION.md "Bookmarks"): a thread takes each primary group's
  // scheduled bookmarks and applies their retention (on this side, and in the log for the
  // secondaries: a kBookmarkRemove record per bookmark that goes).
  void schedule_loop();
  void run_schedules(Group& g, std::chrono::steady_clock::time_point now);
  std::string remove_bookmark(Group& g, const std::string& name);  // "" or why not
  std::thread scheduler_;
  std::mutex sched_mu_;
  std::condition_variable sched_cv_;
  bool sched_stop_ = false;
  // Cancels a group's running verify and waits for its end (role changes, shutdown).
  void stop_verify(Group& g, const std::string& why);
  bool started_ = false;
};

}  // namespace zuma::replication
