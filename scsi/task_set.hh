// Task sets and task management inside the device server (SAM-5 task sets, task attributes,
// task management functions).
//
// Each I_T nexus has its own task set on each LU (the control mode page reports TST=001b,
// SPC-5 Control mode page): ordering and CLEAR TASK SET concern only the nexus's own tasks,
// so a task set is used by the one thread that executes the nexus's tasks (task.hh: Nexus),
// and no task of one session ever waits for another session's task. What crosses threads is
// abort: LOGICAL UNIT RESET and PREEMPT AND ABORT abort the tasks of other nexuses.
//
// Task attributes (SAM-5 task attributes), with QUEUE ALGORITHM MODIFIER 1 (unrestricted
// reordering of SIMPLE tasks):
//   HEAD OF QUEUE  starts at once;
//   ORDERED        starts when every older task of the set has completed; the SIMPLE and
//                  ORDERED tasks that arrive after it wait until it has completed;
//   SIMPLE         starts at once unless an older ORDERED task has not completed;
//   ACA            treated as SIMPLE (NACA=1 is refused at the CDB, so no ACA exists).
//
// Abort (SAM-5 ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET; SPC-5 PREEMPT
// AND ABORT): a task that has not started completes without running; one already running
// (its backend request cannot be recalled) completes when its request does. Either way the
// device server sets task.aborted and, when the control mode page's TAS bit is set and
// another I_T nexus caused the abort, status TASK ABORTED (task.hh).
//
// Threading: every member takes the set's mutex; it is uncontended except while another
// thread aborts. The tasks a completion lets start are started by the thread completing it,
// which is the nexus's own thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "scsi/task.hh"

namespace zuma::scsi {

// Counts down the tasks an abort waits for; `done` runs once, when the last of them has
// completed (on that task's thread, after its on_complete), or at once when there were none.
class AbortWaiter {
 public:
  explicit AbortWaiter(std::function<void()> done) : done_(std::move(done)) {}
  void add(size_t n) { remaining_.fetch_add(n, std::memory_order_relaxed); }
  void release(size_t n = 1) {
    if (remaining_.fetch_sub(n, std::memory_order_acq_rel) == n && done_) done_();
  }

 private:
  std::atomic<size_t> remaining_{1};  // 1: held by the aborter until it has counted all
  std::function<void()> done_;
};

// What identifies an I_T nexus for reservations (SPC-5 I_T nexus, TransportIDs).
struct NexusIdentity {
  std::string initiator_port;  // "iqn...,i,0x<ISID>"
  std::string initiator_name;  // "iqn..."
  std::string target_name;     // the SCSI target device: "iqn..."
  uint16_t relative_port_id = 0;

  static NexusIdentity of(const Nexus& n) {
    return {n.initiator_port, n.initiator_name, n.target_name, n.relative_port_id};
  }
};

// The task set of one I_T nexus on one LU.
class NexusTasks : public std::enable_shared_from_this<NexusTasks> {
 public:
  NexusTasks(uint64_t nexus_id, NexusIdentity identity)
      : id_(nexus_id), identity_(std::move(identity)) {}
  NexusTasks(const NexusTasks&) = delete;
  NexusTasks& operator=(const NexusTasks&) = delete;

  uint64_t nexus_id() const { return id_; }
  const NexusIdentity& identity() const { return identity_; }

  // Adds `task` (its task_set link must be clear; lu/table/info are what a waiting task
  // needs to start). Returns true when it may start now; false when it waits, to be
  // started by the completion of an older task (take_ready()).
  bool enter(Task& task);
  // Removes a completing task. Sets *aborted / *by_other from its abort state, and counts
  // it against the abort waiters that wait for it (`fire` receives one entry per waiter to
  // release, after on_complete). Tasks this completion lets start are queued for
  // take_ready(); returns true when some are queued.
  bool leave(Task& task, bool* aborted, bool* by_other,
             std::vector<std::shared_ptr<AbortWaiter>>* fire);
  // Next task allowed to start, or nullptr. Only one caller drains at a time: returns
  // nullptr to a nested caller while another (further up the same thread's stack) drains.
  Task* take_ready(bool* outermost);
  void end_drain();

  // Aborts every task of the set (`by`: the nexus that asked); `waiter`, when given, waits
  // for each of them. Returns the number of tasks.
  size_t abort_all(uint64_t by, const std::shared_ptr<AbortWaiter>& waiter);
  // Aborts one task (ABORT TASK); false when it is not in this set.
  bool abort_one(Task& task, uint64_t by);

