// make_concat (storage/concat_backend.cc).
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "storage/factory.hh"
#include "storage/file_backend.hh"
#include "storage/memory_backend.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

namespace {

// A part that records what it gets and completes with `result`, inline or when told.
class FakeBackend final : public Backend {
 public:
  FakeBackend(uint64_t size, int result, bool defer = false, bool discard = true)
      : size_(size), result_(result), defer_(defer), discard_(discard) {}
  uint64_t size() const override { return size_; }
  bool supports(IoOp op) const override {
    return discard_ || (op != IoOp::kDiscard && op != IoOp::kWriteZeroes);
  }
  void submit(IoRequest& req) override {
    seen.push_back(req);
    if (defer_) {
      parked.push_back(&req);
    } else {
      req.done(req, result_);
    }
  }
  std::string describe() const override { return "fake"; }
  void complete_parked() {
    auto p = std::move(parked);
    parked.clear();
    for (IoRequest* r : p) r->done(*r, result_);
  }

  std::vector<IoRequest> seen;
  std::vector<IoRequest*> parked;

 private:
  uint64_t size_;
  int result_;
  bool defer_;
  bool discard_;
};

struct Parts {
  std::vector<std::unique_ptr<Backend>> list;
  template <class T, class... A>
  T* add(A&&... a) {
    auto p = std::make_unique<T>(std::forward<A>(a)...);
    T* raw = p.get();
    list.push_back(std::move(p));
    return raw;
  }
};

int run(Backend& b, IoRequest req, IoContext* ctx = nullptr) {
  Done d;
  req.done = &record_done;
  req.user = &d;
  b.submit(req);
  if (ctx != nullptr) REQUIRE(drive(*ctx, [&] { return d.calls > 0; }));
  CHECK(d.calls == 1);
  return d.result;
}

IoRequest req_of(IoOp op, uint64_t off, uint64_t len, const iovec* iov = nullptr, int cnt = 0) {
  IoRequest r;
  r.op = op;
  r.offset = off;
  r.length = len;
  r.iov = iov;
  r.iovcnt = cnt;
  return r;
}

constexpr uint64_t kK = 1024;

}  // namespace

TEST_CASE("make_concat: a write across three files lands at the right offsets") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    std::optional<CurrentContext> cur;
    if (async) cur.emplace(8);
    IoContext* ctx = cur ? cur->get() : nullptr;
    TempDir dir;
    Parts parts;
    const uint64_t sizes[3] = {64 * kK, 128 * kK, 64 * kK};
    for (int i = 0; i < 3; ++i) {
      auto f = FileBackend::open(dir / ("p" + std::to_string(i)), sizes[i]);
      REQUIRE(f.has_value());
      parts.list.push_back(std::move(*f));
    }
    auto c = make_concat(std::move(parts.list));
    CHECK(c->size() == 256 * kK);
    CHECK(c->describe() ==
          "concat(file:" + dir / "p0" + ", file:" + dir / "p1" + ", file:" + dir / "p2" + ")");

    // Bytes [60K, 200K): 4K in p0, all 128K of p1, 8K in p2. The iovec boundaries fall
    // elsewhere than the part boundaries (one iovec straddles each).
    const uint64_t off = 60 * kK, len = 140 * kK;
    auto data = pattern(len, 1);
    iovec iov[3] = {{data.data(), 3 * kK + 7},
                    {data.data() + 3 * kK + 7, 130 * kK},
                    {data.data() + 133 * kK + 7, 7 * kK - 7}};
    IoRequest w = req_of(IoOp::kWrite, off, len, iov, 3);
    w.fua = true;
    CHECK(run(*c, w, ctx) == 0);
    CHECK(read_file(dir / "p0", 60 * kK, 4 * kK) ==
          std::vector<uint8_t>(data.begin(), data.begin() + 4 * kK));
    CHECK(read_file(dir / "p1", 0, 128 * kK) ==
          std::vector<uint8_t>(data.begin() + 4 * kK, data.begin() + 132 * kK));
    CHECK(read_file(dir / "p2", 0, 8 * kK) ==
          std::vector<uint8_t>(data.begin() + 132 * kK, data.end()));
    // Nothing else was touched.
    auto p0_head = read_file(dir / "p0", 0, 60 * kK);
    CHECK(std::all_of(p0_head.begin(), p0_head.end(), [](uint8_t x) { return x == 0; }));
    auto p2_tail = read_file(dir / "p2", 8 * kK, 56 * kK);
    CHECK(std::all_of(p2_tail.begin(), p2_tail.end(), [](uint8_t x) { return x == 0; }));

    // Read it back through the concat into one buffer.
    std::vector<uint8_t> back(len, 0xEE);
    iovec riov{back.data(), back.size()};
    CHECK(run(*c, req_of(IoOp::kRead, off, len, &riov, 1), ctx) == 0);
    CHECK(back == data);

    // Wholly inside the second part: forwarded with the offset moved.
    auto small = pattern(1000, 2);
    iovec siov{small.data(), small.size()};
    CHECK(run(*c, req_of(IoOp::kWrite, 100 * kK, 1000, &siov, 1), ctx) == 0);
    CHECK(read_file(dir / "p1", 36 * kK, 1000) == small);

    // Discard across the p1/p2 boundary, then flush.
    CHECK(run(*c, req_of(IoOp::kDiscard, 190 * kK, 4 * kK), ctx) == 0);
    auto z = read_file(dir / "p1", 126 * kK, 2 * kK);
    CHECK(std::all_of(z.begin(), z.end(), [](uint8_t x) { return x == 0; }));
    z = read_file(dir / "p2", 0, 2 * kK);
    CHECK(std::all_of(z.begin(), z.end(), [](uint8_t x) { return x == 0; }));
    CHECK(read_file(dir / "p2", 2 * kK, 6 * kK) ==
          std::vector<uint8_t>(data.begin() + 134 * kK, data.end()));
    CHECK(run(*c, req_of(IoOp::kFlush, 0, 0), ctx) == 0);
    if (ctx != nullptr) CHECK(ctx->in_flight() == 0);
  }
}

