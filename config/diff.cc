// What changed between two configurations (zumactl config reload, live changes).
#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "config/config.hh"

namespace zuma::config {

namespace {

bool same_chap(const std::optional<Chap>& a, const std::optional<Chap>& b) {
  if (!a || !b) return !a == !b;
  return a->user == b->user && a->secret == b->secret && a->mutual_user == b->mutual_user &&
         a->mutual_secret == b->mutual_secret && a->algorithms == b->algorithms;
}

std::string portal_key(const Portal& p) { return fmt::format("{}/{}", portal_address(p), p.tpgt); }

std::map<std::string, const Lun*> lus_of(const Config& c) {
  std::map<std::string, const Lun*> out;
  for (const Target& t : c.targets)
    for (const Lun& l : t.luns) out.emplace(l.name, &l);
  return out;
}

bool same_subunit(const SubUnit& x, const SubUnit& y) {
  if (x.backend != y.backend || x.path != y.path || x.size != y.size || x.url != y.url ||
      x.initiator != y.initiator || x.timeout != y.timeout || x.chap.size() != y.chap.size() ||
      x.mirror.size() != y.mirror.size() || x.pool != y.pool || x.image != y.image ||
      x.user != y.user || x.keyring != y.keyring || x.ceph_conf != y.ceph_conf ||
      x.mon_host != y.mon_host)
    return false;
  if (!x.chap.empty() && !same_chap(x.chap.front(), y.chap.front())) return false;
  for (size_t i = 0; i < x.mirror.size(); ++i)
    if (!same_subunit(x.mirror[i], y.mirror[i])) return false;
  return true;
}

}  // namespace

bool same_lun(const Lun& a, const Lun& b) {
  if (a.name != b.name || a.size != b.size || a.block_size != b.block_size ||
      a.physical_block_size != b.physical_block_size || a.thin != b.thin ||
      a.write_cache != b.write_cache || a.read_only != b.read_only || a.shared != b.shared ||
      a.subunits.size() != b.subunits.size())
    return false;
  if (a.layout != b.layout || a.stripe_unit != b.stripe_unit) return false;
  // Snapshots (issue 7): any change of the store or a source replaces the LU.
  if (a.snapshots.has_value() != b.snapshots.has_value() || a.source.has_value() != b.source.has_value())
    return false;
  if (a.snapshots) {
    const Snapshots &x = *a.snapshots, &y = *b.snapshots;
    if (x.data != y.data || x.meta != y.meta || x.size != y.size || x.meta_size != y.meta_size ||
        x.chunk_size != y.chunk_size || x.warn_fill != y.warn_fill ||
        x.schedules.size() != y.schedules.size())
      return false;
    for (size_t i = 0; i < x.schedules.size(); ++i)
      if (x.schedules[i].every != y.schedules[i].every || x.schedules[i].keep != y.schedules[i].keep ||
          x.schedules[i].name != y.schedules[i].name)
        return false;
  }
  if (a.source && (a.source->lu != b.source->lu || a.source->snapshot != b.source->snapshot ||
                   a.source->clone != b.source->clone || a.source->from != b.source->from))
    return false;
  for (size_t i = 0; i < a.subunits.size(); ++i) {
    if (!same_subunit(a.subunits[i], b.subunits[i])) return false;
  }
  return true;
}

bool same_target(const Target& a, const Target& b) {
  if (a.iqn != b.iqn || a.alias != b.alias || !same_chap(a.chap, b.chap) ||
      a.acl.size() != b.acl.size() || a.luns.size() != b.luns.size())
    return false;
  for (size_t i = 0; i < a.acl.size(); ++i)
    if (a.acl[i].initiator != b.acl[i].initiator || a.acl[i].networks != b.acl[i].networks ||
        a.acl[i].luns != b.acl[i].luns)
      return false;
  for (size_t i = 0; i < a.luns.size(); ++i)
    if (a.luns[i].id != b.luns[i].id || !same_lun(a.luns[i], b.luns[i])) return false;
  return true;
}

static bool same_tls(const ReplicationTls& a, const ReplicationTls& b) {
  return a.cert == b.cert && a.key == b.key && a.ca == b.ca && a.peer_name == b.peer_name &&
         a.psk_file == b.psk_file && a.psk_identity == b.psk_identity;
}

bool same_group(const Group& a, const Group& b) {
  if (a.name != b.name || a.secondary != b.secondary || a.luns != b.luns || a.secret != b.secret ||
      a.secret_file != b.secret_file || a.log_path != b.log_path || a.log_size != b.log_size ||
      a.links.size() != b.links.size() || a.bookmarks.size() != b.bookmarks.size())
    return false;
  for (size_t i = 0; i < a.bookmarks.size(); ++i)
    if (a.bookmarks[i].every != b.bookmarks[i].every ||
        a.bookmarks[i].keep != b.bookmarks[i].keep || a.bookmarks[i].name != b.bookmarks[i].name)
      return false;
  for (size_t i = 0; i < a.links.size(); ++i) {
    const ReplicationLink &x = a.links[i], &y = b.links[i];
    if (x.name != y.name || x.peer != y.peer || x.sync != y.sync ||
        x.sync_timeout_ms != y.sync_timeout_ms || x.fallbehind_ios != y.fallbehind_ios ||
        x.fallbehind_bytes != y.fallbehind_bytes || x.fallbehind_seconds != y.fallbehind_seconds ||
        x.on_full != y.on_full || x.secret != y.secret || x.secret_file != y.secret_file ||
        x.resync_rate != y.resync_rate || x.tls.has_value() != y.tls.has_value() ||
        (x.tls && !same_tls(*x.tls, *y.tls)))
      return false;
  }
  return true;
}

const Group* group_of(const Config& config, const std::string& lu) {
  for (const Group& g : config.groups)
    if (std::find(g.luns.begin(), g.luns.end(), lu) != g.luns.end()) return &g;
  return nullptr;
}

ConfigDiff diff(const Config& from, const Config& to) {
  ConfigDiff d;
  const Node &a = from.node, &b = to.node;
  if (a.name != b.name) d.restart_needed.push_back("node.name");
  if (a.data_dir != b.data_dir) d.restart_needed.push_back("node.data_dir");
  if (a.control_socket != b.control_socket) d.restart_needed.push_back("node.control_socket");
  if (a.reactors != b.reactors) d.restart_needed.push_back("node.reactors");
  if (a.metrics != b.metrics) d.restart_needed.push_back("node.metrics");
  if (a.replication_listen != b.replication_listen)
    d.restart_needed.push_back("node.replication_listen");
  if (a.replication_tls.has_value() != b.replication_tls.has_value() ||
      (a.replication_tls && !same_tls(*a.replication_tls, *b.replication_tls)))
    d.restart_needed.push_back("node.replication_tls");
  // The replication layer is put into a LU's backend stack at startup only; of a group, only
  // its links' resync_rate changes live.
  bool groups_same = from.groups.size() == to.groups.size();
  std::vector<ConfigDiff::ResyncRate> rates;
  for (size_t i = 0; groups_same && i < from.groups.size(); ++i) {
    Group g = to.groups[i];
    for (size_t k = 0; k < g.links.size() && k < from.groups[i].links.size(); ++k)
      if (g.links[k].name == from.groups[i].links[k].name &&
          g.links[k].resync_rate != from.groups[i].links[k].resync_rate) {
        rates.push_back({g.name, g.links[k].name, g.links[k].resync_rate});
        g.links[k].resync_rate = from.groups[i].links[k].resync_rate;
      }
    groups_same = same_group(from.groups[i], g);
  }
  if (groups_same)
    d.resync_rates_changed = std::move(rates);
  else
    d.restart_needed.push_back("groups");
  // Membership of a cluster is taken at startup (lease, port group, etcd endpoints).
  const auto cl = [](const Config& c) {
    if (!c.cluster) return std::string();
    const Cluster& k = *c.cluster;
    std::string e;
    for (const auto& x : k.etcd) e += x + ",";
    return fmt::format("{}|{}|{}|{}|{}", k.name, e, k.port_group, k.alua, k.lease_ttl);
  };
  if (cl(from) != cl(to)) d.restart_needed.push_back("cluster");
  d.log_level_changed = a.log_level != b.log_level;
  const Iscsi &x = from.iscsi, &y = to.iscsi;
  const bool iscsi_same =
      x.max_recv_data_segment_length == y.max_recv_data_segment_length &&
      x.max_burst_length == y.max_burst_length && x.first_burst_length == y.first_burst_length &&
      x.immediate_data == y.immediate_data && x.initial_r2t == y.initial_r2t &&
      x.max_outstanding_r2t == y.max_outstanding_r2t &&
      x.default_time2wait == y.default_time2wait &&
      x.default_time2retain == y.default_time2retain && x.max_connections == y.max_connections &&
      x.queue_depth == y.queue_depth && x.nop_in_interval == y.nop_in_interval &&
      x.nop_in_timeout == y.nop_in_timeout && x.login_timeout == y.login_timeout &&
      x.write_buffer_budget == y.write_buffer_budget &&
      x.header_digest_crc32c == y.header_digest_crc32c &&
      x.header_digest_none == y.header_digest_none &&
      x.data_digest_crc32c == y.data_digest_crc32c && x.data_digest_none == y.data_digest_none;
  if (!iscsi_same) d.restart_needed.push_back("iscsi");
  if (!same_chap(from.discovery.chap, to.discovery.chap)) d.restart_needed.push_back("discovery.chap");

  std::set<std::string> old_portals, new_portals;
  for (const Portal& p : from.portals) old_portals.insert(portal_key(p));
  for (const Portal& p : to.portals) new_portals.insert(portal_key(p));
  for (const Portal& p : to.portals)
    if (!old_portals.count(portal_key(p))) d.portals_added.push_back(p);
  for (const Portal& p : from.portals)
    if (!new_portals.count(portal_key(p))) d.portals_removed.push_back(p);

  const auto old_lus = lus_of(from), new_lus = lus_of(to);
  for (auto& [name, l] : new_lus) {
    auto it = old_lus.find(name);
    if (it == old_lus.end())
      d.luns_added.push_back(name);
    else if (!same_lun(*it->second, *l))
      d.luns_changed.push_back(name);
  }
  for (auto& [name, l] : old_lus)
    if (!new_lus.count(name)) d.luns_removed.push_back(name);
  for (const auto* names : {&d.luns_changed, &d.luns_removed})
    for (const auto& name : *names)
      if (const Group* g = group_of(from, name))
        d.restart_needed.push_back(fmt::format("LU '{}' (of group '{}')", name, g->name));

  for (const Target& t : to.targets) {
    auto it = std::find_if(from.targets.begin(), from.targets.end(),
                           [&](const Target& o) { return o.iqn == t.iqn; });
    if (it == from.targets.end())
      d.targets_added.push_back(t.iqn);
    else if (!same_target(*it, t))
      d.targets_changed.push_back(t.iqn);
  }
  for (const Target& t : from.targets)
    if (std::none_of(to.targets.begin(), to.targets.end(), [&](const Target& o) { return o.iqn == t.iqn; }))
      d.targets_removed.push_back(t.iqn);
  return d;
}

bool ConfigDiff::empty() const {
  return restart_needed.empty() && !log_level_changed && !metrics_changed &&
         portals_added.empty() && portals_removed.empty() && targets_added.empty() &&
         targets_removed.empty() && targets_changed.empty() && luns_added.empty() &&
         luns_removed.empty() && luns_changed.empty() && resync_rates_changed.empty();
}

std::string ConfigDiff::summary() const {
  std::vector<std::string> parts;
  auto count = [&](size_t n, const char* what, const char* how) {
    if (n) parts.push_back(fmt::format("{} {}{} {}", n, what, n == 1 ? "" : "s", how));
  };
  count(targets_added.size(), "target", "added");
  count(targets_removed.size(), "target", "removed");
  count(targets_changed.size(), "target", "changed");
  count(luns_added.size(), "LU", "added");
  count(luns_removed.size(), "LU", "removed");
  count(luns_changed.size(), "LU", "replaced");
  count(portals_added.size(), "portal", "added");
  count(portals_removed.size(), "portal", "removed");
  if (log_level_changed) parts.push_back("log level changed");
  for (const auto& r : resync_rates_changed)
    parts.push_back(fmt::format("resync_rate of link {}/{} {}", r.group, r.link,
                                r.rate ? fmt::format("set to {} bytes/s", r.rate) : "removed"));
  if (!restart_needed.empty()) {
    std::string keys;
    for (auto& k : restart_needed) keys += (keys.empty() ? "" : ", ") + k;
    parts.push_back("needs a restart: " + keys);
  }
  if (parts.empty()) return "no changes";
  std::string out;
  for (auto& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

}  // namespace zuma::config
