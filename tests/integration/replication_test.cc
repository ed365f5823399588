// Replication between two zumads (issue 8): a primary with a consistency group of two LUs
// and a site link to a secondary zumad on 127.0.0.1. Writes through libiscsi on the
// primary reach the secondary's LUs in the group's order; once the link has settled (seen
// on both metrics endpoints) the secondary's image files equal the primary's byte for
// byte. The secondary's LUs are read-only to initiators (DATA PROTECT 27h/00h). With a
// sync link, every write the primary acknowledged is on the secondary even when the
// primary is SIGKILLed right after it; the restarted primary replays its log and the two
// sites end up equal again.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/control_client.hh"
#include "tests/integration/harness.hh"
#include "tests/integration/link_view.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;

namespace {

constexpr uint32_t kBs = 512;
constexpr uint64_t kDataBlocks = 4 * 1024 * 1024 / kBs;  // LU "data": 4 MiB, LUN 0
constexpr uint64_t kLogsBlocks = 2 * 1024 * 1024 / kBs;  // LU "logs": 2 MiB, LUN 1
constexpr const char* kIqn = "iqn.2026-11.org.zuma:db";

// Both sites: the same two LUs; ports: 0 iSCSI, 1 metrics (2 replication, secondary only).
std::string site_config(const std::string& node_extra, const std::string& groups) {
  return "node: { name: @NAME@, data_dir: @DIR@/var, reactors: 2, log_level: info,\n"
         "        metrics: \"127.0.0.1:@PORT1@\"" + node_extra + " }\n"
         "portals: [ \"127.0.0.1:@PORT0@\" ]\n"
         "targets:\n"
         "  - iqn: " + std::string(kIqn) + "\n"
         "    luns:\n"
         "      - { id: 0, name: data, size: 4MiB, backend: file, path: @DIR@/data.img }\n"
         "      - { id: 1, name: logs, size: 2MiB, backend: file, path: @DIR@/logs.img }\n"
         "groups:\n" + groups;
}

std::string secondary_config() {
  return replace_all(site_config(", replication_listen: \"127.0.0.1:@PORT2@\"",
                                 "  - { name: db, role: secondary, luns: [ data, logs ] }\n"),
                     "@NAME@", "site-b");
}

std::string primary_config(uint16_t peer_port, const std::string& mode,
                           const std::string& link_extra = "") {
  const std::string timeout = mode == "sync" ? ", sync_timeout_ms: 20000" : link_extra;
  return replace_all(
      site_config("", "  - name: db\n"
                      "    luns: [ data, logs ]\n"
                      "    log: { path: @DIR@/db.rlog, size: 16MiB }\n"
                      "    links:\n"
                      "      - { name: dr, peer: \"127.0.0.1:" + std::to_string(peer_port) +
                          "\", mode: " + mode + timeout + " }\n"),
      "@NAME@", "site-a");
}

// The value of sample `series` ("NAME{LABELS}") on a metrics page, or -1 if absent.
double sample(const std::string& page, const std::string& series) {
  return metric_sample(page, series).value_or(-1);
}

// Every record of the log is acknowledged by the link and applied on the secondary.
LinkView wait_settled(Zumad& primary, Zumad& secondary) {
  return wait_for(primary, secondary, "settled", [](const LinkView& v) {
    return v.next > 1 && v.acked == v.next - 1 && v.applied == v.acked;
  });
}

// What the test wrote: the pattern seed of every block of each LU (0: never written).
struct Model {
  std::vector<uint64_t> data = std::vector<uint64_t>(kDataBlocks, 0);
  std::vector<uint64_t> logs = std::vector<uint64_t>(kLogsBlocks, 0);
  std::vector<uint64_t>& lun(int l) { return l == 0 ? data : logs; }
};

// `count` writes of 1..64 blocks at random places of both LUs (overlapping ones too, so
// order matters), each checked GOOD; the seeds go into `m`.
void write_some(Session& s, Model& m, std::mt19937_64& rng, int count, uint64_t& seed) {
  for (int i = 0; i < count; ++i) {
    const int lun = int(rng() % 2);
    auto& image = m.lun(lun);
    const uint64_t blocks = 1 + rng() % 64;
    const uint64_t lba = rng() % (image.size() - blocks + 1);
    const auto data = make_pattern(blocks, kBs, lba, ++seed);
    Task w = s.write16(lun, lba, data, kBs);
    REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
    for (uint64_t b = lba; b < lba + blocks; ++b) image[b] = seed;
  }
}

void check_image(const std::string& img, const std::vector<uint64_t>& image) {
  zuma::test::check_image(img, image, kBs);
}

void check_same_files(Zumad& primary, Zumad& secondary) {
  for (const char* name : {"data.img", "logs.img"}) {
    const std::string a = read_file(primary.file(name)), b = read_file(secondary.file(name));
    REQUIRE(a.size() == b.size());
    CHECK_MESSAGE(a == b, std::string(name) << " differs between the primary and the secondary");
  }
}

// Stops both sites (each must exit 0); `site`'s image files hold what `m` says, and the
// secondary's files equal the primary's byte for byte.
void stop_and_compare(Zumad& primary, Zumad& secondary, Zumad& site, const Model& m) {
  CHECK(primary.stop() == 0);
  CHECK(secondary.stop() == 0);
  check_image(site.file("data.img"), m.data);
  check_image(site.file("logs.img"), m.logs);
  check_same_files(primary, secondary);
}

// `zumactl group list` / `group status` on both sites agree with the metrics `v`.
void check_status_verbs(Zumad& primary, Zumad& secondary, const LinkView& v) {
  using zuma::admin::Json;
  auto call = [](Zumad& z, const std::string& verb, const Json& args) {
    auto c = connect_control(z);
    REQUIRE_MESSAGE(c.has_value(), c.error());
    auto r = c->call(verb, args);
    REQUIRE_MESSAGE(r.has_value(), r.error());
    return *r;
  };
  auto r = call(primary, "group list", Json::object());
  REQUIRE_MESSAGE(r.ok, r.error);
  REQUIRE(r.result["rows"].size() == 1);
  const Json p = r.result["rows"][0];
  CHECK(p[0] == "db");
  CHECK(p[1] == "primary");
  CHECK(p[2] == "data,logs");
  CHECK(p[3].get<double>() == v.next - 1);
  // The log's data area: its 16 MiB file less the header.
  const uint64_t capacity = p[5].get<uint64_t>();
  CHECK(capacity <= 16u << 20);
  CHECK(capacity > (16u << 20) - 65536);
  CHECK(p[7] == "1/1 links connected");
  r = call(primary, "group status", Json{{"group", "db"}});
  REQUIRE_MESSAGE(r.ok, r.error);
  REQUIRE(r.result["rows"].size() == 1);
  const Json l = r.result["rows"][0];
  CHECK(l[0] == "dr -> 127.0.0.1:" + std::to_string(secondary.port(2)));
  CHECK(l[1] == "async");
  CHECK(l[2] == "connected");
  CHECK(l[3].get<double>() == v.acked);
  CHECK(l[4] == 0);  // nothing left to ship
  r = call(primary, "group status", Json{{"group", "nope"}});
  CHECK(!r.ok);
  CHECK(r.error == "no group 'nope'");
  r = call(secondary, "group list", Json::object());
  REQUIRE_MESSAGE(r.ok, r.error);
  REQUIRE(r.result["rows"].size() == 1);
  const Json s = r.result["rows"][0];
  CHECK(s[1] == "secondary");
  CHECK(s[3].get<double>() == v.applied);
  CHECK(s[7] == "primary connected");
  // The log's fill, as the metrics give it.
  const std::string page = http_get(primary.port(1), "/metrics");
  CHECK(sample(page, "zuma_replication_log_capacity_bytes{group=\"db\"}") == double(capacity));
  CHECK(sample(page, "zuma_replication_link_lag_seconds{group=\"db\",link=\"dr\"}") == 0);
}

// The secondary's LUs are write protected (SBC-4 4.11: DATA PROTECT, WRITE PROTECTED).
void check_read_only(Zumad& secondary) {
  Session s(secondary.portal(), kIqn);
  for (int lun : {0, 1}) {
    const auto data = make_pattern(1, kBs, 0, 99);
    Task w = s.write16(lun, 0, data, kBs);
    CHECK_MESSAGE(is_sense(w.get(), 0x07, 0x2700), describe(s.ctx(), w.get()));
  }
}

// The names of a process's threads (/proc/PID/task/*/comm).
std::multiset<std::string> thread_names(pid_t pid) {
  std::multiset<std::string> names;
  for (const auto& t :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream f(t.path() / "comm");
    std::string n;
    std::getline(f, n);
    names.insert(n);
  }
  return names;
}

}  // namespace

