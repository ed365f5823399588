// Applying log records to a LU's backend, on a thread without an IoContext (where every
// backend completes inline): crash replay on the primary, and the secondary's apply.
#pragma once
#include <string>

#include "replication/ring_log.hh"
#include "storage/backend.hh"

namespace zuma::replication {

// Marks the current thread as replication's own writer (the secondary's apply and resync):
// a group's replication layer lets only such writes through while the group is secondary
// (initiator writes that slipped past the LU's write protection fail with -EROFS).
class ApplyScope {
 public:
  ApplyScope() : prev_(active_) { active_ = true; }
  ~ApplyScope() { active_ = prev_; }
  ApplyScope(const ApplyScope&) = delete;
  ApplyScope& operator=(const ApplyScope&) = delete;
  static bool active() { return active_; }

 private:
  bool prev_;
  static thread_local bool active_;
};

// Writes one record (kWrite, kDiscard, kWriteZeroes; a bookmark or verify marker is a no-op) to
// `b`. Returns "" or a message naming the record. A discard the backend cannot do is skipped
// (SBC-4: deallocation is advisory); write-zeroes falls back to writing zeros.
std::string apply_record(storage::Backend& b, const RecordView& v);

}  // namespace zuma::replication
