// zuma-bench: an iSCSI initiator load generator on libiscsi's asynchronous API.
//
//   zuma-bench iscsi://127.0.0.1:3260/iqn.2026-11.org.zuma:default/0
//       --pattern randrw --rwmix 70 --bs 4k --qd 32 --sessions 4 --time 10 --ramp 2
//
// One iSCSI session (one iscsi_context, one TCP connection) per --sessions, each driven by
// its own thread: the thread keeps --qd READ(16)/WRITE(16) commands in flight, polls the
// session's socket and lets iscsi_service() run the completions, which record latency in a
// log-linear histogram (bench/histogram.hh) and submit the next command. Data moves
// straight between the target and per-slot buffers (the *_iov_task variants); nothing is
// allocated per I/O by zuma-bench itself (libiscsi allocates its task and PDU).
//
// --verify writes self-describing blocks (bench/block_pattern.hh) and checks every block
// read against the generation its writer recorded. Each session then owns its own slice of
// the range and never has two commands on one I/O unit at once, so the expected contents
// are always known. Read-only patterns first write the whole range (untimed); patterns
// that write end with an untimed read-back of every unit written.
//
// Exit status: 0 all I/O good; 1 an I/O error (CHECK CONDITION, transport error, timeout)
// or a verify failure; 2 bad usage or the sessions could not be set up.
#include <poll.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

#include "bench/block_pattern.hh"
#include "bench/histogram.hh"

namespace {

using zuma::bench::BlockCheck;
using zuma::bench::LatencyHistogram;

constexpr int kExitOk = 0;
constexpr int kExitIoError = 1;
constexpr int kExitSetup = 2;

// Set by SIGINT/SIGTERM: sessions stop submitting, drain and report what they measured.
std::atomic<bool> g_stop{false};

void on_signal(int) {
  g_stop.store(true, std::memory_order_relaxed);
  // A second signal kills the process the default way.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ULL + uint64_t(ts.tv_nsec);
}

// ---- command line -------------------------------------------------------------------

enum class Pattern { kRead, kWrite, kRandRead, kRandWrite, kRandRw };

struct Options {
  std::string url;
  std::string pattern_name = "randread";
  Pattern pattern = Pattern::kRandRead;
  unsigned rwmix = 70;  // % reads, randrw only
  std::string bs_text = "4k";
  uint64_t bs = 4096;
  unsigned qd = 32;
  unsigned sessions = 1;
  double time_s = 10;
  uint64_t ios = 0;  // 0: run for time_s
  double ramp_s = 0;
  bool verify = false;
  bool json = false;
  std::string range_text;
  uint64_t range = 0;  // 0: the whole LU
  std::string initiator = "iqn.2026-11.org.zuma:bench";
  unsigned timeout_s = 30;
  uint64_t seed = 0;  // 0: from the clock
  bool idle = false;
};

bool is_random(Pattern p) {
  return p != Pattern::kRead && p != Pattern::kWrite;
}
bool writes_any(Pattern p) {
  return p == Pattern::kWrite || p == Pattern::kRandWrite || p == Pattern::kRandRw;
}
bool reads_any(Pattern p) {
  return p == Pattern::kRead || p == Pattern::kRandRead || p == Pattern::kRandRw;
}

// "4096", "4k", "4K", "4KiB", "4KB", "1m", "1MiB", "2g", "1t": binary multiples.
std::optional<uint64_t> parse_size(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p == s.data()) return std::nullopt;
  std::string_view suf(p, s.data() + s.size() - p);
  unsigned shift = 0;
  if (!suf.empty()) {
    switch (suf[0]) {
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      case 't':
      case 'T':
        shift = 40;
        break;
      case 'b':
      case 'B':
        shift = 0;
        break;
      default:
        return std::nullopt;
    }
    std::string_view rest = suf.substr(1);
    if (suf[0] == 'b' || suf[0] == 'B') {
      if (!rest.empty()) return std::nullopt;
    } else if (!(rest.empty() || rest == "iB" || rest == "ib" || rest == "B" || rest == "b")) {
      return std::nullopt;
    }
  }
  if (shift && v > (~uint64_t{0} >> shift)) return std::nullopt;
  return v << shift;
}

// ---- the plan shared by all sessions --------------------------------------------------

