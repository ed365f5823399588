// Metadata: insert (write), share (snapshot), unshare (redirect), delete, diff, clones,
// checkpoint and journal replay, checked against a simple model in randomized runs.
#include "snapshot/metadata.hh"

#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>
#include <unordered_map>

using namespace zuma::snapshot;

namespace {

// What each chunk holds, as content tokens: 0 = zeros, home chunk c starts with 1'000'000 + c.
struct Model {
  std::vector<uint64_t> live;
  std::vector<std::set<Epoch>> mods;  // epochs in which each chunk was written or deallocated
  std::map<Epoch, std::vector<uint64_t>> snaps;
  std::map<uint64_t, std::vector<uint64_t>> clones;
  // Snapshots of clones: epoch -> (clone, content); epochs of each clone's chunk changes.
  std::map<Epoch, std::pair<uint64_t, std::vector<uint64_t>>> csnaps;
  std::map<uint64_t, std::vector<std::set<Epoch>>> cmods;
};

struct Sim {
  explicit Sim(uint64_t home, uint64_t store) : md(home, store) {
    m.live.resize(home);
    m.mods.resize(home);
    for (uint64_t c = 0; c < home; ++c) {
      m.live[c] = 1'000'000 + c;
      phys[c] = m.live[c];
    }
  }
  uint64_t token_of(Phys p) const {
    if (p == kZeroPhys) return 0;
    auto it = phys.find(p);
    REQUIRE(it != phys.end());
    return it->second;
  }
  // A write of the whole chunk with new content; false when the store is full.
  bool write(uint64_t c) {
    const uint64_t t = next++;
    if (md.writable_in_place(c)) {
      phys[md.live(c).phys] = t;
    } else {
      auto p = md.allocate();
      if (!p) return false;
      phys[*p] = t;
      md.remap_live(c, *p);
    }
    m.live[c] = t;
    m.mods[c].insert(md.current_epoch());
    return true;
  }
  void discard(uint64_t c) {
    if (md.live(c).phys == kZeroPhys) return;
    md.remap_live(c, kZeroPhys);
    m.live[c] = 0;
    m.mods[c].insert(md.current_epoch());
  }
  bool clone_write(uint64_t id, uint64_t c) {
    const uint64_t t = next++;
    if (auto own = md.clone_writable_in_place(id, c)) {
      phys[*own] = t;
    } else {
      auto p = md.allocate();
      if (!p) return false;
      phys[*p] = t;
      md.clone_map(id, c, *p);
    }
    m.clones[id][c] = t;
    clone_mod(id, c);
    return true;
  }
  void clone_discard(uint64_t id, uint64_t c) {
    if (md.clone_lookup(id, c) == kZeroPhys) return;
    md.clone_map(id, c, kZeroPhys);
    m.clones[id][c] = 0;
    clone_mod(id, c);
  }
  void clone_mod(uint64_t id, uint64_t c) {
    auto& mods = m.cmods[id];
    mods.resize(md.home_chunks());
    mods[c].insert(md.current_epoch());
  }
  void add_clone(Epoch base, int64_t t) {
    uint64_t id = 0;
    REQUIRE_FALSE(md.create_clone(base, "", t, &id).has_value());
    m.clones[id] = m.snaps.count(base) ? m.snaps.at(base) : m.csnaps.at(base).second;
  }
  void clone_snapshot(uint64_t id, int64_t t) {
    Epoch e = 0;
    REQUIRE_FALSE(md.create_clone_snapshot(id, "", t, &e).has_value());
    CHECK(md.snapshot_owner(e) == id);
    m.csnaps[e] = {id, m.clones.at(id)};
  }
  // What SnapshotStore::rollback does to a clone: copies each chunk diff() lists.
  bool clone_rollback(uint64_t id, Epoch e) {
    std::vector<ChunkRun> runs;
    REQUIRE_FALSE(md.clone_diff(id, e, kLive, &runs).has_value());
    uint64_t copies = 0;
    for (const ChunkRun& r : runs)
      for (uint64_t c = r.first; c < r.first + r.count; ++c) copies += md.snapshot_lookup(e, c) != kZeroPhys;
    const SpaceStats st = md.space();
    if (copies > st.total_chunks - st.used_chunks) return false;
    for (const ChunkRun& r : runs)
      for (uint64_t c = r.first; c < r.first + r.count; ++c) {
        const Phys src = md.snapshot_lookup(e, c);
        if (src == kZeroPhys) {
          if (md.clone_lookup(id, c) != kZeroPhys) clone_discard(id, c);
          continue;
        }
        auto p = md.allocate();
        REQUIRE(p);
        phys[*p] = token_of(src);
        md.clone_map(id, c, *p);
        clone_mod(id, c);
      }
    m.clones[id] = m.csnaps.at(e).second;
    return true;
  }
  // Commits: the frees of the transaction become allocatable; none may still be referenced.
  void commit(std::vector<MetaOp>* journal) {
    std::vector<MetaOp> ops;
    std::vector<Phys> frees;
    md.take_pending(&ops, &frees);
    journal->insert(journal->end(), ops.begin(), ops.end());
    const std::set<Phys> refs = referenced();
    for (Phys p : frees) {
      CHECK_MESSAGE(!refs.count(p), "freed chunk " << p << " is still referenced");
      phys.erase(p);
    }
    md.release(frees);
  }
  std::set<Phys> referenced() const {
    std::set<Phys> out;
    auto add = [&](Phys p) {
      if (p == kZeroPhys) return;
      CHECK_MESSAGE(out.insert(p).second, "chunk " << p << " referenced twice");
    };
    for (uint64_t c = 0; c < md.home_chunks(); ++c) add(md.live(c).phys);
    std::set<std::pair<uint64_t, Phys>> seen;  // a version is one reference, however many snapshots
    for (const auto& [e, s] : md.snapshots())
      for (uint64_t c = 0; c < md.home_chunks(); ++c) {
        const Phys p = md.lookup(e, c);
        if (p != md.live(c).phys && p != kZeroPhys && seen.insert({c, p}).second) add(p);
      }
    for (const auto& [id, info] : md.clones())
      for (uint64_t c = 0; c < md.home_chunks(); ++c)
        if (auto own = md.clone_own(id, c)) add(*own);
    // Snapshots of clones share chunks with their clone and its base: a set union.
    for (const auto& [e, cs] : m.csnaps)
      for (uint64_t c = 0; c < md.home_chunks(); ++c)
        if (const Phys p = md.snapshot_lookup(e, c); p != kZeroPhys) out.insert(p);
    return out;
  }
  void verify(const Metadata& x) const {
    for (uint64_t c = 0; c < x.home_chunks(); ++c) {
      REQUIRE_MESSAGE(token_of(x.live(c).phys) == m.live[c], "live chunk " << c);
    }
    REQUIRE(x.snapshots().size() == m.snaps.size());
    for (const auto& [e, tokens] : m.snaps)
      for (uint64_t c = 0; c < x.home_chunks(); ++c)
        REQUIRE_MESSAGE(token_of(x.lookup(e, c)) == tokens[c], "snapshot " << e << " chunk " << c);
    for (const auto& [id, tokens] : m.clones)
      for (uint64_t c = 0; c < x.home_chunks(); ++c)
        REQUIRE_MESSAGE(token_of(x.clone_lookup(id, c)) == tokens[c], "clone " << id << " chunk " << c);
    for (const auto& [e, cs] : m.csnaps) {
      REQUIRE(x.snapshot_exists(e));
      REQUIRE(x.snapshot_owner(e) == cs.first);
      for (uint64_t c = 0; c < x.home_chunks(); ++c)
        REQUIRE_MESSAGE(token_of(x.snapshot_lookup(e, c)) == cs.second[c],
                        "snapshot " << e << " of clone " << cs.first << " chunk " << c);
    }
    size_t clone_snaps = 0;
    for (const auto& [id, info] : x.clones()) clone_snaps += x.clone_snapshots(id).size();
    REQUIRE(clone_snaps == m.csnaps.size());
  }
  void verify_clone_diff(uint64_t id, Epoch a, Epoch b) {
    std::vector<ChunkRun> runs;
    REQUIRE_FALSE(md.clone_diff(id, a, b, &runs).has_value());
    std::set<uint64_t> got;
    for (const ChunkRun& r : runs)
      for (uint64_t c = r.first; c < r.first + r.count; ++c) got.insert(c);
    auto& mods = m.cmods[id];
    mods.resize(md.home_chunks());
    std::set<uint64_t> want;
    for (uint64_t c = 0; c < mods.size(); ++c) {
      auto it = mods[c].upper_bound(a);
      if (it != mods[c].end() && *it <= b) want.insert(c);
      const auto& from = m.csnaps.at(a).second;
      const auto& to = b == kLive ? m.clones.at(id) : m.csnaps.at(b).second;
      if (from[c] != to[c]) CHECK_MESSAGE(want.count(c), "clone content of chunk " << c << " differs");
    }
    CAPTURE(id);
    CAPTURE(a);
    CAPTURE(b);
    for (uint64_t c : got) CHECK_MESSAGE(want.count(c), "clone diff lists unchanged chunk " << c);
    for (uint64_t c : want) CHECK_MESSAGE(got.count(c), "clone diff misses chunk " << c);
  }
  void verify_diff(Epoch a, Epoch b) const {
    std::vector<ChunkRun> runs;
    REQUIRE_FALSE(md.diff(a, b, &runs).has_value());
    std::set<uint64_t> got;
    for (const ChunkRun& r : runs)
      for (uint64_t c = r.first; c < r.first + r.count; ++c) got.insert(c);
    // Changed: written or deallocated in an epoch in (a, b]; content that differs is a
    // subset (a chunk written and then deallocated again reads the same).
    std::set<uint64_t> want;
    for (uint64_t c = 0; c < m.mods.size(); ++c) {
      auto it = m.mods[c].upper_bound(a);
      if (it != m.mods[c].end() && *it <= b) want.insert(c);
      const auto& from = m.snaps.at(a);
      const auto& to = b == kLive ? m.live : m.snaps.at(b);
      if (from[c] != to[c]) CHECK_MESSAGE(want.count(c), "content of chunk " << c << " differs");
    }
    CAPTURE(a);
    CAPTURE(b);
    for (uint64_t c : got) CHECK_MESSAGE(want.count(c), "diff lists unchanged chunk " << c);
    for (uint64_t c : want) CHECK_MESSAGE(got.count(c), "diff misses chunk " << c);
  }

