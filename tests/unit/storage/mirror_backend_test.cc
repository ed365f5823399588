// MirrorBackend (storage/mirror_backend.cc): writes to both members, a member going out
// and coming back (dirty-region resync), stale and replaced members found at open, and
// the completion of a write that marked a member out, posted back to the submitting
// reactor. Members are real MemoryBackends; a thin wrapper injects failures.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "storage/memory_backend.hh"
#include "storage/mirror_backend.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

namespace {

constexpr uint64_t kSize = 4 << 20;  // 16 regions
using State = MirrorBackend::MemberState;

// A member over a MemoryBackend that outlives it (a remote that keeps its data across a
// restart of the mirror); `fail` nonzero makes every request fail with it, as a dead remote.
class Member final : public Backend {
 public:
  explicit Member(std::shared_ptr<MemoryBackend> mem, std::shared_ptr<std::atomic<int>> fail)
      : mem_(std::move(mem)), fail_(std::move(fail)) {}
  uint64_t size() const override { return mem_->size(); }
  bool supports(IoOp op) const override { return mem_->supports(op); }
  std::string describe() const override { return "member"; }
  void submit(IoRequest& req) override {
    if (const int f = fail_->load(); f != 0) return req.done(req, f);
    mem_->submit(req);
  }

 private:
  std::shared_ptr<MemoryBackend> mem_;
  std::shared_ptr<std::atomic<int>> fail_;
};

struct Rig {
  TempDir dir;
  std::shared_ptr<MemoryBackend> mem[2];
  std::shared_ptr<std::atomic<int>> fail[2];
  Rig() {
    for (int i = 0; i < 2; ++i) {
      mem[i] = std::make_shared<MemoryBackend>(kSize + MirrorBackend::kHeaderBytes);
      fail[i] = std::make_shared<std::atomic<int>>(0);
    }
  }
  std::unique_ptr<MirrorBackend> open() {
    std::array<std::unique_ptr<Backend>, 2> m{std::make_unique<Member>(mem[0], fail[0]),
                                              std::make_unique<Member>(mem[1], fail[1])};
    auto r = MirrorBackend::open(std::move(m), kSize, dir / "mirror/lu.0");
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error()));
    return std::move(*r);
  }
};

int io(Backend& b, IoOp op, uint64_t off, std::vector<uint8_t>& buf) {
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest r = make_req(op, off, buf.size(), &iov, 1, &d);
  b.submit(r);
  REQUIRE(d.calls == 1);
  return d.result;
}

std::vector<uint8_t> contents(MemoryBackend& m, uint64_t off, uint64_t len) {
  std::vector<uint8_t> v(len);
  REQUIRE(io(m, IoOp::kRead, off, v) == 0);
  return v;
}

}  // namespace

TEST_CASE("mirror: a new mirror copies member 0 to member 1, then writes reach both") {
  Rig rig;
  auto before = pattern(kSize, 1);
  REQUIRE(io(*rig.mem[0], IoOp::kWrite, 0, before) == 0);
  auto m = rig.open();
  CHECK(m->size() == kSize);
  REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
  CHECK(contents(*rig.mem[1], 0, kSize) == before);
  CHECK(m->age() == 2);  // 1 at creation, 2 once member 1 had everything

  auto data = pattern(300 * 1024, 2);
  REQUIRE(io(*m, IoOp::kWrite, 100 * 1024, data) == 0);
  CHECK(contents(*rig.mem[0], 100 * 1024, data.size()) == data);
  CHECK(contents(*rig.mem[1], 100 * 1024, data.size()) == data);
  std::vector<uint8_t> back(data.size());
  REQUIRE(io(*m, IoOp::kRead, 100 * 1024, back) == 0);
  CHECK(back == data);
  // Each member's header: the magic, its index and the age, after the data.
  for (int i = 0; i < 2; ++i) {
    auto h = contents(*rig.mem[i], kSize, 48);
    CHECK(std::memcmp(h.data(), "ZUMAMIR1", 8) == 0);
    CHECK(h[12] == i);
    CHECK(h[32] == 2);
  }
}