struct Plan {
  int lun = 0;
  uint32_t block_size = 512;
  uint64_t lu_blocks = 0;
  uint64_t unit_blocks = 0;  // blocks per I/O (bs / block_size)
  uint64_t units = 0;        // I/O units in the range
  uint64_t seed = 0;
  // --verify: per-unit generation last written (0 never, kUnknown after a failed write)
  // and an in-flight flag; each session touches only the units of its own slice.
  std::vector<uint32_t> gen;
  std::vector<uint8_t> busy;
};

constexpr uint32_t kGenUnknown = ~uint32_t{0};

// ---- one session ----------------------------------------------------------------------

struct OpStats {
  uint64_t ios = 0;
  uint64_t bytes = 0;
  LatencyHistogram lat;  // nanoseconds
  void merge(const OpStats& o) {
    ios += o.ios;
    bytes += o.bytes;
    lat.merge(o.lat);
  }
};

struct Stats {
  OpStats read, write;
  uint64_t ios_all = 0;  // every completed READ/WRITE, in any phase (for CPU per I/O)
  uint64_t errors = 0;
  uint64_t verify_failures = 0;  // blocks
  uint64_t verified_blocks = 0;
  uint64_t unverified_reads = 0;     // reads of units this run never wrote
  uint64_t measure_ns = 0;           // measurement window this session saw
  std::vector<std::string> samples;  // first few error / mismatch descriptions
  void sample(std::string s) {
    if (samples.size() < 10) samples.push_back(std::move(s));
  }
  void merge(Stats&& o) {
    read.merge(o.read);
    write.merge(o.write);
    ios_all += o.ios_all;
    errors += o.errors;
    verify_failures += o.verify_failures;
    verified_blocks += o.verified_blocks;
    unverified_reads += o.unverified_reads;
    measure_ns = std::max(measure_ns, o.measure_ns);
    for (auto& s : o.samples) sample(std::move(s));
  }
};

struct ContextDeleter {
  void operator()(iscsi_context* c) const { iscsi_destroy_context(c); }
};
using ContextPtr = std::unique_ptr<iscsi_context, ContextDeleter>;

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};

class Session;

struct Slot {
  Session* session = nullptr;
  uint8_t* buf = nullptr;
  scsi_iovec iov{};
  uint64_t unit = 0;
  uint64_t lba = 0;
  uint64_t t_submit = 0;
  uint32_t gen = 0;
  bool write = false;
  bool measured = false;  // submitted after the ramp (--ios accounting)
  bool busy = false;
};

enum class Phase { kPrefill, kRun, kReadback };

// Releases all sessions together after their (untimed) prefill and stamps the start time.
struct StampStart {
  std::atomic<uint64_t>* start_ns;
  void operator()() noexcept { start_ns->store(now_ns()); }
};
using StartBarrier = std::barrier<StampStart>;

class Session {
 public:
  Session(unsigned index, ContextPtr ctx, const Options& o, Plan& plan)
      : index_(index), ctx_(std::move(ctx)), o_(o), plan_(plan) {
    rng_ = plan.seed ^ (0x9e3779b97f4a7c15ULL * (index + 1));
    // Sequential patterns and --verify split the range into one slice per session.
    if (!is_random(o.pattern) || o.verify) {
      const uint64_t per = plan.units / o.sessions;
      slice_begin_ = per * index;
      slice_end_ = index + 1 == o.sessions ? plan.units : slice_begin_ + per;
    } else {
      slice_begin_ = 0;
      slice_end_ = plan.units;
    }
    cursor_ = slice_begin_;
  }