TEST_CASE("make_concat: an error from one part is reported once, after every part is done") {
  Parts parts;
  auto* a = parts.add<FakeBackend>(4096, 0, /*defer=*/true);
  auto* bad = parts.add<FakeBackend>(4096, -EIO);
  auto* c2 = parts.add<FakeBackend>(4096, -ENOSPC, /*defer=*/true);
  auto c = make_concat(std::move(parts.list));

  std::vector<uint8_t> buf(3 * 4096);
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest w = make_req(IoOp::kWrite, 100, 3 * 4096 - 200, &iov, 1, &d);
  c->submit(w);
  CHECK(d.calls == 0);  // two parts still busy
  REQUIRE(a->seen.size() == 1);
  REQUIRE(bad->seen.size() == 1);
  REQUIRE(c2->seen.size() == 1);
  // Each part got its slice, in part-relative offsets.
  CHECK(a->seen[0].offset == 100);
  CHECK(a->seen[0].length == 3996);
  CHECK(a->seen[0].iov[0].iov_base == buf.data() + 0);
  CHECK(bad->seen[0].offset == 0);
  CHECK(bad->seen[0].length == 4096);
  CHECK(bad->seen[0].iov[0].iov_base == buf.data() + 3996);
  CHECK(c2->seen[0].offset == 0);
  CHECK(c2->seen[0].length == 3996);
  CHECK(c2->seen[0].iov[0].iov_base == buf.data() + 3996 + 4096);
  CHECK(c2->seen[0].iov[0].iov_len == 3996);
  a->complete_parked();
  CHECK(d.calls == 0);
  c2->complete_parked();
  CHECK(d.calls == 1);
  CHECK(d.result == -EIO);  // the first error, not the later -ENOSPC
}

TEST_CASE("make_concat: a request inside the first part is handed on untouched") {
  Parts parts;
  auto* a = parts.add<FakeBackend>(4096, 0);
  parts.add<FakeBackend>(4096, 0);
  auto c = make_concat(std::move(parts.list));
  std::vector<uint8_t> buf(512);
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest r = make_req(IoOp::kRead, 1000, 512, &iov, 1, &d);
  c->submit(r);
  CHECK(d.calls == 1);
  CHECK(d.result == 0);
  REQUIRE(a->seen.size() == 1);
  CHECK(a->seen[0].user == &d);  // the caller's own request, no wrapper
  CHECK(a->seen[0].offset == 1000);
}

TEST_CASE("make_concat: flush goes to every part; supports() needs every part") {
  Parts parts;
  auto* a = parts.add<FakeBackend>(4096, 0);
  auto* b = parts.add<FakeBackend>(0, 0);  // an empty part holds no bytes
  auto* c3 = parts.add<FakeBackend>(4096, 0, false, /*discard=*/false);
  auto c = make_concat(std::move(parts.list));
  CHECK(c->size() == 8192);
  CHECK(run(*c, req_of(IoOp::kFlush, 0, 0)) == 0);
  CHECK(a->seen.size() == 1);
  CHECK(b->seen.size() == 1);
  CHECK(c3->seen.size() == 1);
  CHECK(c3->seen[0].op == IoOp::kFlush);

  CHECK(c->supports(IoOp::kRead));
  CHECK(c->supports(IoOp::kFlush));
  CHECK_FALSE(c->supports(IoOp::kDiscard));
  CHECK_FALSE(c->supports(IoOp::kWriteZeroes));

  // A range over the empty part skips it.
  CHECK(run(*c, req_of(IoOp::kWriteZeroes, 4000, 200)) == 0);
  CHECK(a->seen.size() == 2);
  CHECK(b->seen.size() == 1);
  REQUIRE(c3->seen.size() == 2);
  CHECK(c3->seen[1].offset == 0);
  CHECK(c3->seen[1].length == 104);

  // Out of range and overflow.
  CHECK(run(*c, req_of(IoOp::kDiscard, 8000, 200)) == -EINVAL);
  CHECK(run(*c, req_of(IoOp::kDiscard, UINT64_MAX, 2)) == -EINVAL);
}

