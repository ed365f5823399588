#include "scsi/unit_attention.hh"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace zuma::scsi {
namespace {

TEST_CASE("nothing pending for a new nexus; no power-on condition") {
  UnitAttentions ua;
  ua.touch(7);
  CHECK(ua.known_count() == 1);
  CHECK_FALSE(ua.pending(7));
  CHECK_FALSE(ua.take(7).has_value());
  CHECK_FALSE(ua.take(99).has_value());
}

TEST_CASE("establish_all reaches the known nexuses, except the one named") {
  UnitAttentions ua;
  ua.touch(1);
  ua.touch(2);
  ua.touch(3);
  ua.establish_all(Reason::kUaModeParametersChanged, 2);
  CHECK(ua.take(1) == Reason::kUaModeParametersChanged);
  CHECK_FALSE(ua.take(1).has_value());  // reported once
  CHECK_FALSE(ua.take(2).has_value());
  CHECK(ua.take(3) == Reason::kUaModeParametersChanged);
  // A nexus first seen afterwards gets nothing.
  ua.touch(4);
  CHECK_FALSE(ua.take(4).has_value());
}

TEST_CASE("queue order, duplicates, reset precedence, capacity") {
  UnitAttentions ua;
  ua.establish(5, Reason::kUaModeParametersChanged);
  ua.establish(5, Reason::kUaCapacityDataChanged);
  ua.establish(5, Reason::kUaModeParametersChanged);  // duplicate
  CHECK(ua.take(5) == Reason::kUaModeParametersChanged);
  CHECK(ua.take(5) == Reason::kUaCapacityDataChanged);
  CHECK_FALSE(ua.take(5).has_value());

  ua.establish(5, Reason::kUaModeParametersChanged);
  ua.establish(5, Reason::kUaBusDeviceResetOccurred);  // replaces the queue
  CHECK(ua.take(5) == Reason::kUaBusDeviceResetOccurred);
  CHECK_FALSE(ua.take(5).has_value());

  // Full queue drops the newcomer; distinct reasons up to the cap.
  const Reason r[] = {Reason::kUaModeParametersChanged, Reason::kUaCapacityDataChanged,
                      Reason::kUaInquiryDataChanged, Reason::kUaReportedLunsDataChanged};
  for (Reason x : r) ua.establish(6, x);
  int n = 0;
  while (ua.take(6)) ++n;
  CHECK(n == 4);
}

TEST_CASE("forget drops the nexus and its conditions") {
  UnitAttentions ua;
  ua.establish(1, Reason::kUaBusDeviceResetOccurred);
  ua.establish(2, Reason::kUaBusDeviceResetOccurred);
  ua.forget(1);
  CHECK(ua.known_count() == 1);
  CHECK_FALSE(ua.take(1).has_value());
  CHECK(ua.take(2) == Reason::kUaBusDeviceResetOccurred);
  // After forgetting, establish_all does not resurrect it.
  ua.establish_all(Reason::kUaBusDeviceResetOccurred);
  CHECK_FALSE(ua.take(1).has_value());
}

TEST_CASE("many nexuses, churn and the id that cannot be cached") {
  UnitAttentions ua;
  for (uint64_t id = 0; id < 1000; ++id) ua.touch(id);
  ua.touch(~uint64_t{0});
  CHECK(ua.known_count() == 1001);
  for (uint64_t id = 0; id < 1000; id += 2) ua.forget(id);
  for (uint64_t id = 5000; id < 5300; ++id) ua.touch(id);
  for (uint64_t id = 5000; id < 5300; ++id) ua.forget(id);
  ua.establish_all(Reason::kUaBusDeviceResetOccurred);
  for (uint64_t id = 0; id < 1000; ++id) {
    CAPTURE(id);
    CHECK(ua.take(id).has_value() == (id % 2 == 1));
    ua.touch(id);  // re-registers the forgotten ones without a condition
  }
  CHECK(ua.take(~uint64_t{0}) == Reason::kUaBusDeviceResetOccurred);
  CHECK(ua.known_count() == 1001);
}

TEST_CASE("concurrent touch/take with establish_all") {
  UnitAttentions ua;
  std::atomic<bool> stop{false};
  std::atomic<int> seen{0};
  std::atomic<int> registered{0};
  std::vector<std::thread> threads;
  for (uint64_t id = 1; id <= 4; ++id) {
    threads.emplace_back([&, id] {
      ua.touch(id);
      registered.fetch_add(1);
      while (!stop.load()) {
        ua.touch(id);
        if (ua.take(id)) seen.fetch_add(1);
      }
    });
  }
  // Every nexus is known before the first establish_all, or (on a slow,
  // sanitized run) all 200 could land before any thread has started.
  while (registered.load() < 4) std::this_thread::yield();
  for (int i = 0; i < 200; ++i) {
    ua.establish_all(Reason::kUaModeParametersChanged);
    std::this_thread::yield();
  }
  stop.store(true);
  for (auto& t : threads) t.join();
  for (uint64_t id = 1; id <= 4; ++id) {
    while (ua.take(id)) seen.fetch_add(1);
  }
  CHECK(seen.load() > 0);
  CHECK(seen.load() <= 4 * 200);
}

}  // namespace
}  // namespace zuma::scsi

namespace zuma::scsi {
namespace {

TEST_CASE("a condition pending elsewhere does not hide or leak between nexuses") {
  UnitAttentions ua;
  ua.touch(1);
  ua.touch(2);
  ua.establish(1, Reason::kUaCapacityDataChanged);
  CHECK(ua.pending(1));
  CHECK_FALSE(ua.pending(2));
  CHECK_FALSE(ua.take(2).has_value());
  CHECK(ua.take(1) == Reason::kUaCapacityDataChanged);
  CHECK_FALSE(ua.pending(1));
  // An uncached id (~0) goes through the map.
  ua.establish(~uint64_t{0}, Reason::kUaInquiryDataChanged);
  CHECK(ua.pending(~uint64_t{0}));
  CHECK_FALSE(ua.take(1).has_value());
  CHECK(ua.take(~uint64_t{0}) == Reason::kUaInquiryDataChanged);
}

TEST_CASE("pending flags survive the cache rebuild") {
  UnitAttentions ua;
  // Churn enough to force rebuilds while conditions are queued.
  for (uint64_t id = 0; id < 150; ++id) ua.touch(id);
  ua.establish_all(Reason::kUaModeParametersChanged);
  for (uint64_t round = 0; round < 5; ++round) {
    for (uint64_t id = 1000 + round * 100; id < 1040 + round * 100; ++id) ua.touch(id);
    for (uint64_t id = 1000 + round * 100; id < 1040 + round * 100; ++id) ua.forget(id);
  }
  for (uint64_t id = 0; id < 150; ++id) {
    CAPTURE(id);
    CHECK(ua.pending(id));
    CHECK(ua.take(id) == Reason::kUaModeParametersChanged);
    CHECK_FALSE(ua.pending(id));
  }
}

}  // namespace
}  // namespace zuma::scsi
