// Roles and failover (issue 8; docs/REPLICATION.md "Roles", runbook): two zumads on
// 127.0.0.1, each with the consistency group `db` (LUs data and logs), a log, a link to the
// other and a replication listener, so either can be primary.
//  1. Planned switchover and back: demote A (waits until B has every record), promote B,
//     write on B, B ships to A; then the same the other way. Nothing is lost, nothing is
//     resynced (0 range bytes), the images are equal byte for byte, the generation changes
//     at each promotion, the demoted side's LUs are write protected.
//  2. Unplanned failover: B paused, A takes writes B never gets, A is SIGKILLed; B is
//     promoted and takes writes; A restarts as primary and takes writes too: a split brain,
//     reported on both sides. `group discard` on A: when B's link connects, exactly the
//     ranges A wrote after the two diverged cross the link (measured), then B's records;
//     both images end equal to B's.
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/control_client.hh"
#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;
using zuma::admin::Json;

namespace {

constexpr uint32_t kBs = 512;
constexpr uint64_t kDataBlocks = 4 * 1024 * 1024 / kBs;
constexpr uint64_t kLogsBlocks = 2 * 1024 * 1024 / kBs;
constexpr const char* kIqn = "iqn.2026-11.org.zuma:db";

// Each LU with a snapshot store (bookmarks).
const char* kSnapLuns =
    "      - { id: 0, name: data, size: 4MiB, backend: file, path: @DIR@/data.img,\n"
    "          snapshots: { store: { data: @DIR@/data.snap, meta: @DIR@/data.meta, size: 8MiB,\n"
    "                                meta_size: 1MiB }, chunk_size: 64KiB } }\n"
    "      - { id: 1, name: logs, size: 2MiB, backend: file, path: @DIR@/logs.img,\n"
    "          snapshots: { store: { data: @DIR@/logs.snap, meta: @DIR@/logs.meta, size: 8MiB,\n"
    "                                meta_size: 1MiB }, chunk_size: 64KiB } }\n";

// One site: ports 0 iSCSI, 1 metrics; replication on `listen`, its link to `peer`.
std::string site(const std::string& name, const std::string& role, uint16_t listen, uint16_t peer,
                 bool snapshots = false) {
  return "node: { name: " + name +
         ", data_dir: @DIR@/var, reactors: 2, log_level: info,\n"
         "        metrics: \"127.0.0.1:@PORT1@\", replication_listen: \"127.0.0.1:" +
         std::to_string(listen) +
         "\" }\n"
         "portals: [ \"127.0.0.1:@PORT0@\" ]\n"
         "targets:\n"
         "  - iqn: " +
         std::string(kIqn) +
         "\n"
         "    luns:\n" +
         std::string(snapshots ? kSnapLuns
                               : "      - { id: 0, name: data, size: 4MiB, backend: file, path: "
                                 "@DIR@/data.img }\n"
                                 "      - { id: 1, name: logs, size: 2MiB, backend: file, path: "
                                 "@DIR@/logs.img }\n") +
         "groups:\n"
         "  - name: db\n"
         "    role: " +
         role +
         "\n"
         "    luns: [ data, logs ]\n"
         "    log: { path: @DIR@/db.rlog, size: 16MiB }\n"
         "    links:\n"
         "      - { name: peer, peer: \"127.0.0.1:" +
         std::to_string(peer) + "\", mode: async }\n";
}

// Site A (primary) and site B (secondary) of group `db` on free ports, each linked to the
// other; `edit_a` and `edit_b`, if given, rewrite a site's configuration first.
struct Sites {
  using Edit = std::function<std::string(std::string)>;
  const uint16_t pa = free_port(), pb = free_port();
  Zumad a, b;
  explicit Sites(bool snapshots = false, const Edit& edit_a = {}, const Edit& edit_b = {})
      : a(with(edit_a, site("site-a", "primary", pa, pb, snapshots)), 2),
        b(with(edit_b, site("site-b", "secondary", pb, pa, snapshots)), 2) {}
  // B first, so A's link connects at once.
  void start() {
    b.start();
    a.start();
  }