TEST_CASE("async link: a group of two LUs reaches the secondary byte for byte, across restarts") {
  Zumad secondary(secondary_config(), 3);
  Zumad primary(primary_config(secondary.port(2), "async"), 2);
  secondary.start();
  primary.start();
  Model m;
  std::mt19937_64 rng(8);
  uint64_t seed = 0;
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 150, seed);
    Task f = s.sync_cache(0);
    REQUIRE(is_good(f.get()));
    write_some(s, m, rng, 50, seed);
  }
  const LinkView v = wait_settled(primary, secondary);
  CHECK(v.next >= 201);  // at least one record per write
  // Each thread says what it does (top -H, ps -L, perf): the reactors, the group's log
  // writer and its link; on the secondary the listener and the group's apply thread.
  const auto pn = thread_names(primary.pid()), sn = thread_names(secondary.pid());
  CHECK(pn.count("reactor/0") == 1);
  CHECK(pn.count("reactor/1") == 1);
  CHECK(pn.count("log/db") == 1);
  CHECK(pn.count("link/dr") == 1);
  CHECK(sn.count("repl-listen") == 1);
  CHECK(sn.count("apply/db") == 1);
  check_status_verbs(primary, secondary, v);
  check_read_only(secondary);
  stop_and_compare(primary, secondary, primary, m);

  // Both restart: the link resumes where it was, nothing is sent twice or lost.
  secondary.start();
  primary.start();
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 100, seed);
  }
  wait_settled(primary, secondary);
  stop_and_compare(primary, secondary, secondary, m);
  CHECK(primary.log().find("group db: log") != std::string::npos);
}

