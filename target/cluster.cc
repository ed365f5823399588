#include "target/cluster.hh"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>

#include "scsi/logical_unit.hh"
#include "scsi/task_set.hh"
#include "storage/thread_name.hh"

namespace zuma::target {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

}  // namespace

uint8_t alua_state_from_name(const std::string& n) {
  if (n == "active_optimized") return scsi::alua::kActiveOptimized;
  if (n == "active_non_optimized") return scsi::alua::kActiveNonOptimized;
  if (n == "standby") return scsi::alua::kStandby;
  if (n == "unavailable") return scsi::alua::kUnavailable;
  if (n == "offline") return scsi::alua::kOffline;
  return 0xFF;
}

const char* alua_state_name(uint8_t s) {
  switch (s) {
    case scsi::alua::kActiveOptimized:
      return "active_optimized";
    case scsi::alua::kActiveNonOptimized:
      return "active_non_optimized";
    case scsi::alua::kStandby:
      return "standby";
    case scsi::alua::kUnavailable:
      return "unavailable";
    case scsi::alua::kOffline:
      return "offline";
    case scsi::alua::kTransitioning:
      return "transitioning";
  }
  return "unknown";
}

// One shared LU: the store of its reservations and its ALUA view.
struct Cluster::Shared : scsi::PrStore, scsi::AluaView, scsi::LogicalUnit::Peers {
  Cluster& c;
  std::string name, pr_key;
  std::weak_ptr<scsi::LogicalUnit> lu;

  Shared(Cluster& cl, std::string n)
      : c(cl), name(std::move(n)), pr_key(cl.key("lu/" + name + "/pr")) {}

  Commit commit(const std::string& doc, uint64_t version, uint64_t* now) override {
    if (c.fenced()) return Commit::kUnavailable;
    auto r = c.etcd_.put_if(pr_key, doc, static_cast<int64_t>(version));
    if (!r) {
      spdlog::warn("cluster: LU '{}': reservation change not committed: {}", name,
                   c.etcd_.last_error());
      return Commit::kUnavailable;
    }
    if (*r == 0) {
      c.pr_conflicts_.fetch_add(1);
      return Commit::kStale;
    }
    c.pr_changes_.fetch_add(1);
    *now = static_cast<uint64_t>(*r);
    return Commit::kDone;
  }
  bool load(std::string* doc, uint64_t* version) override {
    auto kvs = c.etcd_.get(pr_key);
    if (!kvs) return false;
    if (kvs->empty()) {
      doc->clear();
      *version = 0;
    } else {
      *doc = kvs->front().value;
      *version = static_cast<uint64_t>(kvs->front().mod_revision);
    }
    return true;
  }
  void wait_applied(uint64_t version) override { c.wait_applied(version); }
  const std::string& node() const override { return c.instance_; }

  void reset() override {
    if (c.fenced()) return;
    // lu/<name>/reset: who reset it; each put is a new revision the others apply and ack.
    static std::atomic<uint64_t> seq{0};
    const std::string k = c.key("lu/" + name + "/reset");
    if (!c.etcd_.put(k, fmt::format("{} {}", c.instance_, seq.fetch_add(1)))) return;
    auto kvs = c.etcd_.get(k);
    if (kvs && !kvs->empty()) c.wait_applied(static_cast<uint64_t>(kvs->front().mod_revision));
  }

  std::vector<scsi::AluaGroup> groups() const override { return c.groups(); }
  scsi::CmdResult set_states(const std::vector<std::pair<uint16_t, uint8_t>>& s) override {
    return c.set_states(s);
  }
};

