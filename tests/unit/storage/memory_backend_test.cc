#include "storage/memory_backend.hh"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

namespace {

constexpr uint64_t kMiB = MemoryBackend::kChunkSize;

int run(Backend& b, IoOp op, uint64_t off, uint64_t len, const iovec* iov = nullptr, int cnt = 0) {
  Done d;
  IoRequest r = make_req(op, off, len, iov, cnt, &d);
  b.submit(r);
  CHECK(d.calls == 1);  // always inline
  return d.result;
}

int write_bytes(Backend& b, uint64_t off, std::vector<uint8_t>& data) {
  iovec iov{data.data(), data.size()};
  return run(b, IoOp::kWrite, off, data.size(), &iov, 1);
}

std::vector<uint8_t> read_bytes(Backend& b, uint64_t off, size_t n) {
  std::vector<uint8_t> v(n, 0xA5);
  iovec iov{v.data(), v.size()};
  CHECK(run(b, IoOp::kRead, off, n, &iov, 1) == 0);
  return v;
}

bool all_zero(const std::vector<uint8_t>& v) {
  return std::all_of(v.begin(), v.end(), [](uint8_t x) { return x == 0; });
}

}  // namespace

TEST_CASE("MemoryBackend: a large LU costs nothing until written; unwritten bytes read zero") {
  MemoryBackend m(1ull << 30);
  CHECK(m.size() == 1ull << 30);
  CHECK(m.describe() == "memory:1073741824");
  CHECK(m.allocated_bytes() == 0);
  CHECK(all_zero(read_bytes(m, 12345, 100000)));
  CHECK(m.allocated_bytes() == 0);  // reading does not allocate

  auto data = pattern(4096, 1);
  CHECK(write_bytes(m, 5 * kMiB + 100, data) == 0);
  CHECK(m.allocated_bytes() == kMiB);
  CHECK(read_bytes(m, 5 * kMiB + 100, 4096) == data);
  // The rest of that chunk reads as zeros.
  CHECK(all_zero(read_bytes(m, 5 * kMiB, 100)));
  CHECK(all_zero(read_bytes(m, 5 * kMiB + 4196, kMiB - 4196)));

  // A write across a chunk boundary, through scattered iovecs.
  auto span = pattern(10000, 2);
  iovec iov[3] = {{span.data(), 3}, {span.data() + 3, 6000}, {span.data() + 6003, 3997}};
  CHECK(run(m, IoOp::kWrite, 8 * kMiB - 5000, 10000, iov, 3) == 0);
  CHECK(m.allocated_bytes() == 3 * kMiB);
  CHECK(read_bytes(m, 8 * kMiB - 5000, 10000) == span);
  CHECK(run(m, IoOp::kFlush, 0, 0) == 0);
}

TEST_CASE("MemoryBackend: discard and write zeroes free whole chunks and zero partial ones") {
  MemoryBackend m(4 * kMiB);
  for (IoOp op : {IoOp::kDiscard, IoOp::kWriteZeroes}) {
    CAPTURE(static_cast<int>(op));
    auto data = pattern(4 * kMiB, 3);
    CHECK(write_bytes(m, 0, data) == 0);
    CHECK(m.allocated_bytes() == 4 * kMiB);
    // From the middle of chunk 0 to the middle of chunk 2: chunk 1 freed.
    CHECK(run(m, op, kMiB / 2, 2 * kMiB) == 0);
    CHECK(m.allocated_bytes() == 3 * kMiB);
    auto back = read_bytes(m, 0, 4 * kMiB);
    std::vector<uint8_t> want = data;
    std::fill(want.begin() + kMiB / 2, want.begin() + kMiB / 2 + 2 * kMiB, 0);
    CHECK(back == want);
    // Discarding what was never written is fine.
    CHECK(run(m, op, 0, 4 * kMiB) == 0);
    CHECK(m.allocated_bytes() == 0);
    CHECK(all_zero(read_bytes(m, 0, 4 * kMiB)));
  }
  CHECK(m.supports(IoOp::kDiscard));
  CHECK(m.supports(IoOp::kWriteZeroes));
}

