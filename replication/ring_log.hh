// The replication log of a consistency group (DESIGN.md: replication/): a fixed-size file
// used as a ring of checksummed batches of write records. Every record gets a group-wide
// sequence number; records of one batch are consecutive. The log keeps every record that
// some site link still needs; release(seq) gives back the space of records every link has.
// On-disk format: docs/REPLICATION.md ("The log").
//
//   [superblock slot 0, 4 KiB][superblock slot 1, 4 KiB][data area ...]
//   batch  = BatchHeader, nrecords x RecordHeader, the records' payloads in order
//
// Crash safety: append() writes a batch with one pwritev; sync() makes every appended batch
// durable (fdatasync). A batch is valid only if its magic, log id, checksum (XXH3-64 over
// the whole batch), sequence number (the next expected one) and writer epoch (not below
// the previous batch's) all check out, so open() stops at the first torn or stale batch
// and cuts the log there: a torn tail is never returned as data. Each open() raises the
// writer epoch (written to the superblock before any append), so a batch left beyond a
// cut by an earlier incarnation can never be taken for a successor of a new one.
//
// Threads: a RingLog is used by one thread at a time (the group's log writer); it does
// blocking file I/O and must not be called on a reactor thread.
#pragma once
#include <sys/uio.h>
#include <cstdint>
#include <chrono>
#include <deque>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>
#include "storage/unique_fd.hh"

namespace zuma::replication {

enum class RecordType : uint8_t {
  kWrite = 1,        // payload: the data written at `offset` of LU `lu`
  kDiscard = 2,      // no payload; `length` bytes at `offset` deallocated
  kWriteZeroes = 3,  // no payload; `length` bytes at `offset` read as zeros
  kBookmark = 4,     // payload: the bookmark's name (a consistent point of the group)
  // payload: a VerifyMarker (replication/verify.hh): compare one region's checksum with the
  // peers at this point of the group's order (docs/REPLICATION.md "Online verify")
  kVerify = 8,
  // payload: the name of a bookmark whose snapshots go (a bookmark schedule's retention,
  // docs/REPLICATION.md "Bookmarks"): each secondary deletes its copies when it applies it
  kBookmarkRemove = 9,
};
// Records that change no data (bookmarks, their removal, verify markers): skipped by
// replay and apply.
inline bool is_marker(RecordType t) {
  return t == RecordType::kBookmark || t == RecordType::kVerify || t == RecordType::kBookmarkRemove;
}

// A record to append. Payload bytes come from `iov` (kWrite, kBookmark): `length` bytes.
struct AppendRecord {
  RecordType type = RecordType::kWrite;
  uint32_t lu = 0;  // the LU's index in its group
  uint64_t offset = 0;
  uint32_t length = 0;
  const iovec* iov = nullptr;
  int iovcnt = 0;
};

// A record read back; `payload` points into the reader's buffer, valid during the callback.
struct RecordView {
  uint64_t seq = 0;
  RecordType type = RecordType::kWrite;
  uint32_t lu = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  std::span<const uint8_t> payload;  // empty for kDiscard / kWriteZeroes
};

struct RingLogOptions {
  std::string path;
  uint64_t size = 0;  // bytes of the whole file; used when creating it
  bool create = true; // create (and format) the file when missing
};

// What open() found, for the log line and zumactl.
struct RecoveryInfo {
  uint64_t records = 0;     // records kept (head..tail)
  uint64_t batches = 0;
  bool cut = false;         // a torn or stale batch ended the scan before the ring's end
  std::string cut_reason;   // why, e.g. "checksum mismatch at offset 81920"
};

class RingLog {
 public:
  static constexpr uint64_t kSuperblockSize = 4096;
  static constexpr uint64_t kDataStart = 2 * kSuperblockSize;
  static constexpr uint64_t kMinSize = kDataStart + 64 * 1024;
  static constexpr uint32_t kMaxRecordsPerBatch = 512;

  // Opens (or creates and formats) the log and recovers it. Errors name the path.
  static std::expected<std::unique_ptr<RingLog>, std::string> open(const RingLogOptions& opt);
  ~RingLog();
  RingLog(const RingLog&) = delete;
  RingLog& operator=(const RingLog&) = delete;

  // Appends one batch holding `recs` (1..kMaxRecordsPerBatch) with one pwritev. Sets
  // *first_seq to the first record's sequence number. Returns 0, -ENOSPC when the ring has
  // no room until older records are released (nothing written), -EINVAL for a batch that
  // could never fit, or another -errno from the write.
  int append(std::span<const AppendRecord> recs, uint64_t* first_seq);
  // Makes every appended batch durable. Returns 0 or -errno.
  int sync();
  // Records up to and including `seq` are no longer needed: their space is reused. The
  // head recorded in the superblock moves on at the next checkpoint().
  void release(uint64_t seq);
  // Starts a new log in the same file (a promotion: replication generations, see
  // docs/REPLICATION.md "Roles"): a new random log id, no records, the next record numbered
  // `next_seq`. Durable when it returns 0 (else -errno).
  int reformat(uint64_t next_seq);
  // Writes the superblock (head position and sequence) durably, alternating slots.
  int checkpoint();

