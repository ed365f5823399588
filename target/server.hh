// The iSCSI target server: portals, targets, reactors, sessions (DESIGN.md: target/).
//
// Threads: the constructor and start()/stop() run on the main thread; each connection
// lives on one reactor thread for its whole life. Targets and portals are read by
// reactor threads through shared_ptr snapshots, so a live change later swaps a pointer.
#pragma once

#include <array>
#include <atomic>
#include <functional>
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
  uint16_t port_group = 0;                   // ServerContext::port_group
  std::optional<ChapPolicy> discovery_chap;  // CHAP required for discovery sessions
};

class Connection;
struct Session;

// Command counters of one session, or of one LU summed over sessions (issue 6: metrics).
// Each connection's are written only by its reactor thread and read there too (the admin
// queries below are posted to the reactors): nothing shared is touched per I/O.
struct IoStats {
  // Latency histogram upper bounds in microseconds; one more bucket counts the rest.
  static constexpr std::array<uint32_t, 14> kLatencyBoundsUs = {
      50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000};
  uint64_t commands = 0;       // every SCSI command completed
  uint64_t reads = 0;          // READ (6/10/12/16)
  uint64_t writes = 0;         // WRITE (6/10/12/16), WRITE AND VERIFY, WRITE ATOMIC
  uint64_t bytes_read = 0;     // Data-In of those reads
  uint64_t bytes_written = 0;  // Data-Out of those writes
  uint64_t errors = 0;         // status other than GOOD (aborted tasks excepted)
  uint64_t latency_sum_us = 0;
  std::array<uint64_t, kLatencyBoundsUs.size() + 1> latency{};  // per bucket, not cumulative
  void add(const IoStats& o);
};

// One logged-in connection of a session, for `show sessions` (a session with several
// connections, MaxConnections > 1, is listed once per connection, all with its TSIH).
struct SessionInfo {
  uint64_t id = 0;  // the connection id, what `logout` takes
  uint16_t cid = 0;          // the initiator's connection ID (RFC 7143 11.12.7)
  uint32_t connections = 1;  // connections the session has now
  unsigned reactor = 0;
  std::string initiator, initiator_alias, target, isid, peer, local;
  uint16_t tpgt = 0, tsih = 0;
  uint32_t queue_depth = 0;
  uint32_t in_flight = 0;  // commands received and not yet answered
  std::vector<std::pair<std::string, std::string>> parameters;  // negotiated (RFC 7143 13)
  std::vector<std::string> lus;  // names of the LUs the session sees
  IoStats stats;
  std::vector<std::pair<std::string, IoStats>> lu_stats;  // by LU name
};

// Protocol events counted over every connection since start (metrics: zuma_iscsi_*). The
// connection that sees one may be closed by it, so they are not per session.
struct ProtocolCounters {
  std::atomic<uint64_t> header_digest_errors{0};  // connection dropped (RFC 7143 7.8, ERL 0)
  std::atomic<uint64_t> data_digest_errors{0};    // command failed or PDU rejected
  std::atomic<uint64_t> rejects{0};               // Reject PDUs sent
  std::atomic<uint64_t> login_failures{0};        // logins answered with a non-zero status
};

// What the server tells connections about itself (lookups are thread-safe).
class ServerContext {
 public:
  virtual ~ServerContext() = default;
  virtual const IscsiLimits& limits() const = 0;
  // The target port group every session of this node reports (a cluster node, issue 9:
  // target/cluster.hh); 0: each portal group tag is its own target port group.
  virtual uint16_t port_group() const { return 0; }
  virtual std::shared_ptr<const TargetDef> find_target(const std::string& iqn) const = 0;
  virtual std::vector<std::shared_ptr<const TargetDef>> targets() const = 0;
  virtual std::vector<PortalDef> portals() const = 0;
  virtual const ChapPolicy* discovery_chap() const = 0;
  virtual uint16_t allocate_tsih() = 0;
  virtual uint64_t allocate_nexus_id() = 0;
  // A normal session (its TSIH, registered with register_tsih) reached full feature phase.
  // Closes every connection of an older session with the same initiator name, ISID,
  // target and portal group (RFC 7143 6.3.5 session reinstatement). True when there was
  // one: `ended` then runs, on the old session's reactor, once that session has ended (its
  // I_T nexus loss is known to its LUs).
  virtual bool session_started(const std::string& key, uint16_t tsih,
                               std::function<void()> ended) = 0;
  virtual void session_ended(const std::string& key, uint16_t tsih) = 0;
  // Sessions by TSIH, for logins that add a connection (MaxConnections > 1, RFC 7143
  // 6.3.6 session continuation). Any thread; the Session itself is only touched on its
  // reactor. The registry holds the session until unregister_tsih.
  virtual void register_tsih(std::shared_ptr<Session>) {}
  virtual void unregister_tsih(uint16_t) {}
  virtual std::shared_ptr<Session> find_tsih(uint16_t) const { return nullptr; }
  // Hands a connection that is logging in over to reactor `to` (the one its session lives
  // on). Reactor thread of `c`. False when it cannot; on true `c` is finished and the new
  // connection on `to` carries on with the same login.
  virtual bool move_connection(Connection&, unsigned /*to*/) { return false; }
  // A session whose last connection failed waits on its reactor until s.retain_until for
  // the initiator to continue it, then ends (end_session). Reactor thread of `s`.
  virtual void retain_session(std::shared_ptr<Session> s) { (void)s; }
  // TARGET COLD RESET (RFC 7143 11.5.1): closes every connection to the target `iqn` but
  // `except` (the one that asked, which closes itself once its TMF response is out).
  // Callable from a reactor thread: it posts, and does not wait.
  virtual void close_target_connections(const std::string& iqn, uint64_t except) = 0;
  // Any thread (relaxed atomics).
  ProtocolCounters& counters() { return counters_; }
  const ProtocolCounters& counters() const { return counters_; }

