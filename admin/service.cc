#include "admin/service.hh"

#include <fcntl.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "scsi/logical_unit.hh"
#include "storage/sync_io.hh"

namespace zuma::admin {

namespace {

using LuMap = std::map<std::string, std::shared_ptr<scsi::LogicalUnit>>;

std::string str(const Json& a, const char* key, const std::string& dflt = "") {
  return a.contains(key) ? a[key].get<std::string>() : dflt;
}

config::Target* find_target(config::Config& c, const std::string& iqn) {
  for (auto& t : c.targets)
    if (t.iqn == iqn) return &t;
  throw CommandError(fmt::format("no target '{}'", iqn));
}

// "file:line:column: key: message" -> "key: message" (the text was our own rendering).
std::string without_location(const config::ConfigError& e) {
  std::string w = e.what();
  const std::string prefix = e.where.str() + ": ";
  if (w.starts_with(prefix)) w.erase(0, prefix.size());
  return w;
}

// "HOST:PORT" / "[V6]:PORT" / "HOST" -> portal (the config parser checks it further).
config::Portal portal_from(const std::string& address) {
  config::Portal p;
  std::string port;
  if (address.starts_with("[")) {
    const size_t close = address.find(']');
    if (close == std::string::npos) throw CommandError("missing ']' after the IPv6 address");
    p.host = address.substr(1, close - 1);
    if (close + 1 < address.size()) {
      if (address[close + 1] != ':') throw CommandError("expected [IPv6]:PORT");
      port = address.substr(close + 2);
    }
  } else {
    const size_t colon = address.find(':');
    p.host = address.substr(0, colon);
    if (colon != std::string::npos) port = address.substr(colon + 1);
  }
  if (!port.empty()) {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) ||
        std::stoul(port) == 0 || std::stoul(port) > 65535)
      throw CommandError(fmt::format("'{}': the port must be 1..65535", address));
    p.port = uint16_t(std::stoul(port));
  }
  return p;
}

std::string prom_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// 310.4 MiB: for rates and progress (one decimal, binary units).
std::string human_size_approx(double b) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  size_t u = 0;
  while (b >= 1024 && u + 1 < std::size(kUnits)) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, kUnits[u]);
}

// 8388608 -> "8MiB", 1000 -> "1000 bytes": exact, as the config writes sizes.
std::string human_size(uint64_t b) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {1ull << 40, "TiB"}, {1ull << 30, "GiB"}, {1ull << 20, "MiB"}, {1ull << 10, "KiB"}};
  for (auto [unit, name] : kUnits)
    if (b >= unit && b % unit == 0) return fmt::format("{}{}", b / unit, name);
  return fmt::format("{} bytes", b);
}

double avg_latency_us(const target::IoStats& s) {
  return s.commands ? double(s.latency_sum_us) / double(s.commands) : 0.0;
}

}  // namespace

std::optional<target::ChapPolicy> chap_policy(const std::optional<config::Chap>& c) {
  if (!c) return std::nullopt;
  target::ChapPolicy p;
  p.initiator = {c->user, c->secret};
  if (!c->mutual_user.empty()) p.target = target::ChapSecret{c->mutual_user, c->mutual_secret};
  // Strongest first, whatever order the administrator wrote.
  for (const char* name : {"SHA3-256", "SHA-256", "SHA-1", "MD5"})
    if (c->algorithms.empty() ||
        std::find(c->algorithms.begin(), c->algorithms.end(), name) != c->algorithms.end())
      p.allowed.push_back(*target::chap_algorithm_from_name(name));
  return p;
}

std::shared_ptr<const target::TargetDef> make_target_def(const config::Target& t,
                                                         const std::vector<config::Portal>& portals,
                                                         const LuMap& lus) {
  target::TargetDef td;
  td.iqn = t.iqn;
  td.alias = t.alias;
  td.chap = chap_policy(t.chap);
  auto table = std::make_shared<scsi::LunTable>();
  for (const auto& p : portals)
    if (std::none_of(table->port_groups.begin(), table->port_groups.end(),
                     [&](const auto& g) { return g.id == p.tpgt; }))
      table->port_groups.push_back({p.tpgt, {p.tpgt}});
  for (const auto& l : t.luns) table->luns.emplace(l.id, lus.at(l.name));
  for (const auto& e : t.acl) {
    target::AclRule rule;
    rule.initiator = e.initiator;
    for (const auto& n : e.networks) rule.networks.push_back(*target::Network::parse(n));
    if (!e.luns.empty()) {
      auto mapped = std::make_shared<scsi::LunTable>();
      mapped->port_groups = table->port_groups;
      for (const auto& [lun, name] : e.luns) mapped->luns.emplace(lun, lus.at(name));
      rule.luns = std::move(mapped);
    }
    td.acl.push_back(std::move(rule));
  }
  td.luns = std::move(table);
  return std::make_shared<const target::TargetDef>(std::move(td));
}

Service::Service(config::Config running, target::Server& server, LuMap lus, LuFactory factory)
    : running_(std::move(running)),
      server_(server),
      lus_(std::move(lus)),
      factory_(std::move(factory)),
      started_(std::chrono::steady_clock::now()),
      last_stats_at_(started_) {}

LuMap Service::lus() {
  std::lock_guard lock(mu_);
  return lus_;
}

