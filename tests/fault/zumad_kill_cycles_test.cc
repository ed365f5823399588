// Crash test (issue 7), one store through many kills: the same zumad directory is driven
// by a libiscsi client (plain and FUA writes, SYNCHRONIZE CACHE) and the control socket
// (snapshot create, delete, rollback), killed with SIGKILL at a random moment, restarted,
// checked, and driven again, so each recovery starts from a recovered store. After each
// restart:
//   - every block holds a value it may hold: the last value of an acknowledged FUA write,
//     SYNCHRONIZE CACHE, snapshot creation or rollback, or one written (or rolled back to)
//     since; a write cut by the kill may be there or not,
//   - every acknowledged snapshot is there and reads back exactly the LU when it was taken
//     (exported as a read-only LUN); every acknowledged deletion stays deleted; an
//     operation cut by the kill is there or not, and exact if there,
//   - the metadata is consistent: the status agrees with the listing, the space used fits,
//     and at the end, with every snapshot deleted and reclaimed, exactly the LU's chunks
//     are in use (nothing leaked through the crashes).
// ZUMA_FAULT_ITERATIONS sets the number of kills (default 4: the CI variant, ~15 s).
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "admin/protocol.hh"
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
constexpr uint64_t kLuBytes = 2 * 1024 * 1024;
constexpr uint64_t kBlocks = kLuBytes / kBs;

const char* kOrigin =
    "      - { id: 0, name: data, size: 2MiB, backend: file, path: @DIR@/data.img,\n"
    "          snapshots: { store: { data: @DIR@/snap.data, meta: @DIR@/snap.meta, size: 64MiB,\n"
    "                                meta_size: 1MiB }, chunk_size: 16KiB } }\n";

bool block_is(std::span<const uint8_t> blk, uint64_t lba, uint64_t seed) {
  if (seed == 0) return std::all_of(blk.begin(), blk.end(), [](uint8_t b) { return b == 0; });
  return check_pattern(blk, kBs, lba, seed).empty();
}

// The seed block `lba` holds among `candidates`; nullopt when none matches.
template <class C>
std::optional<uint64_t> seed_of(std::span<const uint8_t> blk, uint64_t lba, const C& candidates) {
  for (uint64_t sd : candidates)
    if (block_is(blk, lba, sd)) return sd;
  return std::nullopt;
}

// Runs a command again after UNIT ATTENTION (a rollback establishes 28h/00h for the
// driver's nexus too, SPC-5), as an initiator does.
template <class F>
Task with_ua_retry(F&& f) {
  Task t = f();
  for (int i = 0; i < 3 && t && t->status == SCSI_STATUS_CHECK_CONDITION &&
                  t->sense.key == SCSI_SENSE_UNIT_ATTENTION;
       ++i)
    t = f();
  return t;
}

struct Snap {
  std::vector<uint64_t> image;
  bool acked = false;
};

struct Counts {
  int writes = 0, syncs = 0, creates = 0, deletes = 0, rollbacks = 0;
};

struct Model {
  Counts n;
  std::vector<uint64_t> image = std::vector<uint64_t>(kBlocks, 0);  // last acknowledged values
  std::vector<std::set<uint64_t>> possible =
      std::vector<std::set<uint64_t>>(kBlocks, std::set<uint64_t>{0});
  std::map<std::string, Snap> snaps;      // created (acked) or creation cut by the kill
  std::set<std::string> deleted;          // deletion acknowledged: must stay deleted
  std::set<std::string> deleting;         // deletion cut by the kill
  // Everything acknowledged so far is durable (FUA, SYNC CACHE, snapshot create, rollback).
  void durable() {
    for (uint64_t b = 0; b < kBlocks; ++b) possible[b] = {image[b]};
  }
};

// Reads the LUN whole; returns a message for the first block `ok` rejects.
template <class Ok>
std::string scan(Session& s, int lun, Ok&& ok) {
  for (uint64_t lba = 0; lba < kBlocks; lba += 1024) {
    Task r = with_ua_retry([&] { return s.read16(lun, lba, 1024 * kBs, kBs); });
    if (!is_good(r.get())) return "READ failed: " + describe(s.ctx(), r.get());
    for (uint64_t b = 0; b < 1024; ++b) {
      std::string bad = ok(std::span<const uint8_t>(r->datain.data + b * kBs, kBs), lba + b);
      if (!bad.empty()) return bad;
    }
  }
  return "";
}