Cluster::Cluster(ClusterOptions opt)
    : opt_(std::move(opt)),
      prefix_("/zuma/" + opt_.cluster + "/"),
      etcd_(opt_.etcd,
            std::chrono::milliseconds(std::max<uint32_t>(1000, opt_.lease_ttl * 1000 / 3))),
      state_(opt_.alua) {
  std::random_device rd;
  instance_ = fmt::format("{}/{:08x}{:08x}", opt_.node, rd(), rd());
  // An alua/ override set by SET TARGET PORT GROUPS outlives restarts.
  auto ov = etcd_.get(key(fmt::format("alua/{}", opt_.port_group)), false, &start_revision_);
  if (!ov)
    throw std::runtime_error(fmt::format("cluster '{}': etcd ({}): {}", opt_.cluster,
                                         fmt::join(opt_.etcd, ", "), etcd_.last_error()));
  if (!ov->empty()) {
    const uint8_t s = alua_state_from_name(ov->front().value);
    if (s != 0xFF) state_ = s;
  }
  // Another live node with this port group is a configuration error: two nodes would
  // answer for the same target port group and relative ports.
  auto mine = etcd_.get(key(fmt::format("members/{}", opt_.port_group)));
  if (mine && !mine->empty()) {
    std::string other;
    try {
      other = json::parse(mine->front().value).value("node", "");
    } catch (...) {
    }
    if (other != opt_.node)
      throw std::runtime_error(fmt::format(
          "cluster '{}': port_group {} is already taken by the live node '{}' (each node needs "
          "its own port_group and portal TPGTs)",
          opt_.cluster, opt_.port_group, other));
    // Our own previous run, its lease not expired yet: take over.
  }
  if (!register_member())
    throw std::runtime_error(
        fmt::format("cluster '{}': cannot register in etcd: {}", opt_.cluster, etcd_.last_error()));
  // Who is there now (the watch brings the changes from start_revision_ on).
  int64_t rev = 0;
  auto all = etcd_.get(key("members/"), true, &rev);
  if (!all)
    throw std::runtime_error(fmt::format("cluster '{}': {}", opt_.cluster, etcd_.last_error()));
  auto groups = etcd_.get(key("groups/"), true);
  std::lock_guard lk(mu_);
  if (groups)
    for (const auto& kv : *groups) {
      try {
        const json j = json::parse(kv.value);
        const uint16_t pg = static_cast<uint16_t>(std::stoul(kv.key.substr(kv.key.rfind('/') + 1)));
        ClusterMember& m = members_[pg];
        m.node = j.value("node", "");
        m.ports = j.value("ports", std::vector<uint16_t>{});
      } catch (...) {
      }
    }
  for (const auto& kv : *all) {
    try {
      const json j = json::parse(kv.value);
      const uint16_t pg = static_cast<uint16_t>(std::stoul(kv.key.substr(kv.key.rfind('/') + 1)));
      ClusterMember& m = members_[pg];
      m.node = j.value("node", "");
      m.instance = j.value("instance", "");
      m.ports = j.value("ports", std::vector<uint16_t>{});
      m.state = alua_state_from_name(j.value("state", "offline"));
      m.live = true;
    } catch (...) {
    }
  }
  start_revision_ = rev;
  spdlog::info(
      "cluster '{}': joined as {} (port group {}, {}), {} live node(s), lease {}s", opt_.cluster,
      instance_, opt_.port_group, alua_state_name(state_),
      std::count_if(members_.begin(), members_.end(), [](auto& m) { return m.second.live; }),
      opt_.lease_ttl);
}

Cluster::~Cluster() {
  stop();
}

bool Cluster::register_member() {
  auto lease = etcd_.grant(opt_.lease_ttl);
  if (!lease) return false;
  lease_ = *lease;
  put_member();
  // The port group is known even while its node is down (REPORT TARGET PORT GROUPS: offline).
  etcd_.put(key(fmt::format("groups/{}", opt_.port_group)),
            json{{"node", opt_.node}, {"ports", opt_.ports}}.dump());
  int64_t rev = 0;
  if (!etcd_.get(key("acks/"), true, &rev)) return false;
  // Everything up to now is what this node loads: it has "applied" it.
  return etcd_.put(key(fmt::format("acks/{}", opt_.port_group)), std::to_string(rev), lease_);
}