TEST_CASE("MemoryBackend: a size that is not a multiple of the chunk size") {
  MemoryBackend m(kMiB + 1000);
  auto data = pattern(1500, 4);
  CHECK(write_bytes(m, kMiB - 500, data) == 0);
  CHECK(m.allocated_bytes() == kMiB + 1000);  // the last chunk is only as big as needed
  CHECK(read_bytes(m, kMiB - 500, 1500) == data);
  CHECK(run(m, IoOp::kDiscard, kMiB, 1000) == 0);  // the whole last chunk
  CHECK(m.allocated_bytes() == kMiB);
  CHECK(all_zero(read_bytes(m, kMiB, 1000)));
}

TEST_CASE("MemoryBackend: requests past the end or with short iovecs fail with -EINVAL") {
  MemoryBackend m(kMiB);
  auto data = pattern(4096, 5);
  CHECK(write_bytes(m, kMiB - 4095, data) == -EINVAL);
  iovec iov{data.data(), 100};
  CHECK(run(m, IoOp::kRead, 0, 4096, &iov, 1) == -EINVAL);
  CHECK(run(m, IoOp::kDiscard, UINT64_MAX, 2) == -EINVAL);
  CHECK(m.allocated_bytes() == 0);
}

TEST_CASE("MemoryBackend: concurrent writers from two threads to interleaved ranges") {
  // Both threads write 4 KiB blocks alternately into the same chunks, so they race to
  // allocate every chunk; a third thread discards and reads a separate range meanwhile.
  constexpr uint64_t kBlock = 4096;
  constexpr uint64_t kBlocks = 2048;  // 8 MiB
  MemoryBackend m(16 * kMiB);
  auto writer = [&](int parity) {
    for (uint64_t b = parity; b < kBlocks; b += 2) {
      auto data = pattern(kBlock, static_cast<uint32_t>(b));
      iovec iov{data.data(), data.size()};
      Done d;
      IoRequest r = make_req(IoOp::kWrite, b * kBlock, kBlock, &iov, 1, &d);
      m.submit(r);
      REQUIRE(d.result == 0);
    }
  };
  auto churn = [&] {
    std::vector<uint8_t> buf(kBlock);
    for (int i = 0; i < 2000; ++i) {
      const uint64_t off = 8 * kMiB + (i % 8) * kMiB;
      Done d;
      iovec iov{buf.data(), buf.size()};
      IoRequest w = make_req(IoOp::kWrite, off, kBlock, &iov, 1, &d);
      m.submit(w);
      IoRequest z = make_req(IoOp::kDiscard, off, kMiB, nullptr, 0, &d);
      m.submit(z);
      IoRequest r = make_req(IoOp::kRead, off, kBlock, &iov, 1, &d);
      m.submit(r);
      REQUIRE(d.result == 0);
    }
  };
  std::thread t0(writer, 0), t1(writer, 1), t2(churn);
  t0.join();
  t1.join();
  t2.join();
  for (uint64_t b = 0; b < kBlocks; ++b) {
    if (read_bytes(m, b * kBlock, kBlock) != pattern(kBlock, static_cast<uint32_t>(b))) {
      FAIL("block " << b << " has the wrong bytes");
    }
  }
  CHECK(m.allocated_bytes() == 8 * kMiB);
}

// --- SBC: provisioning queries (extent_status, space_usage) ---

