#include "replication/admin_handlers.hh"

#include <chrono>
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

// "12.0 of 48.0 MiB (25%), 3 s left" while a resync runs; what the last one sent after.
std::string resync_progress(const LinkStats& s) {
  if (!s.resyncs) return "";
  constexpr double kMiB = 1024.0 * 1024.0;
  if (s.state != LinkState::kResyncing)
    return fmt::format("last: {:.1f} MiB", double(s.resync_total) / kMiB);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - s.resync_started).count();
  const double pct =
      s.resync_total ? 100.0 * double(s.resync_done) / double(s.resync_total) : 100.0;
  std::string eta = "?";
  if (s.resync_done && secs > 0)
    eta = fmt::format("{:.0f} s left",
                      double(s.resync_total - s.resync_done) / (double(s.resync_done) / secs));
  return fmt::format("{:.1f} of {:.1f} MiB ({:.0f}%), {}", double(s.resync_done) / kMiB,
                     double(s.resync_total) / kMiB, pct, eta);
}

// The VERIFY column of a link: "running: 12/96 regions, 0 mismatched", "done: ...", or
// "cancelled: why".
std::string verify_cell(const std::optional<VerifyStatus>& v, const std::string& link) {
  if (!v) return "";
  for (const auto& l : v->links) {
    if (l.name != link) continue;
    std::string s = fmt::format("{}: {}/{} regions, {} mismatched", to_string(v->state), l.compared,
                                v->regions, l.mismatched.size());
    if (v->state == VerifyStatus::State::kCancelled || v->state == VerifyStatus::State::kFailed)
      s += " (" + v->message + ")";
    return s;
  }
  return "";
}

admin::Json verify_json(const VerifyStatus& v, const std::vector<std::string>& luns) {
  using admin::Json;
  Json links = Json::array();
  for (const auto& l : v.links) {
    Json m = Json::array();
    for (const Region& r : l.mismatched)
      m.push_back({{"lu", r.lu < luns.size() ? luns[r.lu] : std::to_string(r.lu)},
                   {"offset", r.offset},
                   {"length", r.length}});
    links.push_back({{"link", l.name}, {"compared", l.compared}, {"mismatched", m}});
  }
  return Json{{"id", fmt::format("{:016x}", v.id)},
              {"state", to_string(v.state)},
              {"repair", v.repair},
              {"regions", v.regions},
              {"hashed", v.hashed},
              {"seconds", v.seconds},
              {"max_stall_us", v.max_stall_us},
              {"message", v.message},
              {"links", links}};
}

// One line per link, then one per mismatching region, for people.
std::string verify_text(const VerifyStatus& v, const std::vector<std::string>& luns) {
  std::string out =
      fmt::format("verify {:016x}{}: {} after {:.1f} s, {} of {} regions hashed here", v.id,
                  v.repair ? " --repair" : "", to_string(v.state), v.seconds, v.hashed, v.regions);
  if (!v.message.empty()) out += ": " + v.message;
  for (const auto& l : v.links) {
    out += fmt::format("\n  link {}: {} regions compared, {} mismatched", l.name, l.compared,
                       l.mismatched.size());
    for (const Region& r : l.mismatched)
      out +=
          fmt::format("\n    LU {} offset {} length {}",
                      r.lu < luns.size() ? luns[r.lu] : std::to_string(r.lu), r.offset, r.length);
  }
  return out;
}

}  // namespace