 private:
  static std::string with(const Edit& e, std::string cfg) { return e ? e(std::move(cfg)) : cfg; }
};

double metric(Zumad& z, const std::string& series) {
  return metric_sample(http_get(z.port(1), "/metrics"), series).value_or(-1);
}

// `from` (primary) has shipped every record to `to`, which applied them durably.
void wait_settled(Zumad& from, Zumad& to) {
  double next = -1, acked = -1, applied = -1;
  const bool ok = eventually([&] {
    next = metric(from, "zuma_replication_log_next_seq{group=\"db\"}");
    acked = metric(from, "zuma_replication_link_acked_seq{group=\"db\",link=\"peer\"}");
    applied = metric(to, "zuma_replication_replica_applied_seq{group=\"db\"}");
    return next > 1 && acked == next - 1 && applied == acked;
  });
  REQUIRE_MESSAGE(ok, "not settled: next " << next << ", acked " << acked << ", applied " << applied
                                           << "\n"
                                           << from.log_tail(3000) << "\n"
                                           << to.log_tail(3000));
}

std::string call_error(Zumad& z, const std::string& verb, const Json& args) {
  auto c = connect_control(z);
  REQUIRE_MESSAGE(c.has_value(), c.error());
  auto r = c->call(verb, args);
  REQUIRE_MESSAGE(r.has_value(), r.error());
  return r->ok ? "" : r->error;
}

std::string generation(Zumad& z) {
  const Json r = call(z, "group list", Json::object());
  REQUIRE(r["rows"].size() == 1);
  return r["rows"][0][8].get<std::string>();
}

struct Model {
  std::vector<uint64_t> data = std::vector<uint64_t>(kDataBlocks, 0);
  std::vector<uint64_t> logs = std::vector<uint64_t>(kLogsBlocks, 0);
  std::vector<uint64_t>& lun(int l) { return l == 0 ? data : logs; }
};

// A WRITE of one block; retried past unit attentions (a role change reports 2Ah/01h).
Task write_block(Session& s, int lun, uint64_t lba, uint64_t seed) {
  const auto data = make_pattern(1, kBs, lba, seed);
  for (int i = 0;; ++i) {
    Task w = s.write16(lun, lba, data, kBs);
    if (i < 4 && w && w->status == SCSI_STATUS_CHECK_CONDITION &&
        w->sense.key == SCSI_SENSE_UNIT_ATTENTION)
      continue;
    return w;
  }
}

// Writes blocks [first, first + n) of `lun` through `z`, in order, one at a time.
void write_run(Zumad& z, Model& m, int lun, uint64_t first, uint64_t n, uint64_t& seed) {
  Session s(z.portal(), kIqn);
  for (uint64_t b = first; b < first + n; ++b) {
    Task w = write_block(s, lun, b, ++seed);
    REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
    m.lun(lun)[b] = seed;
  }
}

void check_protected(Zumad& z) {
  Session s(z.portal(), kIqn);
  for (int lun : {0, 1}) {
    Task w = write_block(s, lun, 0, 12345);
    CHECK_MESSAGE(is_sense(w.get(), 0x07, 0x2700), describe(s.ctx(), w.get()));
  }
}

void check_image(const std::string& img, const std::vector<uint64_t>& image) {
  zuma::test::check_image(img, image, kBs);
}

// What initiators read from `z`'s LUs is `m` (LUs with snapshots keep data in their stores,
// not in the image files).
void check_reads(Zumad& z, const Model& m) {
  Session s(z.portal(), kIqn);
  for (int lun : {0, 1}) {
    const auto& image = lun == 0 ? m.data : m.logs;
    constexpr uint64_t kStep = 1024;
    for (uint64_t first = 0; first < image.size(); first += kStep) {
      Task r = s.read16(lun, first, uint32_t(kStep * kBs), kBs);
      REQUIRE_MESSAGE(is_good(r.get()), describe(s.ctx(), r.get()));
      for (uint64_t b = first; b < first + kStep; ++b) {
        std::span<const uint8_t> block(r->datain.data + (b - first) * kBs, kBs);
        if (image[b] == 0)
          REQUIRE_MESSAGE(std::all_of(block.begin(), block.end(), [](uint8_t c) { return c == 0; }),
                          "LUN " << lun << " block " << b << " is not zero");
        else
          REQUIRE_MESSAGE(check_pattern(block, kBs, b, image[b]).empty(),
                          "LUN " << lun << " block " << b);
      }
    }
  }
}

// Both stopped cleanly; each site's images hold `m`.
void stop_and_check(Zumad& a, Zumad& b, const Model& m) {
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
  for (Zumad* z : {&a, &b}) {
    check_image(z->file("data.img"), m.data);
    check_image(z->file("logs.img"), m.logs);
  }
}

}  // namespace

