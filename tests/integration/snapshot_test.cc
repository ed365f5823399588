// Snapshots over iSCSI (issue 7): write A, snapshot, write B, snapshot, write C; each
// snapshot exported as a read-only LU reads back exactly; a clone's writes do not touch
// the origin; rollback restores; diff lists exactly the changed extents; everything
// survives a restart. A rollback gives every I_T nexus of the LU UNIT ATTENTION 28h/00h and
// no READ in flight sees a mix of old and new data; a clone's snapshots can be taken,
// diffed and rolled back to. Snapshot verbs go through zumad's control socket (admin::Client).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
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
constexpr uint64_t kChunk = 64 * 1024;
constexpr uint64_t kBlocks = 4 * 1024 * 1024 / kBs;  // a 4 MiB LU

const char* kOrigin =
    "      - { id: 0, name: data, size: 4MiB, backend: file, path: @DIR@/data.img,\n"
    "          snapshots: { store: { data: @DIR@/snap.data, meta: @DIR@/snap.meta, size: 8MiB,\n"
    "                                meta_size: 1MiB }, chunk_size: 64KiB } }\n";

const char* kExports =
    "      - { id: 1, name: data-a, size: 4MiB, source: { lu: data, snapshot: a } }\n"
    "      - { id: 2, name: data-ab, size: 4MiB, source: { lu: data, snapshot: ab } }\n"
    "      - { id: 3, name: data-dev, size: 4MiB, source: { lu: data, clone: dev, from: a } }\n";

// Writes `blocks` blocks of pattern `seed` at `lba` on LUN `lun`; records them in `image`
// (one seed per block).
void write(Session& s, int lun, uint64_t lba, uint64_t blocks, uint64_t seed,
           std::vector<uint64_t>& image) {
  auto data = make_pattern(blocks, kBs, lba, seed);
  Task w = s.write16(lun, lba, data, kBs);
  REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
  for (uint64_t b = lba; b < lba + blocks; ++b) image[b] = seed;
}

// Reads the whole LU and compares every block with the pattern its seed says.
std::string verify(Session& s, int lun, const std::vector<uint64_t>& image) {
  constexpr uint64_t kStep = 2048;  // blocks per READ (1 MiB)
  for (uint64_t lba = 0; lba < kBlocks; lba += kStep) {
    Task r = s.read16(lun, lba, kStep * kBs, kBs);
    if (!is_good(r.get())) return "READ failed: " + describe(s.ctx(), r.get());
    for (uint64_t b = 0; b < kStep; ++b) {
      std::span<const uint8_t> blk(r->datain.data + b * kBs, kBs);
      const std::string bad = check_pattern(blk, kBs, lba + b, image[lba + b]);
      if (!bad.empty()) return "LUN " + std::to_string(lun) + ": " + bad;
    }
  }
  return "";
}

}  // namespace