  Metadata md;
  Model m;
  std::unordered_map<Phys, uint64_t> phys;  // what each physical chunk holds
  uint64_t next = 1;
};

}  // namespace

TEST_CASE("a write to an unshared chunk stays in place; a shared one is redirected once") {
  Metadata md(8, 8);
  CHECK(md.writable_in_place(3));
  Epoch e = 0;
  REQUIRE_FALSE(md.create_snapshot("s1", 1, &e).has_value());
  CHECK(e == 1);
  CHECK(md.newest_snapshot() == 1);
  CHECK_FALSE(md.writable_in_place(3));
  auto p = md.allocate();
  REQUIRE(p);
  CHECK(*p >= 8);  // the store's area first: home chunks are all in use
  md.remap_live(3, *p);
  CHECK(md.writable_in_place(3));
  CHECK(md.live(3).phys == *p);
  CHECK(md.lookup(1, 3) == 3);  // the snapshot still sees the home chunk
  CHECK(md.history_size() == 1);
}

TEST_CASE("delete frees only what no other snapshot sees") {
  Metadata md(4, 8);
  Epoch s1 = 0, s2 = 0;
  REQUIRE_FALSE(md.create_snapshot("", 0, &s1).has_value());
  md.remap_live(0, *md.allocate());  // chunk 0 version 0 retired, seen by s1
  REQUIRE_FALSE(md.create_snapshot("", 0, &s2).has_value());
  md.remap_live(1, *md.allocate());  // chunk 1 home version seen by s1 and s2
  CHECK(md.history_size() == 2);
  REQUIRE_FALSE(md.delete_snapshot(s1).has_value());
  CHECK(md.reclaim(100));
  CHECK(md.history_size() == 1);  // chunk 0's old version went, chunk 1's stays for s2
  CHECK(md.lookup(s2, 1) == 1);
  std::vector<MetaOp> ops;
  std::vector<Phys> frees;
  md.take_pending(&ops, &frees);
  CHECK(frees == std::vector<Phys>{0});
  CHECK(md.delete_snapshot(s1).has_value());  // already gone
}

