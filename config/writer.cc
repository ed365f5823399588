// Config -> YAML (zumactl config save, and the validation of live changes: a changed
// running configuration is written out and parsed again, so it passes the same checks as
// a file).
#include <fmt/format.h>

#include "config/config.hh"

namespace zuma::config {

namespace {

// A YAML double-quoted scalar.
std::string q(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

const char* b(bool v) { return v ? "true" : "false"; }

std::string digests(bool crc32c, bool none) {
  std::string out = "[";
  if (crc32c) out += "CRC32C";
  if (none) out += crc32c ? ", None" : "None";
  return out + "]";
}

void chap(std::string& out, const Chap& c, const std::string& indent) {
  out += indent + "user: " + q(c.user) + "\n";
  if (!c.secret_file.empty())
    out += indent + "secret_file: " + q(c.secret_file) + "\n";
  else
    out += indent + "secret: " + q(c.secret) + "\n";
  if (!c.mutual_user.empty()) {
    out += indent + "mutual_user: " + q(c.mutual_user) + "\n";
    if (!c.mutual_secret_file.empty())
      out += indent + "mutual_secret_file: " + q(c.mutual_secret_file) + "\n";
    else
      out += indent + "mutual_secret: " + q(c.mutual_secret) + "\n";
  }
  if (!c.algorithms.empty()) {
    std::string list;
    for (auto& a : c.algorithms) list += (list.empty() ? "" : ", ") + q(a);
    out += indent + "algorithms: [" + list + "]\n";
  }
}

// A replication secret: its file when it came from one.
std::string secret_keys(const std::string& secret, const std::string& file) {
  if (!file.empty()) return ", secret_file: " + q(file);
  if (!secret.empty()) return ", secret: " + q(secret);
  return "";
}

std::string tls_map(const ReplicationTls& t) {
  if (t.psk()) return "{psk_file: " + q(t.psk_file) + ", psk_identity: " + q(t.psk_identity) + "}";
  std::string out = "{cert: " + q(t.cert) + ", key: " + q(t.key) + ", ca: " + q(t.ca);
  if (!t.peer_name.empty()) out += ", peer_name: " + q(t.peer_name);
  return out + "}";
}

// A sub-unit's backend keys in block style (iscsi and rbd sub-units, mirror members).
void subunit_fields(std::string& out, const SubUnit& s, const std::string& indent,
                    bool with_backend = true) {
  if (with_backend) out += indent + "backend: " + q(s.backend) + "\n";
  if (!s.path.empty()) out += indent + "path: " + q(s.path) + "\n";
  if (s.backend == "rbd") {
    out += indent + "pool: " + q(s.pool) + "\n";
    out += indent + "image: " + q(s.image) + "\n";
    if (!s.user.empty()) out += indent + "user: " + q(s.user) + "\n";
    if (!s.keyring.empty()) out += indent + "keyring: " + q(s.keyring) + "\n";
    if (!s.ceph_conf.empty()) out += indent + "ceph_conf: " + q(s.ceph_conf) + "\n";
    if (!s.mon_host.empty()) out += indent + "mon_host: " + q(s.mon_host) + "\n";
    out += fmt::format("{}timeout: {}\n", indent, s.timeout);
    return;
  }
  if (s.backend != "iscsi") return;
  out += indent + "url: " + q(s.url) + "\n";
  if (!s.initiator.empty()) out += indent + "initiator: " + q(s.initiator) + "\n";
  out += fmt::format("{}timeout: {}\n", indent, s.timeout);
  if (!s.chap.empty()) {
    out += indent + "chap:\n";
    chap(out, s.chap.front(), indent + "  ");
  }
}

}  // namespace

std::string portal_address(const Portal& p) {
  return p.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", p.host, p.port)
                                               : fmt::format("{}:{}", p.host, p.port);
}

std::string leading_comments(const std::string& text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    const size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string::npos && line[first] != '#') break;
    out += line + "\n";
    pos = end + 1;
  }
  return out;
}

