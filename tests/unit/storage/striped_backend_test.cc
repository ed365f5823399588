// make_striped (storage/striped_backend.cc), checked against a flat model with random
// requests: offsets, lengths, iovec shapes, completion orders and injected errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "storage/factory.hh"
#include "storage/memory_backend.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

namespace {

// A real MemoryBackend whose completions can be held back and released in any order, and
// that fails the requests it is told to (fault injection over the real part).
class Faulty final : public Backend {
 public:
  explicit Faulty(uint64_t size) : mem_(size) {}
  uint64_t size() const override { return mem_.size(); }
  bool supports(IoOp op) const override { return mem_.supports(op); }
  std::string describe() const override { return "faulty"; }
  void submit(IoRequest& req) override {
    ++submitted;
    max_iovcnt = std::max(max_iovcnt, req.iovcnt);
    if (fail != 0) {
      // A failing part does nothing, as a dead remote would not.
      if (hold) {
        held.push_back({&req, fail});
      } else {
        req.done(req, fail);
      }
      return;
    }
    if (!hold) return mem_.submit(req);
    // Run it now (the data moves) but report later.
    IoRequest copy = req;
    Result r;
    copy.done = [](IoRequest& c, int result) { static_cast<Result*>(c.user)->value = result; };
    copy.user = &r;
    mem_.submit(copy);
    held.push_back({&req, r.value});
  }
  // Completes held requests, in a random order.
  void release(std::mt19937_64& rng) {
    auto h = std::move(held);
    held.clear();
    std::shuffle(h.begin(), h.end(), rng);
    for (auto& [req, result] : h) req->done(*req, result);
  }
  MemoryBackend& mem() { return mem_; }

  int fail = 0;       // nonzero: every request completes with it
  bool hold = false;  // completions wait for release()
  int submitted = 0;
  int max_iovcnt = 0;
  std::vector<std::pair<IoRequest*, int>> held;

 private:
  struct Result {
    int value = 1;
  };
  MemoryBackend mem_;
};

std::vector<uint8_t> read_part(Faulty& f, uint64_t off, uint64_t len) {
  std::vector<uint8_t> v(len);
  iovec iov{v.data(), v.size()};
  Done d;
  IoRequest r = make_req(IoOp::kRead, off, len, &iov, 1, &d);
  f.mem().submit(r);
  REQUIRE(d.result == 0);
  return v;
}

// Cuts [buf, buf+len) into 1..max_pieces iovecs of random lengths (some empty).
std::vector<iovec> random_iovecs(uint8_t* buf, uint64_t len, std::mt19937_64& rng,
                                 size_t max_pieces) {
  std::vector<iovec> out;
  uint64_t at = 0;
  const size_t pieces = 1 + rng() % max_pieces;
  for (size_t i = 0; i + 1 < pieces && at < len; ++i) {
    const uint64_t n = rng() % 4 == 0 ? 0 : 1 + rng() % std::max<uint64_t>(1, 2 * len / pieces);
    const uint64_t take = std::min(n, len - at);
    out.push_back({buf + at, take});
    at += take;
  }
  out.push_back({buf + at, len - at});
  return out;
}

struct Rig {
  std::vector<Faulty*> parts;
  std::unique_ptr<Backend> striped;
  uint64_t unit, size;
  Rig(size_t n, uint64_t unit_, uint64_t size_) : unit(unit_), size(size_) {
    std::vector<std::unique_ptr<Backend>> list;
    const uint64_t each = (size + n * unit - 1) / (n * unit) * unit;
    for (size_t i = 0; i < n; ++i) {
      auto f = std::make_unique<Faulty>(each);
      parts.push_back(f.get());
      list.push_back(std::move(f));
    }
    auto s = make_striped(std::move(list), unit, size);
    REQUIRE(s.has_value());
    striped = std::move(*s);
  }
  // Where the model's byte `off` must be: an independent statement of the layout.
  std::pair<size_t, uint64_t> where(uint64_t off) const {
    const uint64_t u = off / unit;
    return {u % parts.size(), (u / parts.size()) * unit + off % unit};
  }
};

}  // namespace

