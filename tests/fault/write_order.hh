// Write-order verifier for replication fault tests (issue 8): sequence-stamped blocks written
// across the LUs of a consistency group by concurrent writers, and the check that a
// secondary's image holds a prefix of the primary's group order, never a hole.
//
// The primary's group order is not observable from outside, but its documented contract is
// (docs/REPLICATION.md "The write path"): a write acknowledged before another was submitted
// has the smaller sequence number. Every write records a tick (one global counter) when it
// is issued and when its GOOD status is seen, so "A acknowledged before B was issued" is
// ack(A) < issue(B), and then A precedes B in the group order. A prefix of the group order
// therefore never holds B without A. The check is that rule over every pair: sound (it can
// only fail on a real hole) and exact up to the writes that were in flight together (at
// most writers x depth).
//
// Each write of a Plan goes to its own block, so every block the plan touches holds either
// its value before the plan ("before") or exactly that write's stamp; anything else
// (another value, a torn or misplaced stamp) is reported too.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace zuma::test::wo {

inline constexpr uint32_t kBs = 512;

struct Write {
  uint32_t id = 0;  // index in the plan
  uint32_t lun = 0;
  uint64_t lba = 0;
  std::atomic<uint64_t> issued{0};  // tick when submitted (0: not yet)
  std::atomic<uint64_t> acked{0};   // tick when seen GOOD (0: not acknowledged)
};

// One round of writes to distinct blocks of the LUs (their sizes in blocks).
struct Plan {
  Plan(uint64_t cycle, std::span<const uint64_t> lun_blocks, size_t count, std::mt19937_64& rng);
  uint64_t cycle;
  std::vector<uint64_t> lun_blocks;
  std::unique_ptr<Write[]> writes;
  size_t count;
  std::atomic<size_t> next{0};  // the next write to issue
  std::atomic<uint64_t> tick{0};
};

// The block write `w` of `plan` stores: a header (magic, cycle, id, LU, LBA), bytes derived
// from them, and a checksum of the rest.
void stamp(std::span<uint8_t> block, const Plan& plan, const Write& w);

struct Verdict {
  std::string error;  // empty: a prefix
  size_t present = 0, acked = 0, acked_present = 0, issued = 0;
  size_t in_log = 0;  // with a GroupOrder: the plan's writes in the primary's log
  std::string summary() const;
};

// The primary's group order, read from its log (docs/REPLICATION.md "The log").
struct GroupOrder {
  std::vector<uint32_t> ids;  // the plan's writes found in the log, in sequence order
  uint64_t tick = 0;          // the plan's tick just before the log was read
};

// Reads the group's log at `log_path` (a copy in `scratch_dir`, as a log being appended may
// be read: a torn last batch is cut). Every record from `from_seq` on (the log's next
// sequence number before the plan started) must still be kept. Error: a message.
std::optional<GroupOrder> group_order(const Plan& plan, const std::string& log_path,
                                      const std::string& scratch_dir, uint64_t from_seq,
                                      std::string* error);

// `before` and `now` hold each LU's image (the LUs in plan order). With `all_acked`, every
// acknowledged write must be present too (a sync link). With `order` (read after `now`),
// also: the log's order agrees with the ticks, holds every write acknowledged before it was
// read, and the present writes are exactly its first ones.
Verdict check_prefix(const Plan& plan, std::span<const std::string> before,
                     std::span<const std::string> now, bool all_acked,
                     const GroupOrder* order = nullptr);

// Concurrent writers: `writers` libiscsi sessions to `portal`, each `depth` writes in flight
// (libiscsi's async API), taking the plan's writes in order until it is exhausted or stop().
class Load {
 public:
  Load(std::string portal, std::string iqn, Plan& plan, int writers, int depth);
  ~Load();  // stop()
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;
  // Waits for the writers; the first error of a writer, if any ("" otherwise).
  std::string stop();
  // Waits (up to `seconds`) until at least `n` writes were acknowledged, or the plan is
  // exhausted, or a writer failed; the number acknowledged.
  uint64_t wait_acked(uint64_t n, double seconds = 30);
  uint64_t acked() const { return acked_.load(); }
  void expect_failures() { failures_ok_.store(true); }  // the primary is about to die
  // Each writer submits at most one write per `d` (0: as fast as its depth allows).
  void pace(std::chrono::microseconds d) { pace_us_.store(d.count()); }

 private:
  void writer(int index);

  std::string portal_, iqn_;
  Plan& plan_;
  int depth_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failures_ok_{false};
  std::atomic<int64_t> pace_us_{0};
  std::atomic<uint64_t> acked_{0};
  std::atomic<int> running_{0};
  std::vector<std::string> errors_;
  std::vector<std::thread> threads_;
};

}  // namespace zuma::test::wo
