// MetaLog: format, journal replay, torn tails cut, checksum failures reported, checkpoints.
#include "snapshot/meta_log.hh"

#include <doctest/doctest.h>

#include <cstring>

#include <fmt/format.h>

#include "storage/memory_backend.hh"
#include "storage/sync_io.hh"
#include "tests/fault/fault_backend.hh"

using namespace zuma;
using namespace zuma::snapshot;

namespace {

constexpr StoreGeometry kGeo{65536, 16, 16};

struct Dev {
  std::shared_ptr<storage::MemoryBackend> mem = std::make_shared<storage::MemoryBackend>(256 * 1024);
  std::unique_ptr<storage::Backend> open() { return std::make_unique<test::SharedBackend>(mem); }
  void poke(uint64_t off, uint8_t xor_mask) {
    uint8_t b = 0;
    REQUIRE(storage::sync_io(*mem, storage::IoOp::kRead, off, &b, 1) == 0);
    b ^= xor_mask;
    REQUIRE(storage::sync_io(*mem, storage::IoOp::kWrite, off, &b, 1) == 0);
  }
};

std::vector<MetaOp> snap_op(Epoch e, const std::string& name) {
  return {MetaOp{OpType::kSnap, e, 100, 0, 0, name}};
}

}  // namespace

TEST_CASE("a blank area is formatted and reopens empty") {
  Dev dev;
  Metadata md(16, 16);
  auto log = MetaLog::open(dev.open(), kGeo, &md);
  REQUIRE(log);
  CHECK((*log)->generation() == 1);
  CHECK((*log)->journal_used() == 0);
  Metadata again(16, 16);
  auto log2 = MetaLog::open(dev.open(), kGeo, &again);
  REQUIRE(log2);
  CHECK(again.snapshots().empty());
  CHECK(again.space().used_chunks == 16);
}

TEST_CASE("journal records are replayed in order; a torn tail is cut") {
  Dev dev;
  {
    Metadata md(16, 16);
    auto log = MetaLog::open(dev.open(), kGeo, &md);
    REQUIRE(log);
    REQUIRE((*log)->append(snap_op(1, "one")) == 0);
    REQUIRE((*log)->append(std::vector<MetaOp>{{OpType::kMap, 3, 20, 2, 0, {}}}) == 0);
    REQUIRE((*log)->append(snap_op(2, "two")) == 0);
  }
  {
    Metadata md(16, 16);
    auto log = MetaLog::open(dev.open(), kGeo, &md);
    REQUIRE(log);
    CHECK((*log)->records_replayed() == 3);
    CHECK(md.snapshots().size() == 2);
    CHECK(md.live(3).phys == 20);
    CHECK(md.space().used_chunks == 16);  // home chunks but 3, plus chunk 20
  }
  // Tear the third record (a byte of its payload): it and nothing before it is dropped.
  dev.poke(2 * MetaLog::kSuperblockSize + 2 * MetaLog::kRecordAlign + 40, 0xff);
  {
    Metadata md(16, 16);
    auto log = MetaLog::open(dev.open(), kGeo, &md);
    REQUIRE(log);
    CHECK((*log)->records_replayed() == 2);
    CHECK(md.snapshots().size() == 1);
    // The next transaction goes where the torn one was, and survives a reopen.
    REQUIRE((*log)->append(snap_op(5, "five")) == 0);
  }
  Metadata md(16, 16);
  auto log = MetaLog::open(dev.open(), kGeo, &md);
  REQUIRE(log);
  CHECK((*log)->records_replayed() == 3);
  CHECK(md.snapshots().count(5) == 1);
  CHECK(md.snapshots().count(2) == 0);
}