TEST_CASE("switchover and back: no data lost, nothing resynced, generations change") {
  Sites sites;
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 0, 0, 40, seed);
  write_run(a, m, 1, 10, 20, seed);
  const std::string gen1 = generation(a);
  // B was new: its first connection was an initial full sync of both LUs (6 MiB, mostly sent
  // as zero ranges), then records.
  wait_settled(a, b);
  CHECK(metric(a, "zuma_replication_link_resyncs{group=\"db\",link=\"peer\"}") == 1);
  CHECK(metric(a, "zuma_replication_link_resync_bytes{group=\"db\",link=\"peer\"}") ==
        double(6 << 20));
  CHECK(metric(b, "zuma_replication_replica_resync_bytes{group=\"db\"}") == double(6 << 20));

  // Demote waits for the link: B has every record when it returns.
  call(a, "group demote", Json{{"group", "db"}});
  CHECK(metric(a, "zuma_replication_group_primary{group=\"db\"}") == 0);
  const double last_a = metric(b, "zuma_replication_replica_applied_seq{group=\"db\"}");
  check_protected(a);
  // A secondary whose primary is still connected is not promoted without --force; here the
  // demoted primary's link is gone, so it is.
  call(b, "group promote", Json{{"group", "db"}});
  CHECK(call_error(b, "group promote", Json{{"group", "db"}}) ==
        "group db is primary here already");
  const std::string gen2 = generation(b);
  CHECK(gen2 != gen1);
  write_run(b, m, 0, 30, 40, seed);  // overwrites 30..39, adds 40..69
  wait_settled(b, a);
  // B's log continues the sequence where A's ended.
  CHECK(metric(b, "zuma_replication_log_next_seq{group=\"db\"}") == last_a + 40 + 1);
  CHECK(metric(b, "zuma_replication_link_resyncs{group=\"db\",link=\"peer\"}") == 0);
  CHECK(metric(a, "zuma_replication_replica_resync_bytes{group=\"db\"}") == 0);
  CHECK(generation(a) == gen2);  // A follows B's generation

  // And back.
  call(b, "group demote", Json{{"group", "db"}});
  call(a, "group promote", Json{{"group", "db"}});
  CHECK(generation(a) != gen2);
  CHECK(generation(a) != gen1);
  write_run(a, m, 1, 0, 15, seed);
  wait_settled(a, b);
  check_protected(b);
  CHECK(metric(a, "zuma_replication_link_resyncs{group=\"db\",link=\"peer\"}") ==
        1);  // the initial one

  // Roles survive a restart.
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
  b.start();
  a.start();
  CHECK(metric(a, "zuma_replication_group_primary{group=\"db\"}") == 1);
  CHECK(metric(b, "zuma_replication_group_primary{group=\"db\"}") == 0);
  write_run(a, m, 0, 100, 5, seed);
  wait_settled(a, b);
  stop_and_check(a, b, m);
}

namespace {

// With `snapshots`, the discarding side snapshots its LUs before the resync and removes
// the snapshots once it is consistent again.
void unplanned_failover(bool snapshots) {
  Sites sites(snapshots);
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 0, 0, 50, seed);
  wait_settled(a, b);

  // B stops; A takes writes B never gets (async: acknowledged from A's log), then dies.
  b.signal(SIGSTOP);
  Model lost = m;  // what A holds and B may not
  write_run(a, lost, 0, 100, 50, seed);
  a.signal(SIGKILL);
  CHECK(a.wait_exit(std::chrono::seconds(10)).has_value());
  b.signal(SIGCONT);

  // Failover: B is consistent and its primary is gone.
  REQUIRE(eventually(
      [&] { return metric(b, "zuma_replication_replica_connected{group=\"db\"}") == 0; }));
  call(b, "group promote", Json{{"group", "db"}});
  // What of A's last writes B had applied before it stopped: a prefix of them (one writer).
  uint64_t got = 0;
  {
    Session s(b.portal(), kIqn);
    Task r = s.read16(0, 100, 50 * kBs, kBs);
    REQUIRE(is_good(r.get()));
    while (got < 50 && check_pattern(std::span<const uint8_t>(r->datain.data + got * kBs, kBs), kBs,
                                     100 + got, lost.data[100 + got])
                           .empty())
      ++got;
    for (uint64_t i = 0; i < got; ++i) m.data[100 + i] = lost.data[100 + i];
  }
  write_run(b, m, 0, 200, 30, seed);  // B's own writes after the failover

  // A comes back as primary (its role never changed) and takes writes too: split brain.
  a.start();
  Model a_only;
  write_run(a, a_only, 0, 300, 20, seed);
  for (Zumad* z : {&a, &b})
    CHECK_MESSAGE(eventually([&] {
                    return metric(*z, "zuma_replication_group_split_brain{group=\"db\"}") == 1;
                  }),
                  z->log_tail(3000));
  const Json st = call(a, "group status", Json{{"group", "db"}});
  CHECK(st["rows"][0][2] == "split_brain");
  CHECK(st["rows"][0][8].get<std::string>().find("split brain") != std::string::npos);

