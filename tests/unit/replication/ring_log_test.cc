#include "replication/ring_log.hh"
#include "tests/unit/storage/test_util.hh"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace zuma::replication;

namespace {

using zuma::storage::test::TempDir;

struct Rec {
  RecordType type;
  uint32_t lu;
  uint64_t offset;
  uint32_t length;
  std::vector<uint8_t> data;
};

bool operator==(const Rec& a, const Rec& b) {
  return a.type == b.type && a.lu == b.lu && a.offset == b.offset && a.length == b.length && a.data == b.data;
}

Rec make_write(uint32_t lu, uint64_t off, uint32_t len, uint8_t fill) {
  Rec r{RecordType::kWrite, lu, off, len, std::vector<uint8_t>(len)};
  for (uint32_t i = 0; i < len; ++i) r.data[i] = uint8_t(fill + i * 7);
  return r;
}

// Appends `recs` as one batch; returns the first sequence number (0 on error, with rc set).
uint64_t append(RingLog& log, const std::vector<Rec>& recs, int* rc = nullptr) {
  std::vector<iovec> iov(recs.size());
  std::vector<AppendRecord> ar(recs.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    iov[i] = {const_cast<uint8_t*>(recs[i].data.data()), recs[i].data.size()};
    ar[i] = AppendRecord{recs[i].type, recs[i].lu, recs[i].offset, recs[i].length, &iov[i],
                         recs[i].data.empty() ? 0 : 1};
  }
  uint64_t seq = 0;
  int r = log.append(ar, &seq);
  if (rc) *rc = r;
  else REQUIRE(r == 0);
  return r == 0 ? seq : 0;
}

std::map<uint64_t, Rec> read_all(const RingLog& log, uint64_t from) {
  std::map<uint64_t, Rec> out;
  int r = log.read(from, [&](const RecordView& v) {
    out[v.seq] = Rec{v.type, v.lu, v.offset, v.length, {v.payload.begin(), v.payload.end()}};
    return true;
  });
  REQUIRE(r == 0);
  return out;
}

std::unique_ptr<RingLog> open_log(const std::string& path, uint64_t size) {
  auto log = RingLog::open({path, size, true});
  if (!log) FAIL(log.error());
  return std::move(*log);
}

void corrupt(const std::string& path, uint64_t off) {
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  uint8_t b = 0;
  REQUIRE(::pread(fd, &b, 1, off_t(off)) == 1);
  b ^= 0x5a;
  REQUIRE(::pwrite(fd, &b, 1, off_t(off)) == 1);
  ::close(fd);
}

void smash(const std::string& path, uint64_t off) {
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  const uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  REQUIRE(::pwrite(fd, junk, sizeof(junk), off_t(off)) == 8);
  ::close(fd);
}

constexpr uint64_t kHdr = 64, kRecHdr = 24;

}  // namespace

TEST_CASE("append, read back, reopen") {
  TempDir t;
  const uint64_t size = 1 << 20;
  std::vector<Rec> all;
  {
    auto log = open_log((t / "group.rlog"), size);
    CHECK(log->next_seq() == 1);
    CHECK(log->epoch() == 1);
    std::vector<Rec> b1{make_write(0, 4096, 4096, 1), make_write(1, 0, 512, 2)};
    std::vector<Rec> b2{Rec{RecordType::kDiscard, 0, 1 << 20, 65536, {}},
                        Rec{RecordType::kBookmark, 0, 0, 6, {'n', 'i', 'g', 'h', 't', '1'}}};
    CHECK(append(*log, b1) == 1);
    CHECK(append(*log, b2) == 3);
    CHECK(log->next_seq() == 5);
    // 4 KiB of data costs 64 + 24 bytes of headers here, not another block.
    CHECK(log->used_bytes() == (kHdr + 2 * kRecHdr + 4096 + 512) + (kHdr + 2 * kRecHdr + 6));
    all = b1;
    all.insert(all.end(), b2.begin(), b2.end());
    auto got = read_all(*log, 1);
    REQUIRE(got.size() == 4);
    for (uint64_t s = 1; s <= 4; ++s) CHECK(got[s] == all[s - 1]);
    CHECK(read_all(*log, 3).size() == 2);
    REQUIRE(log->sync() == 0);
  }
  auto log = open_log((t / "group.rlog"), size);
  CHECK(log->epoch() == 2);
  CHECK(log->head_seq() == 1);
  CHECK(log->next_seq() == 5);
  CHECK(log->recovery().records == 4);
  CHECK(log->recovery().batches == 2);
  CHECK_FALSE(log->recovery().cut);
  auto got = read_all(*log, 1);
  for (uint64_t s = 1; s <= 4; ++s) CHECK(got[s] == all[s - 1]);
}

