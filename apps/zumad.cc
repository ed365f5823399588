// zumad: the Zuma iSCSI target daemon. A thin main (STYLE.md 12): config -> backends ->
// logical units -> target server; signals; clean shutdown.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "admin/command_table.hh"
#include "admin/control_server.hh"
#include "admin/metrics_server.hh"
#include "admin/service.hh"
#include "admin/systemd_notify.hh"
#include "config/config.hh"
#include "replication/admin_handlers.hh"
#include "replication/node_replication.hh"
#include "scsi/device_server.hh"
#include "scsi/logical_unit.hh"
#include "snapshot/admin_handlers.hh"
#include "snapshot/commands.hh"
#include "snapshot/registry.hh"
#include "storage/factory.hh"
#include "target/cluster.hh"
#include "target/server.hh"

namespace {

using namespace zuma;

// The snapshot stores of LUs with `snapshots:` (issue 7), by LU name.
snapshot::Registry g_snapshots;
// Replication groups (issue 8): set before the LUs are opened.
replication::NodeReplication* g_replication = nullptr;
// This node's membership of its cluster (issue 9): shared LUs' identity, reservations, ALUA.
target::Cluster* g_cluster = nullptr;
// LUs by name, for the replication role changes that protect or free a group's LUs.
std::mutex g_group_lus_mu;
std::map<std::string, std::weak_ptr<scsi::LogicalUnit>> g_group_lus;

// A LU with `snapshots:`: its backend becomes the live view of a snapshot store.
std::unique_ptr<storage::Backend> with_snapshots(const config::Lun& l,
                                                 std::unique_ptr<storage::Backend> home) {
  const config::Snapshots& s = *l.snapshots;
  auto data = storage::open_backend({"file", s.data, s.size});
  if (!data) throw std::runtime_error(fmt::format("LU '{}': snapshot store: {}", l.name, data.error()));
  auto meta = storage::open_backend({"file", s.meta, s.meta_size});
  if (!meta) throw std::runtime_error(fmt::format("LU '{}': snapshot metadata: {}", l.name, meta.error()));
  snapshot::StoreOptions o;
  o.name = l.name;
  o.chunk_size = s.chunk_size;
  o.warn_fill = s.warn_fill / 100.0;
  auto store = snapshot::SnapshotStore::open(std::move(home), std::move(*data), std::move(*meta), o);
  if (!store) throw std::runtime_error(fmt::format("LU '{}': snapshot store: {}", l.name, store.error()));
  std::vector<snapshot::Schedule> schedules;
  for (const auto& sc : s.schedules) schedules.push_back({sc.name, sc.every, sc.keep});
  g_snapshots.add(l.name, *store, std::move(schedules));
  return (*store)->live_view();
}

// A LU with `source:`: a snapshot (read-only) or a clone of an earlier LU's store.
std::unique_ptr<storage::Backend> snapshot_source(const config::Lun& l) {
  const config::LunSource& src = *l.source;
  auto store = g_snapshots.find(src.lu);
  if (!store)
    throw std::runtime_error(fmt::format("LU '{}': LU '{}' has no snapshot store (list it first)",
                                         l.name, src.lu));
  if (!src.snapshot.empty()) {
    auto e = store->find(src.snapshot);
    if (!e) throw std::runtime_error(fmt::format("LU '{}': no snapshot '{}' of '{}'", l.name, src.snapshot, src.lu));
    auto v = store->snapshot_view(*e);
    if (!v) throw std::runtime_error(fmt::format("LU '{}': {}", l.name, v.error()));
    return std::move(*v);
  }
  std::optional<uint64_t> id;
  for (const auto& c : store->clones())
    if (c.name == src.clone) id = c.id;
  if (!id) {
    if (src.from.empty())
      throw std::runtime_error(fmt::format("LU '{}': no clone '{}' of '{}' (give from: to create it)",
                                           l.name, src.clone, src.lu));
    auto made = store->clone(src.from, src.clone);
    if (!made) throw std::runtime_error(fmt::format("LU '{}': {}", l.name, made.error()));
    id = *made;
  }
  auto v = store->clone_view(*id);
  if (!v) throw std::runtime_error(fmt::format("LU '{}': {}", l.name, v.error()));
  return std::move(*v);
}

struct BuiltLu {
  std::string name;
  std::shared_ptr<scsi::LogicalUnit> lu;
};

// A config sub-unit as storage opens it (docs/DISTRIBUTED.md: iscsi, rbd and mirror backends).
storage::SubUnitSpec subunit_spec(const config::Config& cfg, const config::Lun& l,
                                  const config::SubUnit& su, size_t index, uint64_t size) {
  storage::SubUnitSpec spec;
  const auto member = [&](const config::SubUnit& m) {
    storage::SubUnitSpec::Member out;
    out.backend = {m.backend, m.path, size};
    out.iscsi.url = m.url;
    out.iscsi.initiator =
        m.initiator.empty() ? fmt::format("iqn.2026-11.org.zuma:{}", cfg.node.name) : m.initiator;
    if (!m.chap.empty()) {
      out.iscsi.user = m.chap.front().user;
      out.iscsi.secret = m.chap.front().secret;
      out.iscsi.mutual_user = m.chap.front().mutual_user;
      out.iscsi.mutual_secret = m.chap.front().mutual_secret;
    }
    out.iscsi.size = size;
    out.iscsi.block_size = l.block_size;
    out.iscsi.timeout_s = m.timeout;
    out.rbd.pool = m.pool;
    out.rbd.image = m.image;
    if (!m.user.empty()) out.rbd.user = m.user;
    out.rbd.keyring = m.keyring;
    out.rbd.ceph_conf = m.ceph_conf;
    out.rbd.mon_host = m.mon_host;
    out.rbd.size = size;
    out.rbd.timeout_s = m.timeout;
    return out;
  };
  if (su.mirror.empty()) {
    spec.members.push_back(member(su));
  } else {
    for (const auto& m : su.mirror) spec.members.push_back(member(m));
    spec.mirror_state = fmt::format("{}/mirror/{}.{}", cfg.node.data_dir, l.name, index);
  }
  spec.size = size;
  return spec;
}

// Opens one LU's sub-units and builds the LU (at startup, and for LUs added live through
// zumactl). Throws std::runtime_error with a one-line message.
std::shared_ptr<scsi::LogicalUnit> open_lu(const config::Config& cfg, const config::Lun& l) {
  std::unique_ptr<storage::Backend> backend;
  if (l.source) backend = snapshot_source(l);  // issue 7: no sub-units of its own
  std::vector<std::unique_ptr<storage::Backend>> parts;
  uint64_t given = 0;
  for (const auto& su : l.subunits) given += su.size;
  for (size_t i = 0; i < l.subunits.size(); ++i) {
    const auto& su = l.subunits[i];
    const uint64_t size = su.size ? su.size : l.size - given;  // validated by config
    auto b = storage::open_subunit(subunit_spec(cfg, l, su, i, size));
    if (!b) throw std::runtime_error(fmt::format("LU '{}': {}", l.name, b.error()));
    parts.push_back(std::move(*b));
  }
  if (l.source) {
  } else if (l.layout == "striped") {
    auto s = storage::make_striped(std::move(parts), l.stripe_unit, l.size);
    if (!s) throw std::runtime_error(fmt::format("LU '{}': {}", l.name, s.error()));
    backend = std::move(*s);
  } else {
    backend = parts.size() == 1 ? std::move(parts[0]) : storage::make_concat(std::move(parts));
  }
  // Replication layer -> snapshot layer -> sub-units (docs/ARCHITECTURE.md "Replication
  // above snapshots": the store redirects writes into its data area, which the group's log
  // must see as the LU's writes).
  if (l.snapshots) backend = with_snapshots(l, std::move(backend));
  if (g_replication && !l.source) backend = g_replication->layer(l.name, std::move(backend));
  if (g_replication) g_replication->bind(l.name, backend.get());
  auto uuid = scsi::load_or_create_lu_uuid(cfg.node.data_dir, l.name);
  if (!uuid) throw std::runtime_error(fmt::format("LU '{}': {}", l.name, uuid.error()));
  // A shared LU has one identity on every node: the first node's, kept in etcd.
  if (l.shared) *uuid = g_cluster->lu_uuid(l.name, l.size, l.block_size, *uuid);
  scsi::LuParams lp;
  lp.name = l.name;
  lp.uuid = *uuid;
  lp.block_size = l.block_size;
  if (l.physical_block_size > l.block_size)
    lp.lbppb_exponent = uint8_t(std::countr_zero(l.physical_block_size / l.block_size));
  lp.num_blocks = l.size / l.block_size;
  lp.thin = l.thin;
  lp.write_cache = l.write_cache;
  lp.read_only = l.read_only;                // true for snapshot exports too (config)
  lp.shared = l.shared;
  lp.state_dir = cfg.node.data_dir + "/lu";  // reservations (APTPL), saved mode pages
  lp.power_on_unit_attention = true;         // 29h/01h on each I_T nexus's first command
  auto lu = scsi::make_logical_unit(std::move(lp), std::move(backend));
  if (l.shared) g_cluster->attach(l.name, lu);
  // LUs of a group that is secondary here are write protected while it is (issue 8: roles).
  if (g_replication && g_replication->read_only(l.name)) lu->set_write_protected(true);
  if (g_replication) {
    std::lock_guard lk(g_group_lus_mu);
    g_group_lus[l.name] = lu;
  }
  // Issue 7: a rollback replaces the data under the LU's initiators; why 28h/00h for every
  // I_T nexus: snapshot/snapshot_store.hh (set_rollback_listener).
  if (l.snapshots || (l.source && !l.source->clone.empty()))
    g_snapshots.on_rollback(l.snapshots ? l.name : l.source->lu, l.snapshots ? "" : l.source->clone,
                            [w = std::weak_ptr<scsi::LogicalUnit>(lu)] {
                              if (auto p = w.lock())
                                p->unit_attentions().establish_all(scsi::Reason::kUaMediumMayHaveChanged);
                            });
  return lu;
}

// Opens every LU's sub-units. Errors are startup errors: thrown, reported, exit 1.
target::ServerConfig build(const config::Config& cfg, std::vector<BuiltLu>& lus) {
  target::ServerConfig sc;
  const auto& is = cfg.iscsi;
  sc.limits.max_recv_data_segment_length = is.max_recv_data_segment_length;
  sc.limits.max_burst_length = is.max_burst_length;
  sc.limits.first_burst_length = is.first_burst_length;
  sc.limits.immediate_data = is.immediate_data;
  sc.limits.initial_r2t = is.initial_r2t;
  sc.limits.max_outstanding_r2t = is.max_outstanding_r2t;
  sc.limits.default_time2wait = is.default_time2wait;
  sc.limits.default_time2retain = is.default_time2retain;
  sc.limits.max_connections = is.max_connections;
  sc.limits.queue_depth = is.queue_depth;
  sc.limits.nop_in_interval = is.nop_in_interval;
  sc.limits.nop_in_timeout = is.nop_in_timeout;
  sc.limits.login_timeout = is.login_timeout;
  sc.limits.write_buffer_budget = is.write_buffer_budget;
  sc.limits.header_digest_crc32c = is.header_digest_crc32c;
  sc.limits.header_digest_none = is.header_digest_none;
  sc.limits.data_digest_crc32c = is.data_digest_crc32c;
  sc.limits.data_digest_none = is.data_digest_none;
  sc.reactors = cfg.node.reactors;
  sc.node_name = cfg.node.name;
  if (cfg.cluster) sc.port_group = cfg.cluster->port_group;
  sc.discovery_chap = admin::chap_policy(cfg.discovery.chap);
  for (const auto& p : cfg.portals) sc.portals.push_back({p.host, p.port, p.tpgt});
  // One implementation of a target's definition for startup and live changes:
  // admin::make_target_def, over the LUs opened here by name.
  std::map<std::string, std::shared_ptr<scsi::LogicalUnit>> by_name;
  for (const auto& t : cfg.targets)
    for (const auto& l : t.luns) {
      auto lu = open_lu(cfg, l);
      lus.push_back({l.name, lu});
      by_name.emplace(l.name, std::move(lu));
    }
  for (const auto& t : cfg.targets)
    sc.targets.push_back(*admin::make_target_def(t, cfg.portals, by_name));
  return sc;
}

std::string url_host(const std::string& h) {
  return h.find(':') != std::string::npos ? "[" + h + "]" : h;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"zumad: the Zuma iSCSI target daemon"};
  std::string config_path, check_path, log_level;
  app.add_option("-c,--config", config_path, "run with this YAML configuration file");
  app.add_option("--check-config", check_path, "validate a configuration file and exit");
  app.add_option("--log-level", log_level, "override node.log_level (trace..off)");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("zumad");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");

