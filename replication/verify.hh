// Online verify (docs/REPLICATION.md "Online verify"): the primary compares a checksum of
// every region of the group's LUs with each peer's, at the same point of the group's write
// order, while writes go on.
//
// Per region (kRegion bytes, 16 of the dirty map's 64 KiB regions): the group fences the
// region (GroupLog::with_region_fenced: new writes that overlap it wait in the replication
// layer, writes already inside complete), the primary hashes it (XXH3-128) from the LU below
// the replication layer, appends a verify marker record (RecordType::kVerify) carrying the
// hash, and lifts the fence. Every write to the region ordered before the marker is in the
// hash and none after, so the hash is the region at the marker's sequence number. The
// secondary hashes the region when it applies the marker (it has applied every record
// before it and none after) and answers with a VERIFY_RESULT frame. Writes to one region
// wait for at most one hash (about a millisecond for 1 MiB); other writes never wait.
//
// Threads: a Verifier runs on its own thread; replies arrive on the links' threads;
// status() and cancel() from any thread.
#pragma once
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "replication/group_log.hh"

namespace zuma::replication {

inline constexpr uint64_t kVerifyRegion = 1 << 20;

// The payload of a kVerify record (little-endian): u64 verify id, u64 region index, u32 LU,
// u32 0, u64 offset, u64 length, 16 bytes XXH3-128 (low64, high64) of the region as the
// primary has it at this point, u16 link name length and the link's name (empty: every link
// answers; else only the peer of that link).
struct VerifyMarker {
  uint64_t id = 0, index = 0;
  uint32_t lu = 0;
  uint64_t offset = 0, length = 0;
  XXH128_hash_t hash{};
  std::string link;
  std::vector<uint8_t> encode() const;
  static std::optional<VerifyMarker> decode(std::span<const uint8_t> p);
};

// The VERIFY_RESULT frame (secondary to primary), 48 bytes: u64 verify id, u64 region index,
// u32 status, u32 0, 16 bytes XXH3-128 of the region at the marker, 8 bytes reserved.
struct VerifyReply {
  enum Status : uint32_t { kHashed = 0, kInconsistent = 1, kUnreadable = 2 };
  uint64_t id = 0, index = 0;
  uint32_t status = kHashed;
  XXH128_hash_t hash{};
  std::vector<uint8_t> encode() const;
  static std::optional<VerifyReply> decode(std::span<const uint8_t> p);
};

// XXH3-128 of `length` bytes at `offset` of `b` (a thread without an IoContext). -errno.
int hash_region(storage::Backend& b, uint64_t offset, uint64_t length, XXH128_hash_t* out);

struct VerifyStatus {
  enum class State { kRunning, kDone, kCancelled, kFailed };
  uint64_t id = 0;
  State state = State::kRunning;
  bool repair = false;
  uint64_t regions = 0;  // in the group's LUs
  uint64_t hashed = 0;   // hashed on the primary and marked in the log
  struct Link {
    std::string name;
    uint64_t compared = 0;           // regions the peer answered
    std::vector<Region> mismatched;  // LU index, offset, length
  };
  std::vector<Link> links;
  std::string message;  // why it was cancelled or failed; what --repair did
  double seconds = 0;
  uint64_t max_stall_us = 0;  // the longest a region was fenced
};
const char* to_string(VerifyStatus::State s);

class Verifier {
 public:
  // Starts verifying `links` (connected, not in bitmap mode) of `group`. With `repair`, the
  // regions a peer reported different are then resent to it (SiteLink::request_repair).
  static std::expected<std::unique_ptr<Verifier>, std::string> start(GroupLog& group,
                                                                     std::vector<SiteLink*> links,
                                                                     bool repair);
  ~Verifier();  // cancel("stopped") and join
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  void cancel(const std::string& why);
  void join();  // waits for the end (after cancel(), or of a verify that ends by itself)
  VerifyStatus status() const;
  bool running() const { return status().state == VerifyStatus::State::kRunning; }

 private:
  Verifier(GroupLog& g, std::vector<SiteLink*> links, bool repair);
  void run();
  void on_reply(size_t link, const VerifyReply& r);
  void finish(VerifyStatus::State s, const std::string& msg);

  GroupLog& group_;
  std::vector<SiteLink*> links_;
  std::vector<uint64_t> reconnects_;  // each link's count at the start
  std::vector<Region> regions_;
  std::vector<XXH128_hash_t> hashes_;  // the primary's, by region index (verify thread)
  std::vector<uint64_t> answered_;     // per link: replies received (mu_)
  std::chrono::steady_clock::time_point started_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  VerifyStatus status_;
  std::atomic<bool> cancel_{false};
  std::string cancel_why_;  // mu_
  std::thread thread_;
};

}  // namespace zuma::replication
