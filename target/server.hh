// The iSCSI target server: portals, targets, reactors, sessions (DESIGN.md: target/).
//
// Threads: the constructor and start()/stop() run on the main thread; each connection
// lives on one reactor thread for its whole life. Targets and portals are read by
// reactor threads through shared_ptr snapshots, so a live change later swaps a pointer.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <sys/socket.h>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "scsi/device_server.hh"
#include "target/chap.hh"
#include "target/negotiation.hh"
#include "target/reactor.hh"

namespace zuma::target {

// An address range an ACL entry admits ("192.0.2.0/24", "fd00::/8").
struct Network {
  int family = 0;  // AF_INET or AF_INET6
  uint8_t addr[16] = {};
  unsigned prefix = 0;
  // Parses "ADDR/PREFIX" or a bare address; nullopt when malformed.
  static std::optional<Network> parse(const std::string& text);
  bool contains(const sockaddr_storage& peer) const;
};

// One initiator a target admits, from where, and which LUs it sees under which numbers.
struct AclRule {
  std::string initiator;
  std::vector<Network> networks;  // empty = any source address
  std::shared_ptr<const scsi::LunTable> luns;  // null = the target's own LUN table
};

struct TargetDef {
  std::string iqn;
  std::string alias;
  std::vector<AclRule> acl;  // empty = any initiator
  std::optional<ChapPolicy> chap;  // CHAP required when set
  std::shared_ptr<const scsi::LunTable> luns;

  // The rule admitting `initiator` from `peer`: nullptr when refused. With no ACL every
  // initiator is admitted by `kOpen` (the target's own LUN table).
  const AclRule* admit(const std::string& initiator, const sockaddr_storage& peer) const;
};

struct PortalDef {
  std::string host;  // numeric IPv4 or IPv6 address
  uint16_t port = 3260;
  uint16_t tpgt = 1;
};

struct ServerConfig {
  IscsiLimits limits;
  std::vector<PortalDef> portals;
  std::vector<TargetDef> targets;
  unsigned reactors = 0;  // 0 = one per CPU
  std::string node_name = "zuma";
  std::optional<ChapPolicy> discovery_chap;  // CHAP required for discovery sessions
};

class Connection;

// What the server tells connections about itself (lookups are thread-safe).
class ServerContext {
 public:
  virtual ~ServerContext() = default;
  virtual const IscsiLimits& limits() const = 0;
  virtual std::shared_ptr<const TargetDef> find_target(const std::string& iqn) const = 0;
  virtual std::vector<std::shared_ptr<const TargetDef>> targets() const = 0;
  virtual std::vector<PortalDef> portals() const = 0;
  virtual const ChapPolicy* discovery_chap() const = 0;
  virtual uint16_t allocate_tsih() = 0;
  virtual uint64_t allocate_nexus_id() = 0;
  // A normal session reached full feature phase. Closes an older session with the same
  // initiator name, ISID and target (RFC 7143 6.3.5 session reinstatement).
  virtual void session_started(const std::string& key, unsigned reactor, uint64_t conn_id) = 0;
  virtual void session_ended(const std::string& key, uint64_t conn_id) = 0;
};

class Server final : public ServerContext {
 public:
  explicit Server(ServerConfig cfg);
  ~Server() override;

  // Binds every portal and starts the reactors. Throws std::runtime_error naming the
  // portal on failure (startup is an edge: STYLE.md 8).
  void start();
  // Graceful stop: no new connections; commands already executing finish and their
  // responses are sent (bounded by `grace`); then connections close and reactors end.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(10));

  // ServerContext
  const IscsiLimits& limits() const override { return cfg_.limits; }
  std::shared_ptr<const TargetDef> find_target(const std::string& iqn) const override;
  std::vector<std::shared_ptr<const TargetDef>> targets() const override;
  std::vector<PortalDef> portals() const override;
  const ChapPolicy* discovery_chap() const override {
    return cfg_.discovery_chap ? &*cfg_.discovery_chap : nullptr;
  }
  uint16_t allocate_tsih() override;
  uint64_t allocate_nexus_id() override { return ++next_nexus_id_; }
  void session_started(const std::string& key, unsigned reactor, uint64_t conn_id) override;
  void session_ended(const std::string& key, uint64_t conn_id) override;

  // Hands an already connected socket to a reactor as if it had been accepted on a portal
  // with this tag (tests and fuzzing drive connections through socketpairs this way).
  void adopt_connection(storage::UniqueFd fd, uint16_t tpgt = 1);
  // Connections currently open, over all reactors.
  size_t connection_count() const;

  // Ports actually bound, in portal order (useful when a portal asked for port 0).
  std::vector<uint16_t> bound_ports() const;

 private:
  class Listener;
  class ReactorState;
  void accept_on(Listener& l);
  static void erase_when_idle(Reactor* r, ReactorState* st, uint64_t cid);
  void hand_to_reactor(storage::UniqueFd fd, uint16_t tpgt, const sockaddr_storage& local,
                       const sockaddr_storage& peer);

  ServerConfig cfg_;
  std::vector<std::shared_ptr<const TargetDef>> targets_;
  std::vector<std::unique_ptr<Reactor>> reactors_;
  std::vector<std::unique_ptr<ReactorState>> states_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<PortalDef> bound_portals_;  // written in start(), read-only after
  std::atomic<uint16_t> next_tsih_{0};
  std::atomic<uint64_t> next_nexus_id_{0};
  std::atomic<unsigned> next_reactor_{0};
  mutable std::mutex sessions_mu_;
  std::map<std::string, std::pair<unsigned, uint64_t>> sessions_;  // key -> (reactor, conn id)
};

}  // namespace zuma::target
