#include "replication/verify.hh"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "replication/apply.hh"
#include "replication/ring_log.hh"
#include "storage/memory_backend.hh"
#include "storage/sync_io.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma;
using namespace zuma::replication;
using storage::IoOp;
using storage::IoRequest;
using zuma::storage::test::TempDir;

TEST_CASE("verify marker and reply: round trip, exact sizes, malformed input refused") {
  VerifyMarker m{0x1122334455667788, 7, 1, 3 << 20, 1 << 20, {0xaaaa, 0xbbbb}, "dr"};
  const auto bytes = m.encode();
  CHECK(bytes.size() == 58 + 2);
  auto back = VerifyMarker::decode(bytes);
  REQUIRE(back);
  CHECK(back->id == m.id);
  CHECK(back->index == 7);
  CHECK(back->lu == 1);
  CHECK(back->offset == (3u << 20));
  CHECK(back->length == (1u << 20));
  CHECK(back->hash.low64 == 0xaaaa);
  CHECK(back->hash.high64 == 0xbbbb);
  CHECK(back->link == "dr");
  CHECK_FALSE(VerifyMarker::decode(std::span(bytes).first(57)));
  auto longer = bytes;
  longer.push_back(0);
  CHECK_FALSE(VerifyMarker::decode(longer));  // the name's length must match

  VerifyReply r{5, 9, VerifyReply::kInconsistent, {1, 2}};
  const auto rb = r.encode();
  CHECK(rb.size() == 48);
  auto rr = VerifyReply::decode(rb);
  REQUIRE(rr);
  CHECK(rr->id == 5);
  CHECK(rr->index == 9);
  CHECK(rr->status == VerifyReply::kInconsistent);
  CHECK(rr->hash.low64 == 1);
  CHECK(rr->hash.high64 == 2);
  CHECK_FALSE(VerifyReply::decode(std::span(rb).first(47)));
}

TEST_CASE("verify marker records survive the log (type 8, payload kept) and change no data") {
  TempDir t;
  auto log = RingLog::open({(t / "v.rlog"), 1 << 20, true});
  REQUIRE(log);
  const auto payload = VerifyMarker{1, 2, 0, 0, 4096, {3, 4}, ""}.encode();
  iovec v{const_cast<uint8_t*>(payload.data()), payload.size()};
  AppendRecord rec{RecordType::kVerify, 0, 0, uint32_t(payload.size()), &v, 1};
  uint64_t first = 0;
  REQUIRE((*log)->append(std::span(&rec, 1), &first) == 0);
  CHECK(is_marker(RecordType::kVerify));
  CHECK(is_marker(RecordType::kBookmark));
  CHECK_FALSE(is_marker(RecordType::kWrite));
  log->reset();
  log = RingLog::open({(t / "v.rlog"), 1 << 20, true});
  REQUIRE(log);
  int seen = 0;
  REQUIRE((*log)->read(1, [&](const RecordView& r) {
    CHECK(r.type == RecordType::kVerify);
    auto m = VerifyMarker::decode(r.payload);
    REQUIRE(m);
    CHECK(m->index == 2);
    ++seen;
    return true;
  }) == 0);
  CHECK(seen == 1);
}

TEST_CASE("hash_region: XXH3-128 of the bytes; out of range refused") {
  storage::MemoryBackend b(2 << 20);
  std::vector<uint8_t> data(1 << 20, 0x42);
  iovec v{data.data(), data.size()};
  IoRequest w{IoOp::kWrite};
  w.offset = 1 << 20;
  w.length = data.size();
  w.iov = &v;
  w.iovcnt = 1;
  REQUIRE(storage::submit_and_wait(b, w) == 0);
  XXH128_hash_t h{};
  REQUIRE(hash_region(b, 1 << 20, 1 << 20, &h) == 0);
  CHECK(XXH128_isEqual(h, XXH3_128bits(data.data(), data.size())));
  REQUIRE(hash_region(b, 0, 1 << 20, &h) == 0);
  CHECK_FALSE(XXH128_isEqual(h, XXH3_128bits(data.data(), data.size())));
  CHECK(hash_region(b, (2 << 20) - 512, 1024, &h) == -EINVAL);
}

TEST_CASE("a fenced region: overlapping writes wait for the fence's end, others go on") {
  TempDir t;
  GroupLogOptions o;
  o.name = "g";
  o.log = {(t / "g.rlog"), 4 << 20, true};
  auto g = GroupLog::open(o);
  REQUIRE(g);
  auto lu = (*g)->attach(0, std::make_unique<storage::MemoryBackend>(4 << 20));
  REQUIRE((*g)->start());
  struct Write {
    std::vector<uint8_t> data = std::vector<uint8_t>(4096, 0x77);
    iovec v{};
    IoRequest req{IoOp::kWrite};
    std::atomic<int> done{0};  // 1 + result
  };
  auto submit = [&](Write& w, uint64_t off) {
    w.v = {w.data.data(), w.data.size()};
    w.req.offset = off;
    w.req.length = w.data.size();
    w.req.iov = &w.v;
    w.req.iovcnt = 1;
    w.req.user = &w;
    w.req.done = [](IoRequest& r, int res) { static_cast<Write*>(r.user)->done.store(1 + res); };
    lu->submit(w.req);
  };
  Write inside, straddling, outside;
  XXH128_hash_t before{};
  const bool ran = (*g)->with_region_fenced(0, 1 << 20, 1 << 20, std::chrono::seconds(5), [&] {
    // From another thread (this one holds the fence): these three are submitted meanwhile.
    std::thread other([&] {
      submit(inside, (1 << 20) + 8192);
      submit(straddling, (1 << 20) - 2048);
      submit(outside, 3 << 20);
    });
    other.join();
    CHECK(outside.done.load() == 1);  // completed inline: not held
    CHECK(inside.done.load() == 0);   // held until the fence ends
    CHECK(straddling.done.load() == 0);
    REQUIRE((*g)->hash_lower(0, 1 << 20, 1 << 20, &before) == 0);
  });
  CHECK(ran);
  // Resubmitted when the fence ended (inline: they came from a thread without an IoContext).
  CHECK(inside.done.load() == 1);
  CHECK(straddling.done.load() == 1);
  XXH128_hash_t after{};
  REQUIRE((*g)->hash_lower(0, 1 << 20, 1 << 20, &after) == 0);
  CHECK_FALSE(XXH128_isEqual(before, after));  // the held writes landed after the hash
  const std::vector<uint8_t> zeros(1 << 20, 0);
  CHECK(XXH128_isEqual(before, XXH3_128bits(zeros.data(), zeros.size())));
  lu.reset();
}