// Drives the LU until the kill (or a failure it causes).
void drive(Zumad& z, Model& m, std::mt19937_64& rng, uint64_t& seed, const std::atomic<bool>& killed) {
  try {
    Session s(z.portal(), kTestIqn);
    auto client = connect_control(z);
    if (!client) return;
    for (int step = 0; !killed; ++step) {
      const int what = static_cast<int>(rng() % 40);
      if (what < 28) {
        const bool fua = what < 10;
        const uint64_t lba = rng() % kBlocks;
        const uint64_t n = std::min<uint64_t>(1 + rng() % 96, kBlocks - lba);
        const uint64_t sd = ++seed;
        for (uint64_t b = lba; b < lba + n; ++b) m.possible[b].insert(sd);
        auto data = make_pattern(n, kBs, lba, sd);
        Task w = with_ua_retry([&] {
          return Task(iscsi_write16_sync(s.ctx(), 0, lba, data.data(), static_cast<uint32_t>(data.size()),
                                         kBs, 0, 0, fua ? 1 : 0, 0, 0));
        });
        if (!is_good(w.get())) {
          // Only the kill may stop a write (the store has room for everything this does).
          if (!killed) CHECK_MESSAGE(killed, "WRITE failed: " << describe(s.ctx(), w.get()));
          return;
        }
        ++m.n.writes;
        for (uint64_t b = lba; b < lba + n; ++b) {
          m.image[b] = sd;
          if (fua) m.possible[b] = {sd};  // SBC-4 5.40: FUA, durable before GOOD
        }
      } else if (what < 30) {
        Task f = with_ua_retry([&] { return s.sync_cache(0); });
        if (!is_good(f.get())) {
          if (!killed) CHECK_MESSAGE(killed, "SYNCHRONIZE CACHE failed: " << describe(s.ctx(), f.get()));
          return;
        }
        ++m.n.syncs;
        m.durable();
      } else if (what < 35 && m.snaps.size() < 4) {
        const std::string name = "s" + std::to_string(seed) + "-" + std::to_string(step);
        m.snaps[name].image = m.image;
        auto r = client->call("snapshot create", {{"lu", "data"}, {"name", name}});
        if (!r) return;
        if (!r->ok) {  // CHECK, not REQUIRE: the killer thread must be joined
          CHECK_MESSAGE(r->ok, r->error);
          return;
        }
        m.snaps[name].acked = true;
        ++m.n.creates;
        m.durable();  // creation commits everything before it
      } else if (what < 39 && !m.snaps.empty()) {
        auto victim = m.snaps.begin();
        std::advance(victim, rng() % m.snaps.size());
        const std::string name = victim->first;
        m.deleting.insert(name);
        auto r = client->call("snapshot delete", {{"lu", "data"}, {"snapshot", name}});
        if (!r) return;
        if (!r->ok) {
          CHECK_MESSAGE(r->ok, r->error);
          return;
        }
        m.deleting.erase(name);
        m.deleted.insert(name);
        m.snaps.erase(name);
        ++m.n.deletes;
      } else if (!m.snaps.empty()) {
        auto target = m.snaps.begin();
        std::advance(target, rng() % m.snaps.size());
        // A rollback cut by the kill leaves each chunk as it was or as the snapshot has it.
        for (uint64_t b = 0; b < kBlocks; ++b) m.possible[b].insert(target->second.image[b]);
        auto r = client->call("snapshot rollback", {{"lu", "data"}, {"snapshot", target->first}});
        if (!r) return;
        if (!r->ok) {
          // Refused for want of free chunks (nothing changed) is fine; anything else is not.
          CHECK_MESSAGE(r->error.find("free chunks") != std::string::npos, r->error);
          continue;
        }
        m.image = target->second.image;
        ++m.n.rollbacks;
        m.durable();
      }
    }
  } catch (const std::exception&) {
    // The kill can land during login or a control call.
  }
}

Json control(Zumad& z, const std::string& verb, const Json& args) {
  auto c = connect_control(z);
  REQUIRE_MESSAGE(c, c.error());
  auto r = c->call(verb, args);
  REQUIRE(r);
  REQUIRE_MESSAGE(r->ok, verb << ": " << r->error);
  return r->result;
}

// The status agrees with the listing; the space used fits.
void check_metadata(Zumad& z, const Json& listing) {
  const Json st = control(z, "snapshot status", {{"lu", "data"}});
  CHECK(st["snapshots"].get<size_t>() == listing.size());
  CHECK(st["used_bytes"].get<uint64_t>() <= st["total_bytes"].get<uint64_t>());
  CHECK(st["used_bytes"].get<uint64_t>() >= kLuBytes);  // the LU's own chunks at least
  CHECK(st["meta_bytes"].get<uint64_t>() <= st["meta_capacity"].get<uint64_t>());
}

}  // namespace

