// SnapshotStore over memory backends: views read back exactly, partial redirects copy the
// rest of the chunk, clones, rollback, diff, out of space, reopen, power loss.
#include "snapshot/snapshot_store.hh"

#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <atomic>

#include <fmt/format.h>

#include "storage/memory_backend.hh"
#include "storage/sync_io.hh"
#include "tests/fault/fault_backend.hh"

using namespace zuma;
using namespace zuma::snapshot;

namespace {

constexpr uint64_t kCs = 64 * 1024;

// The bytes of a store, kept across open/close; optionally behind FaultBackends.
struct Devices {
  Devices(uint64_t lu, uint64_t data, uint64_t meta = 256 * 1024)
      : home(std::make_shared<storage::MemoryBackend>(lu)),
        store(std::make_shared<storage::MemoryBackend>(data)),
        meta(std::make_shared<storage::MemoryBackend>(meta)) {}
  std::shared_ptr<storage::MemoryBackend> home, store, meta;
  std::shared_ptr<test::FaultBackend> fhome, fstore, fmeta;
  void with_faults() {
    fhome = std::make_shared<test::FaultBackend>(home);
    fstore = std::make_shared<test::FaultBackend>(store);
    fmeta = std::make_shared<test::FaultBackend>(meta);
  }
  std::shared_ptr<storage::Backend> pick(std::shared_ptr<test::FaultBackend> f,
                                         std::shared_ptr<storage::MemoryBackend> m) {
    if (f) return f;
    return m;
  }
  std::expected<std::shared_ptr<SnapshotStore>, std::string> open(uint64_t cs = kCs) {
    StoreOptions o;
    o.name = "t";
    o.chunk_size = cs;
    o.reclaim_batch = 7;
    return SnapshotStore::open(std::make_unique<test::SharedBackend>(pick(fhome, home)),
                               std::make_unique<test::SharedBackend>(pick(fstore, store)),
                               std::make_unique<test::SharedBackend>(pick(fmeta, meta)), o);
  }
  size_t power_loss(std::mt19937_64& rng) {
    return fhome->power_loss(rng) + fstore->power_loss(rng) + fmeta->power_loss(rng);
  }
};

int io(storage::Backend& b, storage::IoOp op, uint64_t off, void* p, uint64_t len, bool fua = false) {
  return storage::sync_io(b, op, off, p, len, fua);
}

// Byte i of the image written with `seed` (0 = zeros).
uint8_t pat(uint64_t seed, uint64_t i) {
  return seed == 0 ? 0 : static_cast<uint8_t>((i * 2654435761u >> 7) ^ (seed * 131) ^ (i >> 12));
}

// An in-memory image the tests compare against.
struct Image {
  explicit Image(uint64_t n) : bytes(n, 0) {}
  std::vector<uint8_t> bytes;
  int write(storage::Backend& b, uint64_t off, uint64_t len, uint64_t seed, bool fua = false) {
    std::vector<uint8_t> buf(len);
    for (uint64_t i = 0; i < len; ++i) buf[i] = pat(seed, off + i);
    const int r = io(b, storage::IoOp::kWrite, off, buf.data(), len, fua);
    if (r == 0) std::copy(buf.begin(), buf.end(), bytes.begin() + off);
    return r;
  }
};

std::string compare(storage::Backend& b, const std::vector<uint8_t>& want) {
  std::vector<uint8_t> got(want.size());
  const int r = io(b, storage::IoOp::kRead, 0, got.data(), got.size());
  if (r != 0) return "read failed: " + std::string(std::strerror(-r));
  for (size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i])
      return "first difference at byte " + std::to_string(i) + " (chunk " + std::to_string(i / kCs) + ")";
  return "";
}

}  // namespace