TEST_CASE("MemoryBackend: extent_status reports chunks, space_usage what they hold") {
  MemoryBackend m(4 * kMiB + 1000);  // a short last chunk
  ExtentStatus st;
  REQUIRE(m.extent_status(0, 1ull << 40, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == 4 * kMiB + 1000);
  std::vector<uint8_t> one(10, 7);
  CHECK(write_bytes(m, kMiB + 5, one) == 0);      // chunk 1
  CHECK(write_bytes(m, 2 * kMiB + 9, one) == 0);  // chunk 2
  REQUIRE(m.extent_status(100, 1ull << 40, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == kMiB - 100);
  REQUIRE(m.extent_status(kMiB + 7, 1ull << 40, &st) == 0);
  CHECK(st.allocated);
  CHECK(st.length == 2 * kMiB - 7);  // chunks 1 and 2
  REQUIRE(m.extent_status(kMiB, 10, &st) == 0);
  CHECK(st.allocated);
  CHECK(st.length == 10);
  REQUIRE(m.extent_status(3 * kMiB, 1ull << 40, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == kMiB + 1000);
  SpaceUsage u;
  REQUIRE(m.space_usage(&u) == 0);
  CHECK(u.allocated_bytes == 2 * kMiB);
  CHECK(u.available_bytes == 2 * kMiB + 1000);
  CHECK_FALSE(u.available_shared);
  CHECK(run(m, IoOp::kDiscard, kMiB, kMiB) == 0);
  REQUIRE(m.extent_status(0, 1ull << 40, &st) == 0);
  CHECK(st.length == 2 * kMiB);  // chunks 0 and 1 now both free
}

TEST_CASE("MemoryBackend::resize: grow keeps the data and reads zeros after; shrink frees") {
  // 2.5 MiB: the last chunk is partial and must become whole when the backend grows.
  MemoryBackend m(2 * kMiB + kMiB / 2);
  auto head = pattern(4096, 3);
  auto tail = pattern(4096, 4);
  REQUIRE(write_bytes(m, 0, head) == 0);
  REQUIRE(write_bytes(m, 2 * kMiB + kMiB / 2 - 4096, tail) == 0);
  CHECK(m.allocated_bytes() == kMiB + kMiB / 2);

  REQUIRE(m.resize(5 * kMiB, false));
  CHECK(m.size() == 5 * kMiB);
  CHECK(m.describe() == "memory:5242880");
  CHECK(read_bytes(m, 0, 4096) == head);
  CHECK(read_bytes(m, 2 * kMiB + kMiB / 2 - 4096, 4096) == tail);
  CHECK(all_zero(read_bytes(m, 2 * kMiB + kMiB / 2, kMiB / 2)));  // the grown part of the edge
  CHECK(all_zero(read_bytes(m, 3 * kMiB, 2 * kMiB)));
  CHECK(m.allocated_bytes() == 2 * kMiB);  // the edge chunk is whole now
  auto far = pattern(8192, 5);
  CHECK(write_bytes(m, 5 * kMiB - 8192, far) == 0);  // the new end is writable
  CHECK(read_bytes(m, 5 * kMiB - 8192, 8192) == far);
  CHECK(m.allocated_bytes() == 3 * kMiB);

  // Shrink into the middle of a chunk: chunks beyond go, the new edge keeps its head.
  REQUIRE(m.resize(kMiB / 2, false));
  CHECK(m.size() == kMiB / 2);
  CHECK(m.allocated_bytes() == kMiB / 2);
  CHECK(read_bytes(m, 0, 4096) == head);
  std::vector<uint8_t> one(512);
  iovec iov{one.data(), one.size()};
  CHECK(run(m, IoOp::kRead, kMiB / 2, 512, &iov, 1) == -EINVAL);  // beyond the end now
  // Growing again: what was cut off does not come back.
  REQUIRE(m.resize(5 * kMiB, false));
  CHECK(all_zero(read_bytes(m, kMiB / 2, 5 * kMiB - kMiB / 2)));
  CHECK(read_bytes(m, 0, 4096) == head);

  auto zero = m.resize(0, false);
  REQUIRE_FALSE(zero);
  CHECK(zero.error() == "memory:5242880: the size must not be 0");
  CHECK(m.size() == 5 * kMiB);
}

TEST_CASE("MemoryBackend::resize while other threads read and write") {
  // No timing: a fixed amount of work on each side; what is checked is that every request
  // inside the smallest size succeeds with the right data whatever the resizes do.
  MemoryBackend m(4 * kMiB);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> io;
  for (uint32_t t = 0; t < 2; ++t)
    io.emplace_back([&, t] {
      auto data = pattern(64 * 1024, 10 + t);
      const uint64_t off = t * 2 * kMiB - (t ? 32 * 1024 : 0);  // the second crosses a chunk
      for (int i = 0; !stop.load() || i < 200; ++i) {
        if (write_bytes(m, off, data) != 0 || read_bytes(m, off, data.size()) != data) ++bad;
      }
    });
  for (int i = 0; i < 200; ++i) REQUIRE(m.resize(i % 2 ? 4 * kMiB : 3 * kMiB + 4096, false));
  stop = true;
  for (auto& th : io) th.join();
  CHECK(bad.load() == 0);
}
