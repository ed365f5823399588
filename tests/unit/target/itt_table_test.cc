#include "target/itt_table.hh"

#include <doctest/doctest.h>

#include <map>
#include <random>

using zuma::target::IttTable;

TEST_CASE("insert, find, erase, duplicates") {
  IttTable<int> t;
  int a = 1, b = 2;
  t.reserve(4);
  CHECK(t.insert(7, &a));
  CHECK_FALSE(t.insert(7, &b));
  CHECK(t.insert(0xffffffff, &b));
  CHECK(t.find(7) == &a);
  CHECK(t.find(0xffffffff) == &b);
  CHECK(t.find(8) == nullptr);
  CHECK(t.size() == 2);
  CHECK(t.erase(7));
  CHECK_FALSE(t.erase(7));
  CHECK(t.find(7) == nullptr);
  CHECK(t.size() == 1);
}

TEST_CASE("randomized against std::map, with clustering keys") {
  IttTable<int> t;
  t.reserve(64);
  std::map<uint32_t, int*> model;
  std::vector<int> values(1 << 16);
  std::mt19937 rng(42);
  for (int step = 0; step < 200000; ++step) {
    // Keys from a small range collide and cluster, exercising backward-shift deletion.
    const uint32_t key = (rng() % 3 == 0) ? rng() : rng() % 256;
    int* v = &values[rng() % values.size()];
    switch (rng() % 3) {
      case 0:
        if (model.size() < 100) CHECK(t.insert(key, v) == model.emplace(key, v).second);
        break;
      case 1:
        CHECK(t.erase(key) == (model.erase(key) == 1));
        break;
      default: {
        auto it = model.find(key);
        CHECK(t.find(key) == (it == model.end() ? nullptr : it->second));
      }
    }
    REQUIRE(t.size() == model.size());
  }
  size_t seen = 0;
  t.for_each([&](int* v) {
    (void)v;
    ++seen;
  });
  CHECK(seen == model.size());
  for (auto& [k, v] : model) CHECK(t.find(k) == v);
}