TEST_CASE("make_concat: one part is returned as is") {
  std::vector<std::unique_ptr<Backend>> one;
  one.push_back(std::make_unique<MemoryBackend>(1 << 20));
  Backend* raw = one[0].get();
  auto c = make_concat(std::move(one));
  CHECK(c.get() == raw);
}

TEST_CASE("make_concat: memory parts, many splits in a row reuse the pooled state") {
  Parts parts;
  for (int i = 0; i < 4; ++i) parts.add<MemoryBackend>(3000 + i * 1000);
  auto c = make_concat(std::move(parts.list));
  const uint64_t total = c->size();
  CHECK(total == 3000 + 4000 + 5000 + 6000);
  auto data = pattern(total, 9);
  for (uint64_t step : {1u, 7u, 999u, 4096u}) {
    for (uint64_t off = 0; off < total; off += step * 13) {
      const uint64_t len = std::min<uint64_t>(step * 5, total - off);
      iovec iov{data.data() + off, len};
      CHECK(run(*c, req_of(IoOp::kWrite, off, len, &iov, 1)) == 0);
    }
  }
  std::vector<uint8_t> whole(total);
  iovec iov{whole.data(), whole.size()};
  CHECK(run(*c, req_of(IoOp::kRead, 0, total, &iov, 1)) == 0);
  // Only the ranges written above hold data; check them against the pattern.
  for (uint64_t step : {1u, 7u, 999u, 4096u}) {
    for (uint64_t off = 0; off < total; off += step * 13) {
      const uint64_t len = std::min<uint64_t>(step * 5, total - off);
      CHECK(std::equal(whole.begin() + off, whole.begin() + off + len, data.begin() + off));
    }
  }
}

// --- SBC: provisioning queries (extent_status, space_usage) ---

TEST_CASE("make_concat: extent_status asks the part, clipped to it; space_usage adds up") {
  Parts parts;
  MemoryBackend* a = parts.add<MemoryBackend>(2 * MemoryBackend::kChunkSize);
  parts.add<MemoryBackend>(2 * MemoryBackend::kChunkSize);
  auto c = make_concat(std::move(parts.list));
  const uint64_t mib = MemoryBackend::kChunkSize;
  std::vector<uint8_t> one(4, 1);
  iovec iov{one.data(), one.size()};
  CHECK(run(*c, req_of(IoOp::kWrite, mib, 4, &iov, 1)) == 0);      // a, chunk 1
  CHECK(run(*c, req_of(IoOp::kWrite, 3 * mib, 4, &iov, 1)) == 0);  // b, chunk 1
  ExtentStatus st;
  REQUIRE(c->extent_status(0, 4 * mib, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == mib);
  REQUIRE(c->extent_status(mib, 4 * mib, &st) == 0);
  CHECK(st.allocated);
  CHECK(st.length == mib);  // a ends here
  REQUIRE(c->extent_status(2 * mib, 4 * mib, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == mib);
  REQUIRE(c->extent_status(3 * mib + 1, 4 * mib, &st) == 0);
  CHECK(st.allocated);
  CHECK(st.length == mib - 1);
  SpaceUsage u;
  REQUIRE(c->space_usage(&u) == 0);
  CHECK(u.allocated_bytes == 2 * mib);
  CHECK(u.available_bytes == 2 * mib);
  CHECK(a->allocated_bytes() == mib);
}

TEST_CASE("make_concat: resize is refused with the reason, the size stays") {
  std::vector<std::unique_ptr<Backend>> parts;
  parts.push_back(std::make_unique<MemoryBackend>(1 << 20));
  parts.push_back(std::make_unique<MemoryBackend>(1 << 20));
  auto c = make_concat(std::move(parts));
  auto r = c->resize(4 << 20, false);
  REQUIRE_FALSE(r);
  CHECK(r.error() ==
        "concat(memory:1048576, memory:1048576): a LU of concatenated sub-units cannot be "
        "resized (each sub-unit's size places the ones after it; change the configuration "
        "instead)");
  CHECK(c->size() == 2 << 20);
}
