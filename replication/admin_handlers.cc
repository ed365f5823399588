#include "replication/admin_handlers.hh"

#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "admin/command_table.hh"

namespace zuma::replication {

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

}  // namespace

void bind_replication_handlers(admin::CommandTable& t, const NodeReplication& node) {
  using admin::Json;
  auto set = [&](const char* verb, admin::Handler h) {
    if (!t.set_handler(verb, std::move(h))) throw std::logic_error(std::string("no verb ") + verb);
  };
  set("group list", [&node](const Json&) {
    Json rows = Json::array();
    for (const auto& g : node.status()) {
      if (g.secondary) {
        const auto& r = g.replica;
        rows.push_back({g.name, "secondary", joined(g.luns), r ? Json(r->applied) : Json(), Json(),
                        Json(), Json(), r && r->connected ? "primary connected" : "no primary"});
        continue;
      }
      const auto& l = g.log;
      const double fill = l.capacity ? 100.0 * double(l.used_bytes) / double(l.capacity) : 0;
      size_t up = 0;
      for (const auto& k : g.links) up += k.stats.state == LinkState::kConnected;
      rows.push_back({g.name, "primary", joined(g.luns),
                      l.next_seq ? Json(l.next_seq - 1) : Json(0), l.used_bytes, l.capacity,
                      fmt::format("{:.1f}%", fill),
                      fmt::format("{}/{} links connected", up, g.links.size())});
    }
    return Json{
        {"columns", {"GROUP", "ROLE", "LUNS", "LAST_SEQ", "LOG_USED", "LOG_SIZE", "FILL", "STATE"}},
        {"rows", rows}};
  });
  set("group status", [&node](const Json& a) {
    const std::string want = a.value("group", "");
    for (const auto& g : node.status()) {
      if (g.name != want) continue;
      Json rows = Json::array();
      if (g.secondary) {
        if (g.replica) {
          const auto& r = *g.replica;
          rows.push_back({"(from primary)", "secondary", r.connected ? "connected" : "disconnected",
                          r.applied, 0, 0, 0.0, 0, r.last_error});
        }
      } else {
        for (const auto& k : g.links) {
          const LinkStats& s = k.stats;
          std::string mode = k.sync ? "sync" : "async";
          if (k.sync && s.degraded) mode += " (degraded)";
          if (!k.sync && s.holding)
            mode += " (fell behind: holding writes)";
          else if (!k.sync && s.fell_behind)
            mode += " (fell behind)";
          rows.push_back({k.name + " -> " + k.peer, mode, to_string(s.state), s.acked,
                          s.lag_records, s.lag_bytes, s.lag_seconds, s.reconnects, s.last_error});
        }
      }
      return Json{{"columns",
                   {"LINK", "MODE", "STATE", "ACKED_SEQ", "LAG_IOS", "LAG_BYTES", "LAG_SECONDS",
                    "RECONNECTS", "LAST_ERROR"}},
                  {"rows", rows}};
    }
    throw admin::CommandError(fmt::format("no group '{}'", want));
  });
}

}  // namespace zuma::replication
