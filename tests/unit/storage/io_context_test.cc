#include "storage/io_context.hh"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "storage/file_backend.hh"
#include "storage/unique_fd.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

namespace {

UniqueFd open_rw(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  return fd;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST_CASE("IoContext: create rejects zero entries") {
  auto c = IoContext::create(0);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error() == -EINVAL);
}

TEST_CASE("IoContext: current() follows make_current, clear_current and the destructor") {
  CHECK(IoContext::current() == nullptr);
  {
    auto c = IoContext::create(8);
    REQUIRE(c.has_value());
    (*c)->make_current();
    CHECK(IoContext::current() == c->get());
    IoContext::clear_current();
    CHECK(IoContext::current() == nullptr);
    (*c)->make_current();
  }
  CHECK(IoContext::current() == nullptr);  // the destructor cleared it

  // Destroying a context that is not current leaves the current one alone.
  auto a = IoContext::create(8);
  auto b = IoContext::create(8);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  (*a)->make_current();
  b->reset();
  CHECK(IoContext::current() == a->get());
  IoContext::clear_current();
}

TEST_CASE("IoContext: a bare get_sqe() request completes through the eventfd and reap()") {
  auto c = IoContext::create(8);
  REQUIRE(c.has_value());
  IoContext& ctx = **c;
  CHECK(ctx.reap() == 0);  // nothing ready: cheap and harmless
  CHECK_FALSE(readable(ctx.event_fd(), 0));

  Done d;
  IoRequest req = make_req(IoOp::kFlush, 0, 0, nullptr, 0, &d);
  io_uring_prep_nop(ctx.get_sqe(req));
  CHECK(ctx.in_flight() == 1);
  CHECK_FALSE(readable(ctx.event_fd(), 0));  // not submitted before flush()
  ctx.flush();
  REQUIRE(readable(ctx.event_fd(), 5000));
  CHECK(ctx.reap() == 1);
  CHECK(d.calls == 1);
  CHECK(d.result == 0);
  CHECK(ctx.in_flight() == 0);
  CHECK_FALSE(readable(ctx.event_fd(), 0));  // reap() drained the counter
}

TEST_CASE("IoContext: a bare readv that comes back short completes with -EIO") {
  TempDir dir;
  UniqueFd fd = open_rw(dir / "f");
  write_file(dir / "f", 0, pattern(4096, 1));
  auto c = IoContext::create(8);
  REQUIRE(c.has_value());
  std::vector<uint8_t> buf(8192);
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest req = make_req(IoOp::kRead, 0, 8192, &iov, 1, &d);
  io_uring_prep_readv((*c)->get_sqe(req), fd.get(), &iov, 1, 0);
  REQUIRE(drive(**c, [&] { return d.calls == 1; }));
  CHECK(d.result == -EIO);
}

TEST_CASE("IoContext: queue_rw finishes a read that crosses end of file with zeros") {
  TempDir dir;
  const auto data = pattern(6000, 2);
  write_file(dir / "f", 0, data);
  UniqueFd fd = open_rw(dir / "f");
  auto c = IoContext::create(8);
  REQUIRE(c.has_value());

  // Two iovecs split at an odd byte, pre-filled so zero-filling is visible.
  std::vector<uint8_t> a(5000, 0xAA), b(3192, 0xAA);
  iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  Done d;
  IoRequest req = make_req(IoOp::kRead, 0, 8192, iov, 2, &d);
  (*c)->queue_rw(req, fd.get());
  REQUIRE(drive(**c, [&] { return d.calls == 1; }));
  CHECK(d.result == 0);
  CHECK(std::equal(a.begin(), a.end(), data.begin()));
  CHECK(std::equal(b.begin(), b.begin() + 1000, data.begin() + 5000));
  CHECK(std::all_of(b.begin() + 1000, b.end(), [](uint8_t x) { return x == 0; }));

  // Wholly beyond end of file: all zeros.
  std::vector<uint8_t> z(4096, 0xAA);
  iovec ziov{z.data(), z.size()};
  Done dz;
  IoRequest rz = make_req(IoOp::kRead, 65536, 4096, &ziov, 1, &dz);
  (*c)->queue_rw(rz, fd.get());
  REQUIRE(drive(**c, [&] { return dz.calls == 1; }));
  CHECK(dz.result == 0);
  CHECK(std::all_of(z.begin(), z.end(), [](uint8_t x) { return x == 0; }));
  CHECK((*c)->in_flight() == 0);
}

TEST_CASE("IoContext: queue_rw transfers exactly `length` bytes of a longer iovec list") {
  TempDir dir;
  UniqueFd fd = open_rw(dir / "f");
  auto c = IoContext::create(8);
  REQUIRE(c.has_value());
  auto data = pattern(8192, 3);
  iovec iov{data.data(), data.size()};
  Done d;
  IoRequest req = make_req(IoOp::kWrite, 100, 4096, &iov, 1, &d);
  (*c)->queue_rw(req, fd.get());
  REQUIRE(drive(**c, [&] { return d.calls == 1; }));
  CHECK(d.result == 0);
  CHECK(stat_of(dir / "f").st_size == 4196);
  auto back = read_file(dir / "f", 100, 4096);
  CHECK(std::equal(back.begin(), back.end(), data.begin()));
}

TEST_CASE("IoContext: queue_rw with iovecs shorter than `length` fails inline with -EINVAL") {
  TempDir dir;
  UniqueFd fd = open_rw(dir / "f");
  auto c = IoContext::create(8);
  REQUIRE(c.has_value());
  std::vector<uint8_t> buf(512);
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest req = make_req(IoOp::kRead, 0, 4096, &iov, 1, &d);
  (*c)->queue_rw(req, fd.get());
  CHECK(d.calls == 1);
  CHECK(d.result == -EINVAL);
  CHECK((*c)->in_flight() == 0);
}

TEST_CASE("IoContext: many more requests in flight than the ring has slots") {
  TempDir dir;
  constexpr int kReqs = 300;
  constexpr size_t kBlock = 4096;
  const auto data = pattern(kReqs * kBlock, 4);
  write_file(dir / "f", 0, data);
  auto fb = FileBackend::open(dir / "f", 0);
  REQUIRE(fb.has_value());
  (*fb)->set_try_inline(false);  // every request through the ring
  CurrentContext ctx(4);  // 4 SQ slots, 8 CQ slots: the CQ overflows too

  std::vector<std::vector<uint8_t>> bufs(kReqs, std::vector<uint8_t>(kBlock, 0xEE));
  std::vector<iovec> iovs(kReqs);
  std::vector<Done> done(kReqs);
  std::vector<IoRequest> reqs(kReqs);
  for (int i = 0; i < kReqs; ++i) {
    iovs[i] = {bufs[i].data(), kBlock};
    // Backwards, so completion order cannot match buffers by accident.
    reqs[i] = make_req(IoOp::kRead, (kReqs - 1 - i) * kBlock, kBlock, &iovs[i], 1, &done[i]);
    (*fb)->submit(reqs[i]);
  }
  CHECK(ctx->in_flight() == kReqs);
  int total = 0;
  REQUIRE(drive(*ctx, [&] {
    total = 0;
    for (auto& d : done) total += d.calls;
    return total == kReqs;
  }));
  CHECK(ctx->in_flight() == 0);
  for (int i = 0; i < kReqs; ++i) {
    CHECK(done[i].calls == 1);
    CHECK(done[i].result == 0);
    const size_t off = (kReqs - 1 - i) * kBlock;
    CHECK(std::equal(bufs[i].begin(), bufs[i].end(), data.begin() + off));
  }
}

namespace {

// A chain of writes, each one submitted from the done() of the one before. Write i of
// the chain puts pattern(512, base + i) at block base + i.
struct Chain {
  Backend* backend = nullptr;
  int base = 0;
  int next = 0;
  int limit = 0;
  int completed = 0;
  int errors = 0;
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<iovec> iovs;
  std::vector<IoRequest> reqs;