TEST_CASE("snapshot names and clone pins") {
  Metadata md(4, 4);
  Epoch e = 0;
  REQUIRE_FALSE(md.create_snapshot("daily", 0, &e).has_value());
  CHECK(md.create_snapshot("daily", 0, &e).value_or("").find("exists") != std::string::npos);
  CHECK(md.find_snapshot("daily") == std::optional<Epoch>(1));
  CHECK(md.find_snapshot("1") == std::optional<Epoch>(1));
  CHECK_FALSE(md.find_snapshot("2").has_value());
  uint64_t id = 0;
  REQUIRE_FALSE(md.create_clone(1, "c", 0, &id).has_value());
  CHECK(md.delete_snapshot(1).value_or("").find("clone") != std::string::npos);
  REQUIRE_FALSE(md.delete_clone(id).has_value());
  CHECK_FALSE(md.delete_snapshot(1).has_value());
}

TEST_CASE("diff argument errors") {
  Metadata md(4, 4);
  std::vector<ChunkRun> runs;
  CHECK(md.diff(1, kLive, &runs).has_value());
  Epoch a = 0, b = 0;
  REQUIRE_FALSE(md.create_snapshot("a", 0, &a).has_value());
  REQUIRE_FALSE(md.create_snapshot("b", 0, &b).has_value());
  CHECK(md.diff(b, a, &runs).has_value());
  CHECK_FALSE(md.diff(a, b, &runs).has_value());
  CHECK(runs.empty());
}