TEST_CASE("snapshots: export, clone, diff, rollback, restart") {
  Zumad z(make_config(kOrigin));
  z.start();
  std::vector<uint64_t> a(kBlocks, 1), ab, abc;
  {
    Session s(z.portal(), kTestIqn);
    write(s, 0, 0, kBlocks, 1, a);  // A everywhere
    CHECK(call(z, "snapshot create", {{"lu", "data"}, {"name", "a"}})["id"] == 1);
    ab = a;
    write(s, 0, 100, 300, 2, ab);               // B: chunks 0..3 (blocks 100..399)
    write(s, 0, 20 * 128 + 5, 1, 3, ab);        // and one block of chunk 20
    CHECK(call(z, "snapshot create", {{"lu", "data"}, {"name", "ab"}})["id"] == 2);
    abc = ab;
    write(s, 0, 40 * 128, 256, 4, abc);         // C: chunks 40, 41 whole
    CHECK(verify(s, 0, abc) == "");

    // diff lists exactly the chunks each step changed.
    Json d = call(z, "snapshot diff", {{"lu", "data"}, {"from", "a"}, {"to", "ab"}});
    CHECK(d == Json::array({{{"offset", 0}, {"length", 4 * kChunk}},
                            {{"offset", 20 * kChunk}, {"length", kChunk}}}));
    d = call(z, "snapshot diff", {{"lu", "data"}, {"from", "ab"}});
    CHECK(d == Json::array({{{"offset", 40 * kChunk}, {"length", 2 * kChunk}}}));
    Json list = call(z, "snapshot list", {{"lu", "data"}});
    REQUIRE(list.size() == 2);
    CHECK(list[0]["name"] == "a");
    CHECK(list[0]["exclusive_bytes"] == 5 * kChunk);
    Json st = call(z, "snapshot status", {{"lu", "data"}});
    CHECK(st["snapshots"] == 2);
  }

  // Export both snapshots and a clone of `a` with a live config change.
  write_file(z.config_path(), z.config_text() + replace_all(kExports, "@DIR@", z.dir()));
  call(z, "config reload", Json::object());
  {
    Session s(z.portal(), kTestIqn);
    CHECK(verify(s, 1, a) == "");
    CHECK(verify(s, 2, ab) == "");
    CHECK(verify(s, 3, a) == "");
    // A read-only snapshot refuses writes.
    auto data = make_pattern(1, kBs, 0, 9);
    Task w = s.write16(1, 0, data, kBs);
    CHECK_FALSE(is_good(w.get()));
    // Clone writes stay in the clone.
    std::vector<uint64_t> dev = a;
    write(s, 3, 7, 200, 5, dev);
    CHECK(verify(s, 3, dev) == "");
    CHECK(verify(s, 0, abc) == "");
    CHECK(verify(s, 1, a) == "");
  }

  // Restart: snapshots, the clone and the LU come back as they were.
  CHECK(z.stop() == 0);
  z.start();
  {
    Session s(z.portal(), kTestIqn);
    CHECK(verify(s, 0, abc) == "");
    CHECK(verify(s, 1, a) == "");
    CHECK(verify(s, 2, ab) == "");
  }
  // Rollback to `ab`, then the LU reads A+B.
  call(z, "snapshot rollback", {{"lu", "data"}, {"snapshot", "ab"}});
  {
    Session s(z.portal(), kTestIqn);
    CHECK(verify(s, 0, ab) == "");
  }
  // Deleting an exported snapshot is refused; unknown names get a clear error.
  auto c = connect_control(z);
  REQUIRE(c);
  auto r = c->call("snapshot delete", {{"lu", "data"}, {"snapshot", "a"}});
  REQUIRE(r);
  CHECK_FALSE(r->ok);
  CHECK(r->error.find("exported") != std::string::npos);
  r = c->call("snapshot delete", {{"lu", "data"}, {"snapshot", "nope"}});
  REQUIRE(r);
  CHECK(r->error == "no snapshot 'nope'");
}

namespace {

// One READ of `blocks` blocks at `lba`: the seed every block holds, -1 when the blocks hold
// different seeds (a read that saw part of the old and part of the new content), -2 for a
// UNIT ATTENTION 28h/00h, -3 for any other failure.
int64_t read_seed(Session& s, int lun, uint64_t lba, uint64_t blocks,
                  const std::vector<uint64_t>& seeds) {
  Task r = s.read16(lun, lba, static_cast<uint32_t>(blocks * kBs), kBs);
  if (is_sense(r.get(), SCSI_SENSE_UNIT_ATTENTION, 0x2800)) return -2;
  if (!is_good(r.get())) return -3;
  int64_t seen = -4;
  for (uint64_t b = 0; b < blocks; ++b) {
    std::span<const uint8_t> blk(r->datain.data + b * kBs, kBs);
    int64_t match = -1;
    for (uint64_t seed : seeds)
      if (check_pattern(blk, kBs, lba + b, seed).empty()) match = static_cast<int64_t>(seed);
    if (match < 0 || (seen != -4 && seen != match)) return -1;
    seen = match;
  }
  return seen;
}

}  // namespace