TEST_CASE("sync link: an acknowledged write is on the secondary when the primary is SIGKILLed") {
  Zumad secondary(secondary_config(), 3);
  Zumad primary(primary_config(secondary.port(2), "sync"), 2);
  secondary.start();
  primary.start();
  Model m;
  std::mt19937_64 rng(88);
  uint64_t seed = 0;
  // A sync link holds writes once it is in step with the log.
  wait_for(primary, secondary, "connected and holding writes",
           [](const LinkView& v) { return v.connected == 1 && v.degraded == 0; });
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 120, seed);
    // The last write was acknowledged: the primary dies now, without any shutdown.
    primary.signal(SIGKILL);
    REQUIRE(primary.wait_exit(std::chrono::seconds(10)) == -SIGKILL);
  }
  // Every acknowledged write, the last one included, is on the secondary already (an ACK
  // means applied and durable there), as its initiators read it and in its image files.
  {
    Session s(secondary.portal(), kIqn);
    for (int lun : {0, 1}) {
      const auto& image = m.lun(lun);
      Task r = s.read16(lun, 0, uint32_t(image.size() * kBs), kBs);
      REQUIRE_MESSAGE(is_good(r.get()), describe(s.ctx(), r.get()));
      REQUIRE(r->datain.size == int(image.size() * kBs));
      for (uint64_t b = 0; b < image.size(); ++b) {
        if (image[b] == 0) continue;
        const std::string bad =
            check_pattern(std::span<const uint8_t>(r->datain.data + b * kBs, kBs), kBs, b, image[b]);
        REQUIRE_MESSAGE(bad.empty(), "LUN " << lun << " on the secondary: " << bad);
      }
    }
  }
  check_read_only(secondary);
  CHECK(secondary.stop() == 0);
  check_image(secondary.file("data.img"), m.data);
  check_image(secondary.file("logs.img"), m.logs);

  // The primary restarts (crash replay of its log), the link resumes, more sync writes.
  secondary.start();
  primary.start();
  wait_for(primary, secondary, "connected and holding writes again",
           [](const LinkView& v) { return v.connected == 1 && v.degraded == 0; });
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 40, seed);
  }
  wait_settled(primary, secondary);
  stop_and_compare(primary, secondary, primary, m);
}