config::Config Service::copy_running() {
  std::lock_guard lock(mu_);
  return running_;
}

Json Service::apply(config::Config next, bool force) {
  std::lock_guard lock(mu_);
  // 1. The same checks as a file: render, parse.
  const std::string path = running_.path;
  try {
    next = config::parse(config::to_yaml(next), path.empty() ? "running" : path);
  } catch (const config::ConfigError& e) {
    throw CommandError(without_location(e));
  }
  next.path = path;
  const config::ConfigDiff d = config::diff(running_, next);
  std::vector<std::string> restart = d.restart_needed;
  if (!d.resync_rates_changed.empty() && !resync_rate_hook_) restart.push_back("groups");
  if (!restart.empty()) {
    std::string keys;
    for (auto& k : restart) keys += (keys.empty() ? "" : ", ") + k;
    throw CommandError(fmt::format("cannot change {} while zumad runs (restart it)", keys));
  }
  if (d.empty()) return Json{{"message", "no changes"}};

  // 2. Sessions that the change would take something away from.
  const auto sessions = server_.sessions();
  std::set<std::string> gone_lus(d.luns_removed.begin(), d.luns_removed.end());
  gone_lus.insert(d.luns_changed.begin(), d.luns_changed.end());
  if (!force) {
    for (const auto& s : sessions) {
      for (const auto& lu : s.lus)
        if (gone_lus.count(lu))
          throw CommandError(
              fmt::format("LU '{}' is in use by session {} ({}); log it out first or use --force",
                          lu, s.id, s.initiator));
      if (std::find(d.targets_removed.begin(), d.targets_removed.end(), s.target) !=
          d.targets_removed.end())
        throw CommandError(
            fmt::format("target '{}' has session {} ({}); log it out first or use --force",
                        s.target, s.id, s.initiator));
    }
  }

  // 3. Open the new LUs (nothing is changed yet if one fails).
  LuMap lus = lus_;
  for (const auto& name : gone_lus) lus.erase(name);
  for (const auto& t : next.targets)
    for (const auto& l : t.luns) {
      if (lus.count(l.name)) continue;
      try {
        lus[l.name] = factory_(next, l);
      } catch (const std::exception& e) {
        throw CommandError(fmt::format("LU '{}': {}", l.name, e.what()));
      }
    }

  // 4. Portals (a failed bind undoes the ones added before it).
  std::vector<config::Portal> added;
  for (const auto& p : d.portals_added) {
    try {
      server_.add_portal({p.host, p.port, p.tpgt});
      added.push_back(p);
    } catch (const std::exception& e) {
      for (const auto& a : added) server_.remove_portal(a.host, a.port);
      throw CommandError(e.what());
    }
  }
  for (const auto& p : d.portals_removed) {
    // A portal configured with port 0 listens on whatever port it got.
    bool ok = server_.remove_portal(p.host, p.port);
    if (!ok)
      for (const auto& b : server_.portals())
        if (b.host == p.host && b.tpgt == p.tpgt && p.port == 0)
          ok = server_.remove_portal(b.host, b.port);
  }

  // 5. Targets: unchanged ones keep their definition (their sessions are not touched).
  const bool port_groups_changed = !d.portals_added.empty() || !d.portals_removed.empty();
  std::vector<std::shared_ptr<const target::TargetDef>> defs;
  std::vector<
      std::pair<std::shared_ptr<const scsi::LunTable>, std::shared_ptr<const scsi::LunTable>>>
      lun_changes;  // (old, new) tables of changed targets
  const auto current = server_.targets();
  for (const auto& t : next.targets) {
    auto old =
        std::find_if(current.begin(), current.end(), [&](auto& c) { return c->iqn == t.iqn; });
    const bool changed = std::find(d.targets_changed.begin(), d.targets_changed.end(), t.iqn) !=
                         d.targets_changed.end();
    if (old != current.end() && !changed && !port_groups_changed) {
      defs.push_back(*old);
      continue;
    }
    auto def = make_target_def(t, next.portals, lus);
    if (old != current.end() && (*old)->luns->luns != def->luns->luns)
      lun_changes.emplace_back((*old)->luns, def->luns);
    defs.push_back(std::move(def));
  }
  // SPC-5: REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) for the nexuses of a changed inventory.
  for (auto& [before, after] : lun_changes) scsi::reported_luns_changed(*before);
  const size_t closed = server_.set_targets(std::move(defs));
  for (auto& [before, after] : lun_changes) scsi::reported_luns_changed(*after);

  if (d.log_level_changed) spdlog::set_level(spdlog::level::from_str(next.node.log_level));
  for (const auto& r : d.resync_rates_changed)
    if (auto e = resync_rate_hook_(r.group, r.link, r.rate); !e.empty())
      spdlog::error("resync_rate of link {}/{}: {}", r.group, r.link, e);  // the config names it
  // LUs no longer presented: make their writes durable before they go.
  for (const auto& name : gone_lus)
    if (auto it = lus_.find(name); it != lus_.end()) {
      int r = scsi::flush_logical_unit(*it->second);
      if (r != 0) spdlog::warn("LU '{}': flush on removal failed: {}", name, strerror(-r));
    }
  running_ = std::move(next);
  lus_ = std::move(lus);
  std::string msg = d.summary();
  if (closed) msg += fmt::format("; {} session{} closed", closed, closed == 1 ? "" : "s");
  spdlog::info("live change applied: {}", msg);
  return Json{{"message", msg}};
}