TEST_CASE("checkpoint bytes round trip and reject damage") {
  Metadata md(16, 16);
  Epoch e = 0;
  REQUIRE_FALSE(md.create_snapshot("x", 42, &e).has_value());
  md.remap_live(2, *md.allocate());
  md.remap_live(5, kZeroPhys);
  std::vector<uint8_t> bytes;
  md.serialize(&bytes);
  CHECK(bytes.size() == md.serialized_size());
  Metadata copy(16, 16);
  REQUIRE_FALSE(copy.deserialize(bytes).has_value());
  copy.rebuild_allocator();
  CHECK(copy.snapshots().at(1).name == "x");
  CHECK(copy.live(2).phys == md.live(2).phys);
  CHECK(copy.lookup(1, 5) == 5);
  CHECK(copy.live(5).phys == kZeroPhys);
  CHECK(copy.space().used_chunks == md.space().used_chunks);
  Metadata other(8, 16);
  CHECK(other.deserialize(bytes).value_or("").find("geometry") != std::string::npos);
  bytes.pop_back();
  CHECK(copy.deserialize(bytes).has_value());
}

TEST_CASE("randomized against a model: write, discard, snapshot, delete, clone, diff, replay") {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    const uint64_t home = 24, store = 24 + seed % 3 * 8;
    Sim sim(home, store);
    std::vector<uint8_t> checkpoint;
    sim.md.serialize(&checkpoint);
    std::vector<MetaOp> journal;
    int64_t t = 0;
    for (int step = 0; step < 1500; ++step) {
      const int what = static_cast<int>(rng() % 100);
      const uint64_t c = rng() % home;
      if (what < 50) {
        sim.write(c);  // false when full: nothing changes, as in the model
      } else if (what < 56) {
        sim.discard(c);
      } else if (what < 64) {
        Epoch e = 0;
        REQUIRE_FALSE(sim.md.create_snapshot("", ++t, &e).has_value());
        sim.m.snaps[e] = sim.m.live;
      } else if (what < 72 && !sim.m.snaps.empty()) {
        auto it = sim.m.snaps.begin();
        std::advance(it, rng() % sim.m.snaps.size());
        const Epoch e = it->first;
        bool pinned = false;
        for (const auto& [id, info] : sim.md.clones()) pinned |= info.base == e;
        if (!pinned) {
          REQUIRE_FALSE(sim.md.delete_snapshot(e).has_value());
          sim.m.snaps.erase(e);
        }
        sim.md.reclaim(1 + rng() % 8);  // in small batches, as in the background
      } else if (what < 75 && !sim.m.snaps.empty() && sim.m.clones.size() < 3) {
        auto it = sim.m.snaps.begin();
        std::advance(it, rng() % sim.m.snaps.size());
        uint64_t id = 0;
        REQUIRE_FALSE(sim.md.create_clone(it->first, "", ++t, &id).has_value());
        sim.m.clones[id] = it->second;
      } else if (what < 85 && !sim.m.clones.empty()) {
        auto it = sim.m.clones.begin();
        std::advance(it, rng() % sim.m.clones.size());
        sim.clone_write(it->first, c);
      } else if (what < 87 && !sim.m.clones.empty()) {
        const uint64_t id = sim.m.clones.begin()->first;
        REQUIRE_FALSE(sim.md.delete_clone(id).has_value());
        sim.m.clones.erase(id);
      } else if (what < 95) {
        sim.commit(&journal);
      } else if (sim.m.snaps.size() >= 1) {
        auto a = sim.m.snaps.begin();
        std::advance(a, rng() % sim.m.snaps.size());
        auto b = std::next(a);
        sim.verify_diff(a->first, kLive);
        if (b != sim.m.snaps.end()) sim.verify_diff(a->first, b->first);
      }
      if (step % 100 == 0) sim.verify(sim.md);
    }
    while (!sim.md.reclaim(3)) {
    }
    sim.commit(&journal);
    sim.verify(sim.md);
    // Everything not referenced is free once reclaimed and released.
    CHECK(sim.md.space().used_chunks == sim.referenced().size());

    // The first checkpoint plus the journal rebuilds the same state.
    Metadata replayed(home, store);
    REQUIRE_FALSE(replayed.deserialize(checkpoint).has_value());
    for (const MetaOp& op : journal) REQUIRE_FALSE(replayed.apply(op).has_value());
    replayed.rebuild_allocator();
    sim.verify(replayed);
    CHECK(replayed.space().used_chunks == sim.md.space().used_chunks);
    // And so does a checkpoint of the end state.
    std::vector<uint8_t> end;
    sim.md.serialize(&end);
    Metadata loaded(home, store);
    REQUIRE_FALSE(loaded.deserialize(end).has_value());
    loaded.rebuild_allocator();
    sim.verify(loaded);
    // Journal encoding round trip.
    std::vector<uint8_t> enc;
    encode_ops(journal, &enc);
    std::vector<MetaOp> dec;
    REQUIRE_FALSE(decode_ops(enc, &dec).has_value());
    REQUIRE(dec.size() == journal.size());
    for (size_t i = 0; i < dec.size(); ++i) {
      CHECK(dec[i].type == journal[i].type);
      CHECK(dec[i].a == journal[i].a);
      CHECK(dec[i].d == journal[i].d);
    }
  }
}