TEST_CASE("snapshots read back exactly what the LU held; partial writes copy the rest") {
  Devices d(1 << 20, 1 << 20);
  auto s = d.open();
  REQUIRE(s);
  auto live = (*s)->live_view();
  CHECK(live->size() == (1u << 20));
  Image img(1 << 20);
  REQUIRE(img.write(*live, 0, 1 << 20, 1) == 0);  // A everywhere
  const auto a = img.bytes;
  auto s1 = (*s)->create("A");
  REQUIRE(s1);
  // B: unaligned, crossing chunk boundaries, partial chunks.
  REQUIRE(img.write(*live, 1000, 70000, 2) == 0);
  REQUIRE(img.write(*live, 5 * kCs + 512, 4096, 3) == 0);
  REQUIRE(img.write(*live, 5 * kCs + 8192, 4096, 4) == 0);  // same chunk again: in place
  const auto ab = img.bytes;
  auto s2 = (*s)->create("AB");
  REQUIRE(s2);
  REQUIRE(img.write(*live, 9 * kCs, 2 * kCs, 5) == 0);  // C: whole chunks
  CHECK(compare(*live, img.bytes) == "");
  auto v1 = (*s)->snapshot_view(*s1);
  auto v2 = (*s)->snapshot_view(*s2);
  REQUIRE(v1);
  REQUIRE(v2);
  CHECK(compare(**v1, a) == "");
  CHECK(compare(**v2, ab) == "");
  // Snapshot views are read-only.
  uint8_t x[512] = {};
  CHECK(io(**v1, storage::IoOp::kWrite, 0, x, 512) == -EROFS);
  // An exported snapshot cannot be deleted.
  CHECK_FALSE((*s)->remove("A"));

  auto d12 = (*s)->diff("A", "AB");
  REQUIRE(d12);
  CHECK(*d12 == std::vector<Extent>{{0, 2 * kCs}, {5 * kCs, kCs}});
  auto d2l = (*s)->diff("AB", "live");
  REQUIRE(d2l);
  CHECK(*d2l == std::vector<Extent>{{9 * kCs, 2 * kCs}});
  CHECK_FALSE((*s)->diff("AB", "A"));
  CHECK_FALSE((*s)->diff("nope", "live"));

  auto listing = (*s)->list();
  REQUIRE(listing.size() == 2);
  CHECK(listing[0].name == "A");
  CHECK(listing[0].exclusive_bytes == 3 * kCs);  // chunks 0, 1, 5 of A
  // AB's versions of 0, 1, 5 are the live ones; its 9 and 10 are A's too.
  CHECK(listing[1].exclusive_bytes == 0);
  CHECK(listing[1].shared_bytes == 16 * kCs);

  // Reopen: everything is durable after the snapshot commits and a flush.
  REQUIRE(io(*live, storage::IoOp::kFlush, 0, nullptr, 0) == 0);
  v1->reset();
  v2->reset();
  live.reset();
  s->reset();
  auto again = d.open();
  REQUIRE(again);
  CHECK(compare(*(*again)->live_view(), img.bytes) == "");
  CHECK(compare(**(*again)->snapshot_view(1), a) == "");
  CHECK(compare(**(*again)->snapshot_view(2), ab) == "");
}

TEST_CASE("clones branch from a snapshot and never touch it; rollback restores") {
  Devices d(512 * 1024, 1 << 20);
  auto s = d.open();
  REQUIRE(s);
  auto live = (*s)->live_view();
  Image img(512 * 1024);
  REQUIRE(img.write(*live, 0, 512 * 1024, 7) == 0);
  const auto base = img.bytes;
  REQUIRE((*s)->create("base"));
  auto id = (*s)->clone("base", "dev");
  REQUIRE(id);
  auto clone = (*s)->clone_view(*id);
  REQUIRE(clone);
  Image cimg(512 * 1024);
  cimg.bytes = base;
  REQUIRE(cimg.write(**clone, 3000, 100000, 8) == 0);
  REQUIRE(img.write(*live, 200000, 5000, 9) == 0);
  CHECK(compare(**clone, cimg.bytes) == "");
  CHECK(compare(*live, img.bytes) == "");
  CHECK(compare(**(*s)->snapshot_view(1), base) == "");
  CHECK_FALSE((*s)->remove("base"));  // pinned by the clone
  CHECK_FALSE((*s)->remove_clone(*id));  // exported
  clone->reset();
  REQUIRE((*s)->remove_clone(*id));

  REQUIRE((*s)->rollback("base"));
  CHECK(compare(*live, base) == "");
  REQUIRE((*s)->remove("base"));
  (*s)->wait_reclaimed();
  CHECK((*s)->status().snapshots == 0);
}