std::string to_yaml(const Config& c, const std::string& header) {
  std::string out = header;
  if (!out.empty() && out.back() != '\n') out += '\n';
  const Node& n = c.node;
  out += "node:\n";
  out += "  name: " + q(n.name) + "\n";
  out += "  data_dir: " + q(n.data_dir) + "\n";
  out += "  control_socket: " + q(n.control_socket) + "\n";
  out += fmt::format("  reactors: {}\n", n.reactors);
  out += "  log_level: " + q(n.log_level) + "\n";
  if (!n.metrics.empty()) out += "  metrics: " + q(n.metrics) + "\n";
  if (!n.replication_listen.empty()) out += "  replication_listen: " + q(n.replication_listen) + "\n";
  if (n.replication_tls) out += "  replication_tls: " + tls_map(*n.replication_tls) + "\n";
  out += "\nportals:\n";
  for (const Portal& p : c.portals)
    out += fmt::format("  - {{ address: {}, tpgt: {} }}\n", q(portal_address(p)), p.tpgt);
  const Iscsi& i = c.iscsi;
  out += "\niscsi:\n";
  out += fmt::format("  max_recv_data_segment_length: {}\n", i.max_recv_data_segment_length);
  out += fmt::format("  max_burst_length: {}\n", i.max_burst_length);
  out += fmt::format("  first_burst_length: {}\n", i.first_burst_length);
  out += fmt::format("  immediate_data: {}\n", b(i.immediate_data));
  out += fmt::format("  initial_r2t: {}\n", b(i.initial_r2t));
  out += fmt::format("  max_outstanding_r2t: {}\n", i.max_outstanding_r2t);
  out += fmt::format("  default_time2wait: {}\n", i.default_time2wait);
  out += fmt::format("  default_time2retain: {}\n", i.default_time2retain);
  out += fmt::format("  max_connections: {}\n", i.max_connections);
  out += fmt::format("  queue_depth: {}\n", i.queue_depth);
  out += fmt::format("  nop_in_interval: {}\n", i.nop_in_interval);
  out += fmt::format("  nop_in_timeout: {}\n", i.nop_in_timeout);
  out += fmt::format("  login_timeout: {}\n", i.login_timeout);
  out += fmt::format("  write_buffer_budget: {}\n", i.write_buffer_budget);
  out += "  header_digest: " + digests(i.header_digest_crc32c, i.header_digest_none) + "\n";
  out += "  data_digest: " + digests(i.data_digest_crc32c, i.data_digest_none) + "\n";
  if (c.discovery.chap) {
    out += "\ndiscovery:\n  chap:\n";
    chap(out, *c.discovery.chap, "    ");
  }
  out += "\ntargets:\n";
  for (const Target& t : c.targets) {
    out += "  - iqn: " + q(t.iqn) + "\n";
    if (!t.alias.empty()) out += "    alias: " + q(t.alias) + "\n";
    if (t.chap) {
      out += "    chap:\n";
      chap(out, *t.chap, "      ");
    }
    if (!t.acl.empty()) {
      out += "    acl:\n";
      for (const AclEntry& e : t.acl) {
        out += "      - initiator: " + q(e.initiator) + "\n";
        if (!e.networks.empty()) {
          std::string list;
          for (auto& nw : e.networks) list += (list.empty() ? "" : ", ") + q(nw);
          out += "        networks: [" + list + "]\n";
        }
        if (!e.luns.empty()) {
          std::string map;
          for (auto& [lun, name] : e.luns) map += fmt::format("{}{}: {}", map.empty() ? "" : ", ", lun, q(name));
          out += "        luns: {" + map + "}\n";
        }
      }
    }
    out += "    luns:\n";
    for (const Lun& l : t.luns) {
      out += fmt::format("      - id: {}\n", l.id);
      out += "        name: " + q(l.name) + "\n";
      out += fmt::format("        size: {}\n", l.size);
      out += fmt::format("        block_size: {}\n", l.block_size);
      if (l.physical_block_size != 0)
        out += fmt::format("        physical_block_size: {}\n", l.physical_block_size);
      out += fmt::format("        thin: {}\n", b(l.thin));
      out += fmt::format("        write_cache: {}\n", b(l.write_cache));
      if (l.read_only) out += "        read_only: true\n";
      if (l.shared) out += "        shared: true\n";
      if (l.layout != "concat") {
        out += "        layout: " + q(l.layout) + "\n";
        out += fmt::format("        stripe_unit: {}\n", l.stripe_unit);
      }
      if (l.snapshots) {  // issue 7
        const Snapshots& sn = *l.snapshots;
        out += fmt::format("        snapshots:\n          store: {{data: {}, meta: {}, size: {}, "
                           "meta_size: {}}}\n          chunk_size: {}\n          warn_fill: {}\n",
                           q(sn.data), q(sn.meta), sn.size, sn.meta_size, sn.chunk_size, sn.warn_fill);
        if (!sn.schedules.empty()) out += "          schedules:\n";
        for (const SnapshotSchedule& sc : sn.schedules)
          out += fmt::format("            - {{every: {}, keep: {}, name: {}}}\n", sc.every, sc.keep,
                             q(sc.name));
      }
      if (l.source) {
        out += "        source: {lu: " + q(l.source->lu);
        if (!l.source->snapshot.empty()) out += ", snapshot: " + q(l.source->snapshot);
        if (!l.source->clone.empty()) out += ", clone: " + q(l.source->clone);
        if (!l.source->from.empty()) out += ", from: " + q(l.source->from);
        out += "}\n";
        continue;  // no sub-units of its own
      }
      out += "        subunits:\n";
      for (const SubUnit& s : l.subunits) {
        // Block style (docs/DISTRIBUTED.md).
        if (s.backend == "iscsi" || s.backend == "rbd" || !s.mirror.empty()) {
          out += fmt::format("          - size: {}\n", s.size);
          if (s.mirror.empty()) {
            subunit_fields(out, s, "            ");
          } else {
            out += "            mirror:\n";
            for (const SubUnit& m : s.mirror) {
              out += "              - backend: " + q(m.backend) + "\n";
              subunit_fields(out, m, "                ", false);
            }
          }
          continue;
        }
        out += "          - { backend: " + q(s.backend);
        if (!s.path.empty()) out += ", path: " + q(s.path);
        out += fmt::format(", size: {} }}\n", s.size);
      }
    }
  }
  if (c.cluster) {  // issue 9
    const Cluster& k = *c.cluster;
    std::string e;
    for (const auto& x : k.etcd) e += (e.empty() ? "" : ", ") + q(x);
    out += fmt::format(
        "\ncluster:\n  name: {}\n  etcd: [{}]\n  port_group: {}\n  alua: {}\n  lease_ttl: {}\n",
        q(k.name), e, k.port_group, k.alua, k.lease_ttl);
  }
  if (!c.groups.empty()) out += "\ngroups:\n";
  for (const Group& g : c.groups) {  // issue 8
    out += "  - name: " + q(g.name) + "\n";
    if (g.secondary) out += "    role: secondary\n";
    std::string luns;
    for (const auto& l : g.luns) luns += (luns.empty() ? "" : ", ") + q(l);
    out += "    luns: [" + luns + "]\n";
    if (!g.secret_file.empty())
      out += "    secret_file: " + q(g.secret_file) + "\n";
    else if (!g.secret.empty())
      out += "    secret: " + q(g.secret) + "\n";
    if (g.log_path.empty()) continue;
    out += fmt::format("    log: {{path: {}, size: {}}}\n", q(g.log_path), g.log_size);
    if (!g.bookmarks.empty()) out += "    bookmarks:\n";
    for (const BookmarkSchedule& b : g.bookmarks)
      out += fmt::format("      - {{every: {}, keep: {}, name: {}}}\n", b.every, b.keep, q(b.name));
    if (!g.links.empty()) out += "    links:\n";
    for (const ReplicationLink& l : g.links) {
      const bool fb = l.fallbehind_ios || l.fallbehind_bytes || l.fallbehind_seconds;
      std::string extra;
      if (fb) {
        std::string lim;
        if (l.fallbehind_ios) lim += fmt::format("ios: {}", l.fallbehind_ios);
        if (l.fallbehind_bytes)
          lim += fmt::format("{}bytes: {}", lim.empty() ? "" : ", ", l.fallbehind_bytes);
        if (l.fallbehind_seconds)
          lim += fmt::format("{}seconds: {}", lim.empty() ? "" : ", ", l.fallbehind_seconds);
        extra = fmt::format(", fallbehind: {{{}}}, on_full: {}", lim, l.on_full);
      }
      // A link without its own secret took the group's: written only when it differs.
      if (l.secret != g.secret || l.secret_file != g.secret_file)
        extra += secret_keys(l.secret, l.secret_file);
      if (l.tls) extra += ", tls: " + tls_map(*l.tls);
      if (l.resync_rate) extra += fmt::format(", resync_rate: {}", l.resync_rate);
      out += fmt::format(
          "      - {{name: {}, peer: {}, mode: {}{}{}}}\n", q(l.name), q(l.peer),
          l.sync ? "sync" : "async",
          l.sync || fb ? fmt::format(", sync_timeout_ms: {}", l.sync_timeout_ms) : "", extra);
    }
  }
  return out;
}

}  // namespace zuma::config