Json Service::show_node() {
  const auto sessions = server_.sessions();
  std::lock_guard lock(mu_);
  size_t luns = 0;
  for (auto& t : running_.targets) luns += t.luns.size();
  const auto up =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count();
  return Json{{"name", running_.node.name},
              {"version", "0.1.0"},
              {"pid", ::getpid()},
              {"uptime", fmt::format("{}d {:02}:{:02}:{:02}", up / 86400, up / 3600 % 24,
                                     up / 60 % 60, up % 60)},
              {"config", running_.path},
              {"data_dir", running_.node.data_dir},
              {"control_socket", running_.node.control_socket},
              {"metrics", running_.node.metrics.empty() ? "off" : running_.node.metrics},
              {"log_level", spdlog::level::to_string_view(spdlog::get_level()).data()},
              {"portals", running_.portals.size()},
              {"targets", running_.targets.size()},
              {"luns", luns},
              {"sessions", sessions.size()},
              // Protocol events since start (also zuma_iscsi_*_total in the metrics).
              {"header_digest_errors", server_.counters().header_digest_errors.load()},
              {"data_digest_errors", server_.counters().data_digest_errors.load()},
              {"rejects", server_.counters().rejects.load()},
              {"login_failures", server_.counters().login_failures.load()}};
}

Json Service::show_portals() {
  Json rows = Json::array();
  for (const auto& p : server_.portals()) {
    config::Portal cp;
    cp.host = p.host;
    cp.port = p.port;
    rows.push_back({config::portal_address(cp), p.tpgt});
  }
  return Json{{"columns", {"ADDRESS", "TPGT"}}, {"rows", rows}};
}

Json Service::show_targets() {
  const auto sessions = server_.sessions();
  std::lock_guard lock(mu_);
  Json rows = Json::array();
  for (const auto& t : running_.targets) {
    size_t n =
        std::count_if(sessions.begin(), sessions.end(), [&](auto& s) { return s.target == t.iqn; });
    Json acl = Json::array();
    for (auto& e : t.acl) acl.push_back(e.initiator);
    rows.push_back({t.iqn, t.alias.empty() ? Json() : Json(t.alias), t.luns.size(),
                    t.acl.empty() ? Json("any") : acl,
                    t.chap ? Json(t.chap->mutual_user.empty() ? "one-way" : "mutual") : Json("off"),
                    n});
  }
  return Json{{"columns", {"TARGET", "ALIAS", "LUNS", "ACL", "CHAP", "SESSIONS"}}, {"rows", rows}};
}

Json Service::show_luns(const Json& a) {
  const std::string only = str(a, "target");
  const auto sessions = server_.sessions();
  std::lock_guard lock(mu_);
  if (!only.empty()) find_target(running_, only);
  Json rows = Json::array();
  for (const auto& t : running_.targets) {
    if (!only.empty() && t.iqn != only) continue;
    for (const auto& l : t.luns) {
      size_t users = 0;
      for (auto& s : sessions)
        if (std::find(s.lus.begin(), s.lus.end(), l.name) != s.lus.end()) ++users;
      auto it = lus_.find(l.name);
      rows.push_back({l.name, t.iqn, l.id, l.size, l.block_size, l.thin,
                      it != lus_.end() ? Json(it->second->backend().describe()) : Json(), users});
    }
  }
  return Json{
      {"columns", {"NAME", "TARGET", "LUN", "SIZE", "BLOCK", "THIN", "BACKEND", "SESSIONS"}},
      {"rows", rows}};
}

Json Service::show_sessions(const Json& a) {
  const std::string only = str(a, "target");
  Json rows = Json::array();
  for (const auto& s : server_.sessions()) {
    if (!only.empty() && s.target != only) continue;
    rows.push_back({s.id, s.initiator, s.target, s.peer, s.tpgt, s.tsih, s.queue_depth, s.in_flight,
                    s.stats.commands, s.stats.bytes_read, s.stats.bytes_written});
  }
  return Json{{"columns",
               {"ID", "INITIATOR", "TARGET", "PEER", "TPGT", "TSIH", "QDEPTH", "INFLIGHT",
                "COMMANDS", "READ_BYTES", "WRITTEN_BYTES"}},
              {"rows", rows}};
}

Json Service::show_connections(const Json& a) {
  const bool one = a.contains("session");
  const uint64_t id = one ? a["session"].get<uint64_t>() : 0;
  Json rows = Json::array();
  bool found = false;
  for (const auto& s : server_.sessions()) {
    if (one && s.id != id) continue;
    found = true;
    rows.push_back({s.id, "Initiator", s.initiator});
    if (!s.initiator_alias.empty()) rows.push_back({s.id, "InitiatorAlias", s.initiator_alias});
    rows.push_back({s.id, "Target", s.target});
    rows.push_back({s.id, "ISID", s.isid});
    rows.push_back({s.id, "Peer", s.peer});
    rows.push_back({s.id, "Local", s.local});
    rows.push_back({s.id, "Reactor", s.reactor});
    rows.push_back({s.id, "QueueDepth", s.queue_depth});
    rows.push_back({s.id, "CID", s.cid});
    rows.push_back({s.id, "TSIH", s.tsih});
    rows.push_back({s.id, "SessionConnections", s.connections});
    for (const auto& [k, v] : s.parameters) rows.push_back({s.id, k, v});
  }
  if (one && !found) throw CommandError(fmt::format("no session {}", id));
  return Json{{"columns", {"SESSION", "PARAMETER", "VALUE"}}, {"rows", rows}};
}