TEST_CASE("a clone's snapshots: read back, clone again, roll back the clone, diff, reopen") {
  constexpr uint64_t kLu = 512 * 1024;
  Devices d(kLu, 2 << 20);
  auto s = d.open();
  REQUIRE(s);
  auto live = (*s)->live_view();
  Image img(kLu);
  REQUIRE(img.write(*live, 0, kLu, 7) == 0);
  REQUIRE((*s)->create("base"));
  auto id = (*s)->clone("base", "dev");
  REQUIRE(id);
  int live_rollbacks = 0, clone_rollbacks = 0;
  (*s)->set_rollback_listener(0, [&] { ++live_rollbacks; });
  (*s)->set_rollback_listener(*id, [&] { ++clone_rollbacks; });
  auto clone = std::move(*(*s)->clone_view(*id));
  Image cimg(kLu);
  cimg.bytes = img.bytes;
  REQUIRE(cimg.write(*clone, 3000, 70000, 8) == 0);  // partial chunks at both ends
  const auto at1 = cimg.bytes;
  CHECK_FALSE((*s)->create("c1", "no-such-clone"));
  auto c1 = (*s)->create("c1", "dev");
  REQUIRE(c1);
  REQUIRE(cimg.write(*clone, 65536 * 5 + 10, 20, 9) == 0);
  REQUIRE(cimg.write(*clone, 0, 4096, 10) == 0);
  const auto at2 = cimg.bytes;
  REQUIRE((*s)->create("c2", "1"));  // the clone by id
  REQUIRE(cimg.write(*clone, 65536 * 7, 65536, 11) == 0);
  REQUIRE(img.write(*live, 0, kLu, 12) == 0);  // the LU moves on; the clone does not see it
  CHECK(compare(*clone, cimg.bytes) == "");
  CHECK(compare(**(*s)->snapshot_view(*c1), at1) == "");
  CHECK(compare(**(*s)->snapshot_view(*(*s)->find("c2")), at2) == "");
  CHECK(io(**(*s)->snapshot_view(*c1), storage::IoOp::kWrite, 0, cimg.bytes.data(), 4096) == -EROFS);

  // diff within the clone's line: c1 -> c2 changed chunks 0 and 5; c2 -> now chunk 7.
  auto dd = (*s)->diff("c1", "c2");
  REQUIRE(dd);
  CHECK(*dd == std::vector<Extent>{{0, kCs}, {5 * kCs, kCs}});
  dd = (*s)->diff("c2", "live");
  REQUIRE(dd);
  CHECK(*dd == std::vector<Extent>{{7 * kCs, kCs}});
  CHECK_FALSE((*s)->diff("base", "c1"));  // different lines

  // A clone of the clone's snapshot, then the listing shows whose snapshots are whose.
  auto id2 = (*s)->clone("c1", "dev2");
  REQUIRE(id2);
  CHECK(compare(**(*s)->clone_view(*id2), at1) == "");
  size_t of_clone = 0;
  for (const auto& l : (*s)->list()) of_clone += l.clone == *id;
  CHECK(of_clone == 2);
  CHECK((*s)->status().snapshots == 3);

  // Rolling the clone back touches neither the LU nor other views; only its listener runs.
  REQUIRE((*s)->rollback("c1"));
  CHECK(compare(*clone, at1) == "");
  CHECK(compare(*live, img.bytes) == "");
  CHECK(clone_rollbacks == 1);
  CHECK(live_rollbacks == 0);
  CHECK(compare(**(*s)->snapshot_view(*(*s)->find("c2")), at2) == "");
  dd = (*s)->diff("c1", "live");
  REQUIRE(dd);
  const std::vector<Extent> rolled = *dd;  // copies of c1's chunks: listed, same content

  // Everything survives a reopen (checkpoint version 2 / journal replay).
  clone.reset();
  live.reset();
  REQUIRE((*s)->sync() == 0);
  s->reset();
  s = d.open();
  REQUIRE(s);
  CHECK(compare(**(*s)->clone_view(*id), at1) == "");
  CHECK(compare(**(*s)->snapshot_view(*(*s)->find("c2")), at2) == "");
  CHECK(compare(**(*s)->clone_view(*id2), at1) == "");
  CHECK(*(*s)->diff("c1", "live") == rolled);
  {
    auto c2view = (*s)->snapshot_view(*(*s)->find("c2"));
    REQUIRE(c2view);
    auto busy = (*s)->remove_clone(*id);  // its snapshot c2 is exported
    REQUIRE_FALSE(busy);
    CHECK(busy.error().find("exported") != std::string::npos);
  }
  CHECK_FALSE((*s)->remove("c1"));             // pinned by dev2
  CHECK_FALSE((*s)->remove_clone(*id));        // its snapshot c1 is dev2's base
  REQUIRE((*s)->remove_clone(*id2));
  REQUIRE((*s)->remove("c1"));
  (*s)->wait_reclaimed();
  REQUIRE((*s)->remove_clone(*id));             // takes c2 with it
  CHECK((*s)->status().snapshots == 1);
  CHECK_FALSE((*s)->find("c2"));
}