  if (!check_path.empty()) {
    try {
      auto cfg = config::load(check_path);
      size_t luns = 0;
      for (auto& t : cfg.targets) luns += t.luns.size();
      const std::string groups =
          cfg.groups.empty() ? "" : fmt::format(", {} replication groups", cfg.groups.size());
      std::printf("%s: OK (%zu portals, %zu targets, %zu LUNs%s)\n", check_path.c_str(),
                  cfg.portals.size(), cfg.targets.size(), luns, groups.c_str());
      return 0;
    } catch (const config::ConfigError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "zumad: --config FILE is required (or --check-config FILE)\n");
    return 2;
  }

  config::Config cfg;
  try {
    cfg = config::load(config_path);
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  spdlog::set_level(spdlog::level::from_str(log_level.empty() ? cfg.node.log_level : log_level));

  // Signals are taken synchronously by the main thread; every other thread inherits the
  // blocked mask. SIGPIPE is never wanted (sends use MSG_NOSIGNAL as well).
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Declared first, destroyed last: the LUs hold its replication layers (also when startup
  // fails half way).
  std::unique_ptr<replication::NodeReplication> replication;
  std::unique_ptr<target::Cluster> cluster;
  std::vector<BuiltLu> lus;
  std::unique_ptr<target::Server> server;
  // The control socket (zumactl) and the metrics endpoint: admin/.
  admin::CommandTable commands = admin::standard_table();
  if (!commands.find("snapshot create")) snapshot::register_snapshot_commands(commands);
  std::unique_ptr<admin::Service> service;
  std::unique_ptr<admin::ControlServer> control;
  std::unique_ptr<admin::MetricsServer> metrics;
  try {
    if (cfg.cluster) {
      target::ClusterOptions co;
      co.cluster = cfg.cluster->name;
      co.node = cfg.node.name;
      co.etcd = cfg.cluster->etcd;
      co.port_group = cfg.cluster->port_group;
      co.alua = target::alua_state_from_name(cfg.cluster->alua);
      co.lease_ttl = cfg.cluster->lease_ttl;
      for (const auto& p : cfg.portals)
        if (std::find(co.ports.begin(), co.ports.end(), p.tpgt) == co.ports.end())
          co.ports.push_back(p.tpgt);
      cluster = std::make_unique<target::Cluster>(std::move(co));
      g_cluster = cluster.get();
    }
    replication = replication::NodeReplication::create(cfg);
    g_replication = replication.get();
    replication->set_snapshots({
        .check = [](const std::string& lu) -> std::string {
          return g_snapshots.find(lu) ? "" : "the LU has no `snapshots:` in the configuration";
        },
        .create = [](const std::string& lu, const std::string& name) -> std::string {
          auto s = g_snapshots.find(lu);
          if (!s) return "the LU has no `snapshots:` in the configuration";
          auto r = s->create(name);
          return r ? "" : r.error();
        },
        .remove = [](const std::string& lu, const std::string& name) -> std::string {
          auto s = g_snapshots.find(lu);
          if (!s) return "the LU has no `snapshots:` in the configuration";
          auto r = s->remove(name);
          return r ? "" : r.error();
        },
        .list =
            [](const std::string& lu) {
              std::vector<std::string> names;  // oldest first (epochs grow with time)
              if (auto s = g_snapshots.find(lu))
                for (const auto& e : s->list(false))
                  if (e.clone == 0) names.push_back(e.name);
              return names;
            },
    });
    std::map<std::string, std::string> group_of_lu;
    for (const auto& g : cfg.groups)
      for (const auto& lu : g.luns) group_of_lu[lu] = g.name;
    g_snapshots.set_rollback_guard([group_of_lu](const std::string& lu) -> std::string {
      auto it = group_of_lu.find(lu);
      if (it == group_of_lu.end()) return "";
      return fmt::format(
          "LU '{}' is in replication group '{}': a rollback would change it behind the group's log "
          "and "
          "its peers. Export the snapshot as a LU (source: {{lu: {}, snapshot: ...}}) and copy "
          "from it",
          lu, it->second, lu);
    });
    replication->set_protect([](const std::string& name, bool on) {
      std::lock_guard lk(g_group_lus_mu);
      auto it = g_group_lus.find(name);
      if (it == g_group_lus.end()) return;
      if (auto lu = it->second.lock()) lu->set_write_protected(on);
    });
    server = std::make_unique<target::Server>(build(cfg, lus));
    replication->start();  // crash replay before any initiator is served
    if (cluster) cluster->start();
    server->start();
    std::map<std::string, std::shared_ptr<scsi::LogicalUnit>> by_name;
    for (auto& l : lus) by_name.emplace(l.name, l.lu);
    service = std::make_unique<admin::Service>(cfg, *server, std::move(by_name), open_lu);
    service->bind(commands);
    service->set_resync_rate_hook(
        [r = replication.get()](const std::string& group, const std::string& link, uint64_t rate) {
          return r->set_resync_rate(group, link, rate);
        });
    snapshot::bind_snapshot_handlers(commands, g_snapshots);
    replication::bind_replication_handlers(commands, *replication);
    commands.set_handler("cluster status", [c = cluster.get()](const admin::Json&) {
      if (!c) throw admin::CommandError("this node has no `cluster:` in its configuration");
      admin::Json rows = admin::Json::array();
      for (const auto& [pg, m] : c->members()) {
        std::string ports;
        for (uint16_t p : m.ports) ports += (ports.empty() ? "" : ",") + std::to_string(p);
        const bool me = pg == c->port_group();
        const uint8_t st = me && c->fenced() ? scsi::alua::kUnavailable : m.state;
        rows.push_back({pg, m.node + (me ? " (this node)" : ""), m.live ? "yes" : "no",
                        m.live || me ? target::alua_state_name(st) : "offline", ports, m.instance});
      }
      return admin::Json{{"columns", {"PORT_GROUP", "NODE", "LIVE", "ALUA", "PORTS", "INSTANCE"}},
                         {"rows", rows}};
    });
    service->add_metrics_source([] { return snapshot::snapshot_metrics_text(g_snapshots); });
    service->add_metrics_source([r = replication.get()] { return r->metrics_text(); });
    if (cluster) service->add_metrics_source([c = cluster.get()] { return c->metrics_text(); });
    service->add_name_source(
        "snapshots", [](const std::string& lu) { return snapshot::snapshot_names(g_snapshots, lu); });
    service->add_name_source(
        "clones", [](const std::string& lu) { return snapshot::clone_names(g_snapshots, lu); });
    g_snapshots.start();  // scheduled snapshots
    control = std::make_unique<admin::ControlServer>(cfg.node.control_socket, commands);
    control->start();
    if (!cfg.node.metrics.empty()) {
      auto hp = admin::split_host_port(cfg.node.metrics);  // validated by config
      metrics = std::make_unique<admin::MetricsServer>(hp->first, hp->second,
                                                       [s = service.get()] { return s->metrics_text(); });
      metrics->start();
    }
  } catch (const std::exception& e) {
    spdlog::critical("startup failed: {}", e.what());
    // The replica listener may already serve a primary that writes into the LUs, which go
    // before `replication` does: stop it first.
    if (replication) replication->quiesce();
    return 1;
  }
  const auto ports = server->bound_ports();
  std::string portals;
  for (size_t i = 0; i < cfg.portals.size(); ++i)
    portals += fmt::format("{}{}:{}", i ? ", " : "", url_host(cfg.portals[i].host), ports[i]);
  spdlog::info("zumad {} ready: {} LUs in {} targets on {}; control {}; metrics {}", cfg.node.name,
               lus.size(), cfg.targets.size(), portals, cfg.node.control_socket,
               metrics ? fmt::format("http://{}:{}/metrics", url_host(admin::split_host_port(cfg.node.metrics)->first),
                                     metrics->port())
                       : std::string("off"));
  for (const auto& t : cfg.targets)
    for (const auto& l : t.luns)
      spdlog::info("  iscsi://{}:{}/{}/{}  ({}, {} bytes, {}-byte blocks)",
                   url_host(cfg.portals[0].host), ports[0], t.iqn, l.id, l.name, l.size,
                   l.block_size);

  // Type=notify (dist/zumad.service): the portals listen and the control socket answers.
  if (int r = admin::notify_systemd(fmt::format("READY=1\nSTATUS={} LUs in {} targets", lus.size(),
                                                cfg.targets.size()));
      r < 0)
    spdlog::warn("cannot notify systemd ($NOTIFY_SOCKET): {}", strerror(-r));

  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("signal {}: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  admin::notify_systemd("STOPPING=1");
  if (metrics) metrics->stop();
  control->stop();  // no more live changes; then the LUs in use now are final
  service->stop_jobs();  // copy lun jobs: cancelled, their threads joined
  g_snapshots.stop();
  replication->stop_background();  // verifies, bookmark schedules: before the portals stop
  auto live_lus = service->lus();
  server->stop();
  // The reactors are gone; their IoContexts live until server.reset(). Replication stops
  // writing into the LUs and its group writers stop posting to those IoContexts.
  replication->quiesce();
  // Leaves the cluster: the other nodes stop waiting for this one at once.
  if (cluster) cluster->stop();
  int rc = 0;
  for (auto& [name, lu] : live_lus) {
    int r = scsi::flush_logical_unit(*lu);
    if (r != 0) {
      spdlog::error("LU '{}': flush failed: {}", name, strerror(-r));
      rc = 1;
    }
  }
  // Async links get a moment to ship what the last writes left in the log.
  if (!replication->drain_links(std::chrono::seconds(5)))
    spdlog::warn("replication: a link did not catch up before shutdown; it resumes at the next start");
  // The LUs (and the replication layers in them) go before their groups' logs.
  live_lus.clear();
  lus.clear();
  service.reset();
  server.reset();
  g_snapshots.clear();
  g_replication = nullptr;
  replication.reset();
  spdlog::info("zumad stopped");
  return rc;
}