  // Allocates the slot buffers. False if out of memory.
  bool init() {
    const uint64_t bytes = uint64_t(o_.qd) * o_.bs;
    void* mem = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!mem) return false;
    mem_.reset(static_cast<uint8_t*>(mem));
    // Not zeros, so a target cannot take a shortcut on all-zero writes.
    uint64_t x = rng_;
    for (uint64_t off = 0; off + 8 <= bytes; off += 8) {
      const uint64_t v = zuma::bench::detail::splitmix64(x);
      std::memcpy(mem_.get() + off, &v, 8);
    }
    slots_.resize(o_.qd);
    for (unsigned i = 0; i < o_.qd; ++i) {
      slots_[i].session = this;
      slots_[i].buf = mem_.get() + uint64_t(i) * o_.bs;
    }
    return true;
  }

  // Libiscsi calls back every command still queued when the context is destroyed; those
  // callbacks must find the slots alive and must not submit more.
  ~Session() {
    closing_ = true;
    ctx_.reset();
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // The thread body. `sync` lines all sessions up between prefill and the timed run.
  void run(StartBarrier& sync, const std::atomic<uint64_t>& start_ns) {
    if (o_.verify && !writes_any(o_.pattern) && !o_.idle) {
      phase_ = Phase::kPrefill;
      cursor_ = slice_begin_;
      drive();
    }
    sync.arrive_and_wait();
    const uint64_t start = start_ns.load();
    ramp_end_ = start + uint64_t(o_.ramp_s * 1e9);
    end_ = o_.ios ? ~uint64_t{0} : ramp_end_ + uint64_t(o_.time_s * 1e9);
    if (o_.ios) {
      quota_ = o_.ios / o_.sessions + (index_ < o_.ios % o_.sessions ? 1 : 0);
    }
    phase_ = Phase::kRun;
    cursor_ = slice_begin_;
    if (o_.idle) {
      idle();
    } else {
      drive();
    }
    if (o_.ios) {
      stats_.measure_ns =
          last_measured_completion_ > ramp_end_ ? last_measured_completion_ - ramp_end_ : 0;
    } else {
      const uint64_t stop = std::min(stopped_at_ ? stopped_at_ : end_, end_);
      stats_.measure_ns = stop > ramp_end_ ? stop - ramp_end_ : 0;
    }
    if (o_.verify && writes_any(o_.pattern) && !o_.idle && !dead_) {
      phase_ = Phase::kReadback;
      cursor_ = slice_begin_;
      drive();
    }
  }

  bool dead() const { return dead_; }
  iscsi_context* ctx() { return ctx_.get(); }
  Stats& stats() { return stats_; }

  static void on_done(iscsi_context*, int status, void* command_data, void* private_data) {
    auto* slot = static_cast<Slot*>(private_data);
    slot->session->complete(*slot, status, static_cast<scsi_task*>(command_data));
  }

 private:
  // Submits into every free slot, then services the socket until nothing is in flight
  // and the phase has nothing more to submit.
  void drive() {
    done_submitting_ = false;
    for (auto& s : slots_) {
      if (!s.busy && !submit_next(s)) break;
    }
    while (inflight_ > 0 && !dead_) {
      pollfd pfd{iscsi_get_fd(ctx_.get()), short(iscsi_which_events(ctx_.get())), 0};
      const int n = poll(&pfd, 1, 100);
      if (n < 0 && errno != EINTR) {
        fail_session(fmt::format("poll: {}", std::strerror(errno)));
        break;
      }
      if (iscsi_service(ctx_.get(), n > 0 ? pfd.revents : 0) < 0) {
        fail_session(fmt::format("connection lost: {}", iscsi_get_error(ctx_.get())));
        break;
      }
      if (phase_ == Phase::kRun && !stopped_at_) {
        const uint64_t t = now_ns();
        if (t >= end_ || g_stop.load(std::memory_order_relaxed)) stopped_at_ = t;
      }
      // Commands left after the I/O timeout plus slack: libiscsi should have failed them.
      if (drain_deadline_ && now_ns() > drain_deadline_) {
        fail_session(fmt::format("{} commands still outstanding {} s after the end", inflight_,
                                 o_.timeout_s + 5));
        break;
      }
      if (stopped_at_ && !drain_deadline_) {
        drain_deadline_ = now_ns() + uint64_t(o_.timeout_s + 5) * 1'000'000'000ULL;
      }
    }
    drain_deadline_ = 0;
    if (phase_ == Phase::kRun && !stopped_at_) stopped_at_ = now_ns();  // a dead session
  }

  // --idle: hold the session open, answer the target's NOP-Ins, submit nothing.
  void idle() {
    while (!dead_ && !g_stop.load(std::memory_order_relaxed) && now_ns() < end_) {
      pollfd pfd{iscsi_get_fd(ctx_.get()), short(iscsi_which_events(ctx_.get())), 0};
      const int n = poll(&pfd, 1, 100);
      if (iscsi_service(ctx_.get(), n > 0 ? pfd.revents : 0) < 0) {
        fail_session(fmt::format("connection lost: {}", iscsi_get_error(ctx_.get())));
      }
    }
  }

  void fail_session(std::string why) {
    if (dead_) return;
    ++stats_.errors;
    stats_.errors += inflight_;  // their outcome is unknown
    stats_.sample(fmt::format("session {}: {}", index_, why));
    dead_ = true;
  }

  uint64_t next_random() { return zuma::bench::detail::splitmix64(rng_); }

  // Picks the next I/O for this phase into `s` and submits it. False: nothing (more) to do.
  bool submit_next(Slot& s) {
    if (dead_ || done_submitting_) return false;
    bool write = false;
    uint64_t unit = 0;
    switch (phase_) {
      case Phase::kPrefill:
      case Phase::kReadback: {
        write = phase_ == Phase::kPrefill;
        // Read back only what this run wrote.
        while (cursor_ < slice_end_ && !write &&
               (plan_.gen[cursor_] == 0 || plan_.gen[cursor_] == kGenUnknown)) {
          ++cursor_;
        }
        if (cursor_ >= slice_end_) {
          done_submitting_ = true;
          return false;
        }
        unit = cursor_++;
        break;
      }
      case Phase::kRun: {
        const uint64_t t = now_ns();
        if (g_stop.load(std::memory_order_relaxed) || t >= end_) {
          if (!stopped_at_) stopped_at_ = t;
          done_submitting_ = true;
          return false;
        }
        if (o_.ios && t >= ramp_end_ && submitted_measured_ >= quota_) {
          done_submitting_ = true;
          return false;
        }
        switch (o_.pattern) {
          case Pattern::kRead:
          case Pattern::kRandRead:
            write = false;
            break;
          case Pattern::kWrite:
          case Pattern::kRandWrite:
            write = true;
            break;
          case Pattern::kRandRw:
            write = next_random() % 100 >= o_.rwmix;
            break;
        }
        if (is_random(o_.pattern)) {
          const uint64_t n = slice_end_ - slice_begin_;
          unit = slice_begin_ + next_random() % n;
          if (o_.verify) {
            // Never two commands on one unit: the expected contents must be known.
            while (plan_.busy[unit]) unit = unit + 1 == slice_end_ ? slice_begin_ : unit + 1;
          }
        } else {
          unit = cursor_;
          cursor_ = cursor_ + 1 == slice_end_ ? slice_begin_ : cursor_ + 1;
          if (o_.verify) {
            while (plan_.busy[unit]) {
              unit = cursor_;
              cursor_ = cursor_ + 1 == slice_end_ ? slice_begin_ : cursor_ + 1;
            }
          }
        }
        s.measured = t >= ramp_end_;
        if (s.measured) ++submitted_measured_;
        break;
      }
    }
    return submit(s, unit, write);
  }

  bool submit(Slot& s, uint64_t unit, bool write) {
    const uint32_t bsz = plan_.block_size;
    s.unit = unit;
    s.lba = unit * plan_.unit_blocks;
    s.write = write;
    s.iov.iov_base = s.buf;
    s.iov.iov_len = o_.bs;
    if (o_.verify) {
      plan_.busy[unit] = 1;
      if (write) {
        uint32_t g = plan_.gen[unit] + 1;
        if (g == kGenUnknown || g == 0) g = 1;
        plan_.gen[unit] = g;
        s.gen = g;
        for (uint64_t b = 0; b < plan_.unit_blocks; ++b) {
          zuma::bench::fill_block(s.buf + b * bsz, bsz, plan_.seed, s.lba + b, g);
        }
      } else {
        s.gen = plan_.gen[unit];
        // Poison the headers: a GOOD status without data must not pass as a match.
        for (uint64_t b = 0; b < plan_.unit_blocks; ++b) std::memset(s.buf + b * bsz, 0, 8);
      }
    }
    s.t_submit = now_ns();
    scsi_task* task =
        write ? iscsi_write16_iov_task(ctx_.get(), plan_.lun, s.lba, nullptr, uint32_t(o_.bs), bsz,
                                       0, 0, 0, 0, 0, &Session::on_done, &s, &s.iov, 1)
              : iscsi_read16_iov_task(ctx_.get(), plan_.lun, s.lba, uint32_t(o_.bs), bsz, 0, 0, 0,
                                      0, 0, &Session::on_done, &s, &s.iov, 1);
    if (!task) {
      if (o_.verify) {
        plan_.busy[unit] = 0;
        if (write) plan_.gen[unit] = kGenUnknown;
      }
      fail_session(fmt::format("cannot queue {}(16): {}", write ? "WRITE" : "READ",
                               iscsi_get_error(ctx_.get())));
      return false;
    }
    s.busy = true;
    ++inflight_;
    return true;
  }

  void complete(Slot& s, int status, scsi_task* task) {
    if (closing_) return;  // teardown: the task is libiscsi's to drop
    const uint64_t t = now_ns();
    s.busy = false;
    --inflight_;
    bool ok = status == SCSI_STATUS_GOOD;
    if (!ok) {
      ++stats_.errors;
      if (status == SCSI_STATUS_CHECK_CONDITION && task) {
        stats_.sample(fmt::format(
            "session {}: {}(16) LBA {}: CHECK CONDITION {} / {} (ASC/ASCQ 0x{:04x})", index_,
            s.write ? "WRITE" : "READ", s.lba, scsi_sense_key_str(task->sense.key),
            scsi_sense_ascq_str(task->sense.ascq), task->sense.ascq));
      } else if (status == SCSI_STATUS_ERROR || status == SCSI_STATUS_CANCELLED) {
        // The connection failed (no reconnect, by design): libiscsi fails every command.
        if (!dead_) {
          stats_.sample(fmt::format("session {}: {}(16) LBA {}: connection failed: {}", index_,
                                    s.write ? "WRITE" : "READ", s.lba,
                                    iscsi_get_error(ctx_.get())));
        }
      } else {
        stats_.sample(fmt::format(
            "session {}: {}(16) LBA {}: SCSI status 0x{:x}{}", index_, s.write ? "WRITE" : "READ",
            s.lba, unsigned(status),
            status == SCSI_STATUS_TIMEOUT ? fmt::format(" (no reply in {} s)", o_.timeout_s) : ""));
      }
    } else if (task && task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL && task->residual) {
      ok = false;
      ++stats_.errors;
      stats_.sample(fmt::format("session {}: {}(16) LBA {}: {} of {} bytes not transferred", index_,
                                s.write ? "WRITE" : "READ", s.lba, task->residual, o_.bs));
    }
    if (task) scsi_free_scsi_task(task);
    if (ok) ++stats_.ios_all;

    if (o_.verify) {
      if (s.write && !ok) plan_.gen[s.unit] = kGenUnknown;  // contents now unknown
      if (!s.write && ok) verify(s);
      plan_.busy[s.unit] = 0;
    }

    if (ok && phase_ == Phase::kRun) {
      const bool count = o_.ios ? s.measured : (t >= ramp_end_ && t <= end_ && !stopped_at_);
      if (count) {
        OpStats& st = s.write ? stats_.write : stats_.read;
        ++st.ios;
        st.bytes += o_.bs;
        st.lat.record(t - s.t_submit);
        last_measured_completion_ = t;
      }
    }
    if (status == SCSI_STATUS_ERROR || status == SCSI_STATUS_CANCELLED) {
      dead_ = true;
      return;
    }
    submit_next(s);
  }

  void verify(const Slot& s) {
    if (s.gen == 0 || s.gen == kGenUnknown) {
      ++stats_.unverified_reads;
      return;
    }
    const uint32_t bsz = plan_.block_size;
    uint64_t bad = 0;
    for (uint64_t b = 0; b < plan_.unit_blocks; ++b) {
      const uint8_t* p = s.buf + b * bsz;
      const BlockCheck c = zuma::bench::check_block(p, bsz, plan_.seed, s.lba + b, s.gen);
      if (c == BlockCheck::kOk) {
        ++stats_.verified_blocks;
        continue;
      }
      if (bad++ > 0) continue;  // one description per command
      stats_.sample(fmt::format(
          "session {}: verify LBA {}: {}; expected generation {}{}", index_, s.lba + b,
          zuma::bench::block_check_name(c), s.gen,
          c == BlockCheck::kBadMagic
              ? std::string()
              : fmt::format(", block says LBA {} generation {}", zuma::bench::block_lba(p),
                            zuma::bench::block_generation(p))));
    }
    if (bad) {
      stats_.verify_failures += bad;
      if (bad > 1) {
        stats_.sample(fmt::format("session {}: verify: {} of {} blocks bad in READ(16) LBA {}",
                                  index_, bad, plan_.unit_blocks, s.lba));
      }
    }
  }

  const unsigned index_;
  ContextPtr ctx_;
  const Options& o_;
  Plan& plan_;
  std::unique_ptr<uint8_t, AlignedFree> mem_;
  std::vector<Slot> slots_;
  Stats stats_;
  uint64_t rng_ = 0;
  uint64_t slice_begin_ = 0, slice_end_ = 0, cursor_ = 0;
  Phase phase_ = Phase::kRun;
  unsigned inflight_ = 0;
  bool dead_ = false;
  bool closing_ = false;
  bool done_submitting_ = false;
  uint64_t ramp_end_ = 0, end_ = 0, stopped_at_ = 0, drain_deadline_ = 0;
  uint64_t quota_ = 0, submitted_measured_ = 0, last_measured_completion_ = 0;
};

