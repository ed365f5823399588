#include "target/server.hh"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "scsi/logical_unit.hh"
#include "target/connection.hh"

namespace zuma::target {

// A listening socket; accepts on reactor 0 and hands each connection to a reactor.
class Server::Listener final : public EventHandler {
 public:
  Listener(Server& s, PortalDef p, storage::UniqueFd fd) : server(s), portal(std::move(p)), fd(std::move(fd)) {}
  void on_event(uint32_t) override { server.accept_on(*this); }
  Server& server;
  PortalDef portal;
  storage::UniqueFd fd;
  uint16_t bound_port = 0;
};

// The connections one reactor owns; touched only on that reactor's thread.
class Server::ReactorState {
 public:
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns;
  // Sessions with no connection left, kept for the initiator to continue (Session::
  // retain_until); dropped when continued, ended or expired.
  std::vector<std::shared_ptr<Session>> retained;
  std::atomic<size_t> count{0};
  std::map<std::string, IoStats> retired;  // per-LU counters of connections that ended
};

namespace {

std::atomic<uint64_t> g_next_conn_id{0};

}  // namespace

// Deletes a finished connection, but never while the reactor still has it on its deferred
// list for this iteration (the erase runs from a post, possibly in the same epoll batch
// that queued it): then it tries again on the next iteration.
void Server::erase_when_idle(Reactor* r, ReactorState* st, uint64_t cid) {
  auto it = st->conns.find(cid);
  if (it == st->conns.end()) return;
  if (it->second->deferred_queued) {
    r->post([r, st, cid] { erase_when_idle(r, st, cid); });
    return;
  }
  for (auto& [name, stats] : it->second->lu_stats()) st->retired[name].add(stats);
  st->conns.erase(it);
  st->count--;
}

namespace {

storage::UniqueFd listen_on(const PortalDef& p, uint16_t& bound) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (p.host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(p.port);
    if (inet_pton(AF_INET6, p.host.c_str(), &a->sin6_addr) != 1)
      throw std::runtime_error(fmt::format("portal {}: not an IPv6 address", p.host));
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(p.port);
    if (inet_pton(AF_INET, p.host.c_str(), &a->sin_addr) != 1)
      throw std::runtime_error(fmt::format("portal {}: not an IPv4 address", p.host));
    len = sizeof *a;
  }
  storage::UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) throw std::runtime_error(fmt::format("socket: {}", strerror(errno)));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
    throw std::runtime_error(fmt::format("portal {}:{}: bind: {}", p.host, p.port, strerror(errno)));
  if (::listen(fd.get(), 128) != 0)
    throw std::runtime_error(fmt::format("portal {}:{}: listen: {}", p.host, p.port, strerror(errno)));
  sockaddr_storage got{};
  socklen_t glen = sizeof got;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&got), &glen);
  bound = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  return fd;
}

}  // namespace

Server::Server(ServerConfig cfg) : cfg_(std::move(cfg)) {
  for (auto& t : cfg_.targets) targets_.push_back(std::make_shared<const TargetDef>(t));
  unsigned n = cfg_.reactors ? cfg_.reactors : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) {
    reactors_.push_back(std::make_unique<Reactor>(i));
    states_.push_back(std::make_unique<ReactorState>());
  }
  // Random start so TSIHs differ across restarts (RFC 7143 11.12.6 forbids only 0).
  next_tsih_ = uint16_t(std::chrono::steady_clock::now().time_since_epoch().count());
}

Server::~Server() {
  stop(std::chrono::milliseconds(0));
  // Reactors (and their io_urings) go first: no completion can reach a connection after.
  reactors_.clear();
  states_.clear();
}

void Server::start() {
  for (const PortalDef& p : cfg_.portals) {
    uint16_t bound = 0;
    auto fd = listen_on(p, bound);
    auto l = std::make_unique<Listener>(*this, p, std::move(fd));
    l->bound_port = bound;
    listeners_.push_back(std::move(l));
    std::lock_guard lock(portals_mu_);
    bound_portals_.push_back(p);
    bound_portals_.back().port = bound;
  }
  for (size_t i = 0; i < reactors_.size(); ++i) {
    Reactor& r = *reactors_[i];
    ReactorState& st = *states_[i];
    r.add_ticker([this, &st](std::chrono::steady_clock::time_point now) {
      std::vector<Connection*> all;
      for (auto& [id, c] : st.conns) all.push_back(c.get());
      for (Connection* c : all) c->tick(now);
      std::erase_if(st.retained, [&](const std::shared_ptr<Session>& s) {
        if (s->ended || !s->conns.empty()) return true;
        if (now < s->retain_until) return false;
        spdlog::info(
            "session tsih {} {}: not continued within DefaultTime2Wait + "
            "DefaultTime2Retain; ended",
            s->tsih, s->initiator_name);
        end_session(*s, *this);
        return true;
      });
    });
    r.start();
  }
  for (auto& l : listeners_) {
    Listener* lp = l.get();
    reactors_[0]->post([this, lp] { reactors_[0]->add(lp->fd.get(), EPOLLIN, lp); });
  }
}

