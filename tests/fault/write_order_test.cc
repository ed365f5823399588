// The write-order checker (tests/fault/write_order.hh) on synthetic images: it accepts every
// prefix of an order its ticks allow and finds a hole, a missing acknowledged write, a torn
// or misplaced block and a stray change.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/fault/write_order.hh"

using namespace zuma::test::wo;

namespace {

const std::vector<uint64_t> kBlocks = {64, 32};

// Issue and acknowledge `n` writes one after another (ticks 1, 2, 3, ...), or `overlap` at a
// time (issued together, then acknowledged together).
void run(Plan& p, size_t n, size_t overlap = 1) {
  for (size_t i = 0; i < n; i += overlap) {
    const size_t end = std::min(n, i + overlap);
    for (size_t k = i; k < end; ++k) p.writes[k].issued = ++p.tick;
    for (size_t k = i; k < end; ++k) p.writes[k].acked = ++p.tick;
  }
}

std::vector<std::string> zeros() {
  return {std::string(kBlocks[0] * kBs, '\0'), std::string(kBlocks[1] * kBs, '\0')};
}

// `base` with the writes `which` of `p` stamped in.
std::vector<std::string> with(const Plan& p, std::vector<std::string> base,
                              const std::vector<size_t>& which) {
  for (size_t i : which) {
    const Write& w = p.writes[i];
    auto* b = reinterpret_cast<uint8_t*>(base[w.lun].data()) + w.lba * kBs;
    stamp(std::span<uint8_t>(b, kBs), p, w);
  }
  return base;
}

std::vector<size_t> upto(size_t k) {
  std::vector<size_t> v;
  for (size_t i = 0; i < k; ++i) v.push_back(i);
  return v;
}

}  // namespace

TEST_CASE("a prefix passes, a hole is found") {
  std::mt19937_64 rng(1);
  Plan p(7, kBlocks, 40, rng);
  run(p, 40);
  const auto before = zeros();
  for (size_t k : {0, 1, 17, 40}) {
    const Verdict v = check_prefix(p, before, with(p, before, upto(k)), false);
    CHECK_MESSAGE(v.error.empty(), k << ": " << v.error);
    CHECK(v.present == k);
  }
  // Writes 0..19 and 21: write 20 was acknowledged before 21 was issued.
  auto holed = upto(20);
  holed.push_back(21);
  const Verdict v = check_prefix(p, before, with(p, before, holed), false);
  CHECK(v.error.find("a hole: write 21") == 0);
  // Everything but the very first write.
  auto late = upto(40);
  late.erase(late.begin());
  CHECK(check_prefix(p, before, with(p, before, late), false).error.find("a hole") == 0);
}

TEST_CASE("writes in flight together may land in any order, not across an acknowledgement") {
  std::mt19937_64 rng(2);
  Plan p(1, kBlocks, 12, rng);
  run(p, 12, 4);  // 0-3 together, then 4-7, then 8-11
  const auto before = zeros();
  CHECK(check_prefix(p, before, with(p, before, {1, 3}), false).error.empty());
  CHECK(check_prefix(p, before, with(p, before, {0, 1, 2, 3, 6}), false).error.empty());
  CHECK(check_prefix(p, before, with(p, before, {0, 1, 3, 6}), false).error.find("a hole") == 0);
}

TEST_CASE("every acknowledged write, when asked; old values, torn and stray blocks") {
  std::mt19937_64 rng(3);
  Plan p(2, kBlocks, 30, rng);
  run(p, 20);
  p.writes[20].issued = ++p.tick;  // in flight: may be there or not
  // The previous cycle's image as the old values.
  std::mt19937_64 rng0(4);
  Plan old(1, kBlocks, 60, rng0);
  run(old, 60);
  const auto before = with(old, zeros(), upto(60));
  CHECK(check_prefix(p, before, with(p, before, upto(20)), true).error.empty());
  CHECK(check_prefix(p, before, with(p, before, upto(21)), true).error.empty());
  CHECK(check_prefix(p, before, with(p, before, upto(19)), true).error.find("write 19 was") == 0);
  // A never issued write cannot be there.
  CHECK(check_prefix(p, before, with(p, before, upto(22)), false).error.find("never issued") !=
        std::string::npos);
  // A torn block: the stamp's second half lost.
  auto torn = with(p, before, upto(5));
  const Write& w = p.writes[3];
  std::fill_n(torn[w.lun].begin() + std::ptrdiff_t(w.lba * kBs + kBs / 2), kBs / 2, '\0');
  CHECK(check_prefix(p, before, torn, false).error.find("bad checksum") != std::string::npos);
  // A block no write of this round went to changed.
  auto stray = with(p, before, upto(5));
  for (uint32_t lun = 0; lun < 2; ++lun)
    for (uint64_t b = 0; b < kBlocks[lun]; ++b) {
      bool planned = false;
      for (size_t i = 0; i < p.count; ++i)
        planned |= p.writes[i].lun == lun && p.writes[i].lba == b;
      if (!planned) {
        stray[lun][b * kBs] ^= 1;
        CHECK(check_prefix(p, before, stray, false).error.find("no write went there") !=
              std::string::npos);
        return;
      }
    }
  FAIL("no unplanned block");
}

TEST_CASE("with the primary's log order: the present writes must be exactly its first ones") {
  std::mt19937_64 rng(5);
  Plan p(3, kBlocks, 12, rng);
  run(p, 12, 4);  // 0-3 together, then 4-7, then 8-11
  const auto before = zeros();
  GroupOrder order{{2, 0, 3, 1, 4, 5, 6, 7, 8, 9, 10, 11}, p.tick.load()};
  Verdict v = check_prefix(p, before, with(p, before, {2, 0}), false, &order);
  CHECK_MESSAGE(v.error.empty(), v.error);
  CHECK(v.in_log == 12);
  // Allowed by the ticks alone (0-3 were in flight together), not by the log.
  v = check_prefix(p, before, with(p, before, {0, 1}), false, &order);
  CHECK(v.error.find("not a prefix of the primary's log: write 2 (position 0)") == 0);
  // A log that puts a write after one issued once it was acknowledged.
  GroupOrder wrong{{0, 1, 2, 4, 3, 5, 6, 7, 8, 9, 10, 11}, p.tick.load()};
  v = check_prefix(p, before, with(p, before, {0}), false, &wrong);
  CHECK(v.error.find("the primary's log has write 3 after write 4") == 0);
  // An acknowledged write missing from the log, or a present one.
  GroupOrder short_log{{0, 1, 2, 3}, p.tick.load()};
  v = check_prefix(p, before, with(p, before, {0}), false, &short_log);
  CHECK(v.error.find("write 4 was acknowledged but is not in the primary's log") == 0);
  GroupOrder early{{0, 1, 2, 3}, 8};  // read when only 0-3 were acknowledged
  v = check_prefix(p, before, with(p, before, upto(5)), false, &early);
  CHECK(v.error.find("write 4 is on the secondary but not in the primary's log") == 0);
  CHECK(check_prefix(p, before, with(p, before, upto(4)), false, &early).error.empty());
}
