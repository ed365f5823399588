// The primary side of one site link: a thread that connects to a peer zumad's replication
// listener (replication/replica.hh), says which group and log it serves, and ships the
// group's log batches from the first record the peer lacks, in order, as long as the link
// is up; the peer's ACKs tell the group which records that link no longer needs.
//
// Modes: `async` writes complete once in the local log; `sync` writes complete only when
// the peer has acknowledged them durably (RPO 0). A sync link that cannot acknowledge
// within `sync_timeout_ms` (peer down, stopped, unreachable) stops holding writes: it is
// "degraded", said in the log and in its stats, and becomes synchronous again by itself
// once it has caught up. A link never blocks writes forever.
//
// The link reconnects by itself with exponential backoff (100 ms to 5 s) and resumes from
// the peer's applied sequence. If the records the peer needs were already released from
// the log, the link reports `needs_resync` (resync is the next step of the replication
// issue).
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hh"
#include "replication/seq_state.hh"
#include "storage/unique_fd.hh"

namespace zuma::replication {

namespace proto {
class Conn;
}
class GroupLog;
class DirtyMap;
struct Region;
struct VerifyReply;

enum class LinkMode : uint8_t { kAsync, kSync };
enum class LinkState : uint8_t {
  kConnecting,
  kConnected,
  kDisconnected,
  kNeedsResync,
  kStopped,
  kResyncing,   // sending the ranges the peer asked for (delta resync), then records
  kSplitBrain,  // the peer is primary too, or holds changes this side lacks: needs `discard`
  kAuthFailed,  // TLS or the secret refused (either side): retried with the backoff
};
const char* to_string(LinkState s);

struct LinkOptions {
  std::string name;
  std::string peer;        // host:port of the peer's replication listener
  LinkMode mode = LinkMode::kAsync;
  std::string state_path;  // the highest sequence the peer acknowledged, kept across restarts
  int sync_timeout_ms = 5000;
  // Fall-behind limits (async links; 0 = none): past any of them the link holds the
  // group's new writes until the peer has them, and lets go once the lag is back under
  // half of every limit (hysteresis). kSync: only while connected, and each write waits
  // at most sync_timeout_ms (then the link stops holding until it has caught up); kBlock:
  // connected or not, without a time limit (said in the log, the metrics and zumactl).
  uint64_t fallbehind_ios = 0;
  uint64_t fallbehind_bytes = 0;
  double fallbehind_seconds = 0;
  // kBitmap: the link stops holding log space and writes instead: records the log releases
  // before the peer has them go into a dirty-region map (bitmap_path), which is resynced
  // when the peer is back; the same when the log is full because of this link.
  enum class Policy : uint8_t { kSync, kBlock, kBitmap } on_fallbehind = Policy::kSync;
  std::string bitmap_path;  // kBitmap: the dirty-region map
  // Authentication (link_auth.hh): the secret, or the file it is read from at each
  // connection (so a new secret is used at the next one); both empty: none.
  std::string secret;
  std::string secret_file;
  std::optional<config::ReplicationTls> tls;  // TLS to the peer (link_tls.hh)
  // A resync reads and sends at most this many bytes of LU data per second (0: no limit),
  // so that it leaves the LUs' and the network's bandwidth to the initiators' I/O.
  // Deallocated ranges (sent as a length) do not count.
  uint64_t resync_rate = 0;
};

// When `bytes` may have gone at `rate` bytes per second since `start` (resync_rate pacing of
// resyncs and online verifies); `start` itself without a rate.
inline std::chrono::steady_clock::time_point rate_due(std::chrono::steady_clock::time_point start,
                                                      uint64_t bytes, uint64_t rate) {
  return start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                     std::chrono::duration<double>(rate ? double(bytes) / double(rate) : 0.0));
}

struct LinkStats {
  LinkState state = LinkState::kConnecting;
  bool degraded = false;      // a sync link that is not holding writes right now
  bool holding = false;       // writes wait for this link's acknowledgement now
  bool fell_behind = false;   // an async link past its fall-behind limits (holding, or timed out)
  uint64_t acked = 0;         // highest sequence the peer has durably
  uint64_t sent = 0;          // highest sequence sent
  uint64_t lag_records = 0;   // records in the log the peer does not have yet
  uint64_t lag_bytes = 0;     // their size in the log
  double lag_seconds = 0;     // age of the oldest of them
  uint64_t batches_sent = 0, bytes_sent = 0, reconnects = 0;
  std::string last_error;
  // The last (or current) resync: ranges' bytes to send and sent, when it began.
  uint64_t resync_total = 0, resync_done = 0;
  std::chrono::steady_clock::time_point resync_started{};
  uint64_t resyncs = 0;  // resyncs begun since start
  bool bitmap = false;   // in bitmap mode (the `bitmap` fall-behind policy)
  uint64_t bitmap_regions = 0;  // 64 KiB regions in its dirty map
  uint64_t auth_failures = 0;   // connections refused by TLS or authentication, either side
  std::string security;         // of the last connection: "plaintext", "TLSv1.3 ...", "+ secret"
  uint64_t resync_rate = 0;     // bytes per second a resync may send (0: no limit)
};

class SiteLink {
 public:
  static std::expected<std::unique_ptr<SiteLink>, std::string> create(GroupLog& group, const LinkOptions& opt);
  ~SiteLink();
  SiteLink(const SiteLink&) = delete;
  SiteLink& operator=(const SiteLink&) = delete;

  void start();
  void stop();  // joins the thread; stores the acknowledged sequence
  // After stop(), for a new generation of the group's log (a promotion): the peer is taken
  // to have every record up to `acked`, stored durably; then start().
  void restart(uint64_t acked);
  // New records are in the log (the group's writer; cheap when the link is busy).
  void notify();