TEST_CASE("a full journal asks for a checkpoint; the checkpoint carries the state") {
  Dev dev;
  Metadata md(16, 16);
  auto log = MetaLog::open(dev.open(), kGeo, &md);
  REQUIRE(log);
  Epoch e = 0;
  int r = 0;
  int n = 0;
  while (true) {
    REQUIRE_FALSE(md.create_snapshot(fmt::format("s{}", n), n, &e).has_value());
    std::vector<MetaOp> ops;
    std::vector<Phys> frees;
    md.take_pending(&ops, &frees);
    r = (*log)->append(ops);
    if (r != 0) break;
    ++n;
  }
  CHECK(r == -ENOSPC);
  CHECK(n > 10);
  std::vector<uint8_t> state;
  md.serialize(&state);
  const uint64_t gen = (*log)->generation();
  REQUIRE((*log)->checkpoint(state) == 0);
  CHECK((*log)->generation() == gen + 1);
  CHECK((*log)->journal_used() == 0);
  REQUIRE((*log)->append(snap_op(e + 1, "after")) == 0);
  log->reset();
  Metadata back(16, 16);
  auto log2 = MetaLog::open(dev.open(), kGeo, &back);
  REQUIRE(log2);
  CHECK(back.snapshots().size() == md.snapshots().size() + 1);
  CHECK((*log2)->records_replayed() == 1);  // old-generation records are not replayed
}

TEST_CASE("checksum failures are reported, never used") {
  Dev dev;
  {
    Metadata md(16, 16);
    auto log = MetaLog::open(dev.open(), kGeo, &md);
    REQUIRE(log);
    Epoch e = 0;
    REQUIRE_FALSE(md.create_snapshot("x", 1, &e).has_value());
    std::vector<uint8_t> state;
    md.serialize(&state);
    REQUIRE((*log)->checkpoint(state) == 0);  // generation 2, slot 1
  }
  SUBCASE("checkpoint") {
    // Slot 1 starts after the superblocks, the journal and slot 0.
    Metadata probe(16, 16);
    auto log = MetaLog::open(dev.open(), kGeo, &probe);
    REQUIRE(log);
    const uint64_t journal = (*log)->journal_capacity();
    const uint64_t slot = (*log)->checkpoint_capacity();
    log->reset();
    dev.poke(2 * MetaLog::kSuperblockSize + journal + slot + 20, 0x01);
    Metadata md(16, 16);
    auto bad = MetaLog::open(dev.open(), kGeo, &md);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().find("checksum mismatch") != std::string::npos);
  }
  SUBCASE("one superblock: the other one is used") {
    dev.poke(0 + 100, 0x10);  // generation 2 lives in superblock 0
    Metadata md(16, 16);
    auto log = MetaLog::open(dev.open(), kGeo, &md);
    REQUIRE(log);
    CHECK((*log)->generation() == 1);
    CHECK(md.snapshots().empty());
  }
  SUBCASE("both superblocks") {
    dev.poke(100, 0x10);
    dev.poke(MetaLog::kSuperblockSize + 100, 0x10);
    Metadata md(16, 16);
    auto log = MetaLog::open(dev.open(), kGeo, &md);
    REQUIRE_FALSE(log);
    CHECK(log.error().find("no valid metadata superblock") != std::string::npos);
    CHECK(log.error().find("checksum mismatch") != std::string::npos);
  }
}

TEST_CASE("a geometry change is refused") {
  Dev dev;
  {
    Metadata md(16, 16);
    REQUIRE(MetaLog::open(dev.open(), kGeo, &md));
  }
  Metadata md(16, 32);
  auto log = MetaLog::open(dev.open(), StoreGeometry{65536, 16, 32}, &md);
  REQUIRE_FALSE(log);
  CHECK(log.error().find("cannot change") != std::string::npos);
}

TEST_CASE("a metadata area that is too small is refused") {
  auto mem = std::make_shared<storage::MemoryBackend>(4096);
  Metadata md(16, 16);
  auto log = MetaLog::open(std::make_unique<test::SharedBackend>(mem), kGeo, &md);
  REQUIRE_FALSE(log);
  CHECK(log.error().find("too small") != std::string::npos);
}
