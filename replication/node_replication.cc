// zumad's replication wiring: config groups -> GroupLogs, SiteLinks, a ReplicaServer.
#include "replication/node_replication.hh"

#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace zuma::replication {

namespace {

std::string state_dir(const config::Config& cfg) { return cfg.node.data_dir + "/replication"; }

}  // namespace

std::unique_ptr<NodeReplication> NodeReplication::create(const config::Config& cfg) {
  std::unique_ptr<NodeReplication> n(new NodeReplication());
  n->cfg_ = cfg;
  if (n->cfg_.groups.empty()) return n;
  std::error_code ec;
  std::filesystem::create_directories(state_dir(cfg), ec);
  if (ec) throw std::runtime_error(fmt::format("cannot create {}: {}", state_dir(cfg), ec.message()));
  for (const config::Group& g : n->cfg_.groups) {
    if (g.secondary) {
      for (uint32_t i = 0; i < g.luns.size(); ++i)
        n->secondary_lu_[g.luns[i]] = {n->secondary_.size(), i};
      n->secondary_.push_back({&g, std::vector<storage::Backend*>(g.luns.size(), nullptr)});
      continue;
    }
    GroupLogOptions o;
    o.name = g.name;
    o.log = {g.log_path, g.log_size, true};
    auto log = GroupLog::open(o);
    if (!log) throw std::runtime_error(fmt::format("group '{}': {}", g.name, log.error()));
    for (const config::ReplicationLink& l : g.links) {
      LinkOptions lo;
      lo.name = l.name;
      lo.peer = l.peer;
      lo.mode = l.sync ? LinkMode::kSync : LinkMode::kAsync;
      lo.state_path = fmt::format("{}/{}.{}.link", state_dir(cfg), g.name, l.name);
      lo.sync_timeout_ms = int(l.sync_timeout_ms);
      lo.fallbehind_ios = l.fallbehind_ios;
      lo.fallbehind_bytes = l.fallbehind_bytes;
      lo.fallbehind_seconds = l.fallbehind_seconds;
      lo.on_fallbehind =
          l.on_full == "block" ? LinkOptions::Policy::kBlock : LinkOptions::Policy::kSync;
      if (auto r = (*log)->add_link(lo); !r)
        throw std::runtime_error(fmt::format("group '{}': link '{}': {}", g.name, l.name, r.error()));
    }
    for (uint32_t i = 0; i < g.luns.size(); ++i) n->primary_lu_[g.luns[i]] = {n->groups_.size(), i};
    n->groups_.push_back({&g, std::move(*log), std::vector<bool>(g.luns.size(), false)});
  }
  return n;
}

NodeReplication::~NodeReplication() { quiesce(); }

std::unique_ptr<storage::Backend> NodeReplication::layer(const std::string& lu,
                                                         std::unique_ptr<storage::Backend> lower) {
  auto it = primary_lu_.find(lu);
  if (it == primary_lu_.end()) return lower;
  auto [gi, index] = it->second;
  Primary& p = groups_[gi];
  if (started_ || p.attached[index])
    throw std::runtime_error(fmt::format("LU '{}' of group '{}' can only be opened at startup", lu,
                                         p.cfg->name));
  p.attached[index] = true;
  return p.log->attach(index, std::move(lower));
}

void NodeReplication::bind(const std::string& lu, storage::Backend* top) {
  auto it = secondary_lu_.find(lu);
  if (it == secondary_lu_.end()) return;
  if (started_)
    throw std::runtime_error(fmt::format("LU '{}' of secondary group '{}' can only be opened at startup",
                                         lu, secondary_[it->second.first].cfg->name));
  secondary_[it->second.first].luns[it->second.second] = top;
}

bool NodeReplication::read_only(const std::string& lu) const { return secondary_lu_.count(lu) != 0; }

void NodeReplication::start() {
  for (Primary& p : groups_) {
    const auto s0 = p.log->stats();
    if (auto r = p.log->start(); !r) throw std::runtime_error(r.error());
    const auto s = p.log->stats();
    spdlog::info("group {}: log {} ({} bytes), {} records replayed, next sequence {}, {} links",
                 p.cfg->name, p.cfg->log_path, s.capacity, s.replayed_records - s0.replayed_records,
                 s.next_seq, p.cfg->links.size());
    for (const auto& l : p.cfg->links)
      spdlog::info("  link {}: {} to {}", l.name, l.sync ? "sync" : "async", l.peer);
  }
  if (!secondary_.empty()) {
    auto rs = ReplicaServer::start(cfg_.node.replication_listen);
    if (!rs) throw std::runtime_error(rs.error());
    replica_ = std::move(*rs);
    for (Secondary& s : secondary_) {
      for (size_t i = 0; i < s.luns.size(); ++i)
        if (!s.luns[i])
          throw std::runtime_error(fmt::format("secondary group '{}': LU '{}' was not opened",
                                               s.cfg->name, s.cfg->luns[i]));
      ReplicaGroupOptions o;
      o.name = s.cfg->name;
      o.state_path = fmt::format("{}/{}.replica", state_dir(cfg_), s.cfg->name);
      o.luns = s.luns;
      if (auto r = replica_->add_group(o); !r) throw std::runtime_error(r.error());
      const auto st = replica_->stats(o.name);
      spdlog::info("group {}: secondary on {} (port {}), applied up to {}", o.name,
                   cfg_.node.replication_listen, replica_->port(), st ? st->applied : 0);
    }
  }
  started_ = true;
}