void Cluster::put_member() {
  uint8_t st;
  {
    std::lock_guard lk(mu_);
    st = state_;
  }
  etcd_.put(key(fmt::format("members/{}", opt_.port_group)),
            json{{"node", opt_.node},
                 {"instance", instance_},
                 {"ports", opt_.ports},
                 {"state", alua_state_name(st)}}
                .dump(),
            lease_);
}

std::string Cluster::lu_uuid(const std::string& name, uint64_t size, uint32_t block_size,
                             const std::string& mine) {
  const std::string k = key("lu/" + name + "/identity");
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto cur = etcd_.get(k);
    if (!cur)
      throw std::runtime_error(fmt::format("shared LU '{}': etcd: {}", name, etcd_.last_error()));
    if (!cur->empty()) {
      std::istringstream in(cur->front().value);
      std::string uuid;
      uint64_t s = 0;
      uint32_t b = 0;
      if (!(in >> uuid >> s >> b))
        throw std::runtime_error(
            fmt::format("shared LU '{}': damaged identity in etcd ({})", name, k));
      if (s != size || b != block_size)
        throw std::runtime_error(fmt::format(
            "shared LU '{}': the cluster has it with {} bytes in {}-byte blocks, this node's "
            "config says {} bytes in {}-byte blocks (every node must define it the same)",
            name, s, b, size, block_size));
      return uuid;
    }
    auto put = etcd_.put_if(k, fmt::format("{} {} {}", mine, size, block_size), 0);
    if (!put)
      throw std::runtime_error(fmt::format("shared LU '{}': etcd: {}", name, etcd_.last_error()));
    if (*put) return mine;
  }
  throw std::runtime_error(fmt::format("shared LU '{}': identity keeps changing in etcd", name));
}

void Cluster::attach(const std::string& name, const std::shared_ptr<scsi::LogicalUnit>& lu) {
  auto s = std::make_shared<Shared>(*this, name);
  s->lu = lu;
  std::string err;
  if (!lu->reservations().set_store(s.get(), &err))
    throw std::runtime_error(fmt::format("shared LU '{}': {}: {}", name, err, etcd_.last_error()));
  lu->set_alua(s);
  lu->set_peers(s);
  {
    std::lock_guard lk(mu_);
    lus_[name] = s;
  }
  lu->set_alua_state(fenced_ ? scsi::alua::kUnavailable : state_);
}

void Cluster::start() {
  keepalive_ = std::thread([this] {
    storage::name_this_thread("cluster-alive");
    keepalive_loop();
  });
  watcher_ = std::thread([this] {
    storage::name_this_thread("cluster-watch");
    watch_loop();
  });
}

void Cluster::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  etcd_.cancel_watch();
  if (keepalive_.joinable()) keepalive_.join();
  if (watcher_.joinable()) watcher_.join();
  if (lease_) etcd_.revoke(lease_);  // the others stop waiting for this node at once
}

std::vector<std::shared_ptr<Cluster::Shared>> Cluster::shared_lus() const {
  std::lock_guard lk(mu_);
  std::vector<std::shared_ptr<Shared>> out;
  for (const auto& [n, s] : lus_) out.push_back(s);
  return out;
}

std::shared_ptr<Cluster::Shared> Cluster::shared_lu(const std::string& name) const {
  std::lock_guard lk(mu_);
  auto it = lus_.find(name);
  return it == lus_.end() ? nullptr : it->second;
}

void Cluster::fence(bool on) {
  if (fenced_.exchange(on) == on) return;
  uint8_t st;
  {
    std::lock_guard lk(mu_);
    st = state_;
  }
  if (on)
    spdlog::error(
        "cluster '{}': lost etcd for too long: shared LUs unavailable through this node "
        "until it is back",
        opt_.cluster);
  else
    spdlog::info("cluster '{}': back in etcd: shared LUs {} again", opt_.cluster,
                 alua_state_name(st));
  for (auto& s : shared_lus())
    if (auto lu = s->lu.lock()) lu->set_alua_state(on ? scsi::alua::kUnavailable : st);
}