  // Resolve: A's changes go. B's link then resyncs exactly the ranges A changed after the
  // divergence (A's writes 100+got..149 and 300..319), and ships its own records.
  call(a, "group discard", Json{{"group", "db"}});
  wait_settled(b, a);
  CHECK(eventually(
      [&] { return metric(a, "zuma_replication_group_consistent{group=\"db\"}") == 1; }));
  const double expected = double((50 - got) + 20) * kBs;
  CHECK(metric(b, "zuma_replication_link_resync_bytes{group=\"db\",link=\"peer\"}") == expected);
  CHECK(metric(a, "zuma_replication_replica_resync_bytes{group=\"db\"}") == expected);
  CHECK(metric(a, "zuma_replication_group_split_brain{group=\"db\"}") == 0);
  CHECK(metric(b, "zuma_replication_group_split_brain{group=\"db\"}") == 0);
  check_protected(a);
  // Only the changed ranges crossed as ranges: far less than the group's 6 MiB.
  CHECK(expected < 0.02 * double((kDataBlocks + kLogsBlocks) * kBs));
  if (snapshots) {
    // A's image before the resync was kept as a snapshot while the resync ran, then dropped.
    CHECK(a.log().find("the image before is snapshot pre-resync-") != std::string::npos);
    for (const char* lu : {"data", "logs"})
      CHECK(eventually([&] { return call(a, "snapshot list", Json{{"lu", lu}}).empty(); }));
    check_reads(a, m);
    check_reads(b, m);
    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
    return;
  }
  stop_and_check(a, b, m);
}

}  // namespace

TEST_CASE("unplanned failover: split brain on both sides, discard, only changed ranges resynced") {
  unplanned_failover(false);
}

TEST_CASE("unplanned failover, LUs with snapshots: the image before the resync is kept meanwhile") {
  unplanned_failover(true);
}

TEST_CASE(
    "a primary restored from an older copy: split brain, not silent skipping; discard resyncs") {
  // The primary's files go back to an older copy after the secondary had applied later
  // records (the same happens when a crash loses the log's unsynced tail that an async
  // link had already shipped). Its next records reuse those sequence numbers: shipped on,
  // the secondary would skip them and the two would differ for good.
  Sites sites;
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 0, 0, 40, seed);
  wait_settled(a, b);
  namespace fs = std::filesystem;
  const fs::path copy = fs::path(a.dir()) / "older-copy";
  const std::vector<std::string> files = {"data.img", "logs.img", "db.rlog", "var"};
  REQUIRE(a.stop() == 0);
  fs::create_directory(copy);
  for (const auto& f : files) fs::copy(a.file(f), copy / f, fs::copy_options::recursive);
  a.start();
  Model later = m;
  write_run(a, later, 0, 100, 30, seed);  // B applies these; the copy lacks them
  wait_settled(a, b);
  REQUIRE(a.stop() == 0);
  for (const auto& f : files) {
    fs::remove_all(a.file(f));
    fs::copy(copy / f, a.file(f), fs::copy_options::recursive);
  }
  a.start();
  write_run(a, m, 1, 0, 10, seed);  // new records, numbered as B's last 10
  for (Zumad* z : {&a, &b})
    CHECK_MESSAGE(eventually([&] {
                    return metric(*z, "zuma_replication_group_split_brain{group=\"db\"}") == 1;
                  }),
                  z->log_tail(3000));
  const Json st = call(a, "group status", Json{{"group", "db"}});
  CHECK(st["rows"][0][2] == "split_brain");
  CHECK(st["rows"][0][8].get<std::string>().find("the primary lost records it had sent") !=
        std::string::npos);
  // Nothing was applied on B meanwhile.
  CHECK(metric(b, "zuma_replication_replica_applied_seq{group=\"db\"}") == 70);
  // Resolve: B's later records go. A full resync (no log says what they changed), then A's
  // records: both hold A's image.
  call(b, "group discard", Json{{"group", "db"}});
  wait_settled(a, b);
  CHECK(eventually(
      [&] { return metric(b, "zuma_replication_group_consistent{group=\"db\"}") == 1; }));
  CHECK(metric(a, "zuma_replication_link_resync_bytes{group=\"db\",link=\"peer\"}") ==
        double(6 << 20));
  CHECK(metric(a, "zuma_replication_group_split_brain{group=\"db\"}") == 0);
  CHECK(metric(b, "zuma_replication_group_split_brain{group=\"db\"}") == 0);
  stop_and_check(a, b, m);
}

