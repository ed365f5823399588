// RangeLock: shared/exclusive conflicts, queueing order, inline and cross-thread grants.
#include "scsi/range_lock.hh"

#include <doctest/doctest.h>
#include <poll.h>

#include <atomic>
#include <thread>
#include <vector>

#include "storage/io_context.hh"

namespace zuma::scsi {
namespace {

using Mode = RangeLock::Mode;

struct Req {
  RangeLock::Holder h;
  int grants = 0;
  std::vector<int>* order = nullptr;
  int id = 0;
  static void on_grant(void* arg) {
    auto* r = static_cast<Req*>(arg);
    ++r->grants;
    if (r->order) r->order->push_back(r->id);
  }
  bool acquire(RangeLock& l, uint64_t lba, uint64_t blocks, Mode m) {
    return l.acquire(h, lba, blocks, m, on_grant, this);
  }
};

TEST_CASE("RangeLock: shared ranges never wait for each other") {
  RangeLock l;
  Req a, b, c;
  CHECK(a.acquire(l, 0, 100, Mode::kShared));
  CHECK(b.acquire(l, 50, 100, Mode::kShared));
  CHECK(c.acquire(l, 0, 1, Mode::kShared));
  CHECK(l.held() == 3);
  CHECK(l.waiting() == 0);
  l.release(b.h);
  l.release(a.h);
  l.release(c.h);
  CHECK(l.held() == 0);
}

TEST_CASE("RangeLock: exclusive excludes overlapping ranges only") {
  RangeLock l;
  Req x, s1, s2, e2;
  REQUIRE(x.acquire(l, 10, 10, Mode::kExclusive));      // [10, 20)
  CHECK(s1.acquire(l, 0, 10, Mode::kShared));           // [0, 10): adjacent, no overlap
  CHECK(s2.acquire(l, 20, 5, Mode::kShared));           // [20, 25)
  CHECK_FALSE(e2.acquire(l, 19, 2, Mode::kExclusive));  // overlaps x at 19
  CHECK(l.waiting() == 1);
  l.release(s1.h);
  CHECK(e2.grants == 0);  // still blocked by x (and s2 at 20)
  l.release(x.h);
  CHECK(e2.grants == 0);  // s2 holds 20
  l.release(s2.h);
  CHECK(e2.grants == 1);  // no IoContext on this thread: granted inline
  CHECK(e2.h.granted);
  CHECK(l.waiting() == 0);
  l.release(e2.h);
  CHECK(l.held() == 0);
}

TEST_CASE("RangeLock: a shared request queues behind an overlapping exclusive waiter") {
  RangeLock l;
  std::vector<int> order;
  Req s1, e, s2, s3;
  e.order = s2.order = s3.order = &order;
  e.id = 1;
  s2.id = 2;
  s3.id = 3;
  REQUIRE(s1.acquire(l, 0, 8, Mode::kShared));
  CHECK_FALSE(e.acquire(l, 4, 8, Mode::kExclusive));  // waits for s1
  // Would be compatible with s1, but overlaps the waiting exclusive request: behind it, so a
  // stream of writes cannot starve COMPARE AND WRITE.
  CHECK_FALSE(s2.acquire(l, 6, 1, Mode::kShared));
  CHECK(s3.acquire(l, 100, 1, Mode::kShared));  // elsewhere: no wait
  CHECK(s3.grants == 0);                        // granted by acquire() itself: no callback
  CHECK(l.waiting() == 2);
  l.release(s1.h);
  CHECK(order == std::vector<int>{1});  // e; s2 overlaps it
  l.release(e.h);
  CHECK(order == std::vector<int>{1, 2});
  l.release(s2.h);
  l.release(s3.h);
  CHECK(l.held() == 0);
}

TEST_CASE("RangeLock: waiters are granted in order, several at once when compatible") {
  RangeLock l;
  std::vector<int> order;
  Req e1, a, b, e2;
  for (Req* r : {&a, &b, &e2}) r->order = &order;
  a.id = 1;
  b.id = 2;
  e2.id = 3;
  REQUIRE(e1.acquire(l, 0, 100, Mode::kExclusive));
  CHECK_FALSE(a.acquire(l, 0, 10, Mode::kShared));
  CHECK_FALSE(b.acquire(l, 5, 10, Mode::kShared));
  CHECK_FALSE(e2.acquire(l, 0, 1, Mode::kExclusive));
  l.release(e1.h);
  CHECK(order == std::vector<int>{1, 2});  // both shared ones; e2 waits for them
  CHECK(l.held() == 2);
  l.release(a.h);
  CHECK(order == std::vector<int>{1, 2, 3});  // e2 wants [0, 1): b's [5, 15) is no obstacle
  l.release(b.h);
  l.release(e2.h);
  CHECK(l.held() == 0);
  CHECK(l.waiting() == 0);
}

TEST_CASE("RangeLock: an inline grant may release at once (holder reused)") {
  RangeLock l;
  struct Chain {
    RangeLock* l;
    RangeLock::Holder h;
    int grants = 0;
    static void on_grant(void* arg) {
      auto* c = static_cast<Chain*>(arg);
      ++c->grants;
      c->l->release(c->h);  // completes inside the grant, like a synchronous backend
    }
  };
  Req first;
  REQUIRE(first.acquire(l, 0, 1, Mode::kExclusive));
  Chain c1{&l, {}, 0}, c2{&l, {}, 0};
  CHECK_FALSE(l.acquire(c1.h, 0, 1, Mode::kExclusive, Chain::on_grant, &c1));
  CHECK_FALSE(l.acquire(c2.h, 0, 1, Mode::kExclusive, Chain::on_grant, &c2));
  l.release(first.h);
  CHECK(c1.grants == 1);
  CHECK(c2.grants == 1);
  CHECK(l.held() == 0);
  CHECK(l.waiting() == 0);
}

TEST_CASE("RangeLock: a waiter is resumed on its own thread through its IoContext") {
  RangeLock l;
  Req holder;
  REQUIRE(holder.acquire(l, 0, 10, Mode::kExclusive));

  std::atomic<int> phase{0};
  std::atomic<std::thread::id> granted_on{};
  struct Waiter {
    RangeLock::Holder h;
    std::atomic<std::thread::id>* where;
    std::atomic<int>* phase;
    static void on_grant(void* arg) {
      auto* w = static_cast<Waiter*>(arg);
      w->where->store(std::this_thread::get_id());
      w->phase->store(3);
    }
  } w{{}, &granted_on, &phase};

  std::thread::id waiter_id;
  std::thread t([&] {
    auto ctx = storage::IoContext::create(8);
    REQUIRE(ctx);
    (*ctx)->make_current();
    waiter_id = std::this_thread::get_id();
    CHECK_FALSE(l.acquire(w.h, 5, 1, Mode::kShared, Waiter::on_grant, &w));
    phase.store(1);
    // The reactor loop, reduced: wait for the eventfd, run what completed or was posted.
    while (phase.load() != 3) {
      pollfd pfd{(*ctx)->event_fd(), POLLIN, 0};
      ::poll(&pfd, 1, 1000);
      (*ctx)->reap();
    }
    storage::IoContext::clear_current();
  });
  while (phase.load() != 1) std::this_thread::yield();
  l.release(holder.h);  // from this thread: must not run the waiter here
  CHECK(granted_on.load() != std::this_thread::get_id());
  t.join();
  CHECK(granted_on.load() == waiter_id);
  CHECK(w.h.granted);
  l.release(w.h);
  CHECK(l.held() == 0);
}

TEST_CASE("RangeLock: many threads, exclusive sections never overlap") {
  RangeLock l;
  constexpr int kThreads = 4;
  constexpr int kIters = 2000;
  constexpr uint64_t kBlocks = 10;
  std::atomic<int> excl[kBlocks] = {};
  std::atomic<int> shared[kBlocks] = {};
  std::atomic<bool> overlap{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      // No IoContext: a waiter is granted inline by the releasing thread; spin until then.
      for (int i = 0; i < kIters; ++i) {
        struct W {
          RangeLock::Holder h;
          std::atomic<bool> go{false};
          static void on_grant(void* arg) { static_cast<W*>(arg)->go.store(true); }
        } w;
        const Mode m = (i + t) % 3 == 0 ? Mode::kExclusive : Mode::kShared;
        const uint64_t lba = static_cast<uint64_t>(i % 7);
        if (l.acquire(w.h, lba, 3, m, W::on_grant, &w)) w.go = true;
        while (!w.go.load()) std::this_thread::yield();
        for (uint64_t b = lba; b < lba + 3; ++b) {
          if (m == Mode::kExclusive) {
            if (excl[b].fetch_add(1) != 0 || shared[b].load() != 0) overlap = true;
          } else {
            shared[b].fetch_add(1);
            if (excl[b].load() != 0) overlap = true;
          }
        }
        std::this_thread::yield();
        for (uint64_t b = lba; b < lba + 3; ++b) (m == Mode::kExclusive ? excl : shared)[b]--;
        l.release(w.h);
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK_FALSE(overlap.load());
  CHECK(l.held() == 0);
  CHECK(l.waiting() == 0);
}

}  // namespace
}  // namespace zuma::scsi
