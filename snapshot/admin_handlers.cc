#include "snapshot/admin_handlers.hh"

#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace zuma::snapshot {

namespace {

std::shared_ptr<SnapshotStore> store_of(Registry& r, const admin::Json& a) {
  const std::string lu = a.value("lu", "");
  auto s = r.find(lu);
  if (!s) throw admin::CommandError(fmt::format("LU '{}' has no snapshots (no snapshots: in its config)", lu));
  return s;
}

template <class T>
T check(std::expected<T, std::string> r) {
  if (!r) throw admin::CommandError(r.error());
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

}  // namespace

std::vector<std::string> snapshot_names(Registry& registry, const std::string& lu) {
  std::vector<std::string> out;
  auto store = registry.find(lu);
  if (!store) return out;
  for (const SnapshotListing& s : store->list(/*with_usage=*/false))
    out.push_back(s.name.empty() ? std::to_string(s.id) : s.name);
  return out;
}

std::vector<std::string> clone_names(Registry& registry, const std::string& lu) {
  std::vector<std::string> out;
  auto store = registry.find(lu);
  if (!store) return out;
  for (const CloneInfo& c : store->clones())
    out.push_back(c.name.empty() ? std::to_string(c.id) : c.name);
  return out;
}

void bind_snapshot_handlers(admin::CommandTable& t, Registry& reg) {
  using admin::Json;
  auto set = [&](const char* verb, admin::Handler h) {
    if (!t.set_handler(verb, std::move(h))) throw std::logic_error(std::string("no verb ") + verb);
  };
  set("snapshot create", [&reg](const Json& a) {
    auto s = store_of(reg, a);
    const Epoch e = check(s->create(a.value("name", ""), a.value("clone", "")));
    Json out{{"id", e}, {"name", a.value("name", "")}};
    if (!a.value("clone", "").empty()) out["clone"] = a.value("clone", "");
    return out;
  });
  set("snapshot list", [&reg](const Json& a) {
    auto s = store_of(reg, a);
    Json out = Json::array();
    std::map<uint64_t, std::string> clone_names;
    for (const auto& c : s->clones()) clone_names[c.id] = c.name.empty() ? std::to_string(c.id) : c.name;
    for (const auto& l : s->list(!a.value("fast", false)))
      out.push_back({{"id", l.id},
                     {"of", l.clone == 0 ? std::string() : clone_names[l.clone]},
                     {"name", l.name},
                     {"created", l.created},
                     {"exclusive_bytes", l.exclusive_bytes},
                     {"shared_bytes", l.shared_bytes}});
    return out;
  });
  set("snapshot delete", [&reg](const Json& a) {
    check(store_of(reg, a)->remove(a.value("snapshot", "")));
    return Json{{"deleted", a.value("snapshot", "")}, {"reclaim", "background"}};
  });
  set("snapshot rollback", [&reg](const Json& a) {
    auto s = store_of(reg, a);
    if (auto why = reg.rollback_refused(a.value("lu", "")); !why.empty())
      throw admin::CommandError(why);
    check(s->rollback(a.value("snapshot", "")));
    return Json{{"rolled_back_to", a.value("snapshot", "")}};
  });
  set("snapshot clone", [&reg](const Json& a) {
    const uint64_t id = check(store_of(reg, a)->clone(a.value("snapshot", ""), a.value("name", "")));
    return Json{{"clone", id}, {"name", a.value("name", "")}};
  });
  set("snapshot delete-clone", [&reg](const Json& a) {
    auto s = store_of(reg, a);
    const std::string name = a.value("clone", "");
    for (const auto& c : s->clones())
      if (c.name == name || std::to_string(c.id) == name) {
        check(s->remove_clone(c.id));
        return Json{{"deleted", name}};
      }
    throw admin::CommandError(fmt::format("no clone '{}'", name));
  });
  set("snapshot diff", [&reg](const Json& a) {
    auto ext = check(store_of(reg, a)->diff(a.value("from", ""), a.value("to", "")));
    Json out = Json::array();
    for (const Extent& e : ext) out.push_back({{"offset", e.offset}, {"length", e.length}});
    return out;
  });
  set("snapshot status", [&reg](const Json& a) {
    const StoreStatus st = store_of(reg, a)->status();
    return Json{{"chunk_size", st.chunk_size},
                {"total_bytes", st.total_bytes},
                {"used_bytes", st.used_bytes},
                {"fill_percent", st.total_bytes ? 100.0 * double(st.used_bytes) / double(st.total_bytes) : 0.0},
                {"meta_bytes", st.meta_bytes},
                {"meta_capacity", st.meta_capacity},
                {"snapshots", st.snapshots},
                {"clones", st.clones},
                {"reclaiming", st.reclaiming}};
  });
}

std::string snapshot_metrics_text(Registry& registry) {
  struct Row {
    std::string lu;
    StoreStatus st;
  };
  std::vector<Row> rows;
  for (const std::string& lu : registry.names())
    if (auto store = registry.find(lu)) rows.push_back({lu, store->status()});
  if (rows.empty()) return {};
  std::string out;
  auto label = [](const std::string& lu) {
    std::string l;
    for (char c : lu) {
      if (c == '\\' || c == '"') l += '\\';
      l += c;
    }
    return l;
  };
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    for (const Row& r : rows) out += fmt::format("{}{{lu=\"{}\"}} {}\n", name, label(r.lu), value(r.st));
  };
  family("zuma_snapshot_store_bytes", "gauge", "LU home plus snapshot store data, bytes",
         [](const StoreStatus& s) { return s.total_bytes; });
  family("zuma_snapshot_store_used_bytes", "gauge", "bytes of home and store in use",
         [](const StoreStatus& s) { return s.used_bytes; });
  family("zuma_snapshot_meta_bytes", "gauge", "size of the current metadata checkpoint, bytes",
         [](const StoreStatus& s) { return s.meta_bytes; });
  family("zuma_snapshot_meta_capacity_bytes", "gauge", "largest checkpoint the metadata area holds",
         [](const StoreStatus& s) { return s.meta_capacity; });
  family("zuma_snapshots", "gauge", "snapshots of the LU and of its clones",
         [](const StoreStatus& s) { return s.snapshots; });
  family("zuma_snapshot_clones", "gauge", "writable clones of the LU's snapshots",
         [](const StoreStatus& s) { return s.clones; });
  family("zuma_snapshot_fill_warning", "gauge",
         "1 while the store's fill level is at or above its warn_fill (also logged)",
         [](const StoreStatus& s) {
           return s.total_bytes != 0 &&
                          double(s.used_bytes) >= s.warn_fill * double(s.total_bytes)
                      ? 1
                      : 0;
         });
  return out;
}

}  // namespace zuma::snapshot
