#include "replication/replica.hh"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "replication/apply.hh"
#include "replication/link_auth.hh"
#include "replication/link_tls.hh"
#include "replication/protocol.hh"
#include "replication/ring_log.hh"
#include "replication/verify.hh"
#include "storage/sync_io.hh"
#include "storage/thread_name.hh"

namespace zuma::replication {
namespace {

using storage::Backend;
using storage::IoOp;
using storage::IoRequest;

constexpr int kIoTimeoutMs = 30000;
constexpr size_t kAckEveryBytes = 8 << 20;

std::string peer_name(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
    return fmt::format("{}:{}", host, port);
  }
  auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
  ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
  return fmt::format("[{}]:{}", host, ntohs(a->sin6_port));
}

}  // namespace

std::expected<std::unique_ptr<ReplicaServer>, std::string> ReplicaServer::start(
    const std::string& address, std::optional<config::ReplicationTls> tls) {
  std::unique_ptr<ReplicaServer> s(new ReplicaServer());
  s->tls_ = std::move(tls);
  int fd = proto::listen_on(address, &s->port_);
  if (fd < 0) return std::unexpected(fmt::format("replication listener {}: {}", address, std::strerror(-fd)));
  s->listen_fd_.reset(fd);
  s->accept_thread_ = std::thread([p = s.get()] { p->accept_loop(); });
  return s;
}