void bind_replication_handlers(admin::CommandTable& t, NodeReplication& node) {
  using admin::Json;
  auto set = [&](const char* verb, admin::Handler h) {
    if (!t.set_handler(verb, std::move(h))) throw std::logic_error(std::string("no verb ") + verb);
  };
  set("group list", [&node](const Json&) {
    Json rows = Json::array();
    for (const auto& g : node.status()) {
      const std::string gen = g.generation ? fmt::format("{:016x}", g.generation) : "";
      if (g.secondary) {
        const auto& r = g.replica;
        std::string state = r && r->connected ? "primary connected" : "no primary";
        if (!g.consistent)
          state +=
              fmt::format(", inconsistent (resync of {} bytes{})", g.resync_pending,
                          r && r->resyncing ? fmt::format(": {} received", r->resync_bytes) : "");
        if (!g.split_brain.empty()) state += ", split brain";
        rows.push_back({g.name, "secondary", joined(g.luns), r ? Json(r->applied) : Json(), Json(),
                        Json(), Json(), state, gen});
        continue;
      }
      const auto& l = g.log;
      const double fill = l.capacity ? 100.0 * double(l.used_bytes) / double(l.capacity) : 0;
      size_t up = 0;
      for (const auto& k : g.links) up += k.stats.state == LinkState::kConnected;
      rows.push_back({g.name, "primary", joined(g.luns),
                      l.next_seq ? Json(l.next_seq - 1) : Json(0), l.used_bytes, l.capacity,
                      fmt::format("{:.1f}%", fill),
                      fmt::format("{}/{} links connected{}", up, g.links.size(),
                                  g.split_brain.empty() ? "" : ", split brain"),
                      gen});
    }
    return Json{{"columns",
                 {"GROUP", "ROLE", "LUNS", "LAST_SEQ", "LOG_USED", "LOG_SIZE", "FILL", "STATE",
                  "GENERATION"}},
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
          std::string state = r.connected ? "connected" : "disconnected";
          if (r.resyncing) state += " (resyncing)";
          // Not connected and nothing said of this group: what the listener last refused
          // (a TLS failure comes before any group is named).
          std::string err = g.split_brain.empty() ? r.last_error : g.split_brain;
          if (err.empty() && !r.connected && !g.listener_refusal.empty())
            err = "listener: " + g.listener_refusal;
          rows.push_back({"(from primary)", "secondary", state, r.applied, 0, 0, 0.0, 0, err,
                          r.resyncing || r.resync_bytes
                              ? fmt::format("{} bytes received", r.resync_bytes)
                              : "",
                          "",
                          r.verify_regions ? fmt::format("{} regions hashed, {} differed",
                                                         r.verify_regions, r.verify_mismatched)
                                           : ""});
        }
      } else {
        for (const auto& k : g.links) {
          const LinkStats& s = k.stats;
          std::string mode = k.sync ? "sync" : "async";
          if (k.sync && s.degraded) mode += " (degraded)";
          if (!k.sync && s.bitmap)
            mode += fmt::format(" (bitmap: {} dirty regions)", s.bitmap_regions);
          else if (!k.sync && s.holding)
            mode += " (fell behind: holding writes)";
          else if (!k.sync && s.fell_behind)
            mode += " (fell behind)";
          rows.push_back({k.name + " -> " + k.peer, mode, to_string(s.state), s.acked,
                          s.lag_records, s.lag_bytes, s.lag_seconds, s.reconnects, s.last_error,
                          resync_progress(s), s.security, verify_cell(g.verify, k.name)});
        }
      }
      Json out{{"columns",
                {"LINK", "MODE", "STATE", "ACKED_SEQ", "LAG_IOS", "LAG_BYTES", "LAG_SECONDS",
                 "RECONNECTS", "LAST_ERROR", "RESYNC", "SECURITY", "VERIFY"}},
               {"rows", rows}};
      if (g.verify) {
        out["verify"] = verify_json(*g.verify, g.luns);
        out["message"] = verify_text(*g.verify, g.luns);
      }
      return out;
    }
    throw admin::CommandError(fmt::format("no group '{}'", want));
  });
  auto result = [](const std::string& err, const std::string& done) {
    if (!err.empty()) throw admin::CommandError(err);
    return Json{{"message", done}};
  };
  set("group demote", [&node, result](const Json& a) {
    const std::string g = a.value("group", "");
    const auto wait = std::chrono::seconds(a.value("wait", 30));
    return result(node.demote(g, a.value("force", false), wait),
                  fmt::format("group {} is secondary here now", g));
  });
  set("group promote", [&node, result](const Json& a) {
    const std::string g = a.value("group", "");
    return result(node.promote(g, a.value("force", false)),
                  fmt::format("group {} is primary here now", g));
  });
  set("group bookmark", [&node](const Json& a) {
    const std::string g = a.value("group", ""), name = a.value("name", "");
    auto seq = node.bookmark(g, name);
    if (!seq) throw admin::CommandError(seq.error());
    return Json{{"message", fmt::format("bookmark '{}' of group {} at record {}", name, g, *seq)}};
  });
  set("group verify", [&node](const Json& a) {
    const std::string g = a.value("group", ""), link = a.value("link", "");
    auto id = node.verify(g, link, a.value("repair", false));
    if (!id) throw admin::CommandError(id.error());
    return Json{
        {"id", fmt::format("{:016x}", *id)},
        {"message",
         fmt::format("verify {:016x} of group {} started{}: `zumactl group status {}` shows "
                     "its progress and result",
                     *id, g, link.empty() ? "" : " (link " + link + ")", g)}};
  });
  set("group discard", [&node, result](const Json& a) {
    const std::string g = a.value("group", "");
    return result(node.discard(g),
                  fmt::format("group {}: this side's changes since the divergence will be "
                              "replaced by the primary's when it connects",
                              g));
  });
}

}  // namespace zuma::replication