TEST_CASE(
    "mirror: a member that fails is marked out; it is resynchronised from the dirty regions") {
  Rig rig;
  auto m = rig.open();
  REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
  auto base = pattern(kSize, 3);
  REQUIRE(io(*m, IoOp::kWrite, 0, base) == 0);

  rig.fail[1]->store(kUnreachable);
  auto w1 = pattern(64 * 1024, 4);
  CHECK(io(*m, IoOp::kWrite, 5 * MirrorBackend::kRegionBytes + 10 * 1024, w1) == 0);  // region 5
  CHECK(m->member_state(1) == State::kOut);
  CHECK(m->age() == 3);  // recorded before the write was acknowledged
  auto w2 = pattern(MirrorBackend::kRegionBytes, 5);
  CHECK(io(*m, IoOp::kWrite, 9 * MirrorBackend::kRegionBytes - 1024, w2) == 0);  // regions 8, 9
  CHECK(m->dirty_regions() == 3);
  // Reads come from member 0 meanwhile.
  std::vector<uint8_t> back(w1.size());
  REQUIRE(io(*m, IoOp::kRead, 5 * MirrorBackend::kRegionBytes + 10 * 1024, back) == 0);
  CHECK(back == w1);

  rig.fail[1]->store(0);  // it comes back
  REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
  CHECK(m->dirty_regions() == 0);
  CHECK(contents(*rig.mem[1], 0, kSize) == contents(*rig.mem[0], 0, kSize));
  CHECK(m->age() == 4);
}

TEST_CASE("mirror: both members failing fails the write; a failed read is served by the other") {
  Rig rig;
  auto m = rig.open();
  REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
  auto data = pattern(8192, 6);
  REQUIRE(io(*m, IoOp::kWrite, 0, data) == 0);
  rig.fail[0]->store(-EIO);
  std::vector<uint8_t> back(8192);
  CHECK(io(*m, IoOp::kRead, 0, back) == 0);
  CHECK(back == data);
  CHECK(m->member_state(0) == State::kOut);
  rig.fail[1]->store(kUnreachable);
  CHECK(io(*m, IoOp::kWrite, 0, data) == kUnreachable);  // nobody in sync to write to
  CHECK(io(*m, IoOp::kRead, 0, back) == kUnreachable);
}

TEST_CASE("mirror: at open, a stale member resyncs from the saved regions, a replaced one whole") {
  Rig rig;
  {
    auto m = rig.open();
    REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
    rig.fail[1]->store(kUnreachable);
    auto w = pattern(4096, 7);
    REQUIRE(io(*m, IoOp::kWrite, 2 * MirrorBackend::kRegionBytes, w) == 0);
    CHECK(m->member_state(1) == State::kOut);
    rig.fail[0]->store(0);
  }  // a clean shutdown saves the dirty regions
  rig.fail[1]->store(0);
  {
    auto m = rig.open();
    // Member 1 is behind by one region, known from the saved bitmap.
    REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
    CHECK(contents(*rig.mem[1], 0, kSize) == contents(*rig.mem[0], 0, kSize));
  }
  // Member 1 replaced by a blank one: no header, copied whole.
  rig.mem[1] = std::make_shared<MemoryBackend>(kSize + MirrorBackend::kHeaderBytes);
  auto m = rig.open();
  CHECK(m->member_state(1) != State::kInSync);
  REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
  CHECK(contents(*rig.mem[1], 0, kSize) == contents(*rig.mem[0], 0, kSize));

  // Neither member holding the current age: refused.
  m.reset();
  rig.mem[0] = std::make_shared<MemoryBackend>(kSize + MirrorBackend::kHeaderBytes);
  rig.mem[1] = std::make_shared<MemoryBackend>(kSize + MirrorBackend::kHeaderBytes);
  std::array<std::unique_ptr<Backend>, 2> members{
      std::make_unique<Member>(rig.mem[0], rig.fail[0]),
      std::make_unique<Member>(rig.mem[1], rig.fail[1])};
  auto r = MirrorBackend::open(std::move(members), kSize, rig.dir / "mirror/lu.0");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().find("no reachable member holds the current data") != std::string::npos);
}

TEST_CASE("mirror: a write that marks a member out completes on the reactor, after the new age") {
  Rig rig;
  auto m = rig.open();
  REQUIRE(eventually([&] { return m->member_state(1) == State::kInSync; }));
  CurrentContext ctx;
  rig.fail[1]->store(kUnreachable);
  auto data = pattern(4096, 8);
  iovec iov{data.data(), data.size()};
  Done d;
  IoRequest w = make_req(IoOp::kWrite, 0, data.size(), &iov, 1, &d);
  m->submit(w);
  CHECK(d.calls == 0);  // waits for the mirror thread to record member 1's departure
  REQUIRE(drive(*ctx, [&] { return d.calls > 0; }));
  CHECK(d.result == 0);
  CHECK(m->age() == 3);
  CHECK(m->member_state(1) == State::kOut);
}

TEST_CASE("mirror: members too small are refused") {
  std::array<std::unique_ptr<Backend>, 2> members{std::make_unique<MemoryBackend>(kSize),
                                                  std::make_unique<MemoryBackend>(kSize + 4096)};
  TempDir dir;
  auto r = MirrorBackend::open(std::move(members), kSize, dir / "m");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() ==
        "mirror member 0 (memory:4194304) holds 4194304 bytes; it needs 4198400 (the sub-unit's "
        "4194304 "
        "and a 4096-byte header)");
}
