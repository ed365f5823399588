// Several zumad nodes exporting the same `shared` LUs (issue 9, docs/DISTRIBUTED.md): the
// state they share lives in etcd (target/etcd_client.hh) under /zuma/<cluster>/.
//
//   members/<port group>   this node is alive: its name, ports and ALUA state (JSON), on
//                          the node's lease: it goes when the node stops renewing it
//   alua/<port group>      a state set by SET TARGET PORT GROUPS (overrides the config's)
//   lu/<name>/identity     "<uuid> <size> <block size>": the first node to start writes it;
//                          every node then serves the same NAA designator and serial, and
//                          refuses to start with another size or block size
//   lu/<name>/pr           the LU's reservations (scsi::Reservations' shared document)
//   acks/<port group>      the newest revision this node has applied (on its lease)
//
// A reservation change is committed by compare-and-swap on lu/<name>/pr; the command then
// waits until every other live node has acknowledged the revision (acks/), so a command
// that a node accepts after it reports GOOD sees the change everywhere. A node that cannot
// renew its lease for 2/3 of lease_ttl fences itself: its shared LUs go to the ALUA
// unavailable state (NOT READY 04h/0Ch) until it is back in etcd with a fresh lease; the
// other nodes stop waiting for it once its lease has expired.
//
// Threads: one renews the lease, one follows the watch; both only touch etcd and the
// LUs' thread-safe members (Reservations, UnitAttentions, task sets, ALUA state).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "scsi/alua.hh"
#include "target/etcd_client.hh"

namespace zuma::scsi {
class LogicalUnit;
}

namespace zuma::target {

struct ClusterOptions {
  std::string cluster;                          // the key prefix's name
  std::string node;                             // this node's name (node.name)
  std::vector<std::string> etcd;                // endpoints
  uint16_t port_group = 0;                      // this node's target port group
  uint8_t alua = scsi::alua::kActiveOptimized;  // initial state (an alua/ override wins)
  std::vector<uint16_t> ports;                  // relative target port ids (the portals' TPGTs)
  uint32_t lease_ttl = 5;                       // seconds
};

struct ClusterMember {
  std::string node, instance;
  uint8_t state = scsi::alua::kOffline;
  std::vector<uint16_t> ports;
  bool live = false;
};

class Cluster {
 public:
  // Connects, takes a lease, registers this node. Throws std::runtime_error (startup).
  explicit Cluster(ClusterOptions opt);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // The shared identity of LU `name`: the UUID every node uses (`mine` when this node is the
  // first). Throws std::runtime_error when the stored size or block size differ.
  std::string lu_uuid(const std::string& name, uint64_t size, uint32_t block_size,
                      const std::string& mine);
  // Makes `lu` a shared LU: its reservations in etcd, its ALUA view and state. Throws
  // std::runtime_error when etcd cannot be read.
  void attach(const std::string& name, const std::shared_ptr<scsi::LogicalUnit>& lu);
  // Starts following the watch (after the LUs of the startup config are attached).
  void start();
  // Leaves the cluster (revokes the lease: the others stop waiting for this node at once).
  void stop();

  // For status and tests.
  std::map<uint16_t, ClusterMember> members() const;
  bool fenced() const { return fenced_.load(); }
  const std::string& instance() const { return instance_; }
  std::string metrics_text() const;

  // --- for the LU stores and views (cluster.cc) ---
  EtcdClient& etcd() { return etcd_; }
  std::string key(const std::string& rest) const { return prefix_ + rest; }
  void wait_applied(uint64_t revision);
  scsi::CmdResult set_states(const std::vector<std::pair<uint16_t, uint8_t>>& states);
  std::vector<scsi::AluaGroup> groups() const;
  uint16_t port_group() const { return opt_.port_group; }

 private:
  struct Shared;  // one attached LU
  bool register_member();
  void put_member();
  void keepalive_loop();
  void watch_loop();
  void on_events(const std::vector<EtcdEvent>& events);
  void reload_all();  // after a compaction or a return from fencing
  // The attached LUs (a copy: used without mu_), and one of them by name (or nullptr).
  std::vector<std::shared_ptr<Shared>> shared_lus() const;
  std::shared_ptr<Shared> shared_lu(const std::string& name) const;
  void set_local_state(uint8_t state);
  void fence(bool on);

  const ClusterOptions opt_;
  const std::string prefix_;
  std::string instance_;
  EtcdClient etcd_;
  int64_t lease_ = 0;
  int64_t start_revision_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint16_t, ClusterMember> members_;
  std::map<uint16_t, int64_t> acks_;
  std::map<std::string, std::shared_ptr<Shared>> lus_;
  uint8_t state_;  // this node's state (without fencing)
  bool stopping_ = false;
  std::atomic<bool> fenced_{false};
  std::atomic<uint64_t> pr_changes_{0}, pr_conflicts_{0}, ack_timeouts_{0};
  std::thread keepalive_, watcher_;
};

// "active_optimized" and the others -> state; 0xFF when unknown.
uint8_t alua_state_from_name(const std::string& name);
const char* alua_state_name(uint8_t state);

}  // namespace zuma::target