void Server::accept_on(Listener& l) {
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    int fd = ::accept4(l.fd.get(), reinterpret_cast<sockaddr*>(&peer), &plen,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      spdlog::warn("accept on {}:{}: {}", l.portal.host, l.bound_port, strerror(errno));
      return;  // EMFILE and friends: try again on the next readiness
    }
    storage::UniqueFd conn_fd(fd);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen);
    hand_to_reactor(std::move(conn_fd), l.portal.tpgt, local, peer);
  }
}

void Server::adopt_connection(storage::UniqueFd fd, uint16_t tpgt) {
  sockaddr_storage local{}, peer{};
  socklen_t len = sizeof local;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len);
  len = sizeof peer;
  ::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &len);
  hand_to_reactor(std::move(fd), tpgt, local, peer);
}

size_t Server::connection_count() const {
  size_t n = 0;
  for (auto& st : states_) n += st->count.load();
  return n;
}

void Server::hand_to_reactor(storage::UniqueFd fd, uint16_t tpgt, const sockaddr_storage& local,
                             const sockaddr_storage& peer) {
  const unsigned idx = next_reactor_++ % unsigned(reactors_.size());
  Reactor* r = reactors_[idx].get();
  ReactorState* st = states_[idx].get();
  const uint64_t id = ++g_next_conn_id;
  st->count++;  // counted from now on, so connection_count() never misses one in flight
  auto shared_fd = std::make_shared<storage::UniqueFd>(std::move(fd));
  r->post([this, idx, r, id, tpgt, local, peer, shared_fd] {
    add_connection(
        idx, std::make_unique<Connection>(*r, *this, std::move(*shared_fd), id, tpgt, local, peer));
  });
}

// Reactor thread of `idx`; the connection was counted in its state already.
void Server::add_connection(unsigned idx, std::unique_ptr<Connection> c) {
  Reactor* r = reactors_[idx].get();
  ReactorState* st = states_[idx].get();
  c->on_finished = [r, st](Connection& done) {
    const uint64_t cid = done.id();
    r->post([r, st, cid] { erase_when_idle(r, st, cid); });
  };
  Connection* cp = c.get();
  st->conns.emplace(cp->id(), std::move(c));
  cp->start();
}

bool Server::move_connection(Connection& c, unsigned to) {
  if (to >= reactors_.size()) return false;
  const uint64_t id = ++g_next_conn_id;
  const uint16_t tpgt = c.tpgt();
  const sockaddr_storage local = c.local_addr(), peer = c.peer_addr();
  states_[to]->count++;
  auto h = std::make_shared<Connection::Handover>(c.hand_over());
  spdlog::info("connection {}: its login continues on reactor {}, its session's, as connection {}",
               c.id(), to, id);
  Reactor* r = reactors_[to].get();
  r->post([this, to, r, id, tpgt, local, peer, h] {
    auto nc = std::make_unique<Connection>(*r, *this, std::move(h->fd), id, tpgt, local, peer);
    Connection* cp = nc.get();
    add_connection(to, std::move(nc));
    cp->resume_login(std::move(*h));
  });
  return true;
}

void Server::register_tsih(std::shared_ptr<Session> s) {
  std::lock_guard lock(sessions_mu_);
  const uint16_t tsih = s->tsih;
  by_tsih_[tsih] = std::move(s);
}

void Server::unregister_tsih(uint16_t tsih) {
  std::lock_guard lock(sessions_mu_);
  by_tsih_.erase(tsih);
}

std::shared_ptr<Session> Server::find_tsih(uint16_t tsih) const {
  std::lock_guard lock(sessions_mu_);
  auto it = by_tsih_.find(tsih);
  return it == by_tsih_.end() ? nullptr : it->second;
}