TEST_CASE("a new secondary joining a primary with data: initial full sync replaces what it held") {
  Sites sites;
  Zumad &a = sites.a, &b = sites.b;
  a.start();  // B joins later
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 0, 1000, 64, seed);
  write_run(a, m, 1, 7, 9, seed);
  // B's LU files hold junk everywhere before it first starts.
  write_file(b.file("data.img"), std::string(kDataBlocks * kBs, '\xab'));
  write_file(b.file("logs.img"), std::string(kLogsBlocks * kBs, '\xcd'));
  b.start();
  wait_settled(a, b);
  CHECK(metric(b, "zuma_replication_group_consistent{group=\"db\"}") == 1);
  CHECK(metric(a, "zuma_replication_link_resyncs{group=\"db\",link=\"peer\"}") == 1);
  write_run(a, m, 0, 0, 10, seed);
  wait_settled(a, b);
  stop_and_check(a, b, m);
}

TEST_CASE(
    "bookmark: one consistent point of both LUs, snapshotted on the primary and the secondary") {
  Sites sites(true);
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  // Refused on the secondary, and without a name.
  CHECK(call_error(b, "group bookmark", Json{{"group", "db"}, {"name", "x"}}) ==
        "group db is secondary here: take bookmarks on its primary");
  // B's initial sync first: a bookmark B reaches before it is consistent is not snapshotted
  // there (its image is not that point yet).
  REQUIRE(eventually([&] {
    return metric(a, "zuma_replication_link_connected{group=\"db\",link=\"peer\"}") == 1 &&
           metric(b, "zuma_replication_group_consistent{group=\"db\"}") == 1;
  }));

  // One writer alternates between the LUs, each write to a fresh block stamped with its
  // number, one at a time: the writes before any point are exactly a prefix 0..k-1.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> acked{0};
  std::thread writer([&] {
    Session s(a.portal(), kIqn);
    for (uint64_t i = 0; !stop.load() && i < 2000; ++i) {
      Task w = write_block(s, int(i % 2), i / 2, 1000 + i);
      if (!is_good(w.get())) break;
      acked = i + 1;
    }
  });
  REQUIRE(eventually([&] { return acked.load() >= 20; }));
  const Json r = call(a, "group bookmark", Json{{"group", "db"}, {"name", "bm1"}});
  CHECK(r["message"].get<std::string>().starts_with("bookmark 'bm1' of group db at record "));
  const uint64_t at = acked.load();
  REQUIRE(eventually([&] { return acked.load() >= at + 20; }));
  stop = true;
  writer.join();
  const uint64_t total = acked.load();
  wait_settled(a, b);
  for (Zumad* z : {&a, &b})
    for (const char* lu : {"data", "logs"}) {
      const Json l = call(*z, "snapshot list", Json{{"lu", lu}});
      REQUIRE_MESSAGE(l.size() == 1, z->log_tail(3000));
      CHECK(l[0]["name"] == "bm1");
    }

  // A rollback would change a LU behind the group's log: refused.
  CHECK(call_error(a, "snapshot rollback", Json{{"lu", "data"}, {"snapshot", "bm1"}})
            .starts_with("LU 'data' is in replication group 'db': a rollback would change it"));
  // The snapshots, exported read-only after a restart, hold the writes 0..k-1 and none
  // after, on both LUs alike, and the same k on both sites.
  std::vector<uint64_t> ks;
  for (Zumad* z : {&a, &b}) {
    CHECK(z->stop() == 0);
    std::string text = z->config_text();
    const std::string logs_end = "chunk_size: 64KiB } }\n";
    const size_t at_logs = text.find(logs_end, text.find("name: logs"));
    REQUIRE(at_logs != std::string::npos);
    text.insert(
        at_logs + logs_end.size(),
        "      - { id: 2, name: data-bm1, size: 4MiB, source: { lu: data, snapshot: bm1 } }\n"
        "      - { id: 3, name: logs-bm1, size: 2MiB, source: { lu: logs, snapshot: bm1 } }\n");
    write_file(z->config_path(), text);
  }
  b.start();
  a.start();
  for (Zumad* z : {&a, &b}) {
    Session s(z->portal(), kIqn);
    Task d = s.read16(2, 0, uint32_t((total + 1) / 2 * kBs), kBs);
    Task l = s.read16(3, 0, uint32_t(total / 2 * kBs), kBs);
    REQUIRE(is_good(d.get()));
    REQUIRE(is_good(l.get()));
    uint64_t k = 0;
    bool ended = false;
    for (uint64_t i = 0; i < total; ++i) {
      const uint8_t* p = (i % 2 ? l->datain.data : d->datain.data) + (i / 2) * kBs;
      const bool has =
          check_pattern(std::span<const uint8_t>(p, kBs), kBs, i / 2, 1000 + i).empty();
      if (has) {
        CHECK_MESSAGE(!ended, std::string(z == &a ? "primary" : "secondary")
                                  << ": write " << i
                                  << " is in the bookmark but an earlier one is not");
        k = i + 1;
      } else {
        CHECK(std::all_of(p, p + kBs, [](uint8_t c) { return c == 0; }));
        ended = true;
      }
    }
    CHECK(k >= 20);
    CHECK(k <= at + 1);
    ks.push_back(k);
  }
  CHECK(ks[0] == ks[1]);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE(
    "on_full: bitmap: writes never wait for a stopped peer; it resyncs only the dirty regions") {
  Sites sites(false, [](std::string cfg) {
    return replace_all(cfg, "mode: async }",
                       "mode: async, fallbehind: { ios: 100 }, on_full: bitmap }");
  });
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 1, 0, 20, seed);
  wait_settled(a, b);

  // The peer stops; 12 MiB of 4 KiB writes over the first 512 KiB of LU data: far past the
  // fall-behind limit, and more than the log's flush mark (half of 16 MiB), so records the
  // peer lacks are released and their regions go to the link's map.
  b.signal(SIGSTOP);
  double slowest = 0;
  {
    Session s(a.portal(), kIqn);
    for (int i = 0; i < 3072; ++i) {
      const uint64_t lba = uint64_t(i * 8) % 1024;
      const auto data = make_pattern(8, kBs, lba, ++seed);
      const auto t0 = std::chrono::steady_clock::now();
      Task w = s.write16(0, lba, data, kBs);
      slowest = std::max(
          slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
      for (uint64_t k = 0; k < 8; ++k) m.data[lba + k] = seed;
    }
  }
  CHECK(slowest < 2.0);  // never held for the peer
  CHECK(metric(a, "zuma_replication_link_bitmap{group=\"db\",link=\"peer\"}") == 1);
  CHECK(metric(a, "zuma_replication_link_bitmap_regions{group=\"db\",link=\"peer\"}") == 8);
  const Json st = call(a, "group status", Json{{"group", "db"}});
  CHECK(st["rows"][0][1] == "async (bitmap: 8 dirty regions)");
  // The map survives a restart of the primary.
  CHECK(a.stop() == 0);
  a.start();
  CHECK(metric(a, "zuma_replication_link_bitmap{group=\"db\",link=\"peer\"}") == 1);

  // The peer is back: it gets the 8 regions (512 KiB) as a resync, then the records.
  b.signal(SIGCONT);
  wait_settled(a, b);
  CHECK(eventually(
      [&] { return metric(a, "zuma_replication_link_bitmap{group=\"db\",link=\"peer\"}") == 0; }));
  CHECK(eventually(
      [&] { return metric(b, "zuma_replication_group_consistent{group=\"db\"}") == 1; }));
  CHECK(metric(b, "zuma_replication_replica_resync_bytes{group=\"db\"}") == double(8 * 64 * 1024));
  write_run(a, m, 1, 100, 5, seed);
  wait_settled(a, b);
  stop_and_check(a, b, m);
}

// ---- online verify (docs/REPLICATION.md "Online verify") ----------------------------------

namespace {

// Starts `group verify` on `z` and waits for its end; the `verify` object of `group status`.
Json run_verify(Zumad& z, bool repair = false,
                std::chrono::seconds limit = std::chrono::seconds(60)) {
  Json args{{"group", "db"}};
  if (repair) args["repair"] = true;
  const Json started = call(z, "group verify", args);
  const std::string id = started["id"].get<std::string>();
  Json v;
  const bool ended = eventually(
      [&] {
        const Json st = call(z, "group status", Json{{"group", "db"}});
        if (!st.contains("verify")) return false;
        v = st["verify"];
        return v["id"] == id && v["state"] != "running";
      },
      limit);
  REQUIRE_MESSAGE(ended, "verify " << id << " did not end: " << v.dump() << "\n"
                                   << z.log_tail(3000));
  return v;
}

}  // namespace

TEST_CASE("verify: a byte changed behind the secondary's back is found, repaired, then clean") {
  Sites sites;
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 0, 0, 100, seed);
  write_run(a, m, 1, 3000, 20, seed);
  wait_settled(a, b);
  // Refused on the secondary and for a link the group does not have.
  CHECK(call_error(b, "group verify", Json{{"group", "db"}}) ==
        "group db is secondary here: verify it from its primary");
  CHECK(call_error(a, "group verify", Json{{"group", "db"}, {"link", "x"}}) ==
        "group db has no link 'x'");
  // Both sides equal: nothing differs.
  Json v = run_verify(a);
  CHECK(v["state"] == "done");
  CHECK(v["regions"] == 6);  // 4 MiB + 2 MiB in 1 MiB regions
  CHECK(v["links"][0]["compared"] == 6);
  CHECK(v["links"][0]["mismatched"].empty());

  // One byte of the secondary's LU `data`, in its second MiB, changed while it is down.
  CHECK(b.stop() == 0);
  {
    std::string img = read_file(b.file("data.img"));
    img[(1 << 20) + 12345] ^= 0x5a;
    write_file(b.file("data.img"), img);
  }
  b.start();
  REQUIRE(eventually([&] {
    return metric(a, "zuma_replication_link_connected{group=\"db\",link=\"peer\"}") == 1;
  }));
  v = run_verify(a);
  CHECK(v["state"] == "done");
  CHECK(v["links"][0]["compared"] == 6);
  REQUIRE(v["links"][0]["mismatched"].size() == 1);
  CHECK(v["links"][0]["mismatched"][0] ==
        Json({{"lu", "data"}, {"offset", 1 << 20}, {"length", 1 << 20}}));
  CHECK(metric(a, "zuma_replication_verify_regions{group=\"db\",link=\"peer\"}") == 6);
  CHECK(metric(a, "zuma_replication_verify_mismatched_regions{group=\"db\",link=\"peer\"}") == 1);
  CHECK(metric(b, "zuma_replication_replica_verify_mismatched_regions{group=\"db\"}") == 1);
  CHECK(a.log().find("verify: link peer: LU 0 bytes 1048576+1048576 differ") != std::string::npos);
  const Json st = call(a, "group status", Json{{"group", "db"}});
  CHECK(st["rows"][0][11] == "done: 6/6 regions, 1 mismatched");
  CHECK(st["message"].get<std::string>().find("LU data offset 1048576 length 1048576") !=
        std::string::npos);

  // --repair: the region is found again and resent to the peer as a resync (1 MiB).
  v = run_verify(a, true);
  REQUIRE(v["links"][0]["mismatched"].size() == 1);
  CHECK(v["message"].get<std::string>() == "repair: link peer: 1048576 bytes in 1 ranges resent");
  CHECK(eventually([&] {
    return metric(b, "zuma_replication_replica_resync_bytes{group=\"db\"}") == double(1 << 20) &&
           metric(b, "zuma_replication_group_consistent{group=\"db\"}") == 1 &&
           metric(a, "zuma_replication_link_connected{group=\"db\",link=\"peer\"}") == 1;
  }));
  v = run_verify(a);
  CHECK(v["state"] == "done");
  CHECK(v["links"][0]["compared"] == 6);
  CHECK(v["links"][0]["mismatched"].empty());
  write_run(a, m, 0, 2000, 10, seed);
  wait_settled(a, b);
  stop_and_check(a, b, m);
}