TEST_CASE("a torn tail is cut, never returned, and stale batches beyond it are never revived") {
  TempDir t;
  const uint64_t size = 1 << 20;
  uint64_t b2_off = 0;
  {
    auto log = open_log((t / "group.rlog"), size);
    append(*log, {make_write(0, 0, 4096, 1)});
    b2_off = RingLog::kDataStart + log->used_bytes();
    append(*log, {make_write(0, 8192, 4096, 2)});
    append(*log, {make_write(0, 16384, 4096, 3)});
    REQUIRE(log->sync() == 0);
  }
  // A torn write of batch 2: one payload byte differs.
  corrupt((t / "group.rlog"), b2_off + kHdr + kRecHdr + 100);
  {
    auto log = open_log((t / "group.rlog"), size);
    CHECK(log->recovery().cut);
    CHECK(log->recovery().cut_reason.find("checksum") != std::string::npos);
    CHECK(log->next_seq() == 2);
    auto got = read_all(*log, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[1] == make_write(0, 0, 4096, 1));
    // A new batch of the same size takes batch 2's place and sequence number; batch 3 of
    // the earlier epoch now follows it on disk with the expected sequence number.
    CHECK(append(*log, {make_write(5, 0, 4096, 9)}) == 2);
    REQUIRE(log->sync() == 0);
  }
  auto log = open_log((t / "group.rlog"), size);
  CHECK(log->next_seq() == 3);
  auto got = read_all(*log, 1);
  REQUIRE(got.size() == 2);
  CHECK(got[2] == make_write(5, 0, 4096, 9));
  CHECK(log->recovery().cut);
  CHECK(log->recovery().cut_reason.find("stale") != std::string::npos);
}

TEST_CASE("full ring: ENOSPC, nothing written, room again after release") {
  TempDir t;
  const uint64_t size = RingLog::kMinSize;  // 64 KiB data area
  auto log = open_log((t / "group.rlog"), size);
  int rc = 0;
  uint64_t appended = 0;
  for (int i = 0; i < 100; ++i) {
    append(*log, {make_write(0, uint64_t(i) * 8192, 8192, uint8_t(i))}, &rc);
    if (rc) break;
    ++appended;
  }
  CHECK(rc == -ENOSPC);
  CHECK(appended == 7);  // 7 x (8192 + 88) fit in 65536 bytes, 8 do not
  CHECK(log->next_seq() == 8);
  log->release(3);
  CHECK(log->head_seq() == 4);
  CHECK(append(*log, {make_write(0, 0, 8192, 77)}) == 8);
  auto got = read_all(*log, 4);
  CHECK(got.size() == 5);
  CHECK(got[8] == make_write(0, 0, 8192, 77));
  CHECK(log->read(2, [](const RecordView&) { return true; }) == -ERANGE);
  // A batch that could never fit is refused outright.
  append(*log, {make_write(0, 0, 65536, 1)}, &rc);
  CHECK(rc == -EINVAL);
}

TEST_CASE("bad arguments") {
  TempDir t;
  auto log = open_log((t / "group.rlog"), 1 << 20);
  uint64_t seq = 0;
  CHECK(log->append({}, &seq) == -EINVAL);
  uint8_t data[16] = {};
  iovec iov{data, sizeof(data)};
  AppendRecord r{RecordType::kWrite, 0, 0, 32, &iov, 1};  // says 32, gives 16
  CHECK(log->append({&r, 1}, &seq) == -EINVAL);
  for (uint8_t type : {0, 5, 7, 10}) {  // 1-4, 8 (verify), 9 (bookmark removal) exist
    AppendRecord bad{RecordType(type), 0, 0, 0, nullptr, 0};
    CHECK(log->append({&bad, 1}, &seq) == -EINVAL);
  }
  CHECK(log->next_seq() == 1);
}

TEST_CASE("open errors name the file and the problem") {
  TempDir t;
  {
    auto log = open_log((t / "group.rlog"), 1 << 20);
  }
  auto resized = RingLog::open({(t / "group.rlog"), 2 << 20, true});
  REQUIRE_FALSE(resized);
  CHECK(resized.error().find((t / "group.rlog")) == 0);
  CHECK(resized.error().find("resizing a log is not supported") != std::string::npos);

  const std::string other = (t / "not-a-log");
  {
    int fd = ::open(other.c_str(), O_CREAT | O_WRONLY, 0600);
    std::vector<uint8_t> junk(RingLog::kMinSize, 0xab);
    REQUIRE(::write(fd, junk.data(), junk.size()) == ssize_t(junk.size()));
    ::close(fd);
  }
  auto r = RingLog::open({other, 0, true});
  REQUIRE_FALSE(r);
  CHECK(r.error().find("not a Zuma replication log") != std::string::npos);

  auto small = RingLog::open({(t / "small"), 4096, true});
  REQUIRE_FALSE(small);
  CHECK(small.error().find("below the minimum") != std::string::npos);
}