void Server::retain_session(std::shared_ptr<Session> s) {
  states_[s->reactor]->retained.push_back(std::move(s));
}

void Server::stop(std::chrono::milliseconds grace) {
  if (reactors_.empty() || listeners_.empty()) {
    for (auto& r : reactors_) r->stop_and_join();
    return;
  }
  // 1. No new connections.
  std::atomic<bool> unlistened{false};
  reactors_[0]->post([this, &unlistened] {
    for (auto& l : listeners_) reactors_[0]->remove(l->fd.get());
    unlistened = true;
  });
  while (!unlistened) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  listeners_.clear();
  // 2. Every connection drains: executing commands finish, responses go out, then close.
  for (size_t i = 0; i < reactors_.size(); ++i) {
    ReactorState* st = states_[i].get();
    reactors_[i]->post([st] {
      for (auto& [id, c] : st->conns) c->drain();
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  auto all_idle = [&] {
    for (auto& st : states_)
      if (st->count.load() != 0) return false;
    return true;
  };
  while (!all_idle() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!all_idle()) spdlog::warn("shutdown: grace period over, closing remaining connections");
  // 3. Close whatever is left, then end the reactor threads.
  for (size_t i = 0; i < reactors_.size(); ++i) {
    ReactorState* st = states_[i].get();
    reactors_[i]->post([this, st] {
      for (auto& [id, c] : st->conns) c->close("shutdown");
      for (auto& s : st->retained) end_session(*s, *this);
      st->retained.clear();
    });
  }
  for (auto& r : reactors_) r->stop_and_join();
}

std::optional<Network> Network::parse(const std::string& text) {
  Network n;
  const size_t slash = text.find('/');
  const std::string addr = text.substr(0, slash);
  n.family = addr.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (inet_pton(n.family, addr.c_str(), n.addr) != 1) return std::nullopt;
  const unsigned max = n.family == AF_INET6 ? 128 : 32;
  n.prefix = max;
  if (slash != std::string::npos) {
    char* end = nullptr;
    const unsigned long p = std::strtoul(text.c_str() + slash + 1, &end, 10);
    if (*end != '\0' || end == text.c_str() + slash + 1 || p > max) return std::nullopt;
    n.prefix = unsigned(p);
  }
  return n;
}

bool Network::contains(const sockaddr_storage& peer) const {
  const uint8_t* a = nullptr;
  if (peer.ss_family != family) return false;
  if (family == AF_INET)
    a = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in&>(peer).sin_addr);
  else
    a = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr);
  const unsigned full = prefix / 8, bits = prefix % 8;
  if (std::memcmp(a, addr, full) != 0) return false;
  if (bits == 0) return true;
  const uint8_t mask = uint8_t(0xff << (8 - bits));
  return (a[full] & mask) == (addr[full] & mask);
}

namespace {
const AclRule kOpen{};  // what an ACL-less target admits everyone with
}  // namespace

const AclRule* TargetDef::admit(const std::string& initiator, const sockaddr_storage& peer) const {
  if (acl.empty()) return &kOpen;
  for (const AclRule& r : acl) {
    if (r.initiator != initiator) continue;
    if (r.networks.empty()) return &r;
    for (const Network& n : r.networks)
      if (n.contains(peer)) return &r;
    return nullptr;
  }
  return nullptr;
}

std::shared_ptr<scsi::LogicalUnit> find_copy_target(const ServerContext& server,
                                                    const std::string& own_iqn,
                                                    const std::string& initiator,
                                                    const sockaddr_storage& peer,
                                                    const std::optional<ChapSecret>& authenticated,
                                                    const uint8_t* naa) {
  for (const auto& t : server.targets()) {
    if (t->iqn == own_iqn) continue;  // the nexus's own table was searched already
    const AclRule* rule = t->admit(initiator, peer);
    if (!rule) continue;
    // A target behind CHAP is reachable only with the secret this session proved: the
    // initiator could not log in there without it.
    if (t->chap && (!authenticated || authenticated->user != t->chap->initiator.user ||
                    authenticated->secret != t->chap->initiator.secret))
      continue;
    const scsi::LunTable& table = rule->luns ? *rule->luns : *t->luns;
    for (const auto& [lun, lu] : table.luns)
      if (lu && std::memcmp(lu->naa().data(), naa, 16) == 0) return lu;
  }
  return nullptr;
}

std::shared_ptr<const TargetDef> Server::find_target(const std::string& iqn) const {
  // RFC 7143 3.2.6.1: iSCSI names compare case-insensitively only in their
  // already-normalised (lowercase) form; config validation keeps them lowercase.
  std::lock_guard lock(targets_mu_);
  for (auto& t : targets_)
    if (t->iqn == iqn) return t;
  return nullptr;
}

std::vector<std::shared_ptr<const TargetDef>> Server::targets() const {
  std::lock_guard lock(targets_mu_);
  return targets_;
}

std::vector<PortalDef> Server::portals() const {
  std::lock_guard lock(portals_mu_);
  return bound_portals_;
}

std::vector<uint16_t> Server::bound_ports() const {
  std::lock_guard lock(portals_mu_);
  std::vector<uint16_t> out;
  for (auto& p : bound_portals_) out.push_back(p.port);
  return out;
}

uint16_t Server::allocate_tsih() {
  uint16_t t;
  do {
    t = ++next_tsih_;
  } while (t == 0);
  return t;
}

bool Server::session_started(const std::string& key, uint16_t tsih, std::function<void()> ended) {
  std::shared_ptr<Session> old;
  {
    std::lock_guard lock(sessions_mu_);
    auto [it, inserted] = sessions_.try_emplace(key, tsih);
    if (!inserted) {
      if (auto t = by_tsih_.find(it->second); t != by_tsih_.end()) old = t->second;
      it->second = tsih;
    }
  }
  if (!old) return false;
  // RFC 7143 6.3.5: a new session with the same ISID (TSIH 0) reinstates the old one:
  // every connection of it is closed, and a session kept after a failure ends now; its
  // tasks end as on I_T nexus loss. On the old session's reactor (fixed at registration).
  reactors_[old->reactor]->post([this, old, ended = std::move(ended)] {
    old->closing = true;
    const std::vector<Connection*> conns = old->conns;
    for (Connection* c : conns) c->close("session reinstated");
    end_session(*old, *this);  // no-op when its last connection ended it just now
    if (ended) ended();
  });
  return true;
}

void Server::session_ended(const std::string& key, uint16_t tsih) {
  std::lock_guard lock(sessions_mu_);
  auto it = sessions_.find(key);
  if (it != sessions_.end() && it->second == tsih) sessions_.erase(it);
}

void Server::close_target_connections(const std::string& iqn, uint64_t except) {
  // Names compare case-insensitively (RFC 7143 4.2.7.1); discovery sessions name no target.
  auto lower = [](std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string want = lower(iqn);
  for (size_t i = 0; i < reactors_.size(); ++i) {
    ReactorState* st = states_[i].get();
    reactors_[i]->post([st, want, except, lower] {
      std::vector<Connection*> victims;
      for (auto& [id, c] : st->conns)
        if (id != except && !c->finished() && lower(c->target_iqn()) == want) victims.push_back(c.get());
      for (Connection* c : victims) c->close("target cold reset");
    });
  }
}

}  // namespace zuma::target

// ---------------------------------------------------------------------------------------
// Live administration (issue 6). Everything a connection owns is read or changed on its
// reactor thread, posted from here; the caller waits.

namespace zuma::target {

void IoStats::add(const IoStats& o) {
  commands += o.commands;
  reads += o.reads;
  writes += o.writes;
  bytes_read += o.bytes_read;
  bytes_written += o.bytes_written;
  errors += o.errors;
  latency_sum_us += o.latency_sum_us;
  for (size_t i = 0; i < latency.size(); ++i) latency[i] += o.latency[i];
}

void Server::on_every_reactor(const std::function<void(unsigned, ReactorState&)>& fn) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    size_t left;
  };
  auto w = std::make_shared<Wait>();
  w->left = reactors_.size();
  for (size_t i = 0; i < reactors_.size(); ++i) {
    ReactorState* st = states_[i].get();
    const unsigned idx = unsigned(i);
    reactors_[i]->post([w, st, idx, &fn] {
      fn(idx, *st);
      std::lock_guard lock(w->mu);
      if (--w->left == 0) w->cv.notify_all();
    });
  }
  std::unique_lock lock(w->mu);
  w->cv.wait(lock, [&] { return w->left == 0; });
}

