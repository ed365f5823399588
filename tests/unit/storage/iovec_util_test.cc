#include "storage/iovec_util.hh"

#include <doctest/doctest.h>

#include <vector>

using namespace zuma::storage;

TEST_CASE("iovec helpers: total, slice and zero across uneven and empty iovecs") {
  std::vector<uint8_t> buf(20);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i + 1);
  iovec iov[4] = {{buf.data(), 3}, {buf.data() + 3, 0}, {buf.data() + 3, 10}, {buf.data() + 13, 7}};
  CHECK(iov_total(iov, 4) == 20);
  CHECK(iov_total(iov, 0) == 0);

  std::vector<iovec> out;
  CHECK(iov_slice(iov, 4, 2, 12, out) == 12);
  REQUIRE(out.size() == 3);
  CHECK(out[0].iov_base == buf.data() + 2);
  CHECK(out[0].iov_len == 1);
  CHECK(out[1].iov_base == buf.data() + 3);
  CHECK(out[1].iov_len == 10);
  CHECK(out[2].iov_base == buf.data() + 13);
  CHECK(out[2].iov_len == 1);

  out.clear();
  CHECK(iov_slice(iov, 4, 3, 10, out) == 10);  // exactly the third iovec
  REQUIRE(out.size() == 1);
  CHECK(out[0].iov_base == buf.data() + 3);

  out.clear();
  CHECK(iov_slice(iov, 4, 15, 100, out) == 5);  // the list runs out
  out.clear();
  CHECK(iov_slice(iov, 4, 25, 1, out) == 0);
  CHECK(out.empty());

  iov_zero(iov, 4, 1, 4);
  const std::vector<uint8_t> want = {1,  0,  0,  0,  0,  6,  7,  8,  9,  10,
                                     11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
  CHECK(buf == want);

  IovCursor c(iov, 4);
  CHECK(c.advance(3) == 3);
  CHECK(c.data() == buf.data() + 3);  // skipped the empty iovec
  CHECK(c.contiguous() == 10);
  CHECK(c.advance(100) == 17);
  CHECK(c.at_end());
  CHECK(c.contiguous() == 0);
}
