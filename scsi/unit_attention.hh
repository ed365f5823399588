// Unit attention conditions of one logical unit, per I_T nexus (SAM-5 (unit attention condition),
// SPC-5 (unit attention)).
//
// The LU learns of an I_T nexus when the nexus first sends it a command (touch()); a
// condition established for "every I_T nexus" goes to the nexuses known at that moment.
// A nexus seen for the first time gets no power-on condition (a deliberate choice for
// now: libiscsi and most initiators do not expect one after login).
//
// Threading: every member may be called from any thread. touch() and take() on a known
// nexus with nothing pending take no lock and write no shared memory (the READ/WRITE
// fast path), whatever other nexuses have pending; everything else takes the mutex.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "scsi/sense.hh"

namespace zuma::scsi {

class UnitAttentions {
 public:
  // At most this many conditions queue per nexus; see establish().
  static constexpr size_t kMaxQueued = 8;

  // Registers the nexus (idempotent).
  void touch(uint64_t nexus);
  // Removes and returns the highest-priority pending condition of the nexus.
  std::optional<Reason> take(uint64_t nexus);
  // True if the nexus has a pending condition (does not clear it).
  bool pending(uint64_t nexus) const;

  // Establishes `ua` for the nexus (registering it). A reset condition (29h) goes first
  // and replaces the queue's other conditions (SAM-5 (unit attention condition): it reports the
  // reset that makes them moot); duplicates are not queued twice; when the queue is full the new
  // condition is dropped (the reset one replaces the queue instead).
  void establish(uint64_t nexus, Reason ua);
  // Establishes `ua` for every known nexus, except `except` when given.
  void establish_all(Reason ua, std::optional<uint64_t> except = std::nullopt);
  // Forgets the nexus and its conditions.
  void forget(uint64_t nexus);

  // For tests and diagnostics.
  size_t known_count() const;

 private:
  // Lock-free cache in front of the map: which nexuses are known, and whether each has a
  // condition queued. Open addressing with linear probing; keys stored as id+1 (0 =
  // empty, kTombstone = removed). Written only under mu_; the map is the truth, the
  // cache only lets the common case (known nexus, nothing pending) skip the lock.
  static constexpr size_t kSlots = 256;
  static constexpr size_t kLimit = kSlots * 3 / 4;  // keeps probe chains short
  static constexpr uint64_t kTombstone = ~uint64_t{0};
  int find_slot(uint64_t nexus) const;
  void cache_insert(uint64_t nexus, bool pending);
  void cache_erase(uint64_t nexus);
  void set_flag(uint64_t nexus, bool pending);
  void add_locked(uint64_t nexus, std::vector<Reason>& q, Reason ua);

  std::array<std::atomic<uint64_t>, kSlots> slots_{};
  std::array<std::atomic<bool>, kSlots> pending_{};
  size_t slots_used_ = 0;            // keys and tombstones; under mu_
  size_t cache_live_ = 0;            // keys; under mu_
  std::atomic<uint64_t> queued_{0};  // conditions queued over all nexuses
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::vector<Reason>> nexuses_;
};

}  // namespace zuma::scsi
