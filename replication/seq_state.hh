// A small durable record of where a replication peer stands: a sequence number and the id
// of the primary's log it refers to. Kept in a file of two checksummed 4 KiB slots written
// alternately (like the log's superblock), so a torn update leaves the previous value.
// Used by a secondary (the highest sequence applied durably) and by a primary's site link
// (the highest sequence the peer acknowledged).
#pragma once
#include <cstdint>
#include <expected>
#include <string>

#include "storage/unique_fd.hh"

namespace zuma::replication {

struct SeqState {
  uint64_t seq = 0;     // 0: nothing yet
  uint64_t log_id = 0;  // 0: not bound to a primary's log yet
};

class SeqStateFile {
 public:
  // Opens or creates `path`; a new file reads as {0, 0}. Error: a message naming the path.
  static std::expected<SeqStateFile, std::string> open(const std::string& path);
  SeqStateFile(SeqStateFile&&) = default;
  SeqStateFile& operator=(SeqStateFile&&) = default;

  const SeqState& value() const { return value_; }
  // Writes `v` durably (pwrite + fdatasync). Returns 0 or -errno.
  int store(const SeqState& v);
  const std::string& path() const { return path_; }

 private:
  SeqStateFile() = default;
  std::string path_;
  storage::UniqueFd fd_;
  uint64_t generation_ = 0;
  SeqState value_;
};

}  // namespace zuma::replication