std::vector<SessionInfo> Server::sessions() {
  std::mutex mu;
  std::vector<SessionInfo> out;
  on_every_reactor([&](unsigned idx, ReactorState& st) {
    std::vector<SessionInfo> mine;
    for (auto& [id, c] : st.conns)
      if (c->in_full_feature()) {
        mine.push_back(c->info());
        mine.back().reactor = idx;
      }
    std::lock_guard lock(mu);
    for (auto& s : mine) out.push_back(std::move(s));
  });
  std::sort(out.begin(), out.end(), [](const SessionInfo& a, const SessionInfo& b) { return a.id < b.id; });
  return out;
}

std::map<std::string, IoStats> Server::lu_stats() {
  std::mutex mu;
  std::map<std::string, IoStats> out;
  on_every_reactor([&](unsigned, ReactorState& st) {
    std::map<std::string, IoStats> mine = st.retired;
    for (auto& [id, c] : st.conns)
      for (auto& [name, stats] : c->lu_stats()) mine[name].add(stats);
    std::lock_guard lock(mu);
    for (auto& [name, stats] : mine) out[name].add(stats);
  });
  return out;
}

bool Server::logout_session(uint64_t id) {
  std::atomic<bool> found{false};
  on_every_reactor([&](unsigned, ReactorState& st) {
    auto it = st.conns.find(id);
    if (it == st.conns.end() || !it->second->in_full_feature()) return;
    found = true;
    it->second->drain();
  });
  return found;
}