Json Service::show_stats(const Json& a) {
  const std::string only = str(a, "lun");
  auto stats = server_.lu_stats();
  std::lock_guard lock(mu_);
  if (!only.empty() && !lus_.count(only)) throw CommandError(fmt::format("no LU '{}'", only));
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::max(1e-3, std::chrono::duration<double>(now - last_stats_at_).count());
  Json rows = Json::array();
  for (const auto& [name, lu] : lus_) {
    if (!only.empty() && name != only) continue;
    const target::IoStats& s = stats[name];
    const target::IoStats& prev = last_stats_[name];
    const double iops = double(s.commands - std::min(prev.commands, s.commands)) / secs;
    const double rbw = double(s.bytes_read - std::min(prev.bytes_read, s.bytes_read)) / secs;
    const double wbw =
        double(s.bytes_written - std::min(prev.bytes_written, s.bytes_written)) / secs;
    rows.push_back({name, s.commands, s.reads, s.writes, s.bytes_read, s.bytes_written, s.errors,
                    uint64_t(iops + 0.5), uint64_t(rbw + 0.5), uint64_t(wbw + 0.5),
                    uint64_t(avg_latency_us(s) + 0.5)});
  }
  if (only.empty()) {
    last_stats_ = std::move(stats);
    last_stats_at_ = now;
  }
  return Json{{"columns",
               {"LU", "COMMANDS", "READS", "WRITES", "READ_BYTES", "WRITTEN_BYTES", "ERRORS",
                "IOPS", "READ_B/S", "WRITE_B/S", "AVG_LAT_US"}},
              {"rows", rows}};
}

Json Service::config_save(const Json& a) {
  const config::Config c = copy_running();
  const std::string path = str(a, "file", c.path);
  if (path.empty()) throw CommandError("no file to write: give --file");
  std::string old_text;
  bool existed = false;
  mode_t mode = 0600;
  {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      existed = true;
      old_text.assign(std::istreambuf_iterator<char>(in), {});
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0) mode = st.st_mode & 07777;
    }
  }
  // A file that already says the same keeps every comment: nothing to write.
  if (existed) {
    try {
      const config::Config on_disk = config::parse(old_text, path);
      const config::ConfigDiff d = config::diff(on_disk, c);
      if (d.empty() && on_disk.node.log_level == c.node.log_level)
        return Json{{"message", fmt::format("{} already holds the running configuration", path)}};
    } catch (const config::ConfigError&) {
      // Not valid now: overwrite it.
    }
  }
  const std::string text = config::to_yaml(c, config::leading_comments(old_text));
  const std::string tmp = path + ".tmp";
  {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) throw CommandError(fmt::format("cannot write {}: {}", tmp, strerror(errno)));
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
      if (n <= 0) {
        const int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        throw CommandError(fmt::format("cannot write {}: {}", tmp, strerror(e)));
      }
      done += size_t(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
      ::unlink(tmp.c_str());
      throw CommandError(fmt::format("cannot write {}: {}", tmp, strerror(errno)));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw CommandError(fmt::format("cannot replace {}: {}", path, strerror(e)));
  }
  const std::string dir =
      path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Json{{"message", fmt::format("wrote {} ({} bytes)", path, text.size())}};
}

Json Service::resize_lun(const Json& a) {
  const std::string name = str(a, "name");
  const uint64_t size = a["size"].get<uint64_t>();
  std::lock_guard lock(mu_);
  config::Config next = running_;
  config::Lun* lun = nullptr;
  for (auto& t : next.targets)
    for (auto& l : t.luns)
      if (l.name == name) lun = &l;
  auto it = lus_.find(name);
  if (!lun || it == lus_.end()) throw CommandError(fmt::format("no LU '{}'", name));
  // Both sites of a group have the same LU sizes (the secondary checks them at each
  // connection), so a group's LU does not change size under a running link.
  if (const config::Group* g = config::group_of(running_, name))
    throw CommandError(fmt::format("LU '{}' is in replication group '{}'; its size cannot change "
                                   "while replicated",
                                   name, g->name));
  scsi::LogicalUnit& lu = *it->second;
  const uint64_t bs = lu.block_size();
  const uint64_t now = lu.num_blocks() * bs;
  if (size == 0 || size % bs != 0)
    throw CommandError(fmt::format("LU '{}': the size must be a positive multiple of its block "
                                   "size ({} bytes), got {}",
                                   name, bs, size));
  if (size == now) return Json{{"message", fmt::format("LU '{}' is {} already", name, human_size(now))}};
  if (size < now && !a.value("shrink", false))
    throw CommandError(fmt::format("LU '{}': shrinking from {} to {} loses the data beyond the new "
                                   "end; give --shrink to do it",
                                   name, human_size(now), human_size(size)));
  // The new size passes the same checks as a file would.
  lun->size = size;
  if (lun->subunits.size() == 1 && lun->subunits[0].size != 0) lun->subunits[0].size = size;
  try {
    next = config::parse(config::to_yaml(next), running_.path.empty() ? "running" : running_.path);
  } catch (const config::ConfigError& e) {
    throw CommandError(without_location(e));
  }
  next.path = running_.path;
  if (auto r = lu.resize(size / bs); !r)
    throw CommandError(fmt::format("LU '{}': {}", name, r.error()));
  running_ = std::move(next);
  const std::string msg =
      fmt::format("LU '{}' resized from {} to {} ({} blocks of {} bytes)", name, human_size(now),
                  human_size(size), size / bs, bs);
  spdlog::info("live change applied: {}", msg);
  return Json{{"message", msg}};
}