TEST_CASE("a damaged superblock slot falls back to the other; both damaged is an error") {
  TempDir t;
  {
    auto log = open_log((t / "group.rlog"), 1 << 20);
    append(*log, {make_write(0, 0, 4096, 1)});
    REQUIRE(log->sync() == 0);
    REQUIRE(log->checkpoint() == 0);
  }
  smash((t / "group.rlog"), 16);  // slot 0, the newest
  {
    auto log = open_log((t / "group.rlog"), 1 << 20);
    CHECK(read_all(*log, 1).size() == 1);
  }
  smash((t / "group.rlog"), 16);
  smash((t / "group.rlog"), RingLog::kSuperblockSize + 16);
  auto r = RingLog::open({(t / "group.rlog"), 0, true});
  REQUIRE_FALSE(r);
  CHECK(r.error().find("damaged") != std::string::npos);
}

TEST_CASE("released space is not overwritten while the durable superblock still needs it") {
  TempDir t;
  const uint64_t size = RingLog::kMinSize;
  std::map<uint64_t, Rec> model;
  {
    auto log = open_log((t / "group.rlog"), size);
    for (int i = 0; i < 7; ++i) {
      Rec r = make_write(0, uint64_t(i) * 8192, 8192, uint8_t(i));
      model[append(*log, {r})] = r;
    }
    log->release(6);  // no checkpoint by the caller
    // These overwrite the released batches: the log must checkpoint first.
    for (int i = 0; i < 5; ++i) {
      Rec r = make_write(1, uint64_t(i) * 8192, 8192, uint8_t(100 + i));
      model[append(*log, {r})] = r;
    }
    REQUIRE(log->sync() == 0);
  }
  auto log = open_log((t / "group.rlog"), size);
  CHECK_FALSE(log->recovery().cut);
  CHECK(log->next_seq() == 13);
  auto got = read_all(*log, log->head_seq());
  CHECK(log->head_seq() <= 7);
  REQUIRE(got.size() == 13 - log->head_seq());
  for (auto& [s, r] : got) CHECK(r == model[s]);
}

TEST_CASE("randomized: many laps, releases and reopens against a model") {
  TempDir t;
  const uint64_t size = RingLog::kMinSize + 3 * 4096 + 1000;  // an awkward end
  std::mt19937_64 rng(20261122);
  std::map<uint64_t, Rec> model;  // every record ever appended
  uint64_t released = 0;          // highest sequence released
  auto log = open_log((t / "group.rlog"), size);
  uint64_t laps_bytes = 0;
  for (int step = 0; step < 3000; ++step) {
    const int what = int(rng() % 10);
    if (what < 6) {
      std::vector<Rec> batch;
      const int n = 1 + int(rng() % 4);
      for (int i = 0; i < n; ++i) {
        const int kind = int(rng() % 8);
        if (kind == 0)
          batch.push_back(Rec{RecordType::kDiscard, uint32_t(rng() % 3), rng() % (1 << 30), 4096, {}});
        else
          batch.push_back(make_write(uint32_t(rng() % 3), (rng() % 4096) * 512,
                                     uint32_t(512 * (1 + rng() % 8)), uint8_t(rng())));
      }
      int rc = 0;
      const uint64_t before = log->used_bytes();
      const uint64_t seq = append(*log, batch, &rc);
      if (rc == -ENOSPC) {
        CHECK(log->used_bytes() == before);
        released = std::max(released, log->next_seq() - 1 - rng() % 3);  // free most of it
        log->release(released);
        continue;
      }
      REQUIRE(rc == 0);
      laps_bytes += log->used_bytes() - before;
      for (size_t i = 0; i < batch.size(); ++i) model[seq + i] = batch[i];
    } else if (what < 8) {
      if (log->next_seq() > log->head_seq()) {
        released = std::max(released, log->head_seq() + rng() % (log->next_seq() - log->head_seq()));
        log->release(released);
      }
    } else if (what == 8) {
      if (rng() % 2) REQUIRE(log->checkpoint() == 0);
    } else {
      const uint64_t next = log->next_seq();
      log.reset();
      log = open_log((t / "group.rlog"), size);
      CHECK_FALSE(log->recovery().cut);
      CHECK(log->next_seq() == next);
      CHECK(log->head_seq() <= released + 1);
      if (released) log->release(released);
    }
    // Everything from the head on reads back exactly.
    if (step % 50 == 0 || what == 9) {
      auto got = read_all(*log, log->head_seq());
      REQUIRE(got.size() == log->next_seq() - log->head_seq());
      for (auto& [s, r] : got) REQUIRE(r == model[s]);
    }
  }
  CHECK(laps_bytes > 20 * log->capacity());  // the ring really wrapped many times
}