void Cluster::keepalive_loop() {
  using clock = std::chrono::steady_clock;
  const auto ttl = std::chrono::seconds(opt_.lease_ttl);
  auto last_ok = clock::now();
  std::unique_lock lk(mu_);
  while (!stopping_) {
    cv_.wait_for(lk, ttl / 4, [&] { return stopping_; });
    if (stopping_) break;
    lk.unlock();
    bool ok = false;
    if (fenced_) {
      // Back with a new lease: reload what changed while away, then serve again.
      if (register_member()) {
        reload_all();
        ok = true;
        fence(false);
      }
    } else {
      auto left = etcd_.keepalive(lease_);
      ok = left && *left > 0;
      if (left && *left == 0) {
        spdlog::error("cluster '{}': this node's lease expired", opt_.cluster);
        fence(true);
      }
    }
    if (ok) last_ok = clock::now();
    // Fence before the lease can run out at etcd: the others stop waiting for this node once
    // it has (wait_applied), and by then it must no longer serve with what it knows.
    if (!ok && clock::now() - last_ok > ttl * 2 / 3) fence(true);
    lk.lock();
  }
}

void Cluster::reload_all() {
  for (auto& s : shared_lus()) {
    std::string doc;
    uint64_t v = 0;
    if (!s->load(&doc, &v) || doc.empty()) continue;
    if (auto lu = s->lu.lock()) lu->reservations().apply_shared(doc, v, nullptr);
  }
}

void Cluster::watch_loop() {
  int64_t from = start_revision_ + 1;
  while (true) {
    {
      std::lock_guard lk(mu_);
      if (stopping_) return;
    }
    bool compacted = false;
    auto last = etcd_.watch(
        prefix_, from, [this](int64_t, const std::vector<EtcdEvent>& evs) { on_events(evs); },
        &compacted);
    if (last && *last + 1 > from) from = *last + 1;
    if (compacted) {
      int64_t rev = 0;
      if (etcd_.get(key("members/"), true, &rev)) {
        reload_all();
        from = rev + 1;
      }
    }
    std::unique_lock lk(mu_);
    if (stopping_) return;
    if (!last) spdlog::warn("cluster '{}': watch: {}", opt_.cluster, etcd_.last_error());
    cv_.wait_for(lk, 200ms, [&] { return stopping_; });
  }
}