TEST_CASE("verify during concurrent writes to every region: no mismatch, writes go on") {
  Sites sites;
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  REQUIRE(eventually([&] {
    return metric(a, "zuma_replication_link_connected{group=\"db\",link=\"peer\"}") == 1 &&
           metric(b, "zuma_replication_group_consistent{group=\"db\"}") == 1;
  }));
  // Two writers, each a session writing 8-block runs at random places of both LUs (every
  // region is written again and again, also across region boundaries), as fast as they can.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> acked{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w)
    writers.emplace_back([&, w] {
      Session s(a.portal(), kIqn);
      std::mt19937_64 rng(w + 1);
      while (!stop.load()) {
        const int lun = int(rng() % 3 == 0);
        const uint64_t blocks = lun ? kLogsBlocks : kDataBlocks;
        const uint64_t lba = rng() % (blocks - 8);
        Task t = s.write16(lun, lba, make_pattern(8, kBs, lba, rng() | 1), kBs);
        if (!is_good(t.get())) {
          ++failed;
          return;
        }
        ++acked;
      }
    });
  REQUIRE(eventually([&] { return acked.load() >= 200; }));
  for (int round = 0; round < 5; ++round) {
    const uint64_t before = acked.load();
    const Json v = run_verify(a);
    CHECK(v["state"] == "done");
    CHECK(v["links"][0]["compared"] == 6);
    CHECK_MESSAGE(v["links"][0]["mismatched"].empty(), v.dump());
    // The writes went on meanwhile (a verify holds only writes to the region it hashes).
    CHECK(eventually([&] { return acked.load() >= before + 50; }));
    MESSAGE("round " << round << ": " << acked.load() - before << " writes, longest region hold "
                     << v["max_stall_us"] << " us");
  }
  stop = true;
  for (auto& t : writers) t.join();
  CHECK(failed.load() == 0);
  wait_settled(a, b);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
  CHECK(read_file(a.file("data.img")) == read_file(b.file("data.img")));
  CHECK(read_file(a.file("logs.img")) == read_file(b.file("logs.img")));
}