// ---- setup ----------------------------------------------------------------------------

struct UrlDeleter {
  void operator()(iscsi_url* u) const { iscsi_destroy_url(u); }
};

// Logs one session in. On failure returns nullptr and sets `err`.
ContextPtr connect_session(const Options& o, std::string& err, int& lun) {
  ContextPtr ctx(iscsi_create_context(o.initiator.c_str()));
  if (!ctx) {
    err = "iscsi_create_context failed";
    return nullptr;
  }
  std::unique_ptr<iscsi_url, UrlDeleter> url(iscsi_parse_full_url(ctx.get(), o.url.c_str()));
  if (!url) {
    err = fmt::format("bad URL '{}': {}", o.url, iscsi_get_error(ctx.get()));
    return nullptr;
  }
  iscsi_set_targetname(ctx.get(), url->target);
  iscsi_set_session_type(ctx.get(), ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(ctx.get(), ISCSI_HEADER_DIGEST_NONE);
  if (url->user[0]) iscsi_set_initiator_username_pwd(ctx.get(), url->user, url->passwd);
  iscsi_set_noautoreconnect(ctx.get(), 1);
  iscsi_set_timeout(ctx.get(), int(o.timeout_s));
  if (iscsi_full_connect_sync(ctx.get(), url->portal, url->lun) != 0) {
    err = fmt::format("login to {} LUN {} failed: {}", url->portal, url->lun,
                      iscsi_get_error(ctx.get()));
    return nullptr;
  }
  lun = url->lun;
  return ctx;
}

bool read_capacity(iscsi_context* ctx, int lun, Plan& plan, std::string& err) {
  scsi_task* task = iscsi_readcapacity16_sync(ctx, lun);
  if (!task || task->status != SCSI_STATUS_GOOD) {
    err = fmt::format("READ CAPACITY(16) failed: {}", iscsi_get_error(ctx));
    if (task) scsi_free_scsi_task(task);
    return false;
  }
  auto* rc = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(task));
  if (!rc) {
    err = "READ CAPACITY(16): cannot parse the reply";
    scsi_free_scsi_task(task);
    return false;
  }
  plan.block_size = rc->block_length;
  plan.lu_blocks = rc->returned_lba + 1;
  scsi_free_scsi_task(task);
  return true;
}