void Cluster::on_events(const std::vector<EtcdEvent>& events) {
  int64_t applied = 0;
  for (const EtcdEvent& e : events) {
    if (!e.kv.key.starts_with(prefix_)) continue;
    const std::string rest = e.kv.key.substr(prefix_.size());
    const auto slash = rest.find('/');
    const std::string kind = rest.substr(0, slash);
    const std::string id = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (kind == "lu" && id.ends_with("/reset") && !e.deleted) {
      const std::string name = id.substr(0, id.size() - 6);
      const std::shared_ptr<Shared> s = shared_lu(name);
      applied = std::max(applied, e.kv.mod_revision);
      if (!s || e.kv.value.starts_with(instance_ + " ")) continue;
      if (auto lu = s->lu.lock()) {
        // Another node's LOGICAL UNIT RESET (SAM-5): every task here ends, every nexus
        // here gets 29h/03h. (Its RESERVE (6)/(10) release came through lu/<name>/pr.)
        for (const auto& set : lu->nexuses().all()) scsi::abort_tasks_of(*lu, *set, 0, nullptr);
        lu->unit_attentions().establish_all(scsi::Reason::kUaBusDeviceResetOccurred);
      }
      continue;
    }
    if (kind == "lu" && id.ends_with("/pr") && !e.deleted) {
      const std::string name = id.substr(0, id.size() - 3);
      const std::shared_ptr<Shared> s = shared_lu(name);
      if (!s) continue;
      auto lu = s->lu.lock();
      if (!lu) continue;
      std::vector<uint64_t> abort;
      lu->reservations().apply_shared(e.kv.value, static_cast<uint64_t>(e.kv.mod_revision), &abort);
      // PREEMPT AND ABORT through another node: this node's preempted nexuses' tasks end
      // (SPC-5: as by ABORT TASK SET from another I_T nexus, TAS applies).
      for (uint64_t nid : abort)
        if (auto set = lu->nexuses().find(nid)) scsi::abort_tasks_of(*lu, *set, 0, nullptr);
      applied = std::max(applied, e.kv.mod_revision);
      continue;
    }
    uint16_t pg = 0;
    try {
      pg = static_cast<uint16_t>(std::stoul(id));
    } catch (...) {
      continue;
    }
    if (kind == "members") {
      std::string lost;
      ClusterMember next;
      bool changed = false;
      {
        std::lock_guard lk(mu_);
        next = members_[pg];
      }
      if (e.deleted) {
        lost = next.live ? next.instance : "";
        changed = next.live;
        next.live = false;
        next.state = scsi::alua::kOffline;
      } else {
        try {
          const json j = json::parse(e.kv.value);
          const uint8_t st = alua_state_from_name(j.value("state", "offline"));
          changed = !next.live || st != next.state;
          next.node = j.value("node", "");
          next.instance = j.value("instance", "");
          next.ports = j.value("ports", std::vector<uint16_t>{});
          next.state = st;
          next.live = true;
        } catch (...) {
        }
      }
      // SPC-5 5.16.2.5: a change of any group's state is reported to every I_T nexus
      // (ASYMMETRIC ACCESS STATE CHANGED), before anyone can see the new state (a SET
      // TARGET PORT GROUPS waiting in set_states() returns once it is published). This
      // node's own changes were reported by set_alua_state().
      if (changed && pg != opt_.port_group) {
        for (auto& s : shared_lus())
          if (auto lu = s->lu.lock())
            lu->unit_attentions().establish_all(scsi::Reason::kUaAsymmetricStateChanged);
      }
      {
        std::lock_guard lk(mu_);
        members_[pg] = next;
        if (e.deleted) acks_.erase(pg);
      }
      cv_.notify_all();
      if (!lost.empty() && pg != opt_.port_group) {
        spdlog::warn("cluster '{}': node {} (port group {}) is gone: its lease expired or it left",
                     opt_.cluster, lost, pg);
        // Its RESERVE (6)/(10) reservations go with it (SPC-2: I_T nexus loss).
        for (auto& s : shared_lus())
          if (auto lu = s->lu.lock()) lu->reservations().node_lost(lost);
      }
    } else if (kind == "acks" && !e.deleted) {
      {
        std::lock_guard lk(mu_);
        try {
          acks_[pg] = std::max<int64_t>(acks_[pg], std::stoll(e.kv.value));
        } catch (...) {
        }
      }
      cv_.notify_all();
    } else if (kind == "alua" && pg == opt_.port_group && !e.deleted) {
      const uint8_t st = alua_state_from_name(e.kv.value);
      if (st != 0xFF) set_local_state(st);
    }
  }
  if (applied > 0 && !fenced_) {
    // Acknowledge: the nodes that committed these revisions wait for it (wait_applied).
    etcd_.put(key(fmt::format("acks/{}", opt_.port_group)), std::to_string(applied), lease_);
  }
}

void Cluster::set_local_state(uint8_t st) {
  {
    std::lock_guard lk(mu_);
    if (state_ == st) return;
    state_ = st;
  }
  spdlog::info("cluster '{}': this node's ALUA state is now {}", opt_.cluster, alua_state_name(st));
  if (!fenced_)
    for (auto& s : shared_lus())
      if (auto lu = s->lu.lock()) lu->set_alua_state(st);
  put_member();
}