TEST_CASE("rollback: I/O waits, then runs on the new content; the listener runs first") {
  Devices d(256 * 1024, 1 << 20);
  auto s = d.open();
  REQUIRE(s);
  auto live = (*s)->live_view();
  Image img(256 * 1024);
  REQUIRE(img.write(*live, 0, 256 * 1024, 3) == 0);
  const auto base = img.bytes;
  REQUIRE((*s)->create("base"));
  REQUIRE(img.write(*live, 0, 256 * 1024, 4) == 0);
  // A reader thread without an IoContext completes synchronously: every whole-LU read it
  // makes is either all before or all after the rollback, never a mix.
  std::atomic<bool> stop{false}, notified{false};
  std::atomic<int> mixed{0}, after_without_notice{0};  // no doctest assertions off the main thread
  const auto changed = img.bytes;
  std::thread reader([&] {
    std::vector<uint8_t> buf(256 * 1024);
    while (!stop) {
      if (io(*live, storage::IoOp::kRead, 0, buf.data(), buf.size()) != 0) ++mixed;
      const bool old = buf == changed, now = buf == base;
      if (!old && !now) ++mixed;
      if (now && !notified) ++after_without_notice;
    }
  });
  (*s)->set_rollback_listener(0, [&] { notified = true; });
  REQUIRE((*s)->rollback("base"));
  stop = true;
  reader.join();
  CHECK(mixed == 0);
  CHECK(after_without_notice == 0);
  CHECK(notified);
  CHECK(compare(*live, base) == "");
}