  const std::string& name() const { return opt_.name; }
  LinkMode mode() const { return opt_.mode; }
  int sync_timeout_ms() const { return opt_.sync_timeout_ms; }
  uint64_t resync_rate() const { return resync_rate_.load(); }
  // links[].resync_rate changed by `config reload` (0: no limit): a resync under way goes
  // on at the new rate from its next frame.
  void set_resync_rate(uint64_t bytes_per_second);
  uint64_t acked() const { return acked_.load(std::memory_order_acquire); }
  // The link currently makes writes wait for the peer: a sync link in step, or an async
  // link past its fall-behind limits.
  bool holding() const {
    return opt_.mode == LinkMode::kSync ? !degraded_.load(std::memory_order_acquire)
                                        : throttled_.load(std::memory_order_acquire);
  }
  // Whether the link may ever hold writes: sync, or async with fall-behind limits.
  bool may_hold() const {
    return opt_.mode == LinkMode::kSync || opt_.fallbehind_ios || opt_.fallbehind_bytes ||
           opt_.fallbehind_seconds > 0;
  }
  // Whether the group's writer may give up waiting for this link (not a `block` policy).
  bool may_time_out() const {
    return opt_.mode == LinkMode::kSync || opt_.on_fallbehind != LinkOptions::Policy::kBlock;
  }
  // The group's writer gave up waiting for this link's acknowledgement.
  void degrade(const std::string& why);
  // Compares the lag with the fall-behind limits and starts or stops holding writes. Any
  // thread (the group's writer before each batch, the link after each acknowledgement).
  void check_fallbehind();
  LinkStats stats() const;

  // The `bitmap` policy. While in bitmap mode the link does not keep records in the log:
  // before the log releases records the peer lacks, the group's writer adds their regions
  // (cover). The link leaves the mode once its peer has everything the map covers.
  bool bitmap_policy() const { return opt_.on_fallbehind == LinkOptions::Policy::kBitmap; }
  bool in_bitmap_mode() const { return bitmap_mode_.load(std::memory_order_acquire); }
  void enter_bitmap(const std::string& why);
  uint64_t covered() const;  // the highest record whose regions are in the map
  // Before the log releases records up to `upto`: in bitmap mode the regions of the records
  // the map does not cover yet (`regions(from, to)`) are added and the map stored durably;
  // returns how far the log may release for this link (`upto`, less if storing failed or
  // the link is not in bitmap mode and lacks records).
  uint64_t cover(uint64_t upto,
                 const std::function<std::vector<Region>(uint64_t, uint64_t)>& regions);

  // Online verify (replication/verify.hh): the peer's VERIFY_RESULT frames go to `sink` (on
  // the link's thread; nullptr: dropped). Returns once no call to the previous sink runs.
  void set_verify_sink(std::function<void(const VerifyReply&)> sink);
  // `group verify --repair`: the link reconnects at once and its HELLO asks the peer to take
  // `regions` as a resync (docs/REPLICATION.md "Online verify"), until a WELCOME answers it.
  void request_repair(std::vector<Region> regions);

 private:
  SiteLink(GroupLog& g, const LinkOptions& opt, SeqStateFile state);
  void run();
  bool session(proto::Conn& conn);  // false: stop
  // Sends the ranges the WELCOME asked for, then RESYNC_DONE. False (error set) on failure.
  bool send_resync(proto::Conn& conn, const std::vector<std::array<uint64_t, 3>>& ranges);
  void set_error(const std::string& e);
  void auth_failed(const std::string& e);  // state kAuthFailed, counted, the error set
  void wait_backoff(std::chrono::milliseconds d);

  GroupLog& group_;
  LinkOptions opt_;
  SeqStateFile state_;
  storage::UniqueFd wake_fd_;  // eventfd: new records, stop
  // notify() wakes the link thread once the log's next sequence number reaches this:
  // from + 1 while it waits for a first record, from + kGatherRecords while an async link
  // gathers (site_link.cc), kNoWake while it is busy (so an append costs no system call
  // then).
  static constexpr uint64_t kNoWake = ~uint64_t(0);
  std::atomic<uint64_t> wake_at_{kNoWake};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> resync_rate_{0};  // opt_.resync_rate, then set_resync_rate
  std::atomic<bool> degraded_{false};
  std::atomic<bool> throttled_{false};  // async link holding writes (fall-behind)
  std::atomic<bool> suspended_{false};  // timed out while holding: not again until caught up
  std::atomic<bool> bitmap_mode_{false};
  mutable std::mutex dirty_mu_;  // dirty_, covered_
  std::unique_ptr<DirtyMap> dirty_;
  uint64_t covered_ = 0;
  void leave_bitmap_if_done(uint64_t peer_has);
  std::mutex fb_mu_;                    // check_fallbehind's decisions
  std::chrono::steady_clock::time_point fb_costly_at_{};  // last byte/second lag look-up
  std::atomic<uint64_t> acked_{0};
  std::atomic<uint8_t> state_value_{uint8_t(LinkState::kConnecting)};
  std::thread thread_;
  std::mutex sock_mu_;  // sock_fd_: the connection, shut down by stop()
  int sock_fd_ = -1;
  std::mutex verify_mu_;  // verify_sink_, repair_
  std::function<void(const VerifyReply&)> verify_sink_;
  std::vector<Region> repair_;
  std::atomic<bool> repair_now_{false};  // skip the reconnection backoff once
  mutable std::mutex mu_;  // the fields below
  LinkStats counters_;
  std::chrono::steady_clock::time_point stored_at_{};
};

}  // namespace zuma::replication