void Cluster::wait_applied(uint64_t revision) {
  // Every other live member must have acknowledged `revision`. A member that does not
  // answer is given its lease time (it fences itself sooner than that: keepalive_loop).
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(opt_.lease_ttl) + 1s;
  std::unique_lock lk(mu_);
  const bool done = cv_.wait_until(lk, deadline, [&] {
    if (stopping_) return true;
    for (const auto& [pg, m] : members_) {
      if (pg == opt_.port_group || !m.live) continue;
      auto it = acks_.find(pg);
      if (it == acks_.end() || it->second < static_cast<int64_t>(revision)) return false;
    }
    return true;
  });
  if (!done) {
    ack_timeouts_.fetch_add(1);
    std::string late;
    for (const auto& [pg, m] : members_)
      if (pg != opt_.port_group && m.live && (!acks_.count(pg) || acks_[pg] < int64_t(revision)))
        late += (late.empty() ? "" : ", ") + m.instance;
    spdlog::warn("cluster '{}': revision {} not acknowledged by {} within the lease time",
                 opt_.cluster, revision, late);
  }
}

std::vector<scsi::AluaGroup> Cluster::groups() const {
  std::lock_guard lk(mu_);
  // This node's group is listed even before its own member key came back through the watch.
  std::map<uint16_t, ClusterMember> all = members_;
  all.try_emplace(opt_.port_group);
  std::vector<scsi::AluaGroup> out;
  for (const auto& [pg, m] : all) {
    const bool me = pg == opt_.port_group;
    scsi::AluaGroup g;
    g.id = pg;
    g.relative_port_ids = me ? opt_.ports : m.ports;
    if (me)
      g.state = fenced_ ? scsi::alua::kUnavailable : state_;
    else
      g.state = m.live ? m.state : scsi::alua::kOffline;
    g.preferred = g.state == scsi::alua::kActiveOptimized;
    out.push_back(std::move(g));
  }
  return out;
}

scsi::CmdResult Cluster::set_states(const std::vector<std::pair<uint16_t, uint8_t>>& states) {
  if (fenced_) return scsi::Reason::kNotReadyPortUnavailable;
  for (const auto& [pg, st] : states) {
    if (!etcd_.put(key(fmt::format("alua/{}", pg)), alua_state_name(st)))
      return scsi::Reason::kNotReadyPortUnavailable;
    if (pg == opt_.port_group) {
      set_local_state(st);
      continue;
    }
    // The owner applies it and republishes its member key; wait for that (bounded).
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, std::chrono::seconds(opt_.lease_ttl), [&] {
      auto it = members_.find(pg);
      return stopping_ || it == members_.end() || !it->second.live || it->second.state == st;
    });
  }
  return scsi::CmdResult::good();
}

std::map<uint16_t, ClusterMember> Cluster::members() const {
  std::lock_guard lk(mu_);
  return members_;
}

std::string Cluster::metrics_text() const {
  std::string out;
  out += "# HELP zuma_cluster_fenced 1 while this node cannot reach etcd and serves no shared LU\n";
  out += "# TYPE zuma_cluster_fenced gauge\n";
  out += fmt::format("zuma_cluster_fenced{{cluster=\"{}\"}} {}\n", opt_.cluster, fenced_ ? 1 : 0);
  out += "# HELP zuma_cluster_node_live 1 for each port group whose node holds a lease\n";
  out += "# TYPE zuma_cluster_node_live gauge\n";
  for (const auto& [pg, m] : members())
    out +=
        fmt::format("zuma_cluster_node_live{{cluster=\"{}\",port_group=\"{}\",node=\"{}\"}} {}\n",
                    opt_.cluster, pg, m.node, m.live ? 1 : 0);
  out += "# TYPE zuma_cluster_pr_changes_total counter\n";
  out += fmt::format("zuma_cluster_pr_changes_total{{cluster=\"{}\"}} {}\n", opt_.cluster,
                     pr_changes_.load());
  out += "# TYPE zuma_cluster_pr_conflicts_total counter\n";
  out += fmt::format("zuma_cluster_pr_conflicts_total{{cluster=\"{}\"}} {}\n", opt_.cluster,
                     pr_conflicts_.load());
  out += "# TYPE zuma_cluster_ack_timeouts_total counter\n";
  out += fmt::format("zuma_cluster_ack_timeouts_total{{cluster=\"{}\"}} {}\n", opt_.cluster,
                     ack_timeouts_.load());
  return out;
}

}  // namespace zuma::target