 private:
  ProtocolCounters counters_;
};

// EXTENDED COPY across targets (scsi::Nexus::find_copy_target): the LU with NAA designator
// `naa` (16 bytes) in a target other than `own_iqn` that `initiator` logging in from `peer`
// could address itself: the target's ACL admits it from there (its LUN mapping applies),
// and the target requires no CHAP or the very credentials `authenticated` (those this
// session proved at login; nullopt: none). nullptr otherwise.
std::shared_ptr<scsi::LogicalUnit> find_copy_target(const ServerContext& server,
                                                    const std::string& own_iqn,
                                                    const std::string& initiator,
                                                    const sockaddr_storage& peer,
                                                    const std::optional<ChapSecret>& authenticated,
                                                    const uint8_t* naa);

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
  uint16_t port_group() const override { return cfg_.port_group; }
  std::shared_ptr<const TargetDef> find_target(const std::string& iqn) const override;
  std::vector<std::shared_ptr<const TargetDef>> targets() const override;
  std::vector<PortalDef> portals() const override;
  const ChapPolicy* discovery_chap() const override {
    return cfg_.discovery_chap ? &*cfg_.discovery_chap : nullptr;
  }
  uint16_t allocate_tsih() override;
  uint64_t allocate_nexus_id() override { return ++next_nexus_id_; }
  bool session_started(const std::string& key, uint16_t tsih, std::function<void()> ended) override;
  void session_ended(const std::string& key, uint16_t tsih) override;
  void register_tsih(std::shared_ptr<Session> s) override;
  void unregister_tsih(uint16_t tsih) override;
  std::shared_ptr<Session> find_tsih(uint16_t tsih) const override;
  bool move_connection(Connection& c, unsigned to) override;
  void retain_session(std::shared_ptr<Session> s) override;
  void close_target_connections(const std::string& iqn, uint64_t except) override;

  // Hands an already connected socket to a reactor as if it had been accepted on a portal
  // with this tag (tests and fuzzing drive connections through socketpairs this way).
  void adopt_connection(storage::UniqueFd fd, uint16_t tpgt = 1);
  // Connections currently open, over all reactors.
  size_t connection_count() const;

  // Ports actually bound, in portal order (useful when a portal asked for port 0).
  std::vector<uint16_t> bound_ports() const;

  // --- Live administration (admin/ control socket, issue 6) ---
  // Called from a thread that is not a reactor (each waits for the reactors it asks).
  std::vector<SessionInfo> sessions();
  // Counters per LU name: every session's, open or closed, since start.
  std::map<std::string, IoStats> lu_stats();
  // Asks the session's initiator to log out (RFC 7143 11.9.1 AsyncEvent 1), closing it
  // after 3 s. False when no session has that id.
  bool logout_session(uint64_t id);
  // Replaces the target set. A target whose shared_ptr is not in the new set is removed
  // and its sessions closed; sessions of a target given a new definition (same iqn, other
  // pointer) follow it: re-admitted by its ACL (closed when refused) and switched to its
  // LUN table; others are not touched. Returns the number of sessions closed.
  size_t set_targets(std::vector<std::shared_ptr<const TargetDef>> targets);
  // Starts listening on one more portal; returns the bound port. Throws
  // std::runtime_error naming the portal when it cannot bind.
  uint16_t add_portal(const PortalDef& p);
  // Stops listening on host:port (sessions through it stay). False when not listening.
  bool remove_portal(const std::string& host, uint16_t port);

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
  std::vector<PortalDef> bound_portals_;  // start(), add/remove_portal; under portals_mu_
  mutable std::mutex portals_mu_;
  mutable std::mutex targets_mu_;  // targets_ (set_targets swaps it)
  void on_every_reactor(const std::function<void(unsigned, ReactorState&)>& fn);
  std::atomic<uint16_t> next_tsih_{0};
  std::atomic<uint64_t> next_nexus_id_{0};
  std::atomic<unsigned> next_reactor_{0};
  void add_connection(unsigned idx, std::unique_ptr<Connection> c);
  mutable std::mutex sessions_mu_;
  std::map<std::string, uint16_t> sessions_;              // key -> TSIH, under sessions_mu_
  std::map<uint16_t, std::shared_ptr<Session>> by_tsih_;  // under sessions_mu_
};

}  // namespace zuma::target
