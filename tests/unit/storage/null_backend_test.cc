#include "storage/null_backend.hh"

#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

TEST_CASE("NullBackend: reads return zeros, writes vanish, everything completes inline") {
  NullBackend n(1 << 20);
  CHECK(n.size() == 1 << 20);
  CHECK(n.describe() == "null:1048576");
  for (IoOp op : {IoOp::kRead, IoOp::kWrite, IoOp::kFlush, IoOp::kDiscard, IoOp::kWriteZeroes}) {
    CHECK(n.supports(op));
  }

  std::vector<uint8_t> a(3000, 0xAA), b(2000, 0xBB);
  iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  Done d;
  IoRequest r = make_req(IoOp::kRead, 4096, 4000, iov, 2, &d);
  n.submit(r);
  CHECK(d.calls == 1);
  CHECK(d.result == 0);
  CHECK(std::all_of(a.begin(), a.end(), [](uint8_t x) { return x == 0; }));
  // Only `length` bytes are touched.
  CHECK(std::all_of(b.begin(), b.begin() + 1000, [](uint8_t x) { return x == 0; }));
  CHECK(std::all_of(b.begin() + 1000, b.end(), [](uint8_t x) { return x == 0xBB; }));

  auto data = pattern(4096, 1);
  iovec wiov{data.data(), data.size()};
  for (IoOp op : {IoOp::kWrite, IoOp::kFlush, IoOp::kDiscard, IoOp::kWriteZeroes}) {
    Done w;
    IoRequest wr = make_req(op, 0, 4096, &wiov, 1, &w);
    n.submit(wr);
    CHECK(w.calls == 1);
    CHECK(w.result == 0);
  }
  CHECK(data == pattern(4096, 1));  // a write never touches the caller's buffer

  Done e;
  IoRequest bad = make_req(IoOp::kWrite, (1 << 20) - 100, 4096, &wiov, 1, &e);
  n.submit(bad);
  CHECK(e.result == -EINVAL);
}

TEST_CASE("NullBackend::resize: any size but 0; requests are checked against the new one") {
  NullBackend n(1 << 20);
  REQUIRE(n.resize(4 << 20, false));
  CHECK(n.size() == 4 << 20);
  CHECK(n.describe() == "null:4194304");
  std::vector<uint8_t> buf(4096);
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest r = make_req(IoOp::kRead, (4 << 20) - 4096, 4096, &iov, 1, &d);
  n.submit(r);
  CHECK(d.result == 0);
  REQUIRE(n.resize(1 << 20, false));
  Done d2;
  IoRequest r2 = make_req(IoOp::kRead, (4 << 20) - 4096, 4096, &iov, 1, &d2);
  n.submit(r2);
  CHECK(d2.result == -EINVAL);
  auto zero = n.resize(0, false);
  REQUIRE_FALSE(zero);
  CHECK(zero.error() == "null:1048576: the size must not be 0");
}
