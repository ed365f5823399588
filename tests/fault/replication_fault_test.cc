// Replication fault tests (issue 8): a primary zumad with a consistency group of two LUs and
// a site link that reaches the secondary zumad through a fault-injecting proxy
// (tests/integration/fault_proxy.hh). Concurrent writers (3 sessions, 4 writes in flight
// each) write sequence-stamped blocks across both LUs (tests/fault/write_order.hh) while
// the secondary is killed, paused, or the link is cut or blackholed, or the primary is
// killed. At the interruption point the secondary's image (read while it is dead or
// stopped) must hold a prefix of the group's write order, never a hole: by the writers'
// acknowledged-before-issued rule, and exactly the first writes of the primary's log (read
// from a copy of it); with a sync link every acknowledged write must be there. Then the link
// settles and the secondary's LU images must equal the primary's byte for byte, and the primary's
// must hold every acknowledged write. ZUMA_FAULT_ITERATIONS sets the cycles per scenario (default
// 2: the CI variant).
#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/fault/write_order.hh"
#include "tests/integration/fault_proxy.hh"
#include "tests/integration/harness.hh"
#include "tests/integration/link_view.hh"

using namespace zuma::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* kIqn = "iqn.2026-11.org.zuma:db";
const std::vector<uint64_t> kLunBlocks = {8 * 1024 * 1024 / wo::kBs, 4 * 1024 * 1024 / wo::kBs};

int iterations() {
  const char* s = std::getenv("ZUMA_FAULT_ITERATIONS");
  const int n = s ? std::atoi(s) : 0;
  return n > 0 ? n : 2;
}

// Both sites: the same two LUs (8 and 4 MiB unless `lun_blocks` says otherwise); ports: 0
// iSCSI, 1 metrics (2 replication, secondary only).
std::string site_config(const std::string& name, const std::string& node_extra,
                        const std::string& groups,
                        const std::vector<uint64_t>& lun_blocks = kLunBlocks) {
  const std::string data = std::to_string(lun_blocks[0] * wo::kBs);
  const std::string logs = std::to_string(lun_blocks[1] * wo::kBs);
  return "node: { name: " + name +
         ", data_dir: @DIR@/var, reactors: 2, log_level: info,\n"
         "        metrics: \"127.0.0.1:@PORT1@\"" +
         node_extra +
         " }\n"
         "portals: [ \"127.0.0.1:@PORT0@\" ]\n"
         "targets:\n"
         "  - iqn: " +
         std::string(kIqn) +
         "\n"
         "    luns:\n"
         "      - { id: 0, name: data, size: " +
         data +
         ", backend: file, path: @DIR@/data.img }\n"
         "      - { id: 1, name: logs, size: " +
         logs +
         ", backend: file, path: @DIR@/logs.img }\n"
         "groups:\n" +
         groups;
}

std::string secondary_config(const std::vector<uint64_t>& lun_blocks) {
  return site_config("site-b", ", replication_listen: \"127.0.0.1:@PORT2@\"",
                     "  - { name: db, role: secondary, luns: [ data, logs ] }\n", lun_blocks);
}

// The primary's group: its log (`log_size`) and the link (`link_extra` added to its mapping).
struct LinkSetup {
  std::string log_size = "64MiB";
  std::string link_extra;
  std::vector<uint64_t> lun_blocks = kLunBlocks;
};

std::string primary_config(uint16_t peer_port, const std::string& mode, int sync_timeout_ms,
                           const LinkSetup& setup) {
  return site_config("site-a", "",
                     "  - name: db\n"
                     "    luns: [ data, logs ]\n"
                     "    log: { path: @DIR@/db.rlog, size: " +
                         setup.log_size +
                         " }\n"
                         "    links:\n"
                         "      - { name: dr, peer: \"127.0.0.1:" +
                         std::to_string(peer_port) + "\", mode: " + mode +
                         (mode == "sync" ? ", sync_timeout_ms: " + std::to_string(sync_timeout_ms)
                                         : std::string()) +
                         setup.link_extra + " }\n",
                     setup.lun_blocks);
}

std::vector<std::string> images(Zumad& z) {
  return {read_file(z.file("data.img")), read_file(z.file("logs.img"))};
}