namespace {

constexpr uint64_t kCopyChunk = 1 << 20;  // bytes read then written per step

Json job_json(const JobInfo& j) {
  const double rate = j.seconds > 0 ? double(j.done) / j.seconds : 0;
  Json o{{"id", j.id},         {"kind", j.kind},   {"what", j.what},
         {"state", job_state_name(j.state)}, {"done", j.done}, {"total", j.total},
         {"seconds", j.seconds}, {"rate", rate}};
  if (!j.error.empty()) o["error"] = j.error;
  return o;
}

}  // namespace

Json Service::copy_lun(const Json& a) {
  const std::string from = str(a, "source"), to = str(a, "destination");
  std::shared_ptr<scsi::LogicalUnit> src, dst;
  {
    std::lock_guard lock(mu_);
    auto s = lus_.find(from), d = lus_.find(to);
    if (s == lus_.end()) throw CommandError(fmt::format("no LU '{}'", from));
    if (d == lus_.end()) throw CommandError(fmt::format("no LU '{}'", to));
    src = s->second;
    dst = d->second;
  }
  if (src == dst) throw CommandError("the source and the destination are the same LU");
  if (src->block_size() != dst->block_size())
    throw CommandError(fmt::format("LU '{}' has {}-byte blocks, '{}' {}-byte ones", from,
                                   src->block_size(), to, dst->block_size()));
  const uint64_t bytes = src->num_blocks() * src->block_size();
  if (dst->num_blocks() < src->num_blocks())
    throw CommandError(fmt::format("LU '{}' ({}) is smaller than '{}' ({})", to,
                                   human_size(dst->num_blocks() * dst->block_size()), from,
                                   human_size(bytes)));
  if (dst->params().read_only) throw CommandError(fmt::format("LU '{}' is read-only", to));
  // Initiators writing the destination would have their data overwritten under them.
  if (!a.value("force", false))
    for (const auto& s : server_.sessions())
      for (const auto& lu : s.lus)
        if (lu == to)
          throw CommandError(fmt::format(
              "LU '{}' is in use by session {} ({}); its data would change under it: log it "
              "out first or use --force",
              to, s.id, s.initiator));
  // --rate: bytes per second at most (steps of at most a tenth of a second's worth).
  const uint64_t rate = a.value("rate", uint64_t(0));
  const uint64_t chunk = rate ? std::clamp<uint64_t>(rate / 10 / 512 * 512, 512, kCopyChunk)
                              : kCopyChunk;
  const uint64_t id = jobs_.start(
      "copy lun", from + " -> " + to, bytes,
      [src, dst, bytes, from, to, rate, chunk](Job& job) -> std::expected<void, std::string> {
        storage::Buffer buf(std::min(bytes, chunk));
        const auto t0 = std::chrono::steady_clock::now();
        for (uint64_t off = 0; off < bytes && !job.cancelled();) {
          if (rate) {
            // Sleep until `off` bytes are due at `rate`.
            const auto due = t0 + std::chrono::duration<double>(double(off) / double(rate));
            std::this_thread::sleep_until(
                std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
          }
          const uint64_t n = std::min(chunk, bytes - off);
          iovec iov{buf.data(), n};
          storage::IoRequest rd;
          rd.op = storage::IoOp::kRead;
          rd.offset = off;
          rd.length = n;
          rd.iov = &iov;
          rd.iovcnt = 1;
          if (int e = storage::submit_and_wait(src->backend(), rd); e < 0)
            return std::unexpected(
                fmt::format("reading '{}' at byte {}: {}", from, off, strerror(-e)));
          storage::IoRequest wr = rd;
          wr.op = storage::IoOp::kWrite;
          if (int e = storage::submit_and_wait(dst->backend(), wr); e < 0)
            return std::unexpected(
                fmt::format("writing '{}' at byte {}: {}", to, off, strerror(-e)));
          off += n;
          job.add_done(n);
        }
        storage::IoRequest fl;
        fl.op = storage::IoOp::kFlush;
        if (int e = storage::submit_and_wait(dst->backend(), fl); e < 0)
          return std::unexpected(fmt::format("flushing '{}': {}", to, strerror(-e)));
        if (!job.cancelled()) spdlog::info("copy lun {} -> {}: {} copied", from, to, human_size(bytes));
        return {};
      });
  spdlog::info("job {}: copy lun {} -> {} ({}) started", id, from, to, human_size(bytes));
  return Json{{"job", id},
              {"total", bytes},
              {"message", fmt::format("job {}: copying {} of '{}' to '{}'", id,
                                      human_size(bytes), from, to)}};
}

Json Service::show_jobs() {
  Json rows = Json::array();
  for (const JobInfo& j : jobs_.list()) {
    const double rate = j.seconds > 0 ? double(j.done) / j.seconds : 0;
    rows.push_back({j.id, j.kind, j.what, job_state_name(j.state),
                    fmt::format("{:.0f}%", j.total ? 100.0 * double(j.done) / double(j.total) : 100.0),
                    j.done, j.total, fmt::format("{}/s", human_size_approx(rate)),
                    j.error.empty() ? "-" : j.error});
  }
  return Json{{"columns", {"ID", "KIND", "WHAT", "STATE", "PROGRESS", "DONE", "TOTAL", "RATE", "ERROR"}},
              {"rows", rows}};
}

Json Service::show_job(const Json& a) {
  const uint64_t id = a["job"].get<uint64_t>();
  auto j = jobs_.find(id);
  if (!j) throw CommandError(fmt::format("no job {}", id));
  return job_json(*j);
}

Json Service::log_level(const Json& a) {
  if (!a.contains("level"))
    return Json{{"level", spdlog::level::to_string_view(spdlog::get_level()).data()}};
  const std::string level = a["level"].get<std::string>();
  spdlog::set_level(spdlog::level::from_str(level));
  std::lock_guard lock(mu_);
  running_.node.log_level = level;
  return Json{{"message", "log level " + level}};
}

Json Service::complete(const Json& a) {
  const std::string source = a["source"].get<std::string>();
  Json out = Json::array();
  if (source == "sessions") {
    for (const auto& s : server_.sessions()) out.push_back(std::to_string(s.id));
    return out;
  }
  if (const size_t colon = source.find(':'); colon != std::string::npos) {
    auto it = name_sources_.find(source.substr(0, colon));
    if (it == name_sources_.end())
      throw CommandError(fmt::format("no names of kind '{}'", source.substr(0, colon)));
    for (auto& n : it->second(source.substr(colon + 1))) out.push_back(std::move(n));
    return out;
  }
  static const std::set<std::string> kSources = {"targets",  "luns",       "portals", "initiators",
                                                 "sessions", "log_levels", "groups"};
  if (!kSources.count(source)) throw CommandError(fmt::format("no names of kind '{}'", source));
  if (source == "log_levels") {
    for (const char* l : {"trace", "debug", "info", "warn", "error", "critical", "off"})
      out.push_back(l);
    return out;
  }
  std::lock_guard lock(mu_);
  std::set<std::string> names;
  for (const auto& t : running_.targets) {
    if (source == "targets") names.insert(t.iqn);
    for (const auto& l : t.luns)
      if (source == "luns") names.insert(l.name);
    for (const auto& e : t.acl)
      if (source == "initiators") names.insert(e.initiator);
  }
  if (source == "portals")
    for (const auto& p : running_.portals) names.insert(config::portal_address(p));
  if (source == "groups")
    for (const auto& g : running_.groups) names.insert(g.name);
  for (auto& n : names) out.push_back(n);
  return out;
}

void Service::bind(CommandTable& t) {
  auto on = [&](const char* name, Handler h) {
    if (!t.set_handler(name, std::move(h))) throw std::logic_error(std::string("no verb ") + name);
  };
  on("complete", [this](const Json& a) { return complete(a); });
  on("show node", [this](const Json&) { return show_node(); });
  on("show portals", [this](const Json&) { return show_portals(); });
  on("show targets", [this](const Json&) { return show_targets(); });
  on("show luns", [this](const Json& a) { return show_luns(a); });
  on("show sessions", [this](const Json& a) { return show_sessions(a); });
  on("show connections", [this](const Json& a) { return show_connections(a); });
  on("show stats", [this](const Json& a) { return show_stats(a); });
  on("show config", [this](const Json&) { return Json(config::to_yaml(copy_running())); });

  on("add target", [this](const Json& a) {
    config::Config next = copy_running();
    const std::string iqn = str(a, "target");
    for (auto& t : next.targets)
      if (t.iqn == iqn) throw CommandError(fmt::format("target '{}' exists already", iqn));
    config::Target t;
    t.iqn = iqn;
    t.alias = str(a, "alias");
    config::Lun l;
    l.id = a.value("id", uint64_t(0));
    l.name = str(a, "name");
    l.size = a["size"].get<uint64_t>();
    l.block_size = uint32_t(a.value("block-size", uint64_t(512)));
    l.thin = a.value("thin", false);
    config::SubUnit su;
    su.backend = str(a, "backend", "file");
    su.path = str(a, "path");
    su.size = l.size;
    l.subunits.push_back(std::move(su));
    t.luns.push_back(std::move(l));
    next.targets.push_back(std::move(t));
    return apply(std::move(next), false);
  });
  on("remove target", [this](const Json& a) {
    config::Config next = copy_running();
    find_target(next, str(a, "target"));
    std::erase_if(next.targets, [&](auto& t) { return t.iqn == str(a, "target"); });
    if (next.targets.empty()) throw CommandError("the last target cannot be removed");
    return apply(std::move(next), a.value("force", false));
  });
  on("add lun", [this](const Json& a) {
    config::Config next = copy_running();
    config::Target* t = find_target(next, str(a, "target"));
    config::Lun l;
    l.id = a["id"].get<uint64_t>();
    l.name = str(a, "name");
    l.size = a["size"].get<uint64_t>();
    l.block_size = uint32_t(a.value("block-size", uint64_t(512)));
    l.thin = a.value("thin", false);
    const std::string backend = str(a, "backend", "file");
    if (backend == "file" && !a.contains("path"))
      throw CommandError("add lun: --path is needed for the file backend");
    config::SubUnit su;
    su.backend = backend;
    su.path = str(a, "path");
    su.size = l.size;
    l.subunits.push_back(std::move(su));
    t->luns.push_back(std::move(l));
    return apply(std::move(next), false);
  });
  on("remove lun", [this](const Json& a) {
    config::Config next = copy_running();
    const std::string name = str(a, "name");
    bool found = false;
    for (auto& t : next.targets) {
      const size_t before = t.luns.size();
      std::erase_if(t.luns, [&](auto& l) { return l.name == name; });
      if (t.luns.size() == before) continue;
      found = true;
      if (t.luns.empty())
        throw CommandError(fmt::format(
            "LU '{}' is the last one of target '{}'; remove the target instead", name, t.iqn));
      for (auto& e : t.acl) std::erase_if(e.luns, [&](auto& m) { return m.second == name; });
    }
    if (!found) throw CommandError(fmt::format("no LU '{}'", name));
    return apply(std::move(next), a.value("force", false));
  });
  on("add portal", [this](const Json& a) {
    config::Config next = copy_running();
    config::Portal p = portal_from(str(a, "address"));
    p.tpgt = uint16_t(a.value("tpgt", uint64_t(1)));
    if (a.value("tpgt", uint64_t(1)) == 0 || a.value("tpgt", uint64_t(1)) > 65535)
      throw CommandError("--tpgt must be 1..65535");
    next.portals.push_back(p);
    return apply(std::move(next), false);
  });
  on("remove portal", [this](const Json& a) {
    config::Config next = copy_running();
    const std::string addr = str(a, "address");
    const size_t before = next.portals.size();
    std::erase_if(next.portals, [&](auto& p) { return config::portal_address(p) == addr; });
    if (next.portals.size() == before) throw CommandError(fmt::format("no portal '{}'", addr));
    if (next.portals.empty()) throw CommandError("the last portal cannot be removed");
    return apply(std::move(next), false);
  });
  on("add acl", [this](const Json& a) {
    config::Config next = copy_running();
    config::Target* t = find_target(next, str(a, "target"));
    config::AclEntry e;
    e.initiator = str(a, "initiator");
    for (auto& t2 : t->acl)
      if (t2.initiator == e.initiator)
        throw CommandError(fmt::format("'{}' is in the ACL of {} already", e.initiator, t->iqn));
    if (a.contains("networks")) e.networks = a["networks"].get<std::vector<std::string>>();
    t->acl.push_back(std::move(e));
    return apply(std::move(next), true);  // closing sessions the ACL no longer admits is the point
  });
  on("remove acl", [this](const Json& a) {
    config::Config next = copy_running();
    config::Target* t = find_target(next, str(a, "target"));
    const size_t before = t->acl.size();
    std::erase_if(t->acl, [&](auto& e) { return e.initiator == str(a, "initiator"); });
    if (t->acl.size() == before)
      throw CommandError(fmt::format("'{}' is not in the ACL of {}", str(a, "initiator"), t->iqn));
    return apply(std::move(next), true);
  });
  on("set chap", [this](const Json& a) {
    config::Config next = copy_running();
    config::Target* t = find_target(next, str(a, "target"));
    config::Chap c;
    c.user = str(a, "user");
    c.secret = str(a, "secret");
    c.mutual_user = str(a, "mutual-user");
    c.mutual_secret = str(a, "mutual-secret");
    if (c.mutual_user.empty() != c.mutual_secret.empty())
      throw CommandError("set chap: give both --mutual-user and --mutual-secret, or neither");
    t->chap = std::move(c);
    return apply(std::move(next), false);
  });
  on("remove chap", [this](const Json& a) {
    config::Config next = copy_running();
    config::Target* t = find_target(next, str(a, "target"));
    if (!t->chap) throw CommandError(fmt::format("target '{}' has no CHAP", t->iqn));
    t->chap.reset();
    return apply(std::move(next), false);
  });
  on("config reload", [this](const Json& a) {
    const std::string path = copy_running().path;
    config::Config next;
    try {
      next = config::load(path);
    } catch (const config::ConfigError& e) {
      throw CommandError(e.what());
    }
    return apply(std::move(next), a.value("force", false));
  });
  on("config save", [this](const Json& a) { return config_save(a); });
  on("resize lun", [this](const Json& a) { return resize_lun(a); });
  on("copy lun", [this](const Json& a) { return copy_lun(a); });
  on("show jobs", [this](const Json&) { return show_jobs(); });
  on("show job", [this](const Json& a) { return show_job(a); });
  on("cancel job", [this](const Json& a) {
    const uint64_t id = a["job"].get<uint64_t>();
    if (!jobs_.cancel(id)) throw CommandError(fmt::format("no running job {}", id));
    return Json{{"message", fmt::format("job {}: cancelling", id)}};
  });
  on("log level", [this](const Json& a) { return log_level(a); });
  on("logout", [this](const Json& a) {
    const uint64_t id = a["session"].get<uint64_t>();
    if (!server_.logout_session(id)) throw CommandError(fmt::format("no session {}", id));
    return Json{{"message", fmt::format("session {}: logout requested", id)}};
  });
}

std::string Service::metrics_text() {
  const auto stats = server_.lu_stats();
  const auto sessions = server_.sessions();
  std::vector<std::string> names;
  {
    std::lock_guard lock(mu_);
    for (auto& [n, lu] : lus_) names.push_back(n);
  }
  std::string out;
  struct Series {
    std::string labels;
    const target::IoStats* s;
  };
  std::vector<Series> lu_series, session_series;
  static const target::IoStats kZero{};
  for (auto& n : names) {
    auto it = stats.find(n);
    lu_series.push_back(
        {fmt::format("lu=\"{}\"", prom_escape(n)), it == stats.end() ? &kZero : &it->second});
  }
  for (auto& s : sessions)
    session_series.push_back({fmt::format("session=\"{}\",initiator=\"{}\",target=\"{}\"", s.id,
                                          prom_escape(s.initiator), prom_escape(s.target)),
                              &s.stats});
  auto counters = [&](const char* prefix, const std::vector<Series>& series) {
    struct C {
      const char* name;
      const char* help;
      uint64_t target::IoStats::*field;
    };
    static const C kCounters[] = {
        {"commands_total", "SCSI commands completed", &target::IoStats::commands},
        {"reads_total", "READ commands completed", &target::IoStats::reads},
        {"writes_total", "WRITE commands completed", &target::IoStats::writes},
        {"read_bytes_total", "bytes returned by READ commands", &target::IoStats::bytes_read},
        {"written_bytes_total", "bytes written by WRITE commands", &target::IoStats::bytes_written},
        {"errors_total", "commands ended with a status other than GOOD", &target::IoStats::errors},
    };
    for (const C& c : kCounters) {
      out += fmt::format("# HELP zuma_{}_{} {} per {}.\n# TYPE zuma_{}_{} counter\n", prefix,
                         c.name, c.help, prefix, prefix, c.name);
      for (auto& s : series)
        out += fmt::format("zuma_{}_{}{{{}}} {}\n", prefix, c.name, s.labels, s.s->*c.field);
    }
    out += fmt::format(
        "# HELP zuma_{0}_latency_seconds command latency per {0}.\n"
        "# TYPE zuma_{0}_latency_seconds histogram\n",
        prefix);
    for (auto& s : series) {
      uint64_t cum = 0;
      for (size_t i = 0; i < target::IoStats::kLatencyBoundsUs.size(); ++i) {
        cum += s.s->latency[i];
        out += fmt::format("zuma_{}_latency_seconds_bucket{{{},le=\"{}\"}} {}\n", prefix, s.labels,
                           double(target::IoStats::kLatencyBoundsUs[i]) / 1e6, cum);
      }
      cum += s.s->latency.back();
      out += fmt::format("zuma_{}_latency_seconds_bucket{{{},le=\"+Inf\"}} {}\n", prefix, s.labels,
                         cum);
      out += fmt::format("zuma_{}_latency_seconds_sum{{{}}} {}\n", prefix, s.labels,
                         double(s.s->latency_sum_us) / 1e6);
      out += fmt::format("zuma_{}_latency_seconds_count{{{}}} {}\n", prefix, s.labels, cum);
    }
  };
  out += "# HELP zuma_sessions logged-in iSCSI sessions.\n# TYPE zuma_sessions gauge\n";
  out += fmt::format("zuma_sessions {}\n", sessions.size());
  // Protocol events over all connections since start (target::ProtocolCounters).
  const target::ProtocolCounters& pc = server_.counters();
  const std::pair<const char*, const char*> kProto[] = {
      {"header_digest_errors_total", "PDUs with a wrong header digest (their connection is dropped)"},
      {"data_digest_errors_total", "PDUs with a wrong data digest (the command fails)"},
      {"rejects_total", "Reject PDUs sent"},
      {"login_failures_total", "logins refused (authentication, authorization, bad request)"}};
  const uint64_t values[] = {pc.header_digest_errors.load(std::memory_order_relaxed),
                             pc.data_digest_errors.load(std::memory_order_relaxed),
                             pc.rejects.load(std::memory_order_relaxed),
                             pc.login_failures.load(std::memory_order_relaxed)};
  for (size_t i = 0; i < std::size(kProto); ++i)
    out += fmt::format("# HELP zuma_iscsi_{} {}.\n# TYPE zuma_iscsi_{} counter\nzuma_iscsi_{} {}\n",
                       kProto[i].first, kProto[i].second, kProto[i].first, kProto[i].first,
                       values[i]);
  counters("lu", lu_series);
  counters("session", session_series);
  for (auto& render : metrics_sources_) out += render();
  return out;
}

void Service::add_name_source(
    const std::string& kind, std::function<std::vector<std::string>(const std::string& arg)> names) {
  name_sources_[kind] = std::move(names);
}

void Service::add_metrics_source(std::function<std::string()> render) {
  metrics_sources_.push_back(std::move(render));
}

}  // namespace zuma::admin