namespace {

double metric_of(Zumad& z, const std::string& series) {
  return sample(http_get(z.port(1), "/metrics"), series);
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// One 1-block WRITE to LU data at `lba`; its duration in ms.
double timed_write(Session& s, Model& m, uint64_t lba, uint64_t& seed) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto data = make_pattern(1, kBs, lba, ++seed);
  Task w = s.write16(0, lba, data, kBs);
  REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
  m.data[lba] = seed;
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A secondary and a primary whose async link has `link_extra` (YAML keys), started, the
// link connected.
struct Pair {
  Zumad secondary;
  Zumad primary;
  explicit Pair(const std::string& link_extra)
      : secondary(secondary_config(), 3),
        primary(primary_config(secondary.port(2), "async", link_extra), 2) {
    secondary.start();
    primary.start();
    wait_for(primary, secondary, "connected", [](const LinkView& v) { return v.connected == 1; });
    session.emplace(primary.portal(), kIqn);
  }
  // One 1-block WRITE to LU data at `lba` through the primary; its duration in ms.
  double write(uint64_t lba) { return timed_write(*session, m, lba, seed); }

  Model m;  // what was written
  uint64_t seed = 0;
  std::optional<Session> session;
};

const std::string kHolding = "zuma_replication_link_holding{group=\"db\",link=\"dr\"}";
const std::string kFellBehind = "zuma_replication_link_fell_behind{group=\"db\",link=\"dr\"}";

}  // namespace

TEST_CASE(
    "fall-behind limits, on_full: sync: writes wait for a slow peer, never longer than the "
    "timeout") {
  // An async link allowed 20 records behind. The secondary is stopped (SIGSTOP: connected,
  // silent): 20 writes complete at once, the 21st waits for the peer until sync_timeout_ms
  // (2 s), then the link stops holding writes until it has caught up.
  Pair pair(", fallbehind: { ios: 20 }, on_full: sync, sync_timeout_ms: 2000");
  Zumad& primary = pair.primary;
  Zumad& secondary = pair.secondary;
  secondary.signal(SIGSTOP);
  int fast = 0;
  double slow = 0;
  for (int i = 0; i < 40 && slow == 0; ++i) {
    const double ms = pair.write(uint64_t(i));
    if (ms > 1000)
      slow = ms;
    else
      ++fast;
  }
  CHECK_MESSAGE(fast >= 19, fast << " writes completed before one waited");
  CHECK_MESSAGE((slow >= 1800 && slow < 10000), "the held write took " << slow << " ms");
  CHECK(primary.log().find("async link dr fell behind") != std::string::npos);
  CHECK(primary.log().find("async link dr no longer holds writes") != std::string::npos);
  // Suspended: later writes do not wait, the link still counts as behind.
  CHECK(pair.write(100) < 1000);
  CHECK(metric_of(primary, kHolding) == 0);
  CHECK(metric_of(primary, kFellBehind) == 1);

  // The peer resumes and catches up; past the limit again, the link holds writes, and a
  // held write completes as soon as the peer has it (no second timeout).
  secondary.signal(SIGCONT);
  wait_settled(primary, secondary);
  CHECK(eventually([&] { return metric_of(primary, kFellBehind) == 0; }));
  CHECK(primary.log().find("async link dr has caught up") != std::string::npos);
  secondary.signal(SIGSTOP);
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 30; ++i) pair.write(uint64_t(200 + i));
    done = true;
  });
  const bool held = eventually([&] { return metric_of(primary, kHolding) == 1; });
  CHECK(held);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK_FALSE(done.load());  // a write waits for the stopped peer
  secondary.signal(SIGCONT);
  writer.join();
  CHECK(count_of(primary.log(), "no longer holds writes") == 1);
  CHECK(primary.log().find("async link dr is back within its fall-behind limits") !=
        std::string::npos);
  wait_settled(primary, secondary);
  stop_and_compare(primary, secondary, secondary, pair.m);
}