  void init(Backend* b, int first_block, int count) {
    backend = b;
    base = first_block;
    limit = count;
    bufs.resize(count);
    iovs.resize(count);
    reqs.resize(count);
    for (int i = 0; i < count; ++i) {
      bufs[i] = pattern(512, static_cast<uint32_t>(base + i));
      iovs[i] = {bufs[i].data(), 512};
    }
  }
  static void on_done(IoRequest& req, int result) {
    auto* c = static_cast<Chain*>(req.user);
    ++c->completed;
    if (result != 0) ++c->errors;
    c->submit_next();
  }
  void submit_next() {
    if (next >= limit) return;
    const int i = next++;
    reqs[i] = IoRequest{};
    reqs[i].op = IoOp::kWrite;
    reqs[i].offset = static_cast<uint64_t>(base + i) * 512;
    reqs[i].length = 512;
    reqs[i].iov = &iovs[i];
    reqs[i].iovcnt = 1;
    reqs[i].done = &on_done;
    reqs[i].user = this;
    backend->submit(reqs[i]);
  }
};

}  // namespace

TEST_CASE("IoContext: done() may submit new requests into the same ring") {
  TempDir dir;
  constexpr int kChains = 16;
  constexpr int kPerChain = 40;
  auto fb = FileBackend::open(dir / "f", kChains * kPerChain * 512);
  REQUIRE(fb.has_value());
  CurrentContext ctx(4);

  // 16 chains over disjoint ranges keep more requests in flight than the ring holds, so
  // re-entrant submissions also hit the "ring full" path.
  std::vector<Chain> chains(kChains);
  for (int c = 0; c < kChains; ++c) {
    chains[c].init(fb->get(), c * kPerChain, kPerChain);
    chains[c].submit_next();
  }
  REQUIRE(drive(*ctx, [&] {
    for (auto& ch : chains) {
      if (ch.completed < kPerChain) return false;
    }
    return true;
  }));
  CHECK(ctx->in_flight() == 0);
  for (int c = 0; c < kChains; ++c) {
    CHECK(chains[c].completed == kPerChain);
    CHECK(chains[c].errors == 0);
  }
  for (int b = 0; b < kChains * kPerChain; ++b) {
    const auto want = pattern(512, static_cast<uint32_t>(b));
    CHECK(read_file(dir / "f", b * 512, 512) == want);
  }
}

TEST_CASE("IoContext: the destructor completes every request still in flight") {
  TempDir dir;
  write_file(dir / "f", 0, pattern(16 * 4096, 5));
  UniqueFd fd = open_rw(dir / "f");
  std::vector<std::vector<uint8_t>> bufs(16, std::vector<uint8_t>(4096));
  std::vector<iovec> iovs(16);
  std::vector<Done> done(16);
  std::vector<IoRequest> reqs(16);
  {
    auto c = IoContext::create(4);
    REQUIRE(c.has_value());
    for (int i = 0; i < 16; ++i) {
      iovs[i] = {bufs[i].data(), 4096};
      reqs[i] = make_req(IoOp::kRead, i * 4096, 4096, &iovs[i], 1, &done[i]);
      (*c)->queue_rw(reqs[i], fd.get());
    }
    CHECK((*c)->in_flight() == 16);
  }
  for (auto& d : done) {
    CHECK(d.calls == 1);
    CHECK(d.result == 0);
  }
}

// --- post(): work handed to the context's thread (SBC range lock grants) ---

TEST_CASE("IoContext: posted work runs on the owner's thread, in order, never inline") {
  auto ctx = IoContext::create(8);
  REQUIRE(ctx.has_value());
  IoContext& c = **ctx;
  std::vector<int> order;
  struct Item {
    PostedWork w;
    std::vector<int>* order;
    int id;
  };
  auto run = [](void* arg) {
    auto* it = static_cast<Item*>(arg);
    it->order->push_back(it->id);
  };
  Item a{{}, &order, 1}, b{{}, &order, 2};
  a.w.run = run;
  a.w.arg = &a;
  b.w.run = run;
  b.w.arg = &b;
  c.post(a.w);
  c.post(b.w);
  CHECK(order.empty());  // not inline
  CHECK(readable(c.event_fd(), 1000));  // the owner is woken
  c.poll();  // poll() runs it too (the reactor's path), without reading the eventfd
  CHECK(order == std::vector<int>{1, 2});
  c.reap();  // consumes the eventfd's count: nothing left to run
  CHECK(order == std::vector<int>{1, 2});
  CHECK_FALSE(readable(c.event_fd(), 0));

  // From another thread; the owner sleeps on the eventfd until it arrives.
  std::thread t([&] { c.post(a.w); });
  REQUIRE(readable(c.event_fd(), 5000));
  c.reap();
  t.join();
  CHECK(order == std::vector<int>{1, 2, 1});

  // What is still posted at destruction runs then.
  c.post(b.w);
  ctx->reset();
  CHECK(order == std::vector<int>{1, 2, 1, 2});
}

TEST_CASE("IoContext: posts from many threads while the owner reaps lose nothing") {
  auto ctx = IoContext::create(8);
  REQUIRE(ctx.has_value());
  IoContext& c = **ctx;
  constexpr int kThreads = 4;
  constexpr int kEach = 2000;
  struct Item {
    PostedWork w;
    int* count;
  };
  int count = 0;  // only the owner touches it
  std::vector<std::vector<Item>> items(kThreads, std::vector<Item>(kEach));
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (Item& it : items[t]) {
        it.count = &count;
        it.w.run = [](void* arg) { ++*static_cast<Item*>(arg)->count; };
        it.w.arg = &it;
        c.post(it.w);
      }
    });
  }
  while (count < kThreads * kEach) {
    pollfd p{c.event_fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    c.reap();
  }
  for (auto& t : ts) t.join();
  CHECK(count == kThreads * kEach);
}