// Waits until every thread of `z` is stopped (SIGSTOP delivered).
void wait_stopped(Zumad& z) {
  const std::string stat = "/proc/" + std::to_string(z.pid()) + "/stat";
  for (int i = 0; i < 500; ++i) {
    const std::string s = read_file(stat);
    const size_t paren = s.rfind(')');
    if (paren != std::string::npos && paren + 2 < s.size() && s[paren + 2] == 'T') return;
    std::this_thread::sleep_for(2ms);
  }
  FAIL("zumad did not stop after SIGSTOP");
}

// A secondary, the proxy in front of its replication port and a primary whose link goes
// through the proxy, started, the link connected (and, sync, holding writes).
struct Rig {
  Rig(const std::string& mode, int sync_timeout_ms, const LinkSetup& setup = {})
      : mode(mode),
        lun_blocks(setup.lun_blocks),
        secondary(secondary_config(setup.lun_blocks), 3),
        proxy(secondary.port(2)),
        primary(primary_config(proxy.port(), mode, sync_timeout_ms, setup), 2) {
    // Written, not sparse: random 512-byte writes into sparse files with fdatasync among
    // them fragment them so that removing them takes seconds (ext4 with discard).
    for (Zumad* z : {&secondary, &primary})
      for (size_t l = 0; l < lun_blocks.size(); ++l)
        write_file(z->file(l ? "logs.img" : "data.img"),
                   std::string(lun_blocks[l] * wo::kBs, '\0'));
    secondary.start();
    primary.start();
    wait_in_step();
    before = images(primary);
  }

  // A failed check may leave the secondary stopped: it must still be able to exit.
  ~Rig() { secondary.signal(SIGCONT); }

  void wait_in_step() {
    const bool sync = mode == "sync";
    wait_for(primary, secondary, "connected (sync: holding writes)",
             [sync](const LinkView& v) { return v.connected == 1 && (!sync || v.degraded == 0); });
  }

  wo::Plan& new_plan(size_t writes = 20000) {
    plan = std::make_unique<wo::Plan>(++cycle, lun_blocks, writes, rng);
    from_seq = uint64_t(metric_sample(http_get(primary.port(1), "/metrics"),
                                      "zuma_replication_log_next_seq{group=\"db\"}")
                            .value_or(0));
    REQUIRE(from_seq > 0);
    return *plan;
  }

  // Starts 3 writers with 4 writes in flight each, paced to ~3,000 writes/s in all.
  std::unique_ptr<wo::Load> start_load() {
    auto l = std::make_unique<wo::Load>(primary.portal(), kIqn, *plan, 3, 4);
    l->pace(1ms);
    return l;
  }

  // The secondary's image now holds a prefix of this cycle's writes (with `all_acked`:
  // including every acknowledged one). `frozen`: it cannot change while read (dead,
  // stopped); otherwise it is stopped for the read.
  void check_prefix(bool frozen, bool all_acked, const char* when) {
    if (!frozen) {
      secondary.signal(SIGSTOP);
      wait_stopped(secondary);
    }
    const auto now = images(secondary);
    if (!frozen) secondary.signal(SIGCONT);
    // The primary's log, read after the image: it holds every write the image can hold.
    std::string err;
    const auto order =
        wo::group_order(*plan, primary.file("db.rlog"), scratch.path(), from_seq, &err);
    // Long runs (ZUMA_FAULT_ITERATIONS) may see the log release a cycle's records.
    REQUIRE_MESSAGE((order || err.find("no longer has record") != std::string::npos), err);
    const wo::Verdict v =
        wo::check_prefix(*plan, before, now, all_acked, order ? &*order : nullptr);
    INFO("cycle " << cycle << ", " << std::string(when) << ": " << v.summary());
    REQUIRE_MESSAGE(v.error.empty(), v.error);
    MESSAGE("cycle " << cycle << ", " << std::string(when) << ": " << v.summary());
  }

  // Stops the load; once the link has settled the two sites' images are equal, and the
  // primary's holds every acknowledged write of the cycle.
  void settle_and_compare(wo::Load& load, bool failures_expected = false) {
    const std::string err = load.stop();
    if (!failures_expected) REQUIRE_MESSAGE(err.empty(), err);
    wait_for(primary, secondary, "settled", [](const LinkView& v) {
      return v.next > 1 && v.acked == v.next - 1 && v.applied == v.acked;
    });
    const auto p = images(primary), s = images(secondary);
    const wo::Verdict v = wo::check_prefix(*plan, before, p, true);
    REQUIRE_MESSAGE(v.error.empty(), "the primary: " << v.error);
    CHECK_MESSAGE(v.acked > 0, "no write of cycle " << cycle << " was acknowledged");
    for (size_t l = 0; l < p.size(); ++l)
      REQUIRE_MESSAGE(p[l] == s[l],
                      "LU " << l << " differs between the sites after cycle " << cycle);
    before = p;
  }

