// zumad's replication wiring: config groups -> GroupLogs, SiteLinks, a ReplicaServer.
#include "replication/node_replication.hh"
#include "storage/thread_name.hh"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace zuma::replication {

namespace {

std::string state_dir(const config::Config& cfg) { return cfg.node.data_dir + "/replication"; }

}  // namespace

namespace {

std::optional<RoleState> load_role(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("role") || !j["role"].is_string())
    throw std::runtime_error(fmt::format("{}: not a replication role file", path));
  RoleState r;
  r.primary = j["role"] == "primary";
  r.discard = j.value("discard", false);
  r.consistent = j.value("consistent", true);
  for (const auto& e : j.value("lineage", nlohmann::json::array()))
    r.lineage.emplace_back(e.at(0).get<uint64_t>(), e.at(1).get<uint64_t>());
  r.resync_snapshot = j.value("resync_snapshot", "");
  for (const auto& e : j.value("resync", nlohmann::json::array()))
    r.resync.push_back(
        Region{e.at(0).get<uint32_t>(), e.at(1).get<uint64_t>(), e.at(2).get<uint64_t>()});
  return r;
}

uint64_t bytes_of(const std::vector<Region>& v) {
  uint64_t n = 0;
  for (const Region& r : v) n += r.length;
  return n;
}

}  // namespace

std::string NodeReplication::role_path(const Group& g) const {
  return fmt::format("{}/{}.role", state_dir(cfg_), g.cfg->name);
}