TEST_CASE(
    "IoContext: defer_batch runs once, in order, at run_batched or flush; what a run defers runs "
    "too") {
  auto ctx = IoContext::create();
  REQUIRE(ctx);
  struct Step {
    PostedWork w;
    std::vector<int>* log;
    int id;
    Step* then = nullptr;  // deferred by this one's run
    IoContext* ctx = nullptr;
  };
  std::vector<int> log;
  Step c{{}, &log, 3};
  Step a{{}, &log, 1, &c, ctx->get()};
  Step b{{}, &log, 2};
  for (Step* s : {&a, &b, &c}) {
    s->w.arg = s;
    s->w.run = [](void* p) {
      auto& st = *static_cast<Step*>(p);
      st.log->push_back(st.id);
      if (st.then) st.ctx->defer_batch(st.then->w);
    };
  }
  (*ctx)->defer_batch(a.w);
  (*ctx)->defer_batch(b.w);
  CHECK((*ctx)->has_batched());
  CHECK(log.empty());  // never inline
  (*ctx)->flush();
  CHECK(log == std::vector<int>{1, 2, 3});
  CHECK_FALSE((*ctx)->has_batched());
  (*ctx)->run_batched();  // nothing left: runs nothing again
  CHECK(log.size() == 3);
  (*ctx)->defer_batch(b.w);
  (*ctx)->run_batched();
  CHECK(log == std::vector<int>{1, 2, 3, 2});
}