TEST_CASE("make_striped: random requests agree with a flat model, byte for byte on every part") {
  std::mt19937_64 rng(20261122);
  struct Shape {
    size_t n;
    uint64_t unit, size;
  };
  for (const Shape s : {Shape{3, 4096, 3 * 4096 * 10}, Shape{2, 512, 2 * 512 * 37 - 1024},
                        Shape{4, 65536, 4 * 65536 * 3 - 4096}, Shape{1, 8192, 8192 * 5}}) {
    CAPTURE(s.n);
    CAPTURE(s.unit);
    Rig rig(s.n, s.unit, s.size);
    CHECK(rig.striped->size() == s.size);
    std::vector<uint8_t> model(s.size, 0);
    for (int round = 0; round < 300; ++round) {
      const uint64_t off = rng() % s.size;
      const uint64_t len = 1 + rng() % std::min<uint64_t>(s.size - off, 5 * s.unit * s.n);
      const bool hold = rng() % 2 == 0;
      for (Faulty* p : rig.parts) p->hold = hold;
      const int kind = static_cast<int>(rng() % 4);
      std::vector<uint8_t> buf(len);
      if (kind == 0) buf = pattern(len, static_cast<uint32_t>(round));
      auto iov = random_iovecs(buf.data(), len, rng, 6);
      Done d;
      IoOp op = kind == 0 ? IoOp::kWrite : kind == 3 ? IoOp::kWriteZeroes : IoOp::kRead;
      IoRequest r = make_req(op, off, len, op == IoOp::kWriteZeroes ? nullptr : iov.data(),
                             op == IoOp::kWriteZeroes ? 0 : static_cast<int>(iov.size()), &d);
      rig.striped->submit(r);
      if (hold) {
        for (Faulty* p : rig.parts) p->release(rng);
      }
      REQUIRE(d.calls == 1);
      REQUIRE(d.result == 0);
      if (op == IoOp::kWrite) std::copy(buf.begin(), buf.end(), model.begin() + off);
      if (op == IoOp::kWriteZeroes) std::fill_n(model.begin() + off, len, 0);
      if (op == IoOp::kRead) {
        REQUIRE(std::equal(buf.begin(), buf.end(), model.begin() + off));
      }
    }
    // Every model byte sits where the layout says.
    std::vector<std::vector<uint8_t>> images;
    for (Faulty* p : rig.parts) images.push_back(read_part(*p, 0, p->size()));
    size_t wrong = 0;
    for (uint64_t i = 0; i < s.size; ++i) {
      const auto [p, at] = rig.where(i);
      wrong += images[p][at] != model[i];
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("make_striped: a failing part fails exactly the requests that touch it, once") {
  std::mt19937_64 rng(7);
  Rig rig(3, 4096, 3 * 4096 * 8);
  for (int round = 0; round < 200; ++round) {
    const uint64_t off = rng() % rig.size;
    const uint64_t len = 1 + rng() % std::min<uint64_t>(rig.size - off, 7 * 4096);
    const size_t bad = rng() % 3;
    const bool two_bad = rng() % 3 == 0;
    const bool hold = rng() % 2 == 0;
    for (size_t p = 0; p < 3; ++p) {
      rig.parts[p]->hold = hold;
      rig.parts[p]->fail = p == bad ? -EIO : (two_bad && p == (bad + 1) % 3) ? -ENOTCONN : 0;
    }
    std::vector<bool> touched(3, false);
    for (uint64_t u = off / 4096; u <= (off + len - 1) / 4096; ++u) touched[u % 3] = true;
    std::vector<uint8_t> buf(len);
    iovec iov{buf.data(), len};
    Done d;
    IoRequest r = make_req(IoOp::kRead, off, len, &iov, 1, &d);
    rig.striped->submit(r);
    if (hold) {
      CHECK(d.calls == 0);
      // Release in a random part order; the reported error is the first one delivered.
      std::vector<size_t> order = {0, 1, 2};
      std::shuffle(order.begin(), order.end(), rng);
      int first = 0;
      for (size_t p : order) {
        if (first == 0 && touched[p] && rig.parts[p]->fail != 0 && !rig.parts[p]->held.empty())
          first = rig.parts[p]->fail;
        rig.parts[p]->release(rng);
      }
      REQUIRE(d.calls == 1);
      CHECK(d.result == first);
    } else {
      REQUIRE(d.calls == 1);
    }
    const bool expect_error = (touched[bad]) || (two_bad && touched[(bad + 1) % 3]);
    CHECK((d.result != 0) == expect_error);
  }
}

TEST_CASE("make_striped: many small iovecs are split into sub-requests of at most IOV_MAX") {
  Rig rig(2, 4096, 2 * 4096 * 256);
  const uint64_t len = 2 * 4096 * 256;  // the whole LU: 1 MiB per part
  auto data = pattern(len, 3);
  std::vector<iovec> iov;
  for (uint64_t at = 0; at < len; at += 256) iov.push_back({data.data() + at, 256});  // 4096 iovecs
  Done d;
  IoRequest w = make_req(IoOp::kWrite, 0, len, iov.data(), static_cast<int>(iov.size()), &d);
  rig.striped->submit(w);
  REQUIRE(d.calls == 1);
  CHECK(d.result == 0);
  for (Faulty* p : rig.parts) {
    CHECK(p->max_iovcnt <= IOV_MAX);
    CHECK(p->submitted == 4);  // 4096 pieces of 256 bytes each: four sub-requests of 1024
  }
  std::vector<uint8_t> back(len, 0xAA);
  iovec riov{back.data(), len};
  Done rd;
  IoRequest r = make_req(IoOp::kRead, 0, len, &riov, 1, &rd);
  rig.striped->submit(r);
  CHECK(rd.result == 0);
  CHECK(back == data);
}

TEST_CASE("make_striped: a request inside one stripe unit keeps the caller's iovecs") {
  Rig rig(3, 4096, 3 * 4096 * 4);
  std::vector<uint8_t> buf(1000);
  iovec iov[2] = {{buf.data(), 400}, {buf.data() + 400, 600}};
  for (Faulty* p : rig.parts) p->hold = true;
  Done d;
  // Unit 4 (part 1, its second unit) at 100 bytes in.
  IoRequest r = make_req(IoOp::kRead, 4 * 4096 + 100, 1000, iov, 2, &d);
  rig.striped->submit(r);
  REQUIRE(rig.parts[1]->held.size() == 1);
  const IoRequest& sub = *rig.parts[1]->held[0].first;
  CHECK(sub.offset == 4096 + 100);
  CHECK(sub.iov == iov);
  CHECK(sub.iovcnt == 2);
  std::mt19937_64 rng(1);
  rig.parts[1]->release(rng);
  CHECK(d.calls == 1);
}

TEST_CASE("make_striped: flush reaches every part; bad shapes are refused") {
  Rig rig(3, 4096, 3 * 4096);
  Done d;
  IoRequest f = make_req(IoOp::kFlush, 0, 0, nullptr, 0, &d);
  rig.striped->submit(f);
  CHECK(d.result == 0);
  for (Faulty* p : rig.parts) CHECK(p->submitted == 1);
  Done e;
  std::vector<uint8_t> buf(8192);
  iovec iov{buf.data(), buf.size()};
  IoRequest past = make_req(IoOp::kRead, 3 * 4096 - 10, 20, &iov, 1, &e);
  rig.striped->submit(past);
  CHECK(e.result == -EINVAL);

  std::vector<std::unique_ptr<Backend>> parts;
  parts.push_back(std::make_unique<MemoryBackend>(8192));
  parts.push_back(std::make_unique<MemoryBackend>(4096));
  auto small = make_striped(std::move(parts), 4096, 3 * 4096);
  REQUIRE_FALSE(small.has_value());
  CHECK(small.error().find("need 8192 bytes each") != std::string::npos);
  std::vector<std::unique_ptr<Backend>> parts2;
  parts2.push_back(std::make_unique<MemoryBackend>(8192));
  auto odd = make_striped(std::move(parts2), 3000, 8192);
  REQUIRE_FALSE(odd.has_value());
  CHECK(odd.error() == "stripe unit 3000 is not a power of two");
}

TEST_CASE("make_striped: resize is refused with the reason, the size stays") {
  std::vector<std::unique_ptr<Backend>> parts;
  parts.push_back(std::make_unique<MemoryBackend>(1 << 20));
  parts.push_back(std::make_unique<MemoryBackend>(1 << 20));
  auto s = make_striped(std::move(parts), 65536, 2 << 20);
  REQUIRE(s);
  auto r = (*s)->resize(4 << 20, false);
  REQUIRE_FALSE(r);
  CHECK(r.error() == "striped(65536, memory:1048576, memory:1048576): a striped LU cannot be "
                     "resized (every sub-unit would need to grow at once)");
  CHECK((*s)->size() == 2 << 20);
}