TEST_CASE("one store through repeated kill -9: writes, FUA, snapshots, deletions, rollbacks") {
  const char* env = std::getenv("ZUMA_FAULT_ITERATIONS");
  const int iterations = env ? std::max(1, std::atoi(env)) : 4;
  std::mt19937_64 rng(0xc0ffee);
  Zumad z(make_config(kOrigin));
  Model m;
  uint64_t seed = 1;
  for (int it = 0; it < iterations; ++it) {
    CAPTURE(it);
    z.start();
    std::atomic<bool> killed{false};
    const auto kill_after = std::chrono::milliseconds(200 + rng() % 1300);
    std::thread killer([&] {
      std::this_thread::sleep_for(kill_after);
      killed = true;
      z.signal(SIGKILL);
    });
    drive(z, m, rng, seed, killed);
    killer.join();
    REQUIRE(z.wait_exit(std::chrono::seconds(10)).has_value());

    // Restart; which snapshots are there?
    z.start();
    const Json listing = control(z, "snapshot list", {{"lu", "data"}, {"fast", true}});
    check_metadata(z, listing);
    std::set<std::string> present;
    for (const auto& e : listing) present.insert(e["name"].get<std::string>());
    for (const auto& [name, snap] : m.snaps)
      if (snap.acked && !m.deleting.count(name))
        CHECK_MESSAGE(present.count(name), "acknowledged snapshot " << name << " lost");
    for (const std::string& name : m.deleted)
      CHECK_MESSAGE(!present.count(name), "snapshot " << name << " came back after its deletion");
    for (auto i = m.snaps.begin(); i != m.snaps.end();) {
      if (!present.count(i->first)) {
        i = m.snaps.erase(i);  // a creation cut by the kill that did not happen
      } else {
        i->second.acked = true;
        m.deleting.erase(i->first);
        ++i;
      }
    }
    for (const std::string& name : m.deleting) m.deleted.insert(name);  // it happened
    m.deleting.clear();
    for (const std::string& name : present)
      CHECK_MESSAGE(m.snaps.count(name), "unknown snapshot " << name);

    // Every snapshot exported read-only for the check, then the plain config again.
    std::string exports;
    std::map<int, std::string> lun_of;
    int lun = 1;
    for (const auto& [name, snap] : m.snaps) {
      exports += "      - { id: " + std::to_string(lun) + ", name: x" + std::to_string(lun) +
                 ", size: 2MiB, source: { lu: data, snapshot: " + name + " } }\n";
      lun_of[lun++] = name;
    }
    CHECK(z.stop() == 0);
    const std::string base = z.config_text();
    write_file(z.config_path(), base + exports);
    z.start();
    {
      Session s(z.portal(), kTestIqn);
      for (const auto& [l, name] : lun_of) {
        const auto& img = m.snaps.at(name).image;
        CHECK_MESSAGE(scan(s, l, [&](std::span<const uint8_t> blk, uint64_t lba) -> std::string {
                        if (block_is(blk, lba, img[lba])) return "";
                        return "snapshot " + name + " block " + std::to_string(lba) + " is not seed " +
                               std::to_string(img[lba]);
                      }) == "",
                      "snapshot " << name);
      }
      // The LU: each block holds one of its possible values, which becomes its value.
      CHECK(scan(s, 0, [&](std::span<const uint8_t> blk, uint64_t lba) -> std::string {
              auto sd = seed_of(blk, lba, m.possible[lba]);
              if (!sd) return "LU block " + std::to_string(lba) + " holds none of its possible values";
              m.image[lba] = *sd;
              return "";
            }) == "");
      m.durable();  // what the LU holds now survived a crash and a clean stop
    }
    CHECK(z.stop() == 0);
    write_file(z.config_path(), base);
  }

  // Nothing leaked: with every snapshot deleted and reclaimed, only the LU's chunks are used.
  z.start();
  for (const auto& [name, snap] : m.snaps) control(z, "snapshot delete", {{"lu", "data"}, {"snapshot", name}});
  Json st;
  for (int i = 0; i < 100; ++i) {
    st = control(z, "snapshot status", {{"lu", "data"}});
    if (!st["reclaiming"].get<bool>() && st["used_bytes"].get<uint64_t>() == kLuBytes) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(st["snapshots"] == 0);
  CHECK(st["used_bytes"].get<uint64_t>() == kLuBytes);
  CHECK(z.log().find("checksum") == std::string::npos);
  MESSAGE(iterations << " kills; acknowledged: " << m.n.writes << " writes, " << m.n.syncs
                     << " syncs, " << m.n.creates << " snapshots, " << m.n.deletes << " deletions, "
                     << m.n.rollbacks << " rollbacks");
  CHECK(z.stop() == 0);
}