TEST_CASE("fall-behind limits, on_full: block: writes wait for the peer however long it takes") {
  Pair pair(", fallbehind: { ios: 10 }, on_full: block, sync_timeout_ms: 300");
  Zumad& primary = pair.primary;
  Zumad& secondary = pair.secondary;
  secondary.signal(SIGSTOP);
  std::atomic<int> completed{0};
  std::thread writer([&] {
    for (int i = 0; i < 15; ++i) {
      pair.write(uint64_t(i));
      ++completed;
    }
  });
  CHECK(eventually([&] { return metric_of(primary, kHolding) == 1; }));
  // Ten times sync_timeout_ms later the write still waits, and zumactl says why.
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  CHECK(completed.load() >= 9);
  CHECK(completed.load() < 15);
  CHECK(metric_of(primary, kHolding) == 1);
  CHECK(call(primary, "group status", zuma::admin::Json{{"group", "db"}})["rows"][0][1] ==
        "async (fell behind: holding writes)");
  CHECK(primary.log().find("however long it takes (on_full: block)") != std::string::npos);
  secondary.signal(SIGCONT);
  writer.join();
  CHECK(completed.load() == 15);
  wait_settled(primary, secondary);
  CHECK(metric_of(primary, kHolding) == 0);
  stop_and_compare(primary, secondary, secondary, pair.m);
}

TEST_CASE("a link's resync_rate changes with config reload, while its resync runs") {
  // The primary's LUs hold data that a new secondary lacks: the link's first connection is
  // a full resync (6 MiB), paced at 1 MiB/s. The limit taken out of the file and
  // `config reload`: the rest goes at once, in the same resync (no restart, no reconnect).
  Zumad secondary(secondary_config(), 3);
  Zumad primary(primary_config(secondary.port(2), "async", ", resync_rate: 1MiB"), 2);
  std::mt19937_64 rng(11);
  for (auto [name, size] : {std::pair{"data.img", 4u << 20}, std::pair{"logs.img", 2u << 20}}) {
    std::string bytes(size, '\0');
    for (size_t i = 0; i < size; i += 8) {
      const uint64_t v = rng();
      std::memcpy(bytes.data() + i, &v, 8);
    }
    write_file(primary.file(name), bytes);
  }
  secondary.start();
  primary.start();
  const std::string link = "{group=\"db\",link=\"dr\"}";
  const std::string sent = "zuma_replication_link_resync_sent_bytes" + link;
  const std::string rate = "zuma_replication_link_resync_rate_bytes" + link;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (metric_of(primary, sent) <= 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(metric_of(primary, rate) == double(1u << 20));
  const double before = metric_of(primary, sent);
  REQUIRE_MESSAGE((before > 0 && before <= double(2u << 20)),
                  "resync sent " << before << " bytes before the reload\n"
                                 << primary.log_tail());

  std::string text = primary.config_text();
  const size_t at = text.find(", resync_rate: 1MiB");
  REQUIRE(at != std::string::npos);
  write_file(primary.config_path(), text.erase(at, std::strlen(", resync_rate: 1MiB")));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(call(primary, "config reload", zuma::admin::Json::object()).value("message", "") ==
        "resync_rate of link db/dr removed");
  CHECK(metric_of(primary, rate) == 0);
  // At 1 MiB/s the rest (at least 4 MiB) would take 4 s or more.
  const std::string consistent = "zuma_replication_group_consistent{group=\"db\"}";
  while ((metric_of(primary, sent) < double(6u << 20) || metric_of(secondary, consistent) != 1) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(metric_of(primary, sent) == double(6u << 20));
  CHECK(metric_of(secondary, consistent) == 1);
  CHECK_MESSAGE(secs < 2.0, "the rest of the resync took " << secs << " s after the reload");
  CHECK(count_of(primary.log(), "link dr: resyncing") == 1);
  CHECK(primary.log().find("link dr: resync rate not limited") != std::string::npos);
  CHECK(primary.stop() == 0);
  CHECK(secondary.stop() == 0);
  check_same_files(primary, secondary);
}