  void stop_both() {
    CHECK(primary.stop() == 0);
    CHECK(secondary.stop() == 0);
    const auto p = images(primary), s = images(secondary);
    for (size_t l = 0; l < p.size(); ++l) CHECK_MESSAGE(p[l] == s[l], "LU " << l << " differs");
  }

  std::string mode;
  std::vector<uint64_t> lun_blocks;
  Zumad secondary;
  FaultProxy proxy;
  Zumad primary;
  std::mt19937_64 rng{8};
  uint64_t cycle = 0;
  std::unique_ptr<wo::Plan> plan;
  uint64_t from_seq = 0;  // the log's next sequence number when the plan started
  std::vector<std::string> before;
  TempDir scratch;
};

constexpr uint64_t kBeforeFault = 300;  // writes acknowledged before the fault
constexpr uint64_t kDuringFault = 300;  // more while it lasts, kFaultSeconds at most
// Short: a link's reconnection backoff doubles while the fault lasts.
constexpr double kFaultSeconds = 0.4;
constexpr uint64_t kAfterFault = 300;  // more after the recovery

}  // namespace

// The secondary SIGKILLed during load and restarted. Sync: an acknowledgement promises the
// write is applied on the secondary, so every acknowledged write is in its image (the
// writes wait for the restarted secondary: the timeout is longer than the outage).
void secondary_kill_cycles(const std::string& mode) {
  const bool sync = mode == "sync";
  Rig r(mode, 20000);
  for (int i = 0; i < iterations(); ++i) {
    r.new_plan();
    auto load = r.start_load();
    load->wait_acked(kBeforeFault);
    r.secondary.signal(SIGKILL);
    REQUIRE(r.secondary.wait_exit(10s) == -SIGKILL);
    r.check_prefix(true, sync, "secondary killed");
    load->wait_acked(load->acked() + kDuringFault, kFaultSeconds);
    r.secondary.start();
    load->wait_acked(load->acked() + kAfterFault);
    r.settle_and_compare(*load);
  }
  r.stop_both();
}

TEST_CASE("the secondary SIGKILLed during load and restarted, async: a prefix, then equal") {
  secondary_kill_cycles("async");
}

TEST_CASE("the secondary SIGKILLed during load and restarted, sync: no acknowledged write lost") {
  secondary_kill_cycles("sync");
}

TEST_CASE("the secondary paused (SIGSTOP) during load and continued: a prefix, then equal") {
  Rig r("async", 2000);
  for (int i = 0; i < iterations(); ++i) {
    r.new_plan();
    auto load = r.start_load();
    load->wait_acked(kBeforeFault);
    r.secondary.signal(SIGSTOP);
    wait_stopped(r.secondary);
    load->wait_acked(load->acked() + kDuringFault, kFaultSeconds);
    r.check_prefix(true, false, "secondary stopped");
    r.secondary.signal(SIGCONT);
    load->wait_acked(load->acked() + kAfterFault);
    r.settle_and_compare(*load);
  }
  r.stop_both();
}

// The proxy resets (or closes) the link and refuses new connections for a while; then
// restores it.
void cut_cycles(const std::string& mode) {
  Rig r(mode, 2000);
  for (int i = 0; i < iterations(); ++i) {
    r.new_plan();
    // Odd cycles: a slow path (10 ms each way), so the cut also drops bytes on their way.
    if (i % 2) r.proxy.delay(10ms);
    auto load = r.start_load();
    load->wait_acked(kBeforeFault);
    r.proxy.refuse();
    r.proxy.cut(i % 2 ? FaultProxy::Cut::kClose : FaultProxy::Cut::kReset);
    load->wait_acked(load->acked() + kDuringFault, kFaultSeconds);
    // The secondary has applied what it received and let the connection go.
    wait_for(r.primary, r.secondary, "cut", [](const LinkView& v) { return v.peer == 0; });
    r.check_prefix(false, false, "link cut");
    r.proxy.restore();
    load->wait_acked(load->acked() + kAfterFault);
    r.settle_and_compare(*load);
  }
  r.stop_both();
}

TEST_CASE("the link cut by the proxy during load, async: a prefix, then equal") {
  cut_cycles("async");
}