ReplicaServer::~ReplicaServer() {
  stop_.store(true);
  // Wakes the accept loop's poll now instead of at its next timeout.
  if (listen_fd_.get() >= 0) ::shutdown(listen_fd_.get(), SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<Conn> conns;
  {
    std::lock_guard lk(mu_);
    for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
    conns.swap(conns_);
  }
  for (auto& c : conns) c.thread.join();
}

std::expected<void, std::string> ReplicaServer::add_group(const ReplicaGroupOptions& opt) {
  auto st = SeqStateFile::open(opt.state_path);
  if (!st) return std::unexpected(st.error());
  auto g = std::make_unique<Group>(Group{opt.name,
                                         opt.luns,
                                         std::move(*st),
                                         false,
                                         {},
                                         opt.admit,
                                         opt.on_consistent,
                                         opt.on_bookmark,
                                         opt.on_bookmark_remove,
                                         opt.async_ack_delay});
  g->stats.applied = g->state.value().seq;
  g->stats.log_id = g->state.value().log_id;
  std::lock_guard lk(mu_);
  if (groups_.count(opt.name)) return std::unexpected(fmt::format("replica group {} is already served", opt.name));
  groups_[opt.name] = std::move(g);
  return {};
}

std::optional<ReplicaGroupStats> ReplicaServer::stats(const std::string& group) const {
  std::lock_guard lk(mu_);
  auto it = groups_.find(group);
  if (it == groups_.end()) return std::nullopt;
  return it->second->stats;
}

std::expected<void, std::string> ReplicaServer::remove_group(const std::string& group, bool force) {
  for (int i = 0;; ++i) {
    {
      std::lock_guard lk(mu_);
      auto it = groups_.find(group);
      if (it == groups_.end()) return {};
      Group& g = *it->second;
      if (!g.busy) {
        groups_.erase(it);
        return {};
      }
      if (!force) return std::unexpected(fmt::format("group {}: its primary is connected", group));
      if (i == 0) ::shutdown(g.fd, SHUT_RDWR);
    }
    if (i > 3000)
      return std::unexpected(fmt::format("group {}: the primary's connection did not end", group));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void ReplicaServer::accept_loop() {
  storage::name_this_thread("repl-listen");
  while (!stop_.load()) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    proto::tune_socket(fd);
    std::lock_guard lk(mu_);
    // Join the threads of connections that have ended.
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
    conn_fds_.push_back(fd);
    auto done = std::make_shared<std::atomic<bool>>(false);
    conns_.push_back(Conn{std::thread([this, fd, done, peer = peer_name(ss)] {
                            storage::name_this_thread("repl-conn");  // apply/GROUP after HELLO
                            serve(fd, peer);
                            done->store(true);
                          }),
                          done});
  }
}

std::vector<uint8_t> ReplicaServer::verify(Group& g, std::span<const uint8_t> payload,
                                           uint64_t seq) {
  auto m = VerifyMarker::decode(payload);
  if (!m) {
    spdlog::warn("replication: group {}: verify marker {} is malformed: ignored", g.name, seq);
    return {};
  }
  std::string link;
  {
    std::lock_guard lk(mu_);
    link = g.link;
  }
  if (!m->link.empty() && m->link != link) return {};  // another link's peer is asked
  VerifyReply r;
  r.id = m->id;
  r.index = m->index;
  if (g.resyncing) {
    r.status = VerifyReply::kInconsistent;  // the image is not that point yet
  } else if (m->lu >= g.luns.size() ||
             hash_region(*g.luns[m->lu], m->offset, m->length, &r.hash) < 0) {
    r.status = VerifyReply::kUnreadable;
  } else {
    const bool differs = !XXH128_isEqual(r.hash, m->hash);
    if (differs)
      spdlog::warn(
          "replication: group {}: verify (record {}): LU {} bytes {}+{} differ from the primary's",
          g.name, seq, m->lu, m->offset, m->length);
    std::lock_guard lk(mu_);
    ++g.stats.verify_regions;
    g.stats.verify_mismatched += differs;
  }
  return r.encode();
}

std::string ReplicaServer::apply_batch(Group& g, std::span<const uint8_t> batch, uint64_t* applied,
                                       std::vector<std::vector<uint8_t>>* replies) {
  std::string why, err;
  const bool ok = RingLog::parse_batch(batch, g.state.value().log_id, [&](const RecordView& v) {
    if (v.seq <= *applied) return true;  // sent again after a reconnect: already here
    if (v.seq != *applied + 1) {
      err = fmt::format("gap in the sequence: expected {}, got {}", *applied + 1, v.seq);
      return false;
    }
    if (v.type == RecordType::kBookmarkRemove) {
      if (g.on_bookmark_remove)
        g.on_bookmark_remove(std::string(v.payload.begin(), v.payload.end()), v.seq);
    } else if (v.type == RecordType::kVerify) {
      // Every record before it is applied and none after: the region as the primary hashed it.
      if (auto r = verify(g, v.payload, v.seq); !r.empty()) replies->push_back(std::move(r));
    } else if (v.type != RecordType::kBookmark) {
      if (v.lu >= g.luns.size()) {
        err = fmt::format("record {} is for LU {} but the group has {} LUs here", v.seq, v.lu, g.luns.size());
        return false;
      }
      if (auto e = apply_record(*g.luns[v.lu], v); !e.empty()) {
        err = e;
        return false;
      }
    } else if (g.on_bookmark) {
      g.on_bookmark(std::string(v.payload.begin(), v.payload.end()), v.seq, !g.resyncing);
    }
    *applied = v.seq;
    std::lock_guard lk(mu_);
    ++g.stats.records;
    return true;
  }, &why);
  if (!ok) return why;
  return err;
}

std::string ReplicaServer::make_durable(Group& g, uint64_t applied) {
  for (Backend* b : g.luns) {
    IoRequest req{IoOp::kFlush};
    if (int r = storage::submit_and_wait(*b, req); r < 0)
      return fmt::format("flushing {}: {}", b->describe(), std::strerror(-r));
  }
  if (int r = g.state.store(SeqState{applied, g.state.value().log_id}); r < 0)
    return fmt::format("{}: {}", g.state.path(), std::strerror(-r));
  std::lock_guard lk(mu_);
  g.stats.applied = applied;
  return "";
}

std::string ReplicaServer::last_refusal() const {
  std::lock_guard lk(mu_);
  return last_refusal_;
}

void ReplicaServer::refused(const std::string& peer, const std::string& group,
                            const std::string& why) {
  auth_failures_.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("replication: {}{}: refused: {}", group.empty() ? "" : "group " + group + ", ",
                peer, why);
  std::lock_guard lk(mu_);
  last_refusal_ = fmt::format("{}: {}", peer, why);
  if (auto it = groups_.find(group); it != groups_.end()) it->second->stats.last_error = why;
}

void ReplicaServer::serve(int fd, std::string peer) {
  storage::UniqueFd sock(fd);
  // What the first bytes are tells a TLS primary from a plaintext one, so a mismatch of the
  // two sides' settings is said plainly on both instead of as a garbled handshake.
  const tls::FirstBytes first = tls::peek_first_bytes(fd, 10000);
  std::optional<proto::Conn> conn;
  if (first == tls::FirstBytes::kNothing) {
    // closed or silent: nothing to say
  } else if (!tls_) {
    if (first == tls::FirstBytes::kTls)
      refused(peer, "",
              "TLS: the primary's link uses TLS, this node's replication listener does not (set "
              "node.replication_tls here, or remove tls from the link)");
    else
      conn.emplace(fd);
  } else if (first == tls::FirstBytes::kFrame) {
    const std::string why =
        "TLS required: this node's replication listener uses TLS (node.replication_tls); the "
        "primary's link does not (set tls on it)";
    refused(peer, "", why);
    proto::send_frame(fd, proto::Frame::kError, why, 1000);
  } else if (auto ctx = tls::make_context(*tls_, true); !ctx) {
    spdlog::error("replication: {}: TLS: {}", peer, ctx.error());
  } else if (auto c = tls::handshake(*ctx, *tls_, fd, true, 10000); !c) {
    refused(peer, "", c.error());
  } else {
    spdlog::info("replication: {}: TLS {}, {}", peer, tls::describe(*c), tls::peer_identity(*c));
    conn.emplace(std::move(*c));
  }
  if (conn) serve_conn(*conn, peer);
  std::lock_guard lk(mu_);
  conn_fds_.erase(std::remove(conn_fds_.begin(), conn_fds_.end(), fd), conn_fds_.end());
}

void ReplicaServer::serve_conn(proto::Conn& conn, const std::string& peer) {
  // The socket, for bookkeeping only (shutdown by remove_group, poll): frames go through
  // `conn`, which may be TLS.
  const int sock = conn.fd();
  ApplyScope applying;  // this thread writes into the group's LUs while they are secondary
  Group* g = nullptr;
  auto fail = [&](const std::string& msg) {
    spdlog::error("replication: {}{}: {}", g ? "group " + g->name + ", " : "", peer, msg);
    if (g) {
      std::lock_guard lk(mu_);
      g->stats.last_error = msg;
    }
    proto::send_frame(conn, proto::Frame::kError, msg, 1000);
  };
  proto::Frame type{};
  std::vector<uint8_t> payload;
  if (proto::recv_frame(conn, &type, &payload, 10000) < 0 || type != proto::Frame::kHello) {
    fail("expected HELLO");
  } else {
    nlohmann::json hello = nlohmann::json::parse(payload.begin(), payload.end(), nullptr, false);
    std::string group_name, link_name, err;
    bool async_link = false;
    uint64_t log_id = 0;
    std::vector<uint64_t> sizes;
    HelloInfo info;
    info.peer = peer;
    if (hello.is_discarded() || !hello.is_object() || !hello.contains("group") || !hello["group"].is_string() ||
        !hello.contains("log_id") || !hello["log_id"].is_number_unsigned() || !hello.contains("luns") ||
        !hello["luns"].is_array() || hello.value("protocol", 0) != proto::kProtocolVersion) {
      err = "malformed HELLO (or another protocol version)";
    } else {
      group_name = hello["group"].get<std::string>();
      storage::name_this_thread("apply/" + group_name);
      if (hello.contains("link") && hello["link"].is_string())
        link_name = hello["link"].get<std::string>();
      // The link's mode says how soon it is acknowledged (ack_delay below; absent: sync).
      async_link = hello.contains("mode") && hello["mode"].is_string() && hello["mode"] == "async";
      log_id = hello["log_id"].get<uint64_t>();
      for (auto& s : hello["luns"])
        if (s.is_number_unsigned()) sizes.push_back(s.get<uint64_t>());
      info.log_id = log_id;
      if (hello.contains("last") && hello["last"].is_number_unsigned())
        info.last = hello["last"].get<uint64_t>();
      if (hello.contains("head") && hello["head"].is_number_unsigned())
        info.head = hello["head"].get<uint64_t>();
      if (hello.contains("dirty") && hello["dirty"].is_array()) {
        info.dirty.emplace();
        for (const auto& e : hello["dirty"])
          if (e.is_array() && e.size() == 3 && e[0].is_number_unsigned() &&
              e[1].is_number_unsigned() && e[2].is_number_unsigned())
            info.dirty->push_back(
                Region{e[0].get<uint32_t>(), e[1].get<uint64_t>(), e[2].get<uint64_t>()});
      }
      if (hello.contains("repair") && hello["repair"].is_array()) {
        info.repair.emplace();
        for (const auto& e : hello["repair"])
          if (e.is_array() && e.size() == 3 && e[0].is_number_unsigned() &&
              e[1].is_number_unsigned() && e[2].is_number_unsigned())
            info.repair->push_back(
                Region{e[0].get<uint32_t>(), e[1].get<uint64_t>(), e[2].get<uint64_t>()});
      }
      if (hello.contains("lineage") && hello["lineage"].is_array())
        for (const auto& e : hello["lineage"])
          if (e.is_array() && e.size() == 2 && e[0].is_number_unsigned() &&
              e[1].is_number_unsigned())
            info.lineage.emplace_back(e[0].get<uint64_t>(), e[1].get<uint64_t>());
    }
    // Authentication (link_auth.hh) before anything about the group is decided or said.
    if (err.empty()) {
      GroupSecret gs = secrets_ ? secrets_(group_name) : GroupSecret{};
      const bool offered = hello.contains("auth");
      std::string why;
      if (!gs.error.empty()) {
        why = fmt::format("authentication: this side cannot read group {}'s secret: {}", group_name,
                          gs.error);
      } else if (offered) {
        const auto& a = hello["auth"];
        const bool well_formed = a.is_object() && a.value("method", "") == auth::kMethod &&
                                 a.contains("nonce") && a["nonce"].is_string() &&
                                 a["nonce"].get<std::string>().size() == 2 * auth::kNonceBytes &&
                                 auth::unhex(a["nonce"].get<std::string>());
        if (!well_formed) {
          why = "authentication failed: malformed HELLO (auth)";
        } else if (gs.known && gs.secret.empty()) {
          why = fmt::format(
              "authentication not configured here: group {} has no secret on this side, link {} of "
              "the primary has one (give the group here the same secret)",
              group_name, link_name);
        } else if (gs.known) {
          auth::Result r = auth::check_primary(conn, gs.secret, payload, 10000);
          if (!r.ok) why = r.error;
          if (!r.ok && !r.auth_failure) err = r.error;  // I/O: nothing to refuse
        }
      } else if (!gs.secret.empty()) {
        why = fmt::format(
            "authentication required: group {} has a secret on this side, link {} of the primary "
            "has none (set secret or secret_file on it)",
            group_name, link_name);
      }
      if (!why.empty() && err.empty()) {
        refused(peer, group_name, why);
        proto::send_frame(conn, proto::Frame::kError, why, 1000);
        return;
      }
      if (!err.empty()) {
        spdlog::warn("replication: group {}, {}: {}", group_name, peer, err);
        return;
      }
    }
    std::optional<Admission> admission;
    // The same link of the same primary log saying HELLO again means its previous connection
    // is dead, even if this side never heard (a half-open connection after a partition, which
    // would otherwise keep the group busy until the old connection times out, or forever
    // while it is idle): that connection is shut down and this one waits for the group.
    bool replaced = false;
    for (int tries = 0; err.empty() && !g; ++tries) {
      std::unique_lock lk(mu_);
      auto it = groups_.find(group_name);
      if (it == groups_.end()) {
        auto unserved = unserved_;
        lk.unlock();
        if (unserved) err = unserved(group_name, info);
        if (err.empty()) err = fmt::format("no replica group {} here", group_name);
      } else if (it->second->busy) {
        Group& cand = *it->second;
        if (cand.state.value().log_id != log_id || cand.link != link_name || tries == 500 ||
            stop_.load()) {
          err = fmt::format("group {} already has a primary connected", group_name);
        } else {
          if (!replaced && cand.fd >= 0) {
            spdlog::warn(
                "replication: group {}: link {} reconnects from {}: closing its previous "
                "connection",
                cand.name, link_name, peer);
            ::shutdown(cand.fd, SHUT_RDWR);
            replaced = true;
          }
          lk.unlock();
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      } else {
        Group& cand = *it->second;
        std::string mine, theirs;
        for (auto* b : cand.luns) mine += fmt::format(" {}", b->size());
        for (auto s : sizes) theirs += fmt::format(" {}", s);
        if (mine != theirs) {
          err = fmt::format("group {}: the primary's LUs have sizes{}, this secondary's{}", group_name, theirs, mine);
        } else if (cand.admit) {
          // The owner decides (generations, split brain, resync); the group is held busy
          // meanwhile so no second primary races in.
          cand.busy = true;
          auto admit = cand.admit;
          const SeqState st = cand.state.value();
          lk.unlock();
          Admission a = admit(info, st);
          lk.lock();
          if (!a.error.empty()) {
            err = a.error;
            cand.busy = false;
          } else {
            admission = std::move(a);
          }
        } else if (cand.state.value().log_id && cand.state.value().log_id != log_id) {
          err = fmt::format(
              "group {}: this secondary follows primary log {:016x}, the primary's log is {:016x}: a full "
              "resync is needed",
              group_name, cand.state.value().log_id, log_id);
        } else {
          cand.busy = true;
        }
        if (err.empty()) {
          cand.link = link_name;
          cand.stats.connected = true;
          cand.fd = sock;
          g = &cand;
        }
      }
    }
    if (!g) {
      fail(err);
    } else {
      if (admission) {
        const SeqState want{admission->applied, log_id};
        if (g->state.value().seq != want.seq || g->state.value().log_id != want.log_id) {
          if (int r = g->state.store(want); r < 0) {
            fail(fmt::format("{}: {}", g->state.path(), std::strerror(-r)));
            std::lock_guard lk(mu_);
            g->busy = false;
            g->stats.connected = false;
            conn_fds_.erase(std::remove(conn_fds_.begin(), conn_fds_.end(), sock), conn_fds_.end());
            return;
          }
          std::lock_guard lk(mu_);
          g->stats.applied = want.seq;
          g->stats.log_id = want.log_id;
        }
      } else if (g->state.value().log_id == 0) {
        g->state.store(SeqState{g->state.value().seq, log_id});
      }
      uint64_t applied = g->state.value().seq;
      spdlog::info("replication: group {}: primary {} connected, applied up to {}", g->name, peer, applied);
      nlohmann::json welcome = {{"applied", applied}, {"log_id", log_id}};
      std::optional<uint64_t> resync_target;
      bool resync_pending = false;
      if (admission && admission->resync) {
        nlohmann::json ranges = nlohmann::json::array();
        for (const Region& r : *admission->resync) ranges.push_back({r.lu, r.offset, r.length});
        welcome["resync"] = ranges;
        resync_pending = true;
        g->resyncing = true;
        std::lock_guard lk(mu_);
        g->stats.resyncing = true;
        g->stats.resync_bytes = 0;
      }
      int r = proto::send_frame(conn, proto::Frame::kWelcome, welcome.dump(), kIoTimeoutMs);
      uint64_t durable = applied;
      // A sync link is acknowledged as soon as the stream pauses (its writes wait for it), an
      // async link at most every async_ack_delay (1 ms): each acknowledgement flushes the LUs
      // and stores the applied sequence, which per small frame cost more than the frame's
      // writes. A BATCH_HELD frame (an async link holding writes) is acknowledged at the
      // next pause, as a sync link's.
      const std::chrono::microseconds ack_delay =
          async_link ? g->async_ack_delay : std::chrono::microseconds{0};
      bool held = false;  // a BATCH_HELD frame is unacknowledged: acknowledge at the pause
      size_t since_ack = 0;         // bytes of records applied since the last acknowledgement
      size_t resync_unflushed = 0;  // resync bytes written since then
      // Flush the LUs, store the applied sequence, then acknowledge it.
      auto ack_now = [&]() -> bool {
        if (auto e = make_durable(*g, applied); !e.empty()) {
          fail(e);
          return false;
        }
        durable = applied;
        bool resync_done = false;
        if (resync_target && applied >= *resync_target) {
          // Every range and every record up to the resync's end point is here, durably.
          resync_target.reset();
          resync_pending = false;
          g->resyncing = false;
          resync_done = true;
          if (g->on_consistent) g->on_consistent();
          spdlog::info("replication: group {}: resync done, consistent at {}", g->name, applied);
        }
        {
          // Counted before it is sent, with the resync's end: whoever sees the ACK, or the
          // resync done, also sees it counted.
          std::lock_guard lk(mu_);
          if (resync_done) g->stats.resyncing = false;
          ++g->stats.acks;
        }
        uint8_t ack[8];
        std::memcpy(ack, &durable, 8);
        r = proto::send_frame(conn, proto::Frame::kAck, std::span<const uint8_t>(ack, 8),
                              kIoTimeoutMs);
        since_ack = 0;
        resync_unflushed = 0;
        held = false;
        return r == 0;
      };
      auto unacked_since = std::chrono::steady_clock::now();
      while (r == 0 && !stop_.load()) {
        // Wait for the next frame; acknowledge what was applied when the stream pauses (an
        // async link's: once ack_delay has passed since the first unacknowledged frame), and
        // at least every kAckEveryBytes.
        pollfd p{sock, POLLIN, 0};
        int64_t wait_us = since_ack ? 0 : 200000;
        if (since_ack && ack_delay.count() && !held)
          wait_us =
              std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(
                                       unacked_since + ack_delay - std::chrono::steady_clock::now())
                                       .count());
        const timespec ts{time_t(wait_us / 1000000), long(wait_us % 1000000) * 1000};
        const int ready = conn.buffered() ? 1 : ::ppoll(&p, 1, &ts, nullptr);
        if (ready == 0) {
          if (since_ack && !ack_now()) break;
          continue;
        }
        if (ready > 0 && !conn.frame_ready()) continue;  // a TLS message that is no frame
        r = proto::recv_frame(conn, &type, &payload, kIoTimeoutMs);
        if (r < 0) break;
        if (type == proto::Frame::kError) {
          spdlog::warn("replication: group {}: primary {} says: {}", g->name, peer,
                       std::string(payload.begin(), payload.end()));
          break;
        }
        if (type == proto::Frame::kResync && resync_pending && !resync_target) {
          uint32_t lu = 0, flags = 0;
          uint64_t off = 0, len = 0;
          if (payload.size() > 16) {
            std::memcpy(&lu, payload.data(), 4);
            std::memcpy(&flags, payload.data() + 4, 4);
            std::memcpy(&off, payload.data() + 8, 8);
            len = payload.size() - 16;
            if (flags == proto::kResyncZeros && payload.size() == 24)
              std::memcpy(&len, payload.data() + 16, 8);
          }
          if (len == 0 || (flags & ~proto::kResyncZeros) || (flags && len > (64u << 20)) ||
              lu >= g->luns.size() || off > g->luns[lu]->size() ||
              len > g->luns[lu]->size() - off) {
            fail("malformed RESYNC frame");
            break;
          }
          std::string werr;
          if (flags) {
            RecordView z{};
            z.type = RecordType::kWriteZeroes;
            z.lu = lu;
            z.offset = off;
            z.length = uint32_t(len);
            werr = apply_record(*g->luns[lu], z);
          } else {
            iovec v{payload.data() + 16, len};
            IoRequest w{IoOp::kWrite};
            w.offset = off;
            w.length = len;
            w.iov = &v;
            w.iovcnt = 1;
            if (int wr = storage::submit_and_wait(*g->luns[lu], w); wr < 0)
              werr = fmt::format("writing {} at {}: {}", g->luns[lu]->describe(), off,
                                 std::strerror(-wr));
          }
          if (!werr.empty()) {
            fail("resync: " + werr);
            break;
          }
          {
            std::lock_guard lk(mu_);
            g->stats.resync_bytes += len;
          }
          // Resync data moves no sequence to acknowledge: it is flushed every kAckEveryBytes
          // and at RESYNC_DONE's acknowledgement, not at each pause of the stream.
          resync_unflushed += len;
          if (resync_unflushed >= kAckEveryBytes && !ack_now()) break;
          continue;
        }
        if (type == proto::Frame::kResyncDone && resync_pending && !resync_target &&
            payload.size() == 8) {
          uint64_t target = 0;
          std::memcpy(&target, payload.data(), 8);
          resync_target = target;
          if (!ack_now()) break;
          continue;
        }
        if ((type != proto::Frame::kBatch && type != proto::Frame::kBatchHeld) ||
            (resync_pending && !resync_target)) {
          fail("unexpected frame");
          break;
        }
        // One or more whole log batches, back to back (protocol 2); each carries its
        // length and checksum, checked by apply_batch.
        std::string e;
        size_t batches = 0;
        std::vector<std::vector<uint8_t>> replies;
        for (size_t off = 0; off < payload.size() && e.empty(); ++batches) {
          const auto rest = std::span<const uint8_t>(payload).subspan(off);
          const uint64_t len = RingLog::batch_length(rest);
          if (len == 0 || len > rest.size()) {
            e = fmt::format("a batch frame ends inside a log batch (at byte {} of {})", off, payload.size());
            break;
          }
          e = apply_batch(*g, rest.first(len), &applied, &replies);
          off += len;
        }
        if (!e.empty()) {
          fail(e);
          break;
        }
        for (const auto& rep : replies)
          if (r == 0) r = proto::send_frame(conn, proto::Frame::kVerifyResult, rep, kIoTimeoutMs);
        if (r < 0) break;
        if (since_ack == 0) unacked_since = std::chrono::steady_clock::now();
        since_ack += payload.size();
        held |= type == proto::Frame::kBatchHeld;
        {
          std::lock_guard lk(mu_);
          g->stats.batches += batches;
          g->stats.bytes += payload.size();
        }
        if (since_ack >= kAckEveryBytes && !ack_now()) break;
      }
      // Whatever was applied is made durable before the group is free again.
      if (applied != durable) make_durable(*g, applied);
      spdlog::info("replication: group {}: primary {} disconnected, applied up to {}", g->name, peer, applied);
      std::lock_guard lk(mu_);
      g->busy = false;
      g->fd = -1;
      g->stats.connected = false;
    }
  }
}

}  // namespace zuma::replication