TEST_CASE("discard and write-zeroes deallocate whole chunks and zero partial ones") {
  Devices d(512 * 1024, 512 * 1024);
  auto s = d.open();
  REQUIRE(s);
  auto live = (*s)->live_view();
  Image img(512 * 1024);
  REQUIRE(img.write(*live, 0, 512 * 1024, 3) == 0);
  REQUIRE((*s)->create("full"));
  const auto full = img.bytes;
  std::vector<uint8_t> none;
  REQUIRE(io(*live, storage::IoOp::kDiscard, 1000, nullptr, 3 * kCs) == 0);
  std::fill(img.bytes.begin() + 1000, img.bytes.begin() + 1000 + 3 * kCs, 0);
  CHECK(compare(*live, img.bytes) == "");
  CHECK(compare(**(*s)->snapshot_view(1), full) == "");
  storage::ExtentStatus st;
  REQUIRE(live->extent_status(kCs, 4 * kCs, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == 2 * kCs);  // chunks 1 and 2; 0 and 3 were zeroed in part
}

TEST_CASE("out of space: writes needing a chunk fail with ENOSPC, the rest goes on") {
  Devices d(256 * 1024, 2 * kCs);  // 4 LU chunks, 2 spare
  auto s = d.open();
  REQUIRE(s);
  auto live = (*s)->live_view();
  Image img(256 * 1024);
  REQUIRE(img.write(*live, 0, 256 * 1024, 1) == 0);
  REQUIRE((*s)->create("s"));
  CHECK(img.write(*live, 0, 4096, 2) == 0);
  CHECK(img.write(*live, kCs, 4096, 3) == 0);
  CHECK(img.write(*live, 2 * kCs, 4096, 4) == -ENOSPC);
  CHECK(img.write(*live, 4096, 4096, 5) == 0);  // chunk 0 is already the LU's own
  CHECK(compare(*live, img.bytes) == "");
  auto st = (*s)->status();
  CHECK(st.used_bytes == st.total_bytes);
  // Deleting the snapshot frees its chunks once reclaimed and committed.
  REQUIRE((*s)->remove("s"));
  (*s)->wait_reclaimed();
  REQUIRE((*s)->sync() == 0);
  REQUIRE((*s)->sync() == 0);  // the next round releases what the previous one freed
  CHECK(img.write(*live, 2 * kCs, 4096, 6) == 0);
  CHECK(compare(*live, img.bytes) == "");
}

TEST_CASE("the metadata area filling up refuses new snapshots with a clear error") {
  Devices d(256 * 1024, 256 * 1024, 64 * 1024);
  auto s = d.open();
  REQUIRE(s);
  std::string error;
  int made = 0;
  for (int i = 0; i < 5000; ++i) {
    auto e = (*s)->create(fmt::format("snapshot-with-a-long-name-{:06}", i));
    if (!e) {
      error = e.error();
      break;
    }
    ++made;
  }
  CHECK(made > 50);
  CHECK(error.find("metadata area full") != std::string::npos);
  // The LU still works.
  auto live = (*s)->live_view();
  Image img(256 * 1024);
  CHECK(img.write(*live, 0, 4096, 1) == 0);
}

TEST_CASE("many snapshots: create and delete stay cheap, the write path is unchanged") {
  Devices d(1 << 20, 2 << 20, 4 << 20);
  auto s = d.open();
  REQUIRE(s);
  auto live = (*s)->live_view();
  Image img(1 << 20);
  for (int i = 0; i < 2000; ++i) {
    REQUIRE((*s)->create(""));
    if (i % 100 == 0) REQUIRE(img.write(*live, (i / 100) * 4096 * 7 % (1 << 20), 4096, i + 1) == 0);
  }
  CHECK(compare(*live, img.bytes) == "");
  CHECK((*s)->status().snapshots == 2000);
  for (int i = 1; i <= 2000; i += 2) REQUIRE((*s)->remove(std::to_string(i)));
  (*s)->wait_reclaimed();
  CHECK((*s)->status().snapshots == 1000);
}

TEST_CASE("power loss at random points: snapshots and synced writes survive") {
  const int iterations = std::getenv("ZUMA_FAULT_ITERATIONS") ? std::atoi(std::getenv("ZUMA_FAULT_ITERATIONS")) : 40;
  for (int it = 0; it < iterations; ++it) {
    CAPTURE(it);
    std::mt19937_64 rng(1000 + it);
    Devices d(512 * 1024, 16 << 20, 128 * 1024);  // room for every redirect
    d.with_faults();
    Image img(512 * 1024);
    std::vector<uint8_t> synced = img.bytes;                    // what must survive
    std::map<std::string, std::vector<uint8_t>> snaps;          // committed snapshots
    std::vector<std::pair<uint64_t, uint64_t>> unsynced;        // ranges written since
    uint64_t seed = 1;
    {
      auto s = d.open();
      REQUIRE(s);
      auto live = (*s)->live_view();
      const int steps = 10 + static_cast<int>(rng() % 60);
      for (int step = 0; step < steps; ++step) {
        const int what = static_cast<int>(rng() % 10);
        if (what < 6) {
          const uint64_t off = rng() % (512 * 1024 - 1) / 512 * 512;
          const uint64_t len = std::min<uint64_t>(512 * (1 + rng() % 300), 512 * 1024 - off);
          const bool fua = rng() % 8 == 0;
          REQUIRE(img.write(*live, off, len, ++seed, fua) == 0);
          if (fua) {
            std::copy(img.bytes.begin() + off, img.bytes.begin() + off + len, synced.begin() + off);
          } else {
            unsynced.push_back({off, len});
          }
        } else if (what < 7) {
          REQUIRE(io(*live, storage::IoOp::kFlush, 0, nullptr, 0) == 0);
          synced = img.bytes;
          unsynced.clear();
        } else if (what < 9) {
          const std::string name = fmt::format("s{}", step);
          REQUIRE((*s)->create(name));
          snaps[name] = img.bytes;  // creation flushes: the snapshot holds everything before it
          synced = img.bytes;
          unsynced.clear();
        } else if (!snaps.empty()) {
          auto victim = snaps.begin();
          std::advance(victim, rng() % snaps.size());
          REQUIRE((*s)->remove(victim->first));
          snaps.erase(victim);
        }
      }
      // The crash: nothing more reaches the devices, then the caches are lost.
      live.reset();
      d.fhome->set_fail_flush(true);
      d.fstore->set_fail_flush(true);
      d.fmeta->set_fail_flush(true);
      s->reset();
    }
    d.power_loss(rng);
    d.fhome->set_fail_flush(false);
    d.fstore->set_fail_flush(false);
    d.fmeta->set_fail_flush(false);
    auto s = d.open();
    REQUIRE_MESSAGE(s, s.error());
    // Every snapshot reads back exactly.
    for (const auto& [name, bytes] : snaps) {
      auto e = (*s)->find(name);
      REQUIRE_MESSAGE(e, name);
      auto v = (*s)->snapshot_view(*e);
      REQUIRE(v);
      CHECK_MESSAGE(compare(**v, bytes) == "", "snapshot " << name);
    }
    // Every synced byte not rewritten since is there; rewritten ones hold old or new data.
    std::vector<uint8_t> got(512 * 1024);
    auto live = (*s)->live_view();
    REQUIRE(io(*live, storage::IoOp::kRead, 0, got.data(), got.size()) == 0);
    std::vector<bool> touched(got.size(), false);
    for (auto [off, len] : unsynced)
      for (uint64_t i = off; i < off + len; ++i) touched[i] = true;
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (!touched[i] && got[i] != synced[i]) ++bad;
    CHECK_MESSAGE(bad == 0, bad << " synced bytes lost");
  }
}