TEST_CASE("verify is cancelled when the link drops, with the reason in group status") {
  Sites sites;
  Zumad &a = sites.a, &b = sites.b;
  sites.start();
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 0, 0, 10, seed);
  wait_settled(a, b);
  // The peer stops answering (stopped), then dies: the link drops mid-verify.
  b.signal(SIGSTOP);
  call(a, "group verify", Json{{"group", "db"}});
  b.signal(SIGKILL);
  CHECK(b.wait_exit(std::chrono::seconds(10)).has_value());
  Json v;
  REQUIRE(eventually([&] {
    v = call(a, "group status", Json{{"group", "db"}})["verify"];
    return v["state"] != "running";
  }));
  CHECK(v["state"] == "cancelled");
  CHECK(v["message"].get<std::string>().starts_with("link peer disconnected"));
  CHECK(metric(a, "zuma_replication_verify_running{group=\"db\"}") == 0);
  // Refused while the link is down; runs again once it is back.
  CHECK(call_error(a, "group verify", Json{{"group", "db"}}).find("not connected") !=
        std::string::npos);
  b.start();
  REQUIRE(eventually([&] {
    return metric(a, "zuma_replication_link_connected{group=\"db\",link=\"peer\"}") == 1;
  }));
  v = run_verify(a);
  CHECK(v["state"] == "done");
  CHECK(v["links"][0]["mismatched"].empty());
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}

