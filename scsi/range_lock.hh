// Per-LU LBA range lock: what makes COMPARE AND WRITE, WRITE ATOMIC, ORWRITE and WRITE AND
// VERIFY atomic with respect to every other command that modifies the same blocks
// (SBC-4 COMPARE AND WRITE: the read, compare and write are one uninterrupted operation;
// SBC-4 atomic writes).
//
// Modes. Plain writes (WRITE, WRITE SAME, UNMAP) take their range shared: they need not
// exclude each other (SAM-5 leaves overlapping SIMPLE tasks unordered). Read-modify-write
// commands take theirs exclusive: no other writer, shared or exclusive, overlaps them.
// Reads take nothing: a READ overlapping a multi-block COMPARE AND WRITE or WRITE ATOMIC
// may see it half applied, as with LIO; only writers are serialised.
//
// Cost. acquire()/release() take a spinlock whose critical section is O(1) for a shared
// range when no exclusive holder or waiter exists on the LU (the common case): two list
// operations and an empty-list check. Exclusive requests scan the held ranges. Holders
// are intrusive (they live in the task's device_scratch): no allocation.
//
// Threads. A LU is used from several reactor threads; each task runs, submits its backend
// I/O and completes on the thread that owns its connection (task.hh, backend.hh). The lock
// is held across the backend I/O and released from the completion, on the holder's
// thread. A request that has to wait is queued; release() grants it on the releasing
// thread but does not run it there (its I/O would complete on the wrong thread): it posts
// the holder to the IoContext of the thread that queued it (storage::IoContext::post),
// which runs its on_grant from that reactor's loop. A thread with no IoContext (unit tests,
// tools) gets on_grant inline from release() instead.
//
// No deadlock: a task holds at most one range and never waits while holding one; holders
// only wait for their own backend I/O. Waiters are granted first come first served among
// overlapping ranges: a new shared request queues behind an overlapping exclusive waiter,
// so exclusive requests are not starved by a stream of writes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "storage/io_context.hh"

namespace zuma::scsi {

class RangeLock {
 public:
  enum class Mode : uint8_t { kShared, kExclusive };

  // One request for a range. Owned by the caller (placed in its task's scratch), which
  // must keep it alive and untouched from acquire() until after release(); private to
  // the lock meanwhile.
  struct Holder {
    uint64_t begin = 0;  // [begin, end) in logical blocks
    uint64_t end = 0;
    Holder* prev = nullptr;
    Holder* next = nullptr;
    Holder* grant_next = nullptr;        // release(): the holders it granted
    storage::IoContext* home = nullptr;  // the waiter's thread, or nullptr: inline
    storage::PostedWork post;            // on_grant and its argument
    Mode mode = Mode::kShared;
    bool granted = false;
  };

  RangeLock() = default;
  RangeLock(const RangeLock&) = delete;
  RangeLock& operator=(const RangeLock&) = delete;

  // Requests [lba, lba + blocks) (blocks >= 1) in `mode`. Returns true when granted now;
  // false when queued, in which case on_grant(arg) runs once the range is free: later, on
  // this thread (through its IoContext), or inline inside the release() that frees it when
  // this thread has no IoContext. Either way the caller must not touch h (or arg) after a
  // false return until on_grant runs.
  bool acquire(Holder& h, uint64_t lba, uint64_t blocks, Mode mode, void (*on_grant)(void* arg),
               void* arg);

  // Gives up a granted range; grants the waiters it was blocking (see acquire()). h may be
  // reused as soon as this returns.
  void release(Holder& h);

  // For tests and metrics: ranges held and requests waiting.
  size_t held() const;
  size_t waiting() const;

 private:
  struct List {
    Holder* head = nullptr;
    Holder* tail = nullptr;
    size_t size = 0;
    void push_back(Holder* h);
    void remove(Holder* h);
  };

  void lock() const;
  void unlock() const;
  List& held_list(Mode m) { return m == Mode::kShared ? shared_ : exclusive_; }
  // Whether `h` may be granted now, given the holders and the waiters queued before `stop`
  // (nullptr: all waiters).
  bool can_grant(const Holder& h, const Holder* stop) const;

  mutable std::atomic<bool> spin_{false};
  List shared_;     // granted shared ranges
  List exclusive_;  // granted exclusive ranges
  List waiters_;    // queued requests, oldest first
  size_t exclusive_waiters_ = 0;
};

}  // namespace zuma::scsi