TEST_CASE("rollback: UNIT ATTENTION 28h/00h on every I_T nexus of the LU; I/O in flight stays whole") {
  Zumad z(make_config(kOrigin));
  z.start();
  std::vector<uint64_t> a(kBlocks, 1), b(kBlocks, 2);
  Session s1(z.portal(), kTestIqn), s2(z.portal(), kTestIqn);
  write(s1, 0, 0, kBlocks, 1, a);
  call(z, "snapshot create", {{"lu", "data"}, {"name", "a"}});
  write(s1, 0, 0, kBlocks, 2, b);  // every chunk redirected: the rollback copies all 64

  // A third initiator reads 1 MiB at a time while the rollback runs: each READ sees all of
  // B (before) or all of A (after), never a mix; it gets the UA exactly once, after which
  // it reads only A.
  std::atomic<bool> stop{false};
  std::atomic<int> mixed{0}, failed{0}, uas{0}, b_after_ua{0}, reads{0};
  Session s3(z.portal(), kTestIqn);
  std::thread reader([&] {
    uint64_t lba = 0;
    while (!stop) {
      const int64_t seed = read_seed(s3, 0, lba, 2048, {1, 2});
      ++reads;
      if (seed == -1) ++mixed;
      if (seed == -3) ++failed;
      if (seed == -2) ++uas;
      if (seed == 2 && uas > 0) ++b_after_ua;
      lba = (lba + 2048) % kBlocks;
    }
  });
  while (reads < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  call(z, "snapshot rollback", {{"lu", "data"}, {"snapshot", "a"}});
  const int before = reads;
  while (reads < before + 4) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  reader.join();
  CHECK(mixed == 0);
  CHECK(failed == 0);
  CHECK(uas == 1);
  CHECK(b_after_ua == 0);

  // The other nexuses: their next command gets the UA (a READ is not executed), once.
  Task t = s1.tur(0);
  CHECK_MESSAGE(is_sense(t.get(), SCSI_SENSE_UNIT_ATTENTION, 0x2800), describe(s1.ctx(), t.get()));
  t = s1.tur(0);
  CHECK(is_good(t.get()));
  CHECK(read_seed(s2, 0, 0, 128, {1, 2}) == -2);
  CHECK(verify(s2, 0, a) == "");
  CHECK(verify(s1, 0, a) == "");

  // A clone's snapshot and its rollback: the clone's LU gets the UA, the origin's does not.
  write_file(z.config_path(),
             z.config_text() +
                 replace_all("      - { id: 3, name: data-dev, size: 4MiB, source: { lu: data, clone: dev, from: a } }\n",
                             "@DIR@", z.dir()));
  call(z, "config reload", Json::object());
  Session s4(z.portal(), kTestIqn);
  std::vector<uint64_t> dev = a;
  write(s4, 3, 0, 128, 5, dev);
  CHECK(call(z, "snapshot create", {{"lu", "data"}, {"name", "dev-1"}, {"clone", "dev"}})["clone"] == "dev");
  const std::vector<uint64_t> dev1 = dev;
  write(s4, 3, 30 * 128, 256, 6, dev);
  Json d = call(z, "snapshot diff", {{"lu", "data"}, {"from", "dev-1"}});
  CHECK(d == Json::array({{{"offset", 30 * kChunk}, {"length", 2 * kChunk}}}));
  Json list = call(z, "snapshot list", {{"lu", "data"}});
  REQUIRE(list.size() == 2);
  CHECK(list[1]["name"] == "dev-1");
  // zumactl's TAB on a snapshot or clone argument asks for the LU's names.
  CHECK(call(z, "complete", {{"source", "snapshots:data"}}) == Json::array({list[0]["name"], "dev-1"}));
  CHECK(call(z, "complete", {{"source", "clones:data"}}) == Json::array({"dev"}));
  CHECK(call(z, "complete", {{"source", "snapshots:nope"}}) == Json::array());
  CHECK(list[1]["of"] == "dev");
  call(z, "snapshot rollback", {{"lu", "data"}, {"snapshot", "dev-1"}});
  t = s4.tur(3);
  CHECK_MESSAGE(is_sense(t.get(), SCSI_SENSE_UNIT_ATTENTION, 0x2800), describe(s4.ctx(), t.get()));
  t = s4.tur(0);
  CHECK(is_good(t.get()));  // the origin did not change
  CHECK(verify(s4, 3, dev1) == "");
  CHECK(verify(s4, 0, a) == "");
}