namespace {

template <class M>
auto pick(const M& m, std::mt19937_64& rng) {
  auto it = m.begin();
  std::advance(it, rng() % m.size());
  return it;
}

bool pinned_by_clone(const Metadata& md, Epoch e) {
  for (const auto& [id, info] : md.clones())
    if (info.base == e) return true;
  return false;
}

}  // namespace

TEST_CASE("snapshots of clones: share, unshare, clone again, roll back, diff, delete, replay") {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed * 7919);
    const uint64_t home = 16, store = 40 + seed % 3 * 8;
    Sim sim(home, store);
    std::vector<uint8_t> checkpoint;
    sim.md.serialize(&checkpoint);
    std::vector<MetaOp> journal;
    int64_t t = 0;
    Epoch first = 0;
    REQUIRE_FALSE(sim.md.create_snapshot("", ++t, &first).has_value());
    sim.m.snaps[first] = sim.m.live;
    sim.add_clone(first, ++t);
    for (int step = 0; step < 2000; ++step) {
      const int what = static_cast<int>(rng() % 100);
      const uint64_t c = rng() % home;
      if (what < 10) {
        sim.write(c);
      } else if (what < 40 && !sim.m.clones.empty()) {
        sim.clone_write(pick(sim.m.clones, rng)->first, c);
      } else if (what < 44 && !sim.m.clones.empty()) {
        sim.clone_discard(pick(sim.m.clones, rng)->first, c);
      } else if (what < 54 && !sim.m.clones.empty()) {
        sim.clone_snapshot(pick(sim.m.clones, rng)->first, ++t);
      } else if (what < 60 && !sim.m.csnaps.empty()) {
        const Epoch e = pick(sim.m.csnaps, rng)->first;
        if (!pinned_by_clone(sim.md, e)) {
          REQUIRE_FALSE(sim.md.delete_snapshot(e).has_value());
          sim.m.csnaps.erase(e);
        } else {
          CHECK(sim.md.delete_snapshot(e).has_value());
        }
        sim.md.reclaim(1 + rng() % 8);
      } else if (what < 64 && !sim.m.csnaps.empty() && sim.m.clones.size() < 5) {
        sim.add_clone(pick(sim.m.csnaps, rng)->first, ++t);  // a clone of a clone's snapshot
      } else if (what < 66 && sim.m.clones.size() > 1) {
        const uint64_t id = pick(sim.m.clones, rng)->first;
        bool pinned = false;
        for (const auto& [e, s] : sim.md.clone_snapshots(id)) pinned |= pinned_by_clone(sim.md, e);
        if (pinned) {
          CHECK(sim.md.delete_clone(id).has_value());
        } else {
          REQUIRE_FALSE(sim.md.delete_clone(id).has_value());
          sim.m.clones.erase(id);
          std::erase_if(sim.m.csnaps, [&](const auto& kv) { return kv.second.first == id; });
          sim.m.cmods.erase(id);
        }
      } else if (what < 72 && !sim.m.csnaps.empty()) {
        const auto it = pick(sim.m.csnaps, rng);
        sim.clone_rollback(it->second.first, it->first);
      } else if (what < 75 && !sim.m.snaps.empty() && sim.m.clones.size() < 5) {
        sim.add_clone(pick(sim.m.snaps, rng)->first, ++t);
      } else if (what < 90) {
        sim.commit(&journal);
      } else if (!sim.m.csnaps.empty()) {
        const auto a = pick(sim.m.csnaps, rng);
        const uint64_t id = a->second.first;
        sim.verify_clone_diff(id, a->first, kLive);
        for (auto b = std::next(a); b != sim.m.csnaps.end(); ++b)
          if (b->second.first == id) {
            sim.verify_clone_diff(id, a->first, b->first);
            break;
          }
      }
      if (step % 50 == 0) sim.verify(sim.md);
    }
    while (!sim.md.reclaim(3)) {
    }
    sim.commit(&journal);
    sim.verify(sim.md);
    CHECK(sim.md.space().used_chunks == sim.referenced().size());

    Metadata replayed(home, store);
    REQUIRE_FALSE(replayed.deserialize(checkpoint).has_value());
    for (const MetaOp& op : journal) REQUIRE_FALSE(replayed.apply(op).has_value());
    replayed.rebuild_allocator();
    sim.verify(replayed);
    CHECK(replayed.space().used_chunks == sim.md.space().used_chunks);
    std::vector<uint8_t> end;
    sim.md.serialize(&end);
    CHECK(end.size() == sim.md.serialized_size());
    Metadata loaded(home, store);
    REQUIRE_FALSE(loaded.deserialize(end).has_value());
    loaded.rebuild_allocator();
    sim.verify(loaded);
    CHECK(loaded.space().used_chunks == sim.md.space().used_chunks);
  }
}