void NodeReplication::quiesce() {
  replica_.reset();  // joins its threads: nothing applies into the LUs afterwards
  for (Primary& p : groups_) p.log->stop_writer();
}

bool NodeReplication::drain_links(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    bool settled = true;
    for (Primary& p : groups_) {
      const uint64_t last = p.log->published_next() - 1;
      for (const auto& [name, st] : p.log->link_stats())
        if (st.state == LinkState::kConnected && st.acked < last) settled = false;
    }
    if (settled) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::vector<NodeReplication::GroupStatus> NodeReplication::status() const {
  std::vector<GroupStatus> out;
  for (const Primary& p : groups_) {
    GroupStatus g;
    g.name = p.cfg->name;
    g.luns = p.cfg->luns;
    g.log = p.log->stats();
    const auto stats = p.log->link_stats();
    for (const config::ReplicationLink& l : p.cfg->links) {
      GroupStatus::Link k{l.name, l.peer, l.sync, {}};
      for (const auto& [name, st] : stats)
        if (name == l.name) k.stats = st;
      g.links.push_back(std::move(k));
    }
    out.push_back(std::move(g));
  }
  for (const Secondary& s : secondary_) {
    GroupStatus g;
    g.name = s.cfg->name;
    g.secondary = true;
    g.luns = s.cfg->luns;
    if (replica_) g.replica = replica_->stats(s.cfg->name);
    out.push_back(std::move(g));
  }
  return out;
}

std::string NodeReplication::metrics_text() const {
  if (empty()) return "";
  std::string out;
  auto metric = [&](const char* name, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, help, name);
  };
  metric("zuma_replication_log_next_seq", "The next sequence number of a primary group's log.");
  for (const Primary& p : groups_)
    out += fmt::format("zuma_replication_log_next_seq{{group=\"{}\"}} {}\n", p.cfg->name,
                       p.log->published_next());
  metric("zuma_replication_log_used_bytes", "Bytes of a primary group's log holding records.");
  metric("zuma_replication_log_capacity_bytes", "The size of a primary group's log.");
  metric("zuma_replication_log_appended_bytes",
         "Bytes written to a primary group's log since zumad opened it (record headers included).");
  for (const Primary& p : groups_) {
    const GroupLogStats st = p.log->stats();
    out += fmt::format("zuma_replication_log_used_bytes{{group=\"{}\"}} {}\n", p.cfg->name,
                       st.used_bytes);
    out += fmt::format("zuma_replication_log_capacity_bytes{{group=\"{}\"}} {}\n", p.cfg->name,
                       st.capacity);
    out += fmt::format("zuma_replication_log_appended_bytes{{group=\"{}\"}} {}\n", p.cfg->name,
                       st.appended_bytes);
  }
  struct Field {
    const char* name;
    const char* help;
    double (*get)(const LinkStats&);
  };
  static constexpr Field kLink[] = {
      {"zuma_replication_link_connected", "1 while the site link is connected to its peer.",
       [](const LinkStats& s) { return s.state == LinkState::kConnected ? 1.0 : 0.0; }},
      {"zuma_replication_link_degraded", "1 while a sync link does not hold writes.",
       [](const LinkStats& s) { return s.degraded ? 1.0 : 0.0; }},
      {"zuma_replication_link_holding", "1 while writes wait for the link's acknowledgement.",
       [](const LinkStats& s) { return s.holding ? 1.0 : 0.0; }},
      {"zuma_replication_link_fell_behind", "1 while an async link is past its fall-behind limits.",
       [](const LinkStats& s) { return s.fell_behind ? 1.0 : 0.0; }},
      {"zuma_replication_link_acked_seq", "The highest sequence number the peer has durably.",
       [](const LinkStats& s) { return double(s.acked); }},
      {"zuma_replication_link_lag_records", "Records in the log the peer does not have yet.",
       [](const LinkStats& s) { return double(s.lag_records); }},
      {"zuma_replication_link_lag_bytes", "Log bytes the peer does not have yet.",
       [](const LinkStats& s) { return double(s.lag_bytes); }},
      {"zuma_replication_link_lag_seconds", "Age of the oldest record the peer does not have yet.",
       [](const LinkStats& s) { return s.lag_seconds; }},
  };
  std::vector<std::tuple<std::string, std::string, LinkStats>> links;
  for (const Primary& p : groups_)
    for (auto& [name, st] : p.log->link_stats()) links.emplace_back(p.cfg->name, name, st);
  for (const Field& f : kLink) {
    metric(f.name, f.help);
    for (const auto& [g, l, st] : links)
      out += fmt::format("{}{{group=\"{}\",link=\"{}\"}} {}\n", f.name, g, l, f.get(st));
  }
  if (replica_) {
    metric("zuma_replication_replica_applied_seq",
           "The highest sequence number a secondary group has applied durably.");
    for (const Secondary& s : secondary_)
      if (auto st = replica_->stats(s.cfg->name))
        out += fmt::format("zuma_replication_replica_applied_seq{{group=\"{}\"}} {}\n", s.cfg->name,
                           st->applied);
    metric("zuma_replication_replica_connected", "1 while a secondary group's primary is connected.");
    for (const Secondary& s : secondary_)
      if (auto st = replica_->stats(s.cfg->name))
        out += fmt::format("zuma_replication_replica_connected{{group=\"{}\"}} {}\n", s.cfg->name,
                           st->connected ? 1 : 0);
  }
  return out;
}

}  // namespace zuma::replication