  // Tasks in the set (for tests and diagnostics).
  size_t size() const;

  // EXTENDED COPY (LID1) operations of this nexus on this LU, for RECEIVE COPY RESULTS
  // (extended_copy.cc). status: SPC-5 COPY OPERATION STATUS (00h in progress, 01h completed
  // without errors, 02h completed with errors).
  struct CopyRecord {
    uint8_t list_id = 0;
    uint8_t status = 0;
    uint16_t segments = 0;  // segments processed
    uint64_t bytes = 0;     // bytes copied
    bool held = false;      // kept for RECEIVE COPY RESULTS (LIST ID USAGE 00b)
  };
  // Registers a new copy with list `id`; false when one with that id is in progress.
  bool copy_begin(uint8_t id, bool held);
  void copy_update(const CopyRecord& r);
  std::optional<CopyRecord> copy_record(uint8_t id) const;

  // Set when the LU has forgotten the nexus (nexus_lost); the nexus gets a new set if it
  // sends another command (and keeps the old one until it is destroyed: tasks may remain).
  bool detached() const { return detached_.load(std::memory_order_acquire); }
  void detach() { detached_.store(true, std::memory_order_release); }

  // The reservation verdict for this nexus, cached for the version of the LU's reservation
  // state it was computed for (Reservations::version()). Used only by the thread that starts
  // the nexus's tasks, so no lock.
  struct PrVerdictCache {
    uint64_t version = ~uint64_t{0};
    uint8_t verdict = 0;  // Reservations::Verdict bits
  };
  PrVerdictCache& pr_cache() { return pr_cache_; }

 private:
  void unlink(Task& t);
  void queue_startable();

  struct WaiterReg {
    uint64_t seq_limit;  // waits for the tasks entered before this sequence number
    size_t count;        // how many of them are still in the set
    std::shared_ptr<AbortWaiter> waiter;
  };

  const uint64_t id_;
  const NexusIdentity identity_;
  mutable std::mutex mu_;
  Task* head_ = nullptr;  // in-flight tasks, oldest first
  Task* tail_ = nullptr;
  size_t count_ = 0;
  size_t waiting_ = 0;  // not started yet
  size_t ordered_ = 0;  // ORDERED tasks in the set
  uint64_t next_seq_ = 1;
  Task* ready_head_ = nullptr;  // allowed to start, not started yet
  Task* ready_tail_ = nullptr;
  bool draining_ = false;
  std::vector<WaiterReg> waiters_;
  std::vector<CopyRecord> copies_;  // oldest first, at most kMaxCopyRecords
  static constexpr size_t kMaxCopyRecords = 16;
  std::atomic<bool> detached_{false};
  PrVerdictCache pr_cache_;
};

// The I_T nexuses a LU knows, with their task sets. Thread-safe.
class NexusRegistry {
 public:
  // The nexus's task set, created on its first command (the caller then learns it is new
  // through *created).
  std::shared_ptr<NexusTasks> attach(const Nexus& n, bool* created);
  // Forgets the nexus; its task set is detached. Returns the set (nullptr if unknown).
  std::shared_ptr<NexusTasks> detach(uint64_t nexus_id);
  // Every known nexus's task set.
  std::vector<std::shared_ptr<NexusTasks>> all() const;
  std::shared_ptr<NexusTasks> find(uint64_t nexus_id) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<NexusTasks>> sets_;
};

// Aborts every task of `set` on behalf of the I_T nexus `by` (NexusTasks::abort_all). When
// another nexus causes the abort and the control mode page's TAS bit is 0, the aborted tasks
// end without any response, so their nexus learns of it through COMMANDS CLEARED BY ANOTHER
// INITIATOR (2Fh/00h; SAM-5 aborting commands, SPC-5 Control mode page TAS). Returns the
// number of tasks.
size_t abort_tasks_of(LogicalUnit& lu, NexusTasks& set, uint64_t by,
                      const std::shared_ptr<AbortWaiter>& waiter);

// Starts a task that had to wait (defined in device_server.cc): the checks made when a task
// starts (unit attention, reservations), then its handler.
void start_task(Task& task);

// Called by finish() for a task in a task set: removes it, reports an abort through
// task.aborted / status, calls on_complete, then starts the tasks this lets start.
void complete_in_task_set(Task& task);

}  // namespace zuma::scsi