TEST_CASE("a clone's snapshot: redirect once, names store-wide, diff within one line") {
  Metadata md(8, 16);
  Epoch base = 0;
  REQUIRE_FALSE(md.create_snapshot("base", 0, &base).has_value());
  uint64_t id = 0;
  REQUIRE_FALSE(md.create_clone(base, "c", 0, &id).has_value());
  md.clone_map(id, 2, *md.allocate());
  REQUIRE(md.clone_writable_in_place(id, 2).has_value());
  const Phys before = *md.clone_own(id, 2);
  Epoch cs = 0;
  REQUIRE_FALSE(md.create_clone_snapshot(id, "c-1", 0, &cs).has_value());
  CHECK(cs == base + 1);  // one epoch counter for the LU and its clones
  CHECK(md.find_snapshot("c-1") == std::optional<Epoch>(cs));
  CHECK(md.create_snapshot("c-1", 0, &base).value_or("").find("exists") != std::string::npos);
  CHECK(md.create_clone_snapshot(id, "base", 0, &base).value_or("").find("exists") != std::string::npos);
  CHECK(md.create_clone_snapshot(99, "", 0, &base).value_or("").find("no clone") != std::string::npos);
  CHECK_FALSE(md.clone_writable_in_place(id, 2).has_value());  // shared with c-1 now
  md.clone_map(id, 2, *md.allocate());
  CHECK(md.clone_writable_in_place(id, 2).has_value());
  CHECK(md.snapshot_lookup(cs, 2) == before);
  CHECK(md.snapshot_lookup(cs, 3) == 3);  // never written in the clone: the base's
  std::vector<ChunkRun> runs;
  REQUIRE_FALSE(md.clone_diff(id, cs, kLive, &runs).has_value());
  CHECK(runs == std::vector<ChunkRun>{{2, 1}});
  CHECK(md.clone_diff(id, base, kLive, &runs).has_value());  // not a snapshot of the clone
  CHECK(md.diff(cs, kLive, &runs).has_value());               // not a snapshot of the LU
  // A clone of the clone's snapshot pins it, and through it the clone.
  uint64_t id2 = 0;
  REQUIRE_FALSE(md.create_clone(cs, "cc", 0, &id2).has_value());
  CHECK(md.clone_lookup(id2, 2) == before);
  CHECK(md.delete_snapshot(cs).value_or("").find("clone") != std::string::npos);
  CHECK(md.delete_clone(id).value_or("").find("clone") != std::string::npos);
  REQUIRE_FALSE(md.delete_clone(id2).has_value());
  REQUIRE_FALSE(md.delete_snapshot(cs).has_value());
  CHECK(md.reclaim(100));
  std::vector<MetaOp> ops;
  std::vector<Phys> frees;
  md.take_pending(&ops, &frees);
  CHECK(frees == std::vector<Phys>{before});  // the version only c-1 saw
  REQUIRE_FALSE(md.delete_clone(id).has_value());
  CHECK(md.clones().empty());
}

TEST_CASE("10,000 snapshots: the write decision looks only at the newest epoch") {
  Metadata md(64, 64);
  Epoch e = 0;
  for (int i = 0; i < 10000; ++i) REQUIRE_FALSE(md.create_snapshot("", i, &e).has_value());
  CHECK(md.snapshots().size() == 10000);
  CHECK(md.newest_snapshot() == e);
  md.remap_live(7, *md.allocate());
  CHECK(md.writable_in_place(7));
  CHECK(md.history_size() == 1);  // one retired version serves all 10,000 snapshots
  for (Epoch s = 1; s <= e; s += 997) CHECK(md.lookup(s, 7) == 7);
  // Deleting all but the newest frees nothing: the newest still sees the old version.
  for (Epoch s = 1; s < e; ++s) REQUIRE_FALSE(md.delete_snapshot(s).has_value());
  CHECK(md.reclaim(1000000));
  CHECK(md.history_size() == 1);
  REQUIRE_FALSE(md.delete_snapshot(e).has_value());
  CHECK(md.reclaim(1000000));
  CHECK(md.history_size() == 0);
}