TEST_CASE("the link cut by the proxy during load, sync: a prefix, then equal") {
  cut_cycles("sync");
}

// The proxy stops moving bytes (connections open, nothing lost), then lets them through.
// A sync link stops holding writes after its timeout and holds them again once caught up.
void blackhole_cycles(const std::string& mode) {
  const bool sync = mode == "sync";
  Rig r(mode, 1000);
  for (int i = 0; i < iterations(); ++i) {
    r.new_plan();
    auto load = r.start_load();
    load->wait_acked(kBeforeFault);
    r.proxy.blackhole();
    if (sync) {
      wait_for(r.primary, r.secondary, "degraded",
               [](const LinkView& v) { return v.degraded == 1; });
      const uint64_t at = load->acked();  // writes go on without the peer
      CHECK(load->wait_acked(at + kDuringFault, 10) >= at + kDuringFault);
    } else {
      load->wait_acked(load->acked() + kDuringFault, kFaultSeconds);
    }
    r.check_prefix(false, false, "link blackholed");
    r.proxy.restore();
    load->wait_acked(load->acked() + kAfterFault);
    r.settle_and_compare(*load);
    if (sync) r.wait_in_step();
  }
  r.stop_both();
}

TEST_CASE("the link blackholed during load, then restored, async: a prefix, then equal") {
  blackhole_cycles("async");
}

TEST_CASE("the link blackholed during load, then restored, sync: a prefix, then equal") {
  blackhole_cycles("sync");
}

// A partition the primary noticed and the secondary did not: the primary's side of the
// connection is reset, the secondary's stays open and silent. The primary's new connection
// must be served all the same.
TEST_CASE("the link blackholed, the primary's side reset, the secondary's left half open") {
  Rig r("async", 2000);
  for (int i = 0; i < iterations(); ++i) {
    r.new_plan();
    auto load = r.start_load();
    load->wait_acked(kBeforeFault);
    r.proxy.blackhole();
    load->wait_acked(load->acked() + kDuringFault, kFaultSeconds);
    r.proxy.cut(FaultProxy::Cut::kClientOnly);
    r.check_prefix(false, false, "half-open link");
    r.proxy.restore();
    load->wait_acked(load->acked() + kAfterFault);
    r.settle_and_compare(*load);
  }
  r.stop_both();
}

// The primary SIGKILLed during load. Sync: every acknowledged write is on the secondary.
// Both: the secondary holds a prefix; the restarted primary replays its log and the link
// brings the two sites to equal.
void primary_kill_cycles(const std::string& mode) {
  const bool sync = mode == "sync";
  Rig r(mode, 20000);
  for (int i = 0; i < iterations(); ++i) {
    r.new_plan();
    auto load = r.start_load();
    load->wait_acked(kBeforeFault);
    // Async, odd cycles: the link is cut first, so the secondary is far behind and the
    // restarted primary must still ship what it lacks from the log it replayed.
    const bool behind = !sync && i % 2;
    if (behind) {
      r.proxy.refuse();
      r.proxy.cut();
      load->wait_acked(load->acked() + kDuringFault, kFaultSeconds);
    }
    load->expect_failures();
    r.primary.signal(SIGKILL);
    REQUIRE(r.primary.wait_exit(10s) == -SIGKILL);
    load->stop();
    r.check_prefix(false, sync, behind ? "link cut, primary killed" : "primary killed");
    r.primary.start();
    if (behind) r.proxy.restore();
    r.wait_in_step();
    r.settle_and_compare(*load, true);
  }
  r.stop_both();
}

TEST_CASE("the primary SIGKILLed during load, sync link: every acknowledged write is there") {
  primary_kill_cycles("sync");
}

TEST_CASE("the primary SIGKILLed during load, async link: a prefix") {
  primary_kill_cycles("async");
}