size_t Server::set_targets(std::vector<std::shared_ptr<const TargetDef>> targets) {
  std::map<std::string, std::shared_ptr<const TargetDef>> changed;  // iqn -> new definition
  std::set<std::string> removed;
  {
    std::lock_guard lock(targets_mu_);
    for (auto& old : targets_) {
      auto it = std::find_if(targets.begin(), targets.end(),
                             [&](auto& t) { return t->iqn == old->iqn; });
      if (it == targets.end())
        removed.insert(old->iqn);
      else if (*it != old)
        changed.emplace(old->iqn, *it);
    }
    targets_ = std::move(targets);
  }
  if (changed.empty() && removed.empty()) return 0;
  std::atomic<size_t> closed{0};
  on_every_reactor([&](unsigned, ReactorState& st) {
    std::vector<Connection*> all;
    for (auto& [id, c] : st.conns) all.push_back(c.get());
    for (Connection* c : all) {
      if (!c->in_full_feature()) continue;  // a login in progress keeps what it looked up
      if (removed.count(c->target_iqn())) {
        c->close("target removed");
        ++closed;
      } else if (auto it = changed.find(c->target_iqn()); it != changed.end()) {
        if (!c->retarget(it->second)) ++closed;
      }
    }
  });
  return closed;
}

uint16_t Server::add_portal(const PortalDef& p) {
  uint16_t bound = 0;
  auto fd = listen_on(p, bound);
  auto l = std::make_unique<Listener>(*this, p, std::move(fd));
  l->bound_port = bound;
  Listener* lp = l.get();
  {
    std::lock_guard lock(portals_mu_);
    listeners_.push_back(std::move(l));
    bound_portals_.push_back(p);
    bound_portals_.back().port = bound;
  }
  std::atomic<bool> added{false};
  reactors_[0]->post([this, lp, &added] {
    reactors_[0]->add(lp->fd.get(), EPOLLIN, lp);
    added = true;
  });
  while (!added) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return bound;
}

bool Server::remove_portal(const std::string& host, uint16_t port) {
  std::shared_ptr<Listener> gone;
  {
    std::lock_guard lock(portals_mu_);
    for (size_t i = 0; i < listeners_.size(); ++i) {
      if (listeners_[i]->portal.host != host || listeners_[i]->bound_port != port) continue;
      gone = std::shared_ptr<Listener>(std::move(listeners_[i]));
      listeners_.erase(listeners_.begin() + ptrdiff_t(i));
      break;
    }
    if (!gone) return false;
    std::erase_if(bound_portals_, [&](const PortalDef& b) { return b.host == host && b.port == port; });
  }
  // Out of epoll on reactor 0; freed by a later post, after the epoll batch that may still
  // name it is over.
  std::atomic<bool> removed{false};
  Reactor* r0 = reactors_[0].get();
  r0->post([r0, gone, &removed] {
    r0->remove(gone->fd.get());
    r0->post([gone] {});
    removed = true;
  });
  while (!removed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return true;
}

}  // namespace zuma::target