  // Calls fn for every record with sequence >= from, in order, until fn returns false or
  // the records appended so far are exhausted. Returns 0, -ERANGE if `from` was released
  // already, or -EIO if a batch no longer checks out (the log was damaged under us).
  int read(uint64_t from, const std::function<bool(const RecordView&)>& fn) const;

  // Copies whole batches, starting with the one holding record `from`, to the end of *out,
  // until at least `max_bytes` are copied or the log's records are exhausted (site links
  // ship batches as they are on disk). *count: batches copied. Returns 0, -ERANGE if
  // `from` was released, -EIO if a batch no longer checks out.
  int read_raw(uint64_t from, size_t max_bytes, std::vector<uint8_t>* out, size_t* count) const;
  // read_raw in two steps, so that the copying can run outside the caller's lock: where the
  // batches are (raw_extents, under the lock), then their bytes (read_extents, any time).
  // The bytes are good if no record from `from` on was released meanwhile (release() comes
  // before the ring reuses space): the caller checks head_seq() <= from afterwards.
  struct RawExtents {
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // (file offset, length), in order
    std::vector<uint64_t> first_seqs;                  // each batch's first record
    uint64_t last_seq = 0;                             // the last batch's last record
    uint64_t log_id = 0;
    size_t bytes = 0;  // of all the batches
  };
  // The batches read_raw would copy. 0 or -ERANGE (`from` was released).
  int raw_extents(uint64_t from, size_t max_bytes, RawExtents* out) const;
  // Reads them to dst (ext.bytes long) with one pread per contiguous span, and checks each
  // batch's header (magic, log id, first sequence, length): 0, or -EIO if one does not
  // match (the space was reused). The checksum is left to the reader (the peer checks it).
  int read_extents(const RawExtents& ext, uint8_t* dst) const;
  // read_extents copies from a read-only shared mapping of the log when it has one (made at
  // open): a page cache lookup per 4 KiB page for each pread was most of a site link's CPU
  // time at 4 KiB writes. Without it (mmap refused), preads.
  bool mapped() const { return map_ != nullptr; }
  // The length a batch's header announces (0 if `bytes` is shorter than a header).
  static uint64_t batch_length(std::span<const uint8_t> bytes);
  // Checks one batch as read_raw copies it (magic, log id, version, record lengths,
  // checksum) and calls fn for each record. False, with *why, if it does not check out.
  static bool parse_batch(std::span<const uint8_t> bytes, uint64_t log_id,
                          const std::function<bool(const RecordView&)>& fn, std::string* why);

  // How far behind a reader that has every record up to `acked` is: the log bytes after
  // it and when the oldest record it lacks was appended (records recovered at open count
  // as appended then). {0, nullopt} when it has everything.
  struct Lag {
    uint64_t bytes = 0;
    std::optional<std::chrono::steady_clock::time_point> oldest;
  };
  Lag lag(uint64_t acked) const;

  uint64_t head_seq() const { return head_seq_; }  // oldest record kept
  uint64_t next_seq() const { return next_seq_; }  // the next record's sequence number
  uint64_t used_bytes() const { return used_; }    // data area bytes held by kept batches
  uint64_t appended_bytes() const { return appended_bytes_; }  // batches since open (and recovered)
  uint64_t capacity() const { return end_ - kDataStart; }
  uint64_t log_id() const { return log_id_; }
  uint64_t epoch() const { return epoch_; }
  const RecoveryInfo& recovery() const { return recovery_; }
  const std::string& path() const { return path_; }

 private:
  struct Batch {
    uint64_t first_seq;
    uint32_t nrecords;
    uint64_t off;   // where the batch starts
    uint64_t len;   // its length
    uint64_t span;  // bytes it holds in the ring: len + what was skipped before it at a wrap
    uint64_t cum_end = 0;  // bytes appended to the log up to and including this batch
    std::chrono::steady_clock::time_point appended{};
  };
  RingLog() = default;
  int format(uint64_t size);
  int load_superblock(std::string* err);
  int write_superblock();
  void recover();
  // Validates the batch at `off` expecting `seq`; fills *b and returns true if it checks out.
  bool read_batch(uint64_t off, uint64_t seq, uint64_t min_epoch, Batch* b,
                  std::vector<uint8_t>* buf, std::string* why) const;
  uint64_t free_bytes() const { return capacity() - used_; }
  // The kept batch holding record `seq` (or the first one, if seq is before it).
  std::deque<Batch>::const_iterator batch_holding(uint64_t seq) const;

  std::string path_;
  storage::UniqueFd fd_;
  const uint8_t* map_ = nullptr;  // [0, end_) read-only, MAP_SHARED (read_extents)
  uint64_t end_ = 0;  // file size: the data area is [kDataStart, end_)
  uint64_t log_id_ = 0;
  uint64_t epoch_ = 0;
  uint64_t sb_generation_ = 0;
  uint64_t head_seq_ = 1, next_seq_ = 1;
  uint64_t head_off_ = kDataStart, tail_off_ = kDataStart;
  uint64_t used_ = 0;
  uint64_t sb_head_seq_ = 1, sb_head_off_ = kDataStart;  // what the superblock says
  std::deque<Batch> batches_;
  uint64_t appended_bytes_ = 0;  // since open
  RecoveryInfo recovery_;
  std::vector<uint8_t> hdr_buf_;
};

}  // namespace zuma::replication