std::string NodeReplication::store_role(Group& g, const RoleState& r) {
  nlohmann::json lineage = nlohmann::json::array(), resync = nlohmann::json::array();
  for (const auto& [id, end] : r.lineage) lineage.push_back({id, end});
  for (const Region& x : r.resync) resync.push_back({x.lu, x.offset, x.length});
  const nlohmann::json j = {{"role", r.primary ? "primary" : "secondary"},
                            {"lineage", lineage},
                            {"discard", r.discard},
                            {"consistent", r.consistent},
                            {"resync", resync}};
  const std::string path = role_path(g), tmp = path + ".tmp", text = j.dump(1) + "\n";
  // Replaced atomically and durably: written, synced, renamed, the directory synced.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fmt::format("{}: {}", tmp, std::strerror(errno));
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
    return fmt::format("{}: {}", path, std::strerror(errno));
  if (int d = ::open(state_dir(cfg_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
    ::fsync(d);
    ::close(d);
  }
  std::lock_guard lk(mu_);
  g.role = r;
  return "";
}

std::unique_ptr<NodeReplication> NodeReplication::create(const config::Config& cfg) {
  std::unique_ptr<NodeReplication> n(new NodeReplication());
  n->cfg_ = cfg;
  if (n->cfg_.groups.empty()) return n;
  std::error_code ec;
  std::filesystem::create_directories(state_dir(cfg), ec);
  if (ec) throw std::runtime_error(fmt::format("cannot create {}: {}", state_dir(cfg), ec.message()));
  n->groups_.reserve(n->cfg_.groups.size());
  for (const config::Group& g : n->cfg_.groups) {
    Group grp;
    grp.cfg = &g;
    grp.attached.assign(g.luns.size(), false);
    grp.tops.assign(g.luns.size(), nullptr);
    grp.role.primary = !g.secondary;
    if (auto r = load_role(fmt::format("{}/{}.role", state_dir(cfg), g.name))) {
      if (r->primary != !g.secondary)
        spdlog::info("group {}: {} here since a role change (the configuration says {})", g.name,
                     r->primary ? "primary" : "secondary", g.secondary ? "secondary" : "primary");
      grp.role = *r;
    }
    if (!grp.role.primary && cfg.node.replication_listen.empty())
      throw std::runtime_error(
          fmt::format("group '{}' is secondary here since a role change, and "
                      "node.replication_listen is not set",
                      g.name));
    if (!g.log_path.empty()) {
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
        lo.on_fallbehind = l.on_full == "block"    ? LinkOptions::Policy::kBlock
                           : l.on_full == "bitmap" ? LinkOptions::Policy::kBitmap
                                                   : LinkOptions::Policy::kSync;
        lo.bitmap_path = fmt::format("{}/{}.{}.bitmap", state_dir(cfg), g.name, l.name);
        lo.secret = l.secret;
        lo.secret_file = l.secret_file;
        lo.tls = l.tls;
        lo.resync_rate = l.resync_rate;
        if (auto r = (*log)->add_link(lo); !r)
          throw std::runtime_error(
              fmt::format("group '{}': link '{}': {}", g.name, l.name, r.error()));
      }
      grp.log = std::move(*log);
      grp.log->set_lineage(grp.role.lineage);
      if (!grp.role.primary) grp.log->set_logging(false);
    } else if (grp.role.primary) {
      throw std::runtime_error(fmt::format("group '{}' is primary here but has no log", g.name));
    }
    for (uint32_t i = 0; i < g.luns.size(); ++i) n->lu_[g.luns[i]] = {n->groups_.size(), i};
    n->groups_.push_back(std::move(grp));
  }
  return n;
}

NodeReplication::~NodeReplication() { quiesce(); }

NodeReplication::Group* NodeReplication::find(const std::string& name) {
  for (Group& g : groups_)
    if (g.cfg->name == name) return &g;
  return nullptr;
}

std::unique_ptr<storage::Backend> NodeReplication::layer(const std::string& lu,
                                                         std::unique_ptr<storage::Backend> lower) {
  auto it = lu_.find(lu);
  if (it == lu_.end()) return lower;
  auto [gi, index] = it->second;
  Group& g = groups_[gi];
  if (!g.log) return lower;
  if (started_ || g.attached[index])
    throw std::runtime_error(
        fmt::format("LU '{}' of group '{}' can only be opened at startup", lu, g.cfg->name));
  g.attached[index] = true;
  return g.log->attach(index, std::move(lower));
}

void NodeReplication::bind(const std::string& lu, storage::Backend* top) {
  auto it = lu_.find(lu);
  if (it == lu_.end()) return;
  if (started_)
    throw std::runtime_error(fmt::format("LU '{}' of group '{}' can only be opened at startup", lu,
                                         groups_[it->second.first].cfg->name));
  groups_[it->second.first].tops[it->second.second] = top;
}

bool NodeReplication::read_only(const std::string& lu) const {
  auto it = lu_.find(lu);
  if (it == lu_.end()) return false;
  std::lock_guard lk(mu_);
  return !groups_[it->second.first].role.primary;
}

void NodeReplication::set_protected(Group& g, bool on) {
  if (!protect_) return;
  for (const auto& lu : g.cfg->luns) protect_(lu, on);
}

void NodeReplication::serve_secondary(Group& g) {
  for (size_t i = 0; i < g.tops.size(); ++i)
    if (!g.tops[i])
      throw std::runtime_error(
          fmt::format("secondary group '{}': LU '{}' was not opened", g.cfg->name, g.cfg->luns[i]));
  ReplicaGroupOptions o;
  o.name = g.cfg->name;
  o.state_path = fmt::format("{}/{}.replica", state_dir(cfg_), g.cfg->name);
  o.luns = g.tops;
  o.admit = [this, &g](const HelloInfo& h, const SeqState& st) { return admit(g, h, st); };
  o.on_consistent = [this, &g] {
    RoleState r;
    {
      std::lock_guard lk(mu_);
      r = g.role;
    }
    r.consistent = true;
    r.resync.clear();
    const std::string snap = std::exchange(r.resync_snapshot, "");
    if (auto e = store_role(g, r); !e.empty()) spdlog::error("group {}: {}", g.cfg->name, e);
    // Rolled forward: the image before the resync is no longer needed.
    if (!snap.empty() && snapshots_.remove)
      for (const auto& lu : g.cfg->luns)
        if (auto e = snapshots_.remove(lu, snap); !e.empty())
          spdlog::warn("group {}: LU {}: removing snapshot {}: {}", g.cfg->name, lu, snap, e);
  };
  o.on_bookmark = [this, &g](const std::string& name, uint64_t seq, bool consistent) {
    if (!consistent) {
      spdlog::warn(
          "group {}: bookmark '{}' (record {}) reached during a resync: no snapshots (the image is "
          "not "
          "that point yet)",
          g.cfg->name, name, seq);
      return;
    }
    // Every record before it is applied (synchronously, through each LU's snapshot layer).
    for (const auto& lu : g.cfg->luns) {
      std::string err = snapshots_.check ? snapshots_.check(lu) : "no snapshots here";
      if (err.empty()) err = snapshots_.create(lu, name);
      if (err.empty())
        spdlog::info("group {}: bookmark '{}' (record {}): snapshot of LU {}", g.cfg->name, name,
                     seq, lu);
      else
        spdlog::warn("group {}: bookmark '{}' (record {}): no snapshot of LU {}: {}", g.cfg->name,
                     name, seq, lu, err);
    }
  };
  o.on_bookmark_remove = [this, &g](const std::string& name, uint64_t seq) {
    // The primary's bookmark schedule let this bookmark go: so do the copies here.
    for (const auto& lu : g.cfg->luns) {
      std::string err = snapshots_.check ? snapshots_.check(lu) : "no snapshots here";
      if (err.empty()) err = snapshots_.remove(lu, name);
      if (err.empty())
        spdlog::info("group {}: bookmark '{}' removed (record {}): snapshot of LU {} deleted",
                     g.cfg->name, name, seq, lu);
      else
        spdlog::warn("group {}: bookmark '{}' removed (record {}): LU {}: {}", g.cfg->name, name,
                     seq, lu, err);
    }
  };
  if (auto r = replica_->add_group(o); !r) throw std::runtime_error(r.error());
}

std::expected<NodeReplication::Group*, std::string> NodeReplication::find_primary(
    const std::string& group, std::string_view instead) {
  Group* g = find(group);
  if (!g) return std::unexpected(fmt::format("no group '{}'", group));
  std::lock_guard lk(mu_);
  if (!g->role.primary)
    return std::unexpected(fmt::format("group {} is secondary here: {}", group, instead));
  return g;
}

std::expected<uint64_t, std::string> NodeReplication::bookmark(const std::string& group,
                                                               const std::string& name) {
  std::lock_guard change(change_mu_);
  auto found = find_primary(group, "take bookmarks on its primary");
  if (!found) return std::unexpected(found.error());
  Group* g = *found;
  if (!snapshots_.check) return std::unexpected(std::string("snapshots are not available"));
  for (const auto& lu : g->cfg->luns)
    if (auto e = snapshots_.check(lu); !e.empty())
      return std::unexpected(fmt::format(
          "group {}: LU {}: {} (a bookmark snapshots every LU of the group)", group, lu, e));
  // New writes to every LU wait in the replication layer and those in flight finish: the
  // record then divides the group's writes into before and after, and so do the snapshots
  // (taken below, in each LU's snapshot layer).
  std::expected<uint64_t, std::string> seq = std::unexpected(std::string());
  std::string errors;
  if (!g->log->hold_writes(std::chrono::seconds(30))) {
    seq = std::unexpected(fmt::format("group {}: writes did not finish", group));
  } else {
    seq = g->log->append_bookmark(name);
    if (seq)
      for (const auto& lu : g->cfg->luns)
        if (auto e = snapshots_.create(lu, name); !e.empty())
          errors += fmt::format("{}LU {}: {}", errors.empty() ? "" : "; ", lu, e);
  }
  g->log->release_writes();
  if (!seq) return seq;
  if (!errors.empty())
    return std::unexpected(fmt::format("group {}: bookmark '{}' logged as record {}, but: {}",
                                       group, name, *seq, errors));
  spdlog::info("group {}: bookmark '{}' at record {}", group, name, *seq);
  return seq;
}

// Where a connecting primary stands relative to this secondary (docs/REPLICATION.md
// "Roles"): the same generation, a later one that began where this side is (a switchover),
// one that diverged from this side (split brain unless this side was told to discard), or
// none in common.
Admission NodeReplication::admit(Group& g, const HelloInfo& h, const SeqState& st) {
  RoleState role;
  {
    std::lock_guard lk(mu_);
    role = g.role;
  }
  const std::string& name = g.cfg->name;
  auto refuse = [&](std::string msg, bool split) {
    if (split) {
      std::lock_guard lk(mu_);
      g.split_brain = msg;
    }
    spdlog::error("group {}: primary {} refused: {}", name, h.peer, msg);
    return Admission{std::move(msg), 0, std::nullopt};
  };
  auto admitted = [&](uint64_t applied, std::optional<std::vector<Region>> resync) {
    std::lock_guard lk(mu_);
    g.split_brain.clear();
    return Admission{"", applied, std::move(resync)};
  };
  // Resyncing: the ranges go in the WELCOME, and the image is inconsistent until the primary's
  // RESYNC_DONE point is applied. A consistent image is snapshotted first (where the LUs have
  // snapshots), so a failure mid-resync still leaves it; the snapshot goes once consistent.
  auto resync = [&](RoleState next, std::vector<Region> ranges, uint64_t applied, bool protect,
                    const std::string& why) -> Admission {
    next.lineage = h.lineage;
    next.discard = false;
    next.consistent = false;
    next.resync = std::move(ranges);
    next.resync_snapshot.clear();
    if (protect && snapshots_.check) {
      const std::string snap = fmt::format("pre-resync-{}", st.seq);
      for (const auto& lu : g.cfg->luns) {
        std::string err = snapshots_.check(lu);
        if (err.empty()) err = snapshots_.create(lu, snap);
        if (err.empty()) {
          next.resync_snapshot = snap;
        } else {
          spdlog::warn(
              "group {}: LU {}: no snapshot before the resync ({}): its image is inconsistent "
              "until the "
              "resync ends",
              name, lu, err);
        }
      }
    }
    if (auto err = store_role(g, next); !err.empty()) return refuse(err, false);
    spdlog::warn("group {}: {}: {} ranges ({} bytes) come from primary {}{}", name, why,
                 next.resync.size(), bytes_of(next.resync), h.peer,
                 next.resync_snapshot.empty()
                     ? ""
                     : fmt::format("; the image before is snapshot {}", next.resync_snapshot));
    return admitted(applied, next.resync);
  };
  auto everything = [&] {
    std::vector<Region> all;
    for (uint32_t i = 0; i < g.tops.size(); ++i) all.push_back(Region{i, 0, g.tops[i]->size()});
    return all;
  };
  if (st.log_id == 0)  // a new replica: whatever its LUs hold, the primary's image replaces it
    return resync(role, everything(), h.head ? h.head - 1 : 0, false, "initial full sync");
  // Regions an online verify found different (`group verify --repair`) join any resync.
  const std::vector<Region> repair = h.repair ? *h.repair : std::vector<Region>{};
  auto with_repair = [&](std::vector<Region> v) {
    v.insert(v.end(), repair.begin(), repair.end());
    return merge_regions(std::move(v));
  };
  if (st.log_id == h.log_id) {
    // This side has records the primary's log no longer has: it lost its log's tail in a
    // crash after sending it (an async link ships from the page cache), or was restored from
    // an older copy. Its next records would reuse those numbers and this side skip them, so
    // the two would differ for good: a split brain, resolved only by an administrator.
    if (st.seq > h.last) {
      if (role.discard)
        return resync(role, everything(), h.head ? h.head - 1 : 0, true,
                      fmt::format("full resync: this side had records {}..{} that the primary "
                                  "lost, and was discarded",
                                  h.last + 1, st.seq));
      return refuse(
          fmt::format("split brain: group {}: this side has records up to {} of log {:016x}, the "
                      "primary's log ends at {}: the primary lost records it had sent (its log's "
                      "tail in a crash, or it was restored from an older copy). Resolve with "
                      "`zumactl group discard {}` on the side whose changes are to go",
                      name, st.seq, st.log_id, h.last, name),
          true);
    }
    if (!role.consistent && !repair.empty()) {
      RoleState next = role;
      next.resync = with_repair(role.resync);
      if (auto err = store_role(g, next); !err.empty()) return refuse(err, false);
      return admitted(st.seq, next.resync);
    }
    if (!role.consistent) return admitted(st.seq, role.resync);  // an interrupted resync, again
    if (st.seq + 1 < h.head && h.dirty)
      return resync(
          role, with_repair(*h.dirty), h.head - 1, true,
          fmt::format(
              "resync of the primary's dirty regions (bitmap mode): its log starts at record "
              "{}, this side has up to {}",
              h.head, st.seq));
    if (st.seq + 1 < h.head)
      return resync(
          role, everything(), h.head - 1, true,
          fmt::format("full resync: the primary's log starts at record {}, this side has up to {}",
                      h.head, st.seq));
    if (!repair.empty())
      return resync(
          role, with_repair({}), st.seq, true,
          fmt::format("repair of {} ranges online verify found different", repair.size()));
    return admitted(st.seq, std::nullopt);
  }
  // Another generation. Either the primary's began from the one this side follows (its
  // lineage names it), or this side's own began from the primary's (this side was promoted
  // from it and has since been told to discard).
  std::optional<uint64_t> branch;
  for (const auto& [id, end] : h.lineage)
    if (id == st.log_id) branch = end;
  const bool theirs = branch.has_value();
  if (!branch)
    for (const auto& [id, end] : role.lineage)
      if (id == h.log_id) branch = end;
  if (!branch && role.discard)
    return resync(
        role, everything(), h.head ? h.head - 1 : 0, true,
        "full resync: no generation in common with the primary, and this side was discarded");
  if (!branch)
    return refuse(
        fmt::format(
            "group {}: this side follows log {:016x}, the primary's log {:016x} has no "
            "generation in common with it: a full resync is needed (`zumactl group discard {}` "
            "here allows it)",
            name, st.log_id, h.log_id, name),
        false);
  const uint64_t e = *branch;
  if (theirs && st.seq < e && role.discard)
    return resync(
        role, everything(), h.head ? h.head - 1 : 0, true,
        "full resync: this side lacks records of an earlier generation, and was discarded");
  if (theirs && st.seq < e)
    return refuse(
        fmt::format("group {}: this side has records up to {} of log {:016x}, the primary's "
                    "generation began after record {}: the records between are in no log",
                    name, st.seq, st.log_id, e),
        false);
  if (!theirs && h.last < e)
    return refuse(
        fmt::format("group {}: the primary's log {:016x} ends at {}, before record {} where this "
                    "side's generation began",
                    name, h.log_id, h.last, e),
        false);
  RoleState next = role;
  next.lineage = h.lineage;
  next.discard = false;
  if (st.seq > e) {
    // This side has changes the primary lacks: records e+1..st.seq of its own log.
    if (!role.discard)
      return refuse(
          fmt::format("split brain: group {}: this side has records {}..{} of log {:016x} that the "
                      "primary (log {:016x}, at {}) does not; the two diverged after record {}. "
                      "Resolve with `zumactl group discard {}` on the side whose changes are to go",
                      name, e + 1, st.seq, st.log_id, h.log_id, h.last, e, name),
          true);
    if (!g.log || g.log->log_id() != st.log_id)
      return refuse(
          fmt::format("group {}: this side's changes after record {} are not in its log: a full "
                      "resync is needed",
                      name, e),
          false);
    auto regions = g.log->regions_after(e);
    if (!regions) return refuse(fmt::format("{}: a full resync is needed", regions.error()), false);
    return resync(role, std::move(*regions), e, true,
                  fmt::format("discarding this side's records {}..{}", e + 1, st.seq));
  }
  if (auto err = store_role(g, next); !err.empty()) return refuse(err, false);
  spdlog::info("group {}: following the primary's new generation (log {:016x}) from record {}",
               name, h.log_id, e);
  return admitted(e, std::nullopt);
}

void NodeReplication::start() {
  if (!groups_.empty() && !cfg_.node.replication_listen.empty()) {
    auto rs = ReplicaServer::start(cfg_.node.replication_listen, cfg_.node.replication_tls);
    if (!rs) throw std::runtime_error(rs.error());
    replica_ = std::move(*rs);
    // Each HELLO's group secret as it is now: a secret_file is read again, so a new secret
    // is used at the next connection without a restart.
    replica_->set_secrets([this](const std::string& group) {
      GroupSecret s;
      for (const config::Group& g : cfg_.groups) {
        if (g.name != group) continue;
        s.known = true;
        if (g.secret_file.empty()) {
          s.secret = g.secret;
        } else if (auto r = config::read_secret_file(g.secret_file); r) {
          s.secret = std::move(*r);
        } else {
          s.error = r.error();
        }
      }
      return s;
    });
    // A primary connecting to a group that is primary here too: two primaries.
    replica_->set_unserved([this](const std::string& group, const HelloInfo& h) -> std::string {
      Group* g = find(group);
      if (!g) return "";
      std::lock_guard lk(mu_);
      if (!g->role.primary) return "";
      g->split_brain = fmt::format(
          "split brain: group {} is primary here (log {:016x}) and at {} too (log {:016x}, at {}); "
          "demote or "
          "discard one side",
          group, g->log ? g->log->log_id() : 0, h.peer, h.log_id, h.last);
      spdlog::error("{}", g->split_brain);
      return g->split_brain;
    });
  }
  for (Group& g : groups_) {
    if (!g.role.primary) {
      serve_secondary(g);
      const auto st = replica_->stats(g.cfg->name);
      spdlog::info("group {}: secondary on {} (port {}), applied up to {}{}", g.cfg->name,
                   cfg_.node.replication_listen, replica_->port(), st ? st->applied : 0,
                   g.role.consistent ? "" : " (inconsistent: a resync is unfinished)");
      continue;
    }
    const auto s0 = g.log->stats();
    if (auto r = g.log->start(); !r) throw std::runtime_error(r.error());
    const auto s = g.log->stats();
    spdlog::info("group {}: log {} ({} bytes), {} records replayed, next sequence {}, {} links",
                 g.cfg->name, g.cfg->log_path, s.capacity, s.replayed_records - s0.replayed_records,
                 s.next_seq, g.cfg->links.size());
    for (const auto& l : g.cfg->links)
      spdlog::info("  link {}: {} to {}", l.name, l.sync ? "sync" : "async", l.peer);
  }
  started_ = true;
  // Bookmark schedules: the first of each is due one interval from now.
  bool schedules = false;
  const auto now = std::chrono::steady_clock::now();
  for (Group& g : groups_) {
    for (const auto& b : g.cfg->bookmarks)
      g.bookmark_due.push_back(now + std::chrono::seconds(b.every));
    schedules |= !g.cfg->bookmarks.empty() && g.log;
  }
  if (schedules)
    scheduler_ = std::thread([this] {
      storage::name_this_thread("bookmarks");
      schedule_loop();
    });
}

void NodeReplication::quiesce() {
  stop_background();
  replica_.reset();  // joins its threads: nothing applies into the LUs afterwards
  for (Group& g : groups_)
    if (g.log) g.log->stop_writer();
}

bool NodeReplication::drain_links(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    bool settled = true;
    for (Group& g : groups_) {
      if (!g.log || !g.log->logging()) continue;
      const uint64_t last = g.log->published_next() - 1;
      for (const auto& [name, st] : g.log->link_stats())
        if (st.state == LinkState::kConnected && st.acked < last) settled = false;
    }
    if (settled) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string NodeReplication::stop_primary(Group& g, bool discard, bool force,
                                          std::chrono::milliseconds wait) {
  const std::string& name = g.cfg->name;
  if (!replica_)
    return fmt::format(
        "group {}: node.replication_listen is not set, so it cannot be secondary here", name);
  stop_verify(g, discard ? "the group was discarded here" : "the group was demoted here");
  set_protected(g, true);
  g.log->set_logging(false);
  auto undo = [&](std::string why) {
    g.log->set_logging(true);
    set_protected(g, false);
    return why;
  };
  if (!g.log->wait_idle(std::chrono::seconds(30)))
    return undo(fmt::format("group {}: writes did not finish", name));
  const uint64_t last = g.log->published_next() - 1;
  if (!discard) {
    // A planned switchover loses nothing: every link has every record first.
    const auto deadline = std::chrono::steady_clock::now() + wait;
    std::string behind;
    for (;;) {
      behind.clear();
      for (const auto& [ln, st] : g.log->link_stats())
        if (st.acked < last)
          behind +=
              fmt::format("{}link {} has records up to {} of {} ({})", behind.empty() ? "" : "; ",
                          ln, st.acked, last, to_string(st.state));
      if (behind.empty() || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!behind.empty() && !force)
      return undo(fmt::format(
          "group {}: {}; its peer would lack them. Bring the link up, or demote with --force "
          "to leave them behind",
          name, behind));
    if (!behind.empty()) spdlog::warn("group {}: demoted with --force: {}", name, behind);
  }
  g.log->stop_links();
  g.log->stop_writer();
  if (auto e = g.log->flush_lowers(); !e.empty()) return undo(e);
  // This side now holds its own log's records up to `last`; kept in the log, so that they
  // can be named if the other side never saw them (split brain, discard).
  auto st = SeqStateFile::open(fmt::format("{}/{}.replica", state_dir(cfg_), name));
  if (!st) return st.error();
  if (int r = st->store(SeqState{last, g.log->log_id()}); r < 0)
    return fmt::format("{}: {}", st->path(), std::strerror(-r));
  RoleState r;
  {
    std::lock_guard lk(mu_);
    r = g.role;
    g.split_brain.clear();
  }
  r.primary = false;
  r.discard = discard;
  r.consistent = true;
  r.resync.clear();
  if (auto e = store_role(g, r); !e.empty()) return e;
  serve_secondary(g);
  spdlog::warn("group {}: {} at record {} of log {:016x}: secondary now", name,
               discard ? "discarding" : "demoted", last, g.log->log_id());
  return "";
}

void NodeReplication::stop_verify(Group& g, const std::string& why) {
  std::shared_ptr<Verifier> v;
  {
    std::lock_guard lk(verify_mu_);
    v = g.verifier;
  }
  if (!v) return;
  v->cancel(why);
  v->join();
}

void NodeReplication::stop_background() {
  {
    std::lock_guard lk(sched_mu_);
    sched_stop_ = true;
  }
  sched_cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  for (Group& g : groups_) stop_verify(g, "zumad is stopping");
}

namespace {

// "<prefix>-YYYYmmddTHHMMSSZ" (UTC), as a LU's scheduled snapshots are named.
std::string scheduled_name(const std::string& prefix, std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return fmt::format("{}-{}", prefix, buf);
}

}  // namespace

std::string NodeReplication::remove_bookmark(Group& g, const std::string& name) {
  // In the log first: each secondary deletes its copies when it gets there, in order with
  // the bookmarks that follow.
  auto seq =
      g.log->append_marker(RecordType::kBookmarkRemove,
                           std::span(reinterpret_cast<const uint8_t*>(name.data()), name.size()));
  if (!seq) return seq.error();
  std::string errors;
  for (const auto& lu : g.cfg->luns)
    if (auto e = snapshots_.remove(lu, name); !e.empty())
      errors += fmt::format("{}LU {}: {}", errors.empty() ? "" : "; ", lu, e);
  spdlog::info("group {}: bookmark '{}' removed (record {}){}", g.cfg->name, name, *seq,
               errors.empty() ? "" : ": " + errors);
  return errors;
}

void NodeReplication::run_schedules(Group& g, std::chrono::steady_clock::time_point now) {
  for (size_t i = 0; i < g.cfg->bookmarks.size(); ++i) {
    if (now < g.bookmark_due[i]) continue;
    const config::BookmarkSchedule& s = g.cfg->bookmarks[i];
    g.bookmark_due[i] = now + std::chrono::seconds(s.every);
    {
      std::lock_guard lk(mu_);
      if (!g.role.primary) continue;  // the primary of the moment takes them
    }
    const std::string name = scheduled_name(s.name, std::chrono::system_clock::now());
    if (auto seq = bookmark(g.cfg->name, name); !seq) {
      spdlog::warn("group {}: scheduled bookmark ({}) failed: {}", g.cfg->name, s.name,
                   seq.error());
      continue;
    }
    g.bookmarks_taken->fetch_add(1);
    // Retention: this schedule's bookmarks, oldest first (the first LU's snapshots; every LU
    // has the same ones).
    if (!snapshots_.list) continue;
    std::vector<std::string> mine;
    for (auto& n : snapshots_.list(g.cfg->luns.front()))
      if (n.starts_with(s.name + "-")) mine.push_back(std::move(n));
    for (size_t k = 0; k + s.keep < mine.size(); ++k) {
      std::lock_guard change(change_mu_);
      {
        std::lock_guard lk(mu_);
        if (!g.role.primary) break;
      }
      if (auto e = remove_bookmark(g, mine[k]); !e.empty())
        spdlog::warn("group {}: retention of bookmark '{}': {}", g.cfg->name, mine[k], e);
      else
        g.bookmarks_pruned->fetch_add(1);
    }
  }
}

void NodeReplication::schedule_loop() {
  std::unique_lock lk(sched_mu_);
  while (!sched_stop_) {
    auto next = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (const Group& g : groups_)
      for (const auto& due : g.bookmark_due) next = std::min(next, due);
    sched_cv_.wait_until(lk, next);
    if (sched_stop_) break;
    lk.unlock();
    const auto now = std::chrono::steady_clock::now();
    for (Group& g : groups_)
      if (!g.bookmark_due.empty() && g.log) run_schedules(g, now);
    lk.lock();
  }
}

std::expected<uint64_t, std::string> NodeReplication::verify(const std::string& group,
                                                             const std::string& link, bool repair) {
  std::lock_guard change(change_mu_);
  auto found = find_primary(group, "verify it from its primary");
  if (!found) return std::unexpected(found.error());
  Group* g = *found;
  std::vector<SiteLink*> links;
  for (SiteLink* l : g->log->links())
    if (link.empty() || l->name() == link) links.push_back(l);
  if (links.empty() && !link.empty())
    return std::unexpected(fmt::format("group {} has no link '{}'", group, link));
  std::lock_guard lk(verify_mu_);
  if (g->verifier && g->verifier->running())
    return std::unexpected(
        fmt::format("group {}: verify {:016x} is running", group, g->verifier->status().id));
  auto v = Verifier::start(*g->log, std::move(links), repair);
  if (!v) return std::unexpected(v.error());
  g->verifier = std::move(*v);
  return g->verifier->status().id;
}

std::string NodeReplication::demote(const std::string& group, bool force,
                                    std::chrono::milliseconds wait) {
  std::lock_guard change(change_mu_);
  Group* g = find(group);
  if (!g) return fmt::format("no group '{}'", group);
  if (!g->role.primary) return fmt::format("group {} is secondary here already", group);
  return stop_primary(*g, false, force, wait);
}

std::string NodeReplication::set_resync_rate(const std::string& group, const std::string& link,
                                             uint64_t bytes_per_second) {
  std::lock_guard change(change_mu_);
  Group* g = find(group);
  if (!g) return fmt::format("no group '{}'", group);
  if (g->log)
    for (SiteLink* l : g->log->links())
      if (l->name() == link) {
        l->set_resync_rate(bytes_per_second);
        return "";
      }
  return fmt::format("group {} has no link '{}' here", group, link);
}

std::string NodeReplication::discard(const std::string& group) {
  std::lock_guard change(change_mu_);
  Group* g = find(group);
  if (!g) return fmt::format("no group '{}'", group);
  if (g->role.primary) {
    if (!g->log) return fmt::format("group {} has no log here", group);
    return stop_primary(*g, true, true, std::chrono::milliseconds(0));
  }
  RoleState r;
  {
    std::lock_guard lk(mu_);
    r = g->role;
    g->split_brain.clear();
  }
  r.discard = true;
  if (auto e = store_role(*g, r); !e.empty()) return e;
  spdlog::warn(
      "group {}: this side's own changes will be overwritten by the next primary that connects",
      group);
  return "";
}

std::string NodeReplication::promote(const std::string& group, bool force) {
  std::lock_guard change(change_mu_);
  Group* g = find(group);
  if (!g) return fmt::format("no group '{}'", group);
  RoleState r;
  {
    std::lock_guard lk(mu_);
    r = g->role;
  }
  if (r.primary) return fmt::format("group {} is primary here already", group);
  if (!g->log)
    return fmt::format(
        "group {} has no log here: give it `log:` in the configuration to promote it", group);
  if (!r.consistent && !force)
    return fmt::format(
        "group {}: this side is inconsistent (a resync of {} bytes is unfinished): it holds a mix "
        "of two images{}. Promote with --force only if it is the last copy",
        group, bytes_of(r.resync),
        r.resync_snapshot.empty()
            ? ""
            : fmt::format("; snapshot {} of each LU holds the image before the resync",
                          r.resync_snapshot));
  if (auto rm = replica_->remove_group(group, force); !rm)
    return fmt::format("{}: demote the primary first (or promote with --force to cut it off)",
                       rm.error());
  auto st = SeqStateFile::open(fmt::format("{}/{}.replica", state_dir(cfg_), group));
  if (!st) {
    serve_secondary(*g);
    return st.error();
  }
  const SeqState at = st->value();
  if (at.log_id) r.lineage.emplace_back(at.log_id, at.seq);
  g->log->set_lineage(r.lineage);
  // The log is emptied under a new id before the role says primary: a restart in between
  // finds a secondary with an empty log, never old records to replay over newer data.
  if (auto s = g->log->start_generation(at.seq + 1); !s) {
    serve_secondary(*g);
    return s.error();
  }
  r.primary = true;
  r.discard = false;
  r.consistent = true;
  r.resync.clear();
  if (auto e = store_role(*g, r); !e.empty()) return e;
  {
    std::lock_guard lk(mu_);
    g->split_brain.clear();
  }
  set_protected(*g, false);
  spdlog::warn("group {}: promoted: primary of generation {:016x}, from record {} of log {:016x}{}",
               group, g->log->log_id(), at.seq, at.log_id, force ? " (forced)" : "");
  return "";
}

std::vector<NodeReplication::GroupStatus> NodeReplication::status() const {
  std::vector<GroupStatus> out;
  for (const Group& grp : groups_) {
    GroupStatus g;
    g.name = grp.cfg->name;
    g.luns = grp.cfg->luns;
    RoleState role;
    {
      std::lock_guard lk(mu_);
      role = grp.role;
      g.split_brain = grp.split_brain;
    }
    g.secondary = !role.primary;
    g.consistent = role.consistent;
    if (!role.consistent) g.resync_pending = bytes_of(role.resync);
    if (role.primary) {
      g.log = grp.log->stats();
      g.generation = grp.log->log_id();
      const auto stats = grp.log->link_stats();
      for (const config::ReplicationLink& l : grp.cfg->links) {
        GroupStatus::Link k{l.name, l.peer, l.sync, {}};
        for (const auto& [name, st] : stats)
          if (name == l.name) k.stats = st;
        if (k.stats.state == LinkState::kSplitBrain && g.split_brain.empty())
          g.split_brain = k.stats.last_error;
        g.links.push_back(std::move(k));
      }
      // A peer that refused this side as a second primary and then took its records (it was
      // demoted or discarded): the split brain it reported is over.
      for (const auto& k : g.links)
        if (k.stats.state == LinkState::kConnected || k.stats.state == LinkState::kResyncing) {
          g.split_brain.clear();
          std::lock_guard lk(mu_);
          grp.split_brain.clear();
        }
    } else if (replica_) {
      g.replica = replica_->stats(grp.cfg->name);
      if (g.replica) g.generation = g.replica->log_id;
      g.listener_refusal = replica_->last_refusal();
    }
    {
      std::lock_guard lk(verify_mu_);
      if (grp.verifier) g.verify = grp.verifier->status();
    }
    g.bookmarks_taken = grp.bookmarks_taken->load();
    g.bookmarks_pruned = grp.bookmarks_pruned->load();
    out.push_back(std::move(g));
  }
  return out;
}

std::string NodeReplication::metrics_text() const {
  if (empty()) return "";
  std::string out;
  auto metric = [&](const char* name, const char* help, const char* type = "gauge") {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  const auto groups = status();
  metric("zuma_replication_group_primary",
         "1 while the group is primary on this node, 0 while secondary.");
  for (const auto& g : groups)
    out += fmt::format("zuma_replication_group_primary{{group=\"{}\"}} {}\n", g.name,
                       g.secondary ? 0 : 1);
  metric("zuma_replication_group_split_brain", "1 while a split brain is reported for the group.");
  for (const auto& g : groups)
    out += fmt::format("zuma_replication_group_split_brain{{group=\"{}\"}} {}\n", g.name,
                       g.split_brain.empty() ? 0 : 1);
  metric("zuma_replication_group_consistent",
         "0 while this side's image is a resync's mix of two images.");
  for (const auto& g : groups)
    out += fmt::format("zuma_replication_group_consistent{{group=\"{}\"}} {}\n", g.name,
                       g.consistent ? 1 : 0);
  std::vector<const Group*> primaries;
  for (const Group& g : groups_)
    if (g.log && g.log->logging()) primaries.push_back(&g);
  metric("zuma_replication_log_next_seq", "The next sequence number of a primary group's log.");
  for (const Group* p : primaries)
    out += fmt::format("zuma_replication_log_next_seq{{group=\"{}\"}} {}\n", p->cfg->name,
                       p->log->published_next());
  metric("zuma_replication_log_used_bytes", "Bytes of a primary group's log holding records.");
  metric("zuma_replication_log_capacity_bytes", "The size of a primary group's log.");
  metric("zuma_replication_log_appended_bytes",
         "Bytes written to a primary group's log since zumad opened it (record headers included).");
  for (const Group* p : primaries) {
    const GroupLogStats st = p->log->stats();
    out += fmt::format("zuma_replication_log_used_bytes{{group=\"{}\"}} {}\n", p->cfg->name,
                       st.used_bytes);
    out += fmt::format("zuma_replication_log_capacity_bytes{{group=\"{}\"}} {}\n", p->cfg->name,
                       st.capacity);
    out += fmt::format("zuma_replication_log_appended_bytes{{group=\"{}\"}} {}\n", p->cfg->name,
                       st.appended_bytes);
  }
  // Counters of the log's writer: how records got in (batches of the writer thread or
  // appends on the submitting reactor), its fdatasyncs and its flushes to free space.
  static constexpr std::pair<const char*, const char*> kLogCounters[] = {
      {"zuma_replication_log_records_total", "Records appended to a primary group's log."},
      {"zuma_replication_log_batches_total",
       "Batches (one header, one write) appended to the log."},
      {"zuma_replication_log_inline_appends_total",
       "Records appended by the submitting reactor itself while the log's writer was idle."},
      {"zuma_replication_log_syncs_total", "fdatasync calls on the log (FUA writes, flushes)."},
      {"zuma_replication_log_pressure_flushes_total",
       "Flushes of the group's LUs to free log space (the log past flush_at_percent, or full)."},
  };
  std::vector<GroupLogStats> log_stats;
  for (const Group* p : primaries) log_stats.push_back(p->log->stats());
  for (size_t f = 0; f < std::size(kLogCounters); ++f) {
    metric(kLogCounters[f].first, kLogCounters[f].second, "counter");
    for (size_t i = 0; i < primaries.size(); ++i) {
      const GroupLogStats& st = log_stats[i];
      const uint64_t v[] = {st.appended_records, st.appended_batches, st.inline_appends, st.syncs,
                            st.pressure_flushes};
      out += fmt::format("{}{{group=\"{}\"}} {}\n", kLogCounters[f].first, primaries[i]->cfg->name,
                         v[f]);
    }
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
      {"zuma_replication_link_resync_bytes",
       "Bytes of ranges the link's current or last resync sends.",
       [](const LinkStats& s) { return double(s.resync_total); }},
      {"zuma_replication_link_resync_sent_bytes", "Bytes of those ranges sent so far.",
       [](const LinkStats& s) { return double(s.resync_done); }},
      {"zuma_replication_link_bitmap", "1 while the link is in bitmap mode (on_full: bitmap).",
       [](const LinkStats& s) { return s.bitmap ? 1.0 : 0.0; }},
      {"zuma_replication_link_bitmap_regions", "64 KiB regions in the link's dirty-region map.",
       [](const LinkStats& s) { return double(s.bitmap_regions); }},
      {"zuma_replication_link_resyncs", "Resyncs the link has begun since zumad started.",
       [](const LinkStats& s) { return double(s.resyncs); }},
      {"zuma_replication_link_resync_rate_bytes",
       "The most bytes per second a resync over the link sends (0: no limit).",
       [](const LinkStats& s) { return double(s.resync_rate); }},
  };
  std::vector<std::tuple<std::string, std::string, LinkStats>> links;
  for (const Group* p : primaries)
    for (auto& [name, st] : p->log->link_stats()) links.emplace_back(p->cfg->name, name, st);
  for (const Field& f : kLink) {
    metric(f.name, f.help);
    for (const auto& [g, l, st] : links)
      out += fmt::format("{}{{group=\"{}\",link=\"{}\"}} {}\n", f.name, g, l, f.get(st));
  }
  metric("zuma_replication_group_scheduled_bookmarks",
         "Bookmarks the group's bookmark schedules took here since zumad started.");
  for (const auto& g : groups)
    out += fmt::format("zuma_replication_group_scheduled_bookmarks{{group=\"{}\"}} {}\n", g.name,
                       g.bookmarks_taken);
  metric("zuma_replication_group_pruned_bookmarks",
         "Scheduled bookmarks removed here by retention (keep) since zumad started.");
  for (const auto& g : groups)
    out += fmt::format("zuma_replication_group_pruned_bookmarks{{group=\"{}\"}} {}\n", g.name,
                       g.bookmarks_pruned);
  metric("zuma_replication_verify_running", "1 while an online verify of the group runs.");
  for (const auto& g : groups)
    if (g.verify)
      out += fmt::format("zuma_replication_verify_running{{group=\"{}\"}} {}\n", g.name,
                         g.verify->state == VerifyStatus::State::kRunning ? 1 : 0);
  metric("zuma_replication_verify_regions",
         "Regions the running or last online verify compared with the link's peer.");
  for (const auto& g : groups)
    if (g.verify)
      for (const auto& l : g.verify->links)
        out += fmt::format("zuma_replication_verify_regions{{group=\"{}\",link=\"{}\"}} {}\n",
                           g.name, l.name, l.compared);
  metric("zuma_replication_verify_mismatched_regions",
         "Regions whose checksums differed from the link's peer's in the running or last verify.");
  for (const auto& g : groups)
    if (g.verify)
      for (const auto& l : g.verify->links)
        out += fmt::format(
            "zuma_replication_verify_mismatched_regions{{group=\"{}\",link=\"{}\"}} {}\n", g.name,
            l.name, l.mismatched.size());
  out +=
      "# HELP zuma_replication_link_auth_failures_total Connections of the link refused by TLS or "
      "authentication (either side).\n# TYPE zuma_replication_link_auth_failures_total counter\n";
  for (const auto& [g, l, st] : links)
    out += fmt::format("zuma_replication_link_auth_failures_total{{group=\"{}\",link=\"{}\"}} {}\n",
                       g, l, st.auth_failures);
  if (replica_) {
    out +=
        "# HELP zuma_replication_listener_auth_failures_total Primaries' connections the "
        "replication "
        "listener refused by TLS or authentication.\n# TYPE "
        "zuma_replication_listener_auth_failures_total counter\n";
    out += fmt::format("zuma_replication_listener_auth_failures_total {}\n",
                       replica_->auth_failures());
    metric("zuma_replication_replica_verify_regions",
           "Regions a secondary group hashed for its primary's online verifies since start.");
    for (const auto& g : groups)
      if (g.replica)
        out += fmt::format("zuma_replication_replica_verify_regions{{group=\"{}\"}} {}\n", g.name,
                           g.replica->verify_regions);
    metric("zuma_replication_replica_verify_mismatched_regions",
           "Of those, regions whose checksum differed from the primary's.");
    for (const auto& g : groups)
      if (g.replica)
        out +=
            fmt::format("zuma_replication_replica_verify_mismatched_regions{{group=\"{}\"}} {}\n",
                        g.name, g.replica->verify_mismatched);
    metric("zuma_replication_replica_applied_seq",
           "The highest sequence number a secondary group has applied durably.");
    for (const auto& g : groups)
      if (g.replica)
        out += fmt::format("zuma_replication_replica_applied_seq{{group=\"{}\"}} {}\n", g.name,
                           g.replica->applied);
    metric("zuma_replication_replica_connected", "1 while a secondary group's primary is connected.");
    for (const auto& g : groups)
      if (g.replica)
        out += fmt::format("zuma_replication_replica_connected{{group=\"{}\"}} {}\n", g.name,
                           g.replica->connected ? 1 : 0);
    metric("zuma_replication_replica_resync_bytes",
           "Range bytes a secondary group received in its current or last resync.");
    for (const auto& g : groups)
      if (g.replica)
        out += fmt::format("zuma_replication_replica_resync_bytes{{group=\"{}\"}} {}\n", g.name,
                           g.replica->resync_bytes);
  }
  return out;
}

}  // namespace zuma::replication
