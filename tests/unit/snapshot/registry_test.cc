// Registry: schedules take snapshots when due and keep only the newest `keep`; the
// snapshot keys of the YAML parse with file:line:column errors; the admin verbs run.
#include "snapshot/registry.hh"

#include <doctest/doctest.h>

#include "admin/command_table.hh"
#include "config/config.hh"
#include "snapshot/admin_handlers.hh"
#include "snapshot/commands.hh"
#include "storage/memory_backend.hh"

using namespace zuma;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<snapshot::SnapshotStore> memory_store() {
  // Constructed, not assigned: GCC 12 -O2 with ASan warns falsely (-Wrestrict) on
  // std::string::operator=(const char*) here.
  snapshot::StoreOptions o{.name = "r"};
  auto s = snapshot::SnapshotStore::open(std::make_unique<storage::MemoryBackend>(1 << 20),
                                         std::make_unique<storage::MemoryBackend>(1 << 20),
                                         std::make_unique<storage::MemoryBackend>(256 << 10), o);
  REQUIRE(s);
  return *s;
}

std::string config_error(const std::string& snapshots) {
  const std::string text =
      "portals: [\"127.0.0.1:3260\"]\ntargets:\n  - iqn: iqn.2026-11.org.zuma:t\n    luns:\n"
      "      - { id: 0, name: d, size: 1MiB, backend: memory, snapshots: " + snapshots + " }\n";
  try {
    config::parse(text, "t.yaml");
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("schedules snapshot when due and apply retention") {
  snapshot::Registry reg;
  auto store = memory_store();
  reg.add("d", store, {{"hourly", 3600, 2}});
  const auto t0 = std::chrono::system_clock::now();
  CHECK(reg.run_due(t0) == 0);  // not due yet
  CHECK(reg.run_due(t0 + 3600s) == 1);
  CHECK(reg.run_due(t0 + 3700s) == 0);
  CHECK(reg.run_due(t0 + 7200s) == 1);
  CHECK(reg.run_due(t0 + 10800s) == 1);
  auto l = store->list(false);
  REQUIRE(l.size() == 2);
  CHECK(l[0].name == snapshot::scheduled_name("hourly", t0 + 7200s));
  CHECK(l[1].name == snapshot::scheduled_name("hourly", t0 + 10800s));
  CHECK(reg.find("d") == store);
  CHECK(reg.find("x") == nullptr);
}

TEST_CASE("the snapshot verbs through the command table") {
  snapshot::Registry reg;
  reg.add("d", memory_store());
  admin::CommandTable t;
  snapshot::register_snapshot_commands(t);
  snapshot::bind_snapshot_handlers(t, reg);
  auto run = [&](const std::vector<std::string>& words) {
    auto p = t.parse(words);
    REQUIRE_MESSAGE(p, p.error());
    return p->first->handler(p->second);
  };
  CHECK(run({"snapshot", "create", "d", "--name", "one"})["id"] == 1);
  CHECK(run({"snapshot", "list", "d"}).size() == 1);
  CHECK(run({"snapshot", "diff", "d", "one"}) == admin::Json::array());
  CHECK(run({"snapshot", "status", "d"})["snapshots"] == 1);
  CHECK(run({"snapshot", "clone", "d", "one", "--name", "c"})["clone"] == 1);
  CHECK_THROWS_WITH_AS(run({"snapshot", "delete", "d", "one"}),
                       "snapshot 1 is the base of a clone: delete the clone first",
                       admin::CommandError);
  // A snapshot of the clone: listed with the clone it belongs to; rollback and diff by name.
  CHECK(run({"snapshot", "create", "d", "--name", "c-1", "--clone", "c"})["id"] == 2);
  const admin::Json list = run({"snapshot", "list", "d", "--fast"});
  REQUIRE(list.size() == 2);
  CHECK(list[0]["of"] == "");
  CHECK(list[1]["of"] == "c");
  CHECK(run({"snapshot", "diff", "d", "c-1"}) == admin::Json::array());
  run({"snapshot", "rollback", "d", "c-1"});
  CHECK_THROWS_WITH_AS(run({"snapshot", "diff", "d", "one", "c-1"}),
                       "'one' and 'c-1' are not snapshots of the same LU or clone", admin::CommandError);
  CHECK_THROWS_WITH_AS(run({"snapshot", "create", "d", "--clone", "nope"}), "no clone 'nope'",
                       admin::CommandError);
  run({"snapshot", "delete-clone", "d", "c"});
  CHECK(run({"snapshot", "status", "d"})["snapshots"] == 1);  // c-1 went with its clone
  run({"snapshot", "delete", "d", "one"});
  CHECK_THROWS_WITH_AS(run({"snapshot", "list", "nope"}),
                       "LU 'nope' has no snapshots (no snapshots: in its config)",
                       admin::CommandError);
}

TEST_CASE("snapshot keys in the YAML") {
  CHECK(config_error("{ store: { data: /tmp/zd, meta: /tmp/zm, size: 4MiB }, schedules: "
                     "[ {every: 15m, keep: 24} ] }") == "");
  CHECK(config_error("{ store: { data: /tmp/zd, meta: /tmp/zm, size: 4MiB }, chunk_size: 3KiB }") ==
        "t.yaml:5:134: targets[0].luns[0].snapshots.chunk_size: expected a power of two from "
        "4KiB to 8MiB");
  CHECK(config_error("{ store: { data: /tmp/zd, size: 4MiB } }") ==
        "t.yaml:5:76: targets[0].luns[0].snapshots.store: missing key 'meta'");
  CHECK(config_error("{ store: { data: /tmp/zd, meta: /tmp/zm, size: 4MiB }, schedules: "
                     "[ {every: 15x, keep: 24} ] }")
            .find("snapshots.schedules[0].every: expected a duration like 90s, 15m, 1h or 1d") !=
        std::string::npos);
  CHECK(config_error("{ store: { data: /tmp/zd, meta: /tmp/zd, size: 4MiB } }")
            .find("is already used by LU 'd'") != std::string::npos);
}

TEST_CASE("a LU source must name a LU with snapshots of the same size") {
  const std::string head =
      "portals: [\"127.0.0.1:3260\"]\ntargets:\n  - iqn: iqn.2026-11.org.zuma:t\n    luns:\n"
      "      - { id: 0, name: d, size: 1MiB, backend: memory, snapshots: { store: { data: "
      "/tmp/zd, meta: /tmp/zm, size: 4MiB } } }\n";
  auto err = [&](const std::string& lun) {
    try {
      config::parse(head + lun, "t.yaml");
    } catch (const config::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(err("      - { id: 1, name: s, size: 1MiB, source: { lu: d, snapshot: a } }\n") == "");
  CHECK(err("      - { id: 1, name: s, size: 2MiB, source: { lu: d, snapshot: a } }\n")
            .find("the size and block size must be those of 'd'") != std::string::npos);
  CHECK(err("      - { id: 1, name: s, size: 1MiB, source: { lu: x, snapshot: a } }\n") ==
        "t.yaml:6:47: targets[0].luns[1].source: 'x' is not a LU with snapshots");
  CHECK(err("      - { id: 1, name: s, size: 1MiB, source: { lu: d } }\n")
            .find("give either snapshot (read-only) or clone (writable)") != std::string::npos);
}

TEST_CASE("snapshot_metrics_text: per-LU store figures and the fill warning") {
  snapshot::Registry reg;
  CHECK(snapshot::snapshot_metrics_text(reg).empty());
  auto store = memory_store();  // 1 MiB home, 1 MiB data, warn_fill 0.90 (the default)
  reg.add("d", store, {});
  std::string text = snapshot::snapshot_metrics_text(reg);
  CHECK(text.find("# TYPE zuma_snapshot_store_bytes gauge\n") != std::string::npos);
  CHECK(text.find("zuma_snapshot_store_bytes{lu=\"d\"} 2097152\n") != std::string::npos);
  CHECK(text.find("zuma_snapshots{lu=\"d\"} 0\n") != std::string::npos);
  CHECK(text.find("zuma_snapshot_fill_warning{lu=\"d\"} 0\n") != std::string::npos);
  REQUIRE(store->create("s1").has_value());
  text = snapshot::snapshot_metrics_text(reg);
  CHECK(text.find("zuma_snapshots{lu=\"d\"} 1\n") != std::string::npos);
  // Overwrite the whole LU after the snapshot: every home chunk is kept for s1, the new
  // data takes the store's: 2 MiB of 2 MiB in use, over the 90% warning level.
  auto live = store->live_view();
  std::vector<uint8_t> buf(1 << 20, 0x5a);
  iovec iov{buf.data(), buf.size()};
  storage::IoRequest req;
  req.op = storage::IoOp::kWrite;
  req.length = buf.size();
  req.iov = &iov;
  req.iovcnt = 1;
  int result = 1;
  req.user = &result;
  req.done = [](storage::IoRequest& r, int res) { *static_cast<int*>(r.user) = res; };
  live->submit(req);
  REQUIRE(result == 0);
  text = snapshot::snapshot_metrics_text(reg);
  CAPTURE(text);
  CHECK(text.find("zuma_snapshot_store_used_bytes{lu=\"d\"} 2097152\n") != std::string::npos);
  CHECK(text.find("zuma_snapshot_fill_warning{lu=\"d\"} 1\n") != std::string::npos);
}