// An async link with the `bitmap` policy through the proxy, and a small log (16 MiB): the
// link is blackholed and more than the log holds is written. The link must enter bitmap mode
// (the log full while it holds records) and no write may wait for it; once the proxy lets
// bytes through again, the secondary resyncs the dirty regions (inconsistent meanwhile, by
// design: the prefix property is checked before the resync and after it) and ends equal.
TEST_CASE(
    "on_full: bitmap, the link blackholed until the log is full: writes never wait, then resync") {
  LinkSetup setup;
  setup.log_size = "16MiB";
  // A byte limit above the log's size: it is the full log that sends the link to bitmap mode.
  setup.link_extra = ", fallbehind: { bytes: 1GiB }, on_full: bitmap";
  setup.lun_blocks = {32 * 1024 * 1024 / wo::kBs, 16 * 1024 * 1024 / wo::kBs};
  Rig r("async", 2000, setup);
  const auto metric = [](Zumad& z, const std::string& series) {
    return metric_sample(http_get(z.port(1), "/metrics"), series).value_or(-1);
  };
  const std::string link = "{group=\"db\",link=\"dr\"}";
  for (int i = 0; i < iterations(); ++i) {
    // 60,000 writes of 512 bytes: about 31 MiB of log records. The log keeps 16 MiB; the
    // blackholed path holds at most about 8.5 MiB the link sent after the blackhole (its
    // socket buffer, up to 4 MiB, and the proxy's buffers: fault_proxy.cc). So records are
    // released before the link sent them, and a resync must follow. (With 21 MiB, a path
    // whose buffers had grown in an earlier resync once took every record: no resync.)
    r.new_plan(60000);
    auto load = r.start_load();
    load->pace(std::chrono::microseconds(0));
    load->wait_acked(kBeforeFault);
    r.proxy.blackhole();
    const uint64_t at = load->acked();
    // Sampled while the log fills: the link never holds writes.
    double holding = 0;
    const bool in_bitmap = eventually(
        [&] {
          holding = std::max(holding, metric(r.primary, "zuma_replication_link_holding" + link));
          return metric(r.primary, "zuma_replication_link_bitmap" + link) == 1 &&
                 metric(r.primary, "zuma_replication_link_bitmap_regions" + link) > 0;
        },
        60s);
    REQUIRE_MESSAGE(in_bitmap, r.primary.log_tail(3000));
    CHECK(holding == 0);
    CHECK(r.primary.log().find("enters bitmap mode (the log is full)") != std::string::npos);
    // Writes went on past the log's capacity without the peer (they would stop if held).
    const uint64_t capacity_writes = (16u << 20) / wo::kBs;
    CHECK(load->wait_acked(at + capacity_writes, 60) >= at + capacity_writes);
    CHECK(metric(r.primary, "zuma_replication_link_holding" + link) == 0);
    // Before the resync the secondary holds a prefix (what crossed before the blackhole).
    r.check_prefix(false, false, "blackholed, bitmap mode");
    const double resyncs = metric(r.primary, "zuma_replication_link_resyncs" + link);
    r.proxy.restore();
    // The peer asks for the dirty regions; inconsistent until the resync's end point.
    double now_resyncs = 0, now_bitmap = 0, now_consistent = 0;
    CHECK_MESSAGE(eventually(
                      [&] {
                        now_resyncs = metric(r.primary, "zuma_replication_link_resyncs" + link);
                        now_bitmap = metric(r.primary, "zuma_replication_link_bitmap" + link);
                        now_consistent =
                            metric(r.secondary, "zuma_replication_group_consistent{group=\"db\"}");
                        return now_resyncs > resyncs && now_bitmap == 0 && now_consistent == 1;
                      },
                      60s),
                  "resyncs " << resyncs << " -> " << now_resyncs << ", bitmap " << now_bitmap
                             << ", consistent " << now_consistent << ", acknowledged "
                             << load->acked() << "\nprimary:\n"
                             << r.primary.log_tail(6000) << "\nsecondary:\n"
                             << r.secondary.log_tail(6000));
    CHECK(r.secondary.log().find("resync of the primary's dirty regions (bitmap mode)") !=
          std::string::npos);
    // Its LUs have no snapshots: no pre-resync snapshot, and the log says so (with
    // `snapshots:` a pre-resync-N snapshot would keep the image meanwhile: integration.failover).
    CHECK(r.secondary.log().find("no snapshot before the resync") != std::string::npos);
    // The dirty regions crossed as ranges (here nearly all: the writes are spread over every
    // 64 KiB region; integration.failover shows a resync of only the regions written).
    const double resynced =
        metric(r.secondary, "zuma_replication_replica_resync_bytes{group=\"db\"}");
    CHECK(resynced > 0);
    CHECK(resynced <= double((setup.lun_blocks[0] + setup.lun_blocks[1]) * wo::kBs));
    // Consistent again: the prefix property holds (everything acknowledged up to now is a
    // prefix of the group's order), then the load stops and the sites compare equal.
    r.check_prefix(false, false, "consistent again after the resync");
    r.settle_and_compare(*load);
  }
  r.stop_both();
}