// ---- output ---------------------------------------------------------------------------

double us(uint64_t ns) {
  return double(ns) / 1000.0;
}

struct Row {
  const char* name;
  OpStats st;
};

nlohmann::ordered_json op_json(const OpStats& st, double secs) {
  nlohmann::ordered_json j;
  j["ios"] = st.ios;
  j["bytes"] = st.bytes;
  j["iops"] = secs > 0 ? double(st.ios) / secs : 0.0;
  j["mib_per_s"] = secs > 0 ? double(st.bytes) / secs / 1048576.0 : 0.0;
  j["lat_mean_us"] = st.lat.mean() / 1000.0;
  j["lat_min_us"] = us(st.lat.min());
  j["lat_p50_us"] = us(st.lat.percentile(50));
  j["lat_p99_us"] = us(st.lat.percentile(99));
  j["lat_p999_us"] = us(st.lat.percentile(99.9));
  j["lat_max_us"] = us(st.lat.max());
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"zuma-bench: iSCSI load generator (libiscsi async API)"};
  app.add_option("url", o.url, "iscsi://HOST[:PORT]/TARGET-IQN/LUN")->required();
  app.add_option("--pattern", o.pattern_name, "read, write, randread, randwrite or randrw")
      ->check(CLI::IsMember({"read", "write", "randread", "randwrite", "randrw"}))
      ->capture_default_str();
  app.add_option("--rwmix", o.rwmix, "randrw: percentage of reads")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--bs", o.bs_text,
                 "I/O size: 512, 4k, 128k, 1m... (a multiple of the LU block size)")
      ->capture_default_str();
  app.add_option("--qd", o.qd, "commands in flight per session")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--sessions", o.sessions, "iSCSI sessions, one thread each")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  auto* time_opt = app.add_option("--time", o.time_s, "seconds to measure (after --ramp)")
                       ->check(CLI::Range(0.001, 86400.0))
                       ->capture_default_str();
  app.add_option("--ios", o.ios, "measure this many I/Os in total instead of --time")
      ->check(CLI::Range(uint64_t{1}, ~uint64_t{0}))
      ->excludes(time_opt);
  app.add_option("--ramp", o.ramp_s, "seconds of load before measuring starts")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_flag("--verify", o.verify,
               "write self-checking blocks and verify every block read; read patterns first "
               "write the range, write patterns read back what they wrote");
  app.add_flag("--json", o.json, "print the results as one JSON object");
  app.add_option("--range", o.range_text, "use only the first BYTES of the LU (default: all)");
  app.add_option("--initiator", o.initiator, "initiator IQN")->capture_default_str();
  app.add_option("--timeout", o.timeout_s, "seconds before a command counts as timed out")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed (default: from the clock)");
  app.add_flag("--idle", o.idle,
               "log the sessions in and hold them idle for --time seconds (memory tests)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitSetup;  // --help is not an error
  }

  static const std::pair<const char*, Pattern> kPatterns[] = {{"read", Pattern::kRead},
                                                              {"write", Pattern::kWrite},
                                                              {"randread", Pattern::kRandRead},
                                                              {"randwrite", Pattern::kRandWrite},
                                                              {"randrw", Pattern::kRandRw}};
  for (auto& [n, p] : kPatterns) {
    if (o.pattern_name == n) o.pattern = p;
  }
  auto usage_error = [](const std::string& msg) {
    fmt::print(stderr, "zuma-bench: {}\n", msg);
    return kExitSetup;
  };
  auto bs = parse_size(o.bs_text);
  if (!bs || *bs == 0 || *bs > (uint64_t{1} << 30)) {
    return usage_error(fmt::format("--bs: '{}' is not a size like 4k (at most 1g)", o.bs_text));
  }
  o.bs = *bs;
  if (!o.range_text.empty()) {
    auto r = parse_size(o.range_text);
    if (!r || *r == 0) return usage_error(fmt::format("--range: '{}' is not a size", o.range_text));
    o.range = *r;
  }
  if (o.ios && o.ios < o.sessions) return usage_error("--ios must be at least --sessions");
  Plan plan;
  plan.seed = o.seed ? o.seed : (now_ns() ^ (uint64_t(getpid()) << 32)) | 1;

  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  // Log every session in first, so login time is not measured.
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<ContextPtr> contexts;
  for (unsigned i = 0; i < o.sessions; ++i) {
    std::string err;
    int lun = 0;
    auto ctx = connect_session(o, err, lun);
    if (!ctx) return usage_error(fmt::format("session {}: {}", i, err));
    plan.lun = lun;
    if (i == 0 && !read_capacity(ctx.get(), lun, plan, err)) return usage_error(err);
    contexts.push_back(std::move(ctx));
    if (g_stop.load()) return usage_error("interrupted during login");
  }
  if (plan.block_size < 64 || plan.block_size % 8 || o.bs % plan.block_size) {
    return usage_error(
        fmt::format("--bs {} is not a multiple of the LU block size {}", o.bs, plan.block_size));
  }
  const uint64_t lu_bytes = plan.lu_blocks * plan.block_size;
  const uint64_t range = o.range ? o.range : lu_bytes;
  if (range > lu_bytes) {
    return usage_error(fmt::format("--range {} is larger than the LU ({} bytes)", range, lu_bytes));
  }
  plan.unit_blocks = o.bs / plan.block_size;
  plan.units = range / o.bs;
  const bool sliced = !is_random(o.pattern) || o.verify;
  const uint64_t min_units = sliced ? uint64_t(o.sessions) * (o.verify ? o.qd + 1 : 1) : 1;
  if (plan.units < min_units) {
    return usage_error(
        fmt::format("the range holds {} I/Os of {} bytes; this run needs at least {}", plan.units,
                    o.bs, min_units));
  }
  if (o.verify) {
    plan.gen.assign(plan.units, 0);
    plan.busy.assign(plan.units, 0);
  }

  for (unsigned i = 0; i < o.sessions; ++i) {
    auto s = std::make_unique<Session>(i, std::move(contexts[i]), o, plan);
    if (!o.idle && !s->init()) return usage_error("out of memory for I/O buffers");
    sessions.push_back(std::move(s));
  }

  std::atomic<uint64_t> start_ns{0};
  StartBarrier sync(std::ptrdiff_t(o.sessions), StampStart{&start_ns});
  std::vector<std::thread> threads;
  for (auto& s : sessions) {
    threads.emplace_back([&s, &sync, &start_ns] { s->run(sync, start_ns); });
  }
  for (auto& t : threads) t.join();

  Stats total;
  for (auto& s : sessions) {
    if (!s->dead()) iscsi_logout_sync(s->ctx());
    total.merge(std::move(s->stats()));
  }
  sessions.clear();

  OpStats all;
  all.merge(total.read);
  all.merge(total.write);
  const double secs = double(total.measure_ns) / 1e9;
  const bool failed = total.errors || total.verify_failures;

  if (o.json) {
    nlohmann::ordered_json j;
    j["url"] = o.url;
    j["pattern"] = o.idle ? "idle" : o.pattern_name;
    j["bs"] = o.bs;
    j["qd"] = o.qd;
    j["sessions"] = o.sessions;
    if (o.pattern == Pattern::kRandRw) j["rwmix"] = o.rwmix;
    j["block_size"] = plan.block_size;
    j["range_bytes"] = range;
    j["verify"] = o.verify;
    j["seed"] = plan.seed;
    j["elapsed_s"] = secs;
    // Totals first, at the top level, so a script can grep the first "iops".
    const nlohmann::ordered_json totals = op_json(all, secs);
    for (auto it = totals.cbegin(); it != totals.cend(); ++it) j[it.key()] = *it;
    j["ios_all"] = total.ios_all;
    j["errors"] = total.errors;
    j["verify_failures"] = total.verify_failures;
    j["verified_blocks"] = total.verified_blocks;
    j["unverified_reads"] = total.unverified_reads;
    if (reads_any(o.pattern)) j["read"] = op_json(total.read, secs);
    if (writes_any(o.pattern)) j["write"] = op_json(total.write, secs);
    j["error_samples"] = total.samples;
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("zuma-bench {} {} bs={} qd={} sessions={}{} range={} bytes (block {}) {:.2f} s{}\n",
               o.url, o.idle ? "idle" : o.pattern_name, o.bs, o.qd, o.sessions,
               o.pattern == Pattern::kRandRw ? fmt::format(" rwmix={}", o.rwmix) : "", range,
               plan.block_size, secs, o.verify ? fmt::format(" verify seed={:#x}", plan.seed) : "");
    if (!o.idle) {
      fmt::print("{:<6} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "op", "ios", "IOPS",
                 "MiB/s", "mean_us", "p50_us", "p99_us", "p99.9_us", "max_us");
      std::vector<Row> rows;
      if (reads_any(o.pattern)) rows.push_back({"read", total.read});
      if (writes_any(o.pattern)) rows.push_back({"write", total.write});
      if (rows.size() > 1) rows.push_back({"total", all});
      for (const auto& r : rows) {
        const auto& st = r.st;
        fmt::print("{:<6} {:>10} {:>11.1f} {:>9.2f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f}\n",
                   r.name, st.ios, secs > 0 ? double(st.ios) / secs : 0.0,
                   secs > 0 ? double(st.bytes) / secs / 1048576.0 : 0.0, st.lat.mean() / 1000.0,
                   us(st.lat.percentile(50)), us(st.lat.percentile(99)),
                   us(st.lat.percentile(99.9)), us(st.lat.max()));
      }
    }
    fmt::print("errors: {}", total.errors);
    if (o.verify) {
      fmt::print("  verify failures: {}  verified blocks: {}  unverified reads: {}",
                 total.verify_failures, total.verified_blocks, total.unverified_reads);
    }
    fmt::print("\n");
  }
  std::fflush(stdout);
  for (const auto& s : total.samples) fmt::print(stderr, "zuma-bench: {}\n", s);
  return failed ? kExitIoError : kExitOk;
}