TEST_CASE("bookmark schedules: taken on the primary, the oldest pruned on both sites") {
  auto scheduled = [](std::string cfg) {
    return replace_all(cfg, "    log: { path: @DIR@/db.rlog, size: 16MiB }\n",
                       "    log: { path: @DIR@/db.rlog, size: 16MiB }\n"
                       "    bookmarks: [ { every: 1s, keep: 2, name: auto } ]\n");
  };
  Sites sites(true, scheduled, scheduled);
  Zumad &a = sites.a, &b = sites.b;
  // zumad --check-config reads the schedule too.
  const RunResult check = run_program({zumad_path(), "--check-config", a.config_path()});
  CHECK_MESSAGE(check.exit_code == 0, check.output);
  sites.start();
  Model m;
  uint64_t seed = 0;
  write_run(a, m, 0, 0, 10, seed);
  // Several bookmarks taken and the oldest pruned here...
  REQUIRE_MESSAGE(
      eventually(
          [&] {
            return metric(a, "zuma_replication_group_scheduled_bookmarks{group=\"db\"}") >= 4 &&
                   metric(a, "zuma_replication_group_pruned_bookmarks{group=\"db\"}") >= 2;
          },
          std::chrono::seconds(30)),
      a.log_tail(3000));
  write_run(a, m, 1, 0, 10, seed);
  // ... and on the secondary, which follows the primary's retention (removal records in the
  // log): both sites list the same two newest scheduled bookmarks on both LUs.
  auto names = [&](Zumad& z, const char* lu) {
    std::vector<std::string> v;
    for (const Json& s : call(z, "snapshot list", Json{{"lu", lu}})) v.push_back(s["name"]);
    return v;
  };
  std::vector<std::string> on_a, on_b;
  const bool same = eventually([&] {
    for (const char* lu : {"data", "logs"}) {
      on_a = names(a, lu);
      on_b = names(b, lu);
      if (on_a != on_b || on_a.size() != 2) return false;
      for (const auto& n : on_a)
        if (!n.starts_with("auto-")) return false;
    }
    return true;
  });
  CHECK_MESSAGE(same, "primary " << Json(on_a).dump() << ", secondary " << Json(on_b).dump() << "\n"
                                 << b.log_tail(3000));
  CHECK(b.log().find("removed (record ") != std::string::npos);
  CHECK(metric(b, "zuma_replication_group_scheduled_bookmarks{group=\"db\"}") == 0);
  // Scheduled bookmarks are ordinary bookmarks: the data reads back on both sites.
  wait_settled(a, b);
  check_reads(a, m);
  check_reads(b, m);
  CHECK(a.stop() == 0);
  CHECK(b.stop() == 0);
}
