#include "replication/site_link.hh"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "replication/dirty_map.hh"
#include "replication/group_log.hh"
#include "replication/link_auth.hh"
#include "replication/link_tls.hh"
#include "replication/protocol.hh"
#include "replication/ring_log.hh"
#include "replication/verify.hh"
#include "storage/thread_name.hh"

namespace zuma::replication {
namespace {

constexpr int kConnectTimeoutMs = 2000;
constexpr int kIoTimeoutMs = 30000;
constexpr size_t kReadChunk = 4 << 20;        // bytes of batches read from the log at once
constexpr size_t kMaxInFlight = 32 << 20;     // bytes sent and not yet acknowledged
constexpr auto kStoreEvery = std::chrono::seconds(1);
// A sync link, or an async link holding writes (fall-behind), sends what the log holds as
// soon as it has it; while a frame is being sent the next records gather by themselves. An
// async link otherwise gathers up to kGatherRecords records, waiting at most kGatherDelay
// after it first saw one waiting: each frame costs both sides a wake-up, and on the
// secondary a context switch dearer than applying a record. Fewer records a frame cost
// more wake-ups; a longer wait (1-2 ms, until 2026-12-06) made the peer's work come in
// bursts of a few hundred microseconds that kept the primary's reactor off a CPU. The peer
// acknowledges an async link at most every millisecond (ReplicaGroupOptions::async_ack_delay),
// its BATCH_HELD frames (sent while it holds writes) at once.
// Measured: docs/PERFORMANCE.md "An async link gathers 32 records".
constexpr uint64_t kGatherRecords = 32;
constexpr std::chrono::microseconds kGatherDelay{500};

}  // namespace

const char* to_string(LinkState s) {
  switch (s) {
    case LinkState::kConnecting: return "connecting";
    case LinkState::kConnected: return "connected";
    case LinkState::kDisconnected: return "disconnected";
    case LinkState::kNeedsResync: return "needs_resync";
    case LinkState::kStopped: return "stopped";
    case LinkState::kResyncing:
      return "resyncing";
    case LinkState::kSplitBrain:
      return "split_brain";
    case LinkState::kAuthFailed:
      return "auth_failed";
  }
  return "?";
}

std::expected<std::unique_ptr<SiteLink>, std::string> SiteLink::create(GroupLog& group, const LinkOptions& opt) {
  auto st = SeqStateFile::open(opt.state_path);
  if (!st) return std::unexpected(st.error());
  if (st->value().log_id && st->value().log_id != group.log_id()) {
    // Another generation's (a promotion stopped before it stored the links' new state):
    // what the peer has is learnt from its WELCOME; until then it is taken to have nothing.
    spdlog::warn(
        "group {}: link {}: {} refers to log {:016x}, the group's log is {:016x}: starting it "
        "afresh",
        group.name(), opt.name, opt.state_path, st->value().log_id, group.log_id());
    if (int r = st->store(SeqState{0, group.log_id()}); r < 0)
      return std::unexpected(
          fmt::format("link {}: {}: {}", opt.name, opt.state_path, std::strerror(-r)));
  }
  std::unique_ptr<SiteLink> l(new SiteLink(group, opt, std::move(*st)));
  if (!l->wake_fd_) return std::unexpected(fmt::format("link {}: eventfd: {}", opt.name, std::strerror(errno)));
  l->dirty_ = std::make_unique<DirtyMap>();
  if (!opt.bitmap_path.empty()) {
    if (auto e = l->dirty_->load(opt.bitmap_path, &l->covered_); !e.empty())
      return std::unexpected(fmt::format("link {}: {}", opt.name, e));
    if (::access(opt.bitmap_path.c_str(), F_OK) == 0) {
      l->bitmap_mode_.store(true);
      spdlog::warn(
          "group {}: link {} is in bitmap mode ({} dirty regions up to record {}): they are "
          "resynced "
          "when the peer is back",
          group.name(), opt.name, l->dirty_->regions(), l->covered_);
    }
  }
  return l;
}

SiteLink::SiteLink(GroupLog& g, const LinkOptions& opt, SeqStateFile state)
    : group_(g), opt_(opt), state_(std::move(state)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  acked_.store(state_.value().seq);
  resync_rate_.store(opt_.resync_rate);
  // A sync link starts degraded: it holds writes only once it has caught up.
  degraded_.store(opt_.mode == LinkMode::kSync);
}

SiteLink::~SiteLink() { stop(); }

void SiteLink::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void SiteLink::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
  {
    // A send to a peer that does not read (stopped, hung) would block up to its timeout.
    std::lock_guard lk(sock_mu_);
    if (sock_fd_ >= 0) ::shutdown(sock_fd_, SHUT_RDWR);
  }
  thread_.join();
  state_.store(SeqState{acked(), group_.log_id()});
  state_value_.store(uint8_t(LinkState::kStopped));
}

void SiteLink::restart(uint64_t acked) {
  stop();
  stop_.store(false);
  acked_.store(acked, std::memory_order_release);
  state_.store(SeqState{acked, group_.log_id()});
  degraded_.store(opt_.mode == LinkMode::kSync);
  throttled_.store(false);
  suspended_.store(false);
  state_value_.store(uint8_t(LinkState::kConnecting));
  uint64_t v;
  (void)!::read(wake_fd_.get(), &v, sizeof(v));  // the stop's wake-up
  start();
}

void SiteLink::enter_bitmap(const std::string& why) {
  std::lock_guard lk(dirty_mu_);
  if (bitmap_mode_.load()) return;
  // The map starts empty, covering up to what the peer has: records after it stay in the
  // log until cover() has their regions.
  covered_ = acked();
  dirty_->clear();
  if (auto e = dirty_->save(opt_.bitmap_path, covered_); !e.empty()) {
    spdlog::error("group {}: link {}: cannot enter bitmap mode: {}", group_.name(), opt_.name, e);
    return;
  }
  bitmap_mode_.store(true, std::memory_order_release);
  throttled_.store(false);
  spdlog::warn(
      "group {}: async link {} enters bitmap mode ({}): writes no longer wait for it nor keep log "
      "space; regions the peer misses are tracked in {} and resynced when it is back",
      group_.name(), opt_.name, why, opt_.bitmap_path);
  group_.kick();
}

uint64_t SiteLink::covered() const {
  std::lock_guard lk(dirty_mu_);
  return covered_;
}

uint64_t SiteLink::cover(uint64_t upto,
                         const std::function<std::vector<Region>(uint64_t, uint64_t)>& regions) {
  std::lock_guard lk(dirty_mu_);
  if (!bitmap_mode_.load(std::memory_order_acquire)) return std::min(upto, acked());
  const uint64_t from = std::max(acked(), covered_) + 1;
  if (from > upto) return upto;
  for (const Region& r : regions(from, upto)) dirty_->add(r.lu, r.offset, r.length);
  if (auto e = dirty_->save(opt_.bitmap_path, upto); !e.empty()) {
    spdlog::error("group {}: link {}: storing its dirty-region map: {}", group_.name(), opt_.name,
                  e);
    return covered_;
  }
  covered_ = upto;
  return upto;
}

void SiteLink::set_verify_sink(std::function<void(const VerifyReply&)> sink) {
  std::lock_guard lk(verify_mu_);
  verify_sink_ = std::move(sink);
}

void SiteLink::request_repair(std::vector<Region> regions) {
  {
    std::lock_guard lk(verify_mu_);
    regions.insert(regions.end(), repair_.begin(), repair_.end());
    repair_ = merge_regions(std::move(regions));
  }
  spdlog::warn(
      "group {}: link {}: reconnecting to have the peer resync the regions verify found different",
      group_.name(), opt_.name);
  repair_now_.store(true);
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
  std::lock_guard lk(sock_mu_);
  if (sock_fd_ >= 0) ::shutdown(sock_fd_, SHUT_RDWR);
}

void SiteLink::leave_bitmap_if_done(uint64_t peer_has) {
  if (!bitmap_mode_.load(std::memory_order_acquire)) return;
  std::lock_guard lk(dirty_mu_);
  // The peer has every record the map covers, and every record the log still holds is
  // after what it has or will be sent: the map is no longer needed.
  if (peer_has < covered_ || peer_has + 1 < group_.published_head()) return;
  bitmap_mode_.store(false, std::memory_order_release);
  dirty_->clear();
  ::unlink(opt_.bitmap_path.c_str());
  spdlog::info("group {}: link {} leaves bitmap mode: its peer has caught up", group_.name(),
               opt_.name);
}

void SiteLink::notify() {
  // seq_cst with the group's publication of next_seq and the link's store to wake_at_:
  // either the link sees the new records before it sleeps, or the appender sees it waiting
  // for them. One wake-up per wait: the first appender to see the mark takes it.
  const uint64_t at = wake_at_.load();
  if (at == kNoWake || group_.published_next() < at) return;
  if (wake_at_.exchange(kNoWake) == kNoWake) return;
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

void SiteLink::degrade(const std::string& why) {
  if (opt_.mode == LinkMode::kAsync) {
    // A `sync` fall-behind policy: a write waited sync_timeout_ms; the link stops holding
    // until it is back under its limits, so writes do not each wait that long again.
    std::lock_guard lk(fb_mu_);
    if (!throttled_.load()) return;
    throttled_.store(false);
    suspended_.store(true);
    spdlog::warn(
        "group {}: async link {} no longer holds writes ({}): it stays behind its fall-behind "
        "limits until it catches up",
        group_.name(), opt_.name, why);
    return;
  }
  if (degraded_.exchange(true)) return;
  spdlog::warn("group {}: sync link {} no longer holds writes ({}): the peer lags behind (RPO > 0) until it "
               "catches up",
               group_.name(), opt_.name, why);
}

void SiteLink::check_fallbehind() {
  if (opt_.mode != LinkMode::kAsync || bitmap_mode_.load(std::memory_order_acquire)) return;
  // Bytes and age need a walk of the log's batch index; the record count is two atomics.
  const bool costly = opt_.fallbehind_bytes || opt_.fallbehind_seconds > 0;
  if (!opt_.fallbehind_ios && !costly) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lk(fb_mu_);
  const uint64_t acked = this->acked();
  const uint64_t last = group_.published_next() - 1;
  const uint64_t records = last > acked ? last - acked : 0;
  bool over = opt_.fallbehind_ios && records > opt_.fallbehind_ios;
  bool under_half = !opt_.fallbehind_ios || records <= opt_.fallbehind_ios / 2;
  std::string what = fmt::format("{} records", records);
  // Bytes and age at most every 10 ms, or when the record count alone cannot decide.
  if (costly &&
      (now - fb_costly_at_ >= std::chrono::milliseconds(10) || (throttled_.load() && under_half))) {
    fb_costly_at_ = now;
    const auto lag = group_.lag(acked);
    const double secs = lag.oldest ? std::chrono::duration<double>(now - *lag.oldest).count() : 0.0;
    if (opt_.fallbehind_bytes) {
      over |= lag.bytes > opt_.fallbehind_bytes;
      under_half &= lag.bytes <= opt_.fallbehind_bytes / 2;
    }
    if (opt_.fallbehind_seconds > 0) {
      over |= secs > opt_.fallbehind_seconds;
      under_half &= secs <= opt_.fallbehind_seconds / 2;
    }
    what += fmt::format(", {} bytes, {:.1f} s", lag.bytes, secs);
  } else if (costly) {
    under_half = false;  // not known now: keep the state until the next full look
  }
  const bool block = opt_.on_fallbehind == LinkOptions::Policy::kBlock;
  const bool connected = LinkState(state_value_.load()) == LinkState::kConnected;
  if (throttled_.load()) {
    if (under_half) {
      throttled_.store(false);
      spdlog::info(
          "group {}: async link {} is back within its fall-behind limits ({}): writes no longer "
          "wait for it",
          group_.name(), opt_.name, what);
      group_.kick();
    } else if (!block && !connected) {
      throttled_.store(false);
      suspended_.store(true);
      spdlog::warn(
          "group {}: async link {} is disconnected: it no longer holds writes and stays behind its "
          "fall-behind limits until it catches up",
          group_.name(), opt_.name);
      group_.kick();
    }
    return;
  }
  if (suspended_.load()) {
    if (under_half) {
      suspended_.store(false);
      spdlog::info("group {}: async link {} has caught up ({})", group_.name(), opt_.name, what);
    }
    return;
  }
  if (over && bitmap_policy()) {
    enter_bitmap(what);
    return;
  }
  if (over && (block || connected)) {
    throttled_.store(true);
    spdlog::warn(
        "group {}: async link {} fell behind ({}; limits {} records, {} bytes, {} s): new writes "
        "wait for the peer{} (on_full: {})",
        group_.name(), opt_.name, what, opt_.fallbehind_ios, opt_.fallbehind_bytes,
        opt_.fallbehind_seconds, block ? " however long it takes" : "", block ? "block" : "sync");
  }
}

void SiteLink::set_resync_rate(uint64_t bytes_per_second) {
  if (resync_rate_.exchange(bytes_per_second) == bytes_per_second) return;
  spdlog::info("group {}: link {}: resync rate {}", group_.name(), opt_.name,
               bytes_per_second ? fmt::format("{} bytes/s", bytes_per_second) : "not limited");
}

LinkStats SiteLink::stats() const {
  std::lock_guard lk(mu_);
  LinkStats s = counters_;
  s.state = LinkState(state_value_.load());
  s.degraded = opt_.mode == LinkMode::kSync && degraded_.load();
  s.holding = holding();
  s.fell_behind = throttled_.load() || suspended_.load() || bitmap_mode_.load();
  s.bitmap = bitmap_mode_.load();
  if (s.bitmap) {
    std::lock_guard dl(dirty_mu_);
    s.bitmap_regions = dirty_->regions();
  }
  s.acked = acked();
  s.resync_rate = resync_rate();
  const uint64_t last = group_.published_next() - 1;
  s.lag_records = last > s.acked ? last - s.acked : 0;
  const auto lag = group_.lag(s.acked);
  s.lag_bytes = lag.bytes;
  if (lag.oldest)
    s.lag_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - *lag.oldest).count();
  return s;
}

void SiteLink::set_error(const std::string& e) {
  std::lock_guard lk(mu_);
  if (!e.empty() && counters_.last_error != e) spdlog::warn("group {}: link {} to {}: {}", group_.name(), opt_.name, opt_.peer, e);
  counters_.last_error = e;
}

void SiteLink::auth_failed(const std::string& e) {
  state_value_.store(uint8_t(LinkState::kAuthFailed));
  {
    std::lock_guard lk(mu_);
    ++counters_.auth_failures;
  }
  set_error(e);
}

void SiteLink::wait_backoff(std::chrono::milliseconds d) {
  pollfd p{wake_fd_.get(), POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + d;
  while (!stop_.load() && std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    ::poll(&p, 1, int(std::max<int64_t>(1, left.count())));
    uint64_t v;
    (void)!::read(wake_fd_.get(), &v, sizeof(v));
  }
}

void SiteLink::run() {
  storage::name_this_thread("link/" + opt_.name);
  auto backoff = std::chrono::milliseconds(100);
  while (!stop_.load()) {
    state_value_.store(uint8_t(LinkState::kConnecting));
    int fd = proto::connect_to(opt_.peer, kConnectTimeoutMs);
    if (fd < 0) {
      state_value_.store(uint8_t(LinkState::kDisconnected));
      set_error(fmt::format("cannot connect: {}", std::strerror(-fd)));
    } else {
      storage::UniqueFd sock(fd);
      {
        std::lock_guard lk(sock_mu_);
        sock_fd_ = fd;
      }
      // TLS first when the link has it: a context from the files as they are now (rotated
      // ones are picked up here), then the handshake, which stop() cuts short like any I/O.
      std::optional<proto::Conn> conn;
      if (!opt_.tls) {
        conn.emplace(fd);
      } else if (auto ctx = tls::make_context(*opt_.tls, false); !ctx) {
        set_error(fmt::format("TLS: {}", ctx.error()));
      } else if (auto c = tls::handshake(*ctx, *opt_.tls, fd, false, kConnectTimeoutMs * 5); !c) {
        if (!stop_.load()) auth_failed(c.error());
      } else {
        conn.emplace(std::move(*c));
      }
      const bool go_on = !stop_.load() && (!conn || session(*conn));
      {
        std::lock_guard lk(sock_mu_);
        sock_fd_ = -1;
      }
      if (!go_on) break;
      {
        std::lock_guard lk(mu_);
        ++counters_.reconnects;
      }
      if (LinkState(state_value_.load()) != LinkState::kNeedsResync &&
          LinkState(state_value_.load()) != LinkState::kSplitBrain &&
          LinkState(state_value_.load()) != LinkState::kAuthFailed)
        state_value_.store(uint8_t(LinkState::kDisconnected));
      // A session that got going resets the backoff (session() sets it via last_error "").
      std::lock_guard lk(mu_);
      if (counters_.last_error.empty()) backoff = std::chrono::milliseconds(100);
    }
    state_.store(SeqState{acked(), group_.log_id()});
    if (repair_now_.exchange(false)) continue;  // verify --repair: reconnect at once
    wait_backoff(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

bool SiteLink::send_resync(proto::Conn& conn, const std::vector<std::array<uint64_t, 3>>& ranges) {
  constexpr uint64_t kChunk = 1 << 20;
  constexpr uint64_t kMaxZeros = 64 << 20;
  const auto sizes = group_.lun_sizes();
  uint64_t total = 0;
  for (const auto& [lu, off, len] : ranges) {
    if (lu >= sizes.size() || off > sizes[lu] || len > sizes[lu] - off) {
      set_error(
          fmt::format("the peer asked for a resync of LU {} bytes {}+{}, outside the group's LUs",
                      lu, off, len));
      return false;
    }
    total += len;
  }
  {
    std::lock_guard lk(mu_);
    counters_.resync_total = total;
    counters_.resync_done = 0;
    counters_.resync_started = std::chrono::steady_clock::now();
    ++counters_.resyncs;
  }
  state_value_.store(uint8_t(LinkState::kResyncing));
  spdlog::info("group {}: link {}: resyncing {} ranges, {} bytes, to {}", group_.name(), opt_.name,
               ranges.size(), total, opt_.peer);
  std::vector<uint8_t> buf;
  // resync_rate: after each data frame, wait until the bytes sent so far are not ahead of
  // the rate since the start (so the average never exceeds it; a burst is one frame). A
  // new rate (config reload) starts the count again.
  auto paced_from = std::chrono::steady_clock::now();
  uint64_t paced = 0, rate = resync_rate();
  for (const auto& [lu, off, len] : ranges) {
    const uint32_t lu32 = uint32_t(lu);
    for (uint64_t at = off; at < off + len && !stop_.load();) {
      // A deallocated run goes as one zeros frame (flag 1: u64 length instead of data).
      storage::ExtentStatus ext{};
      const uint64_t left = off + len - at;
      if (group_.lower_extent(lu32, at, std::min<uint64_t>(left, kMaxZeros), &ext) < 0 ||
          ext.length == 0)
        ext = {std::min<uint64_t>(left, kChunk), true};
      uint32_t flags = 0;
      uint64_t n = 0;
      if (ext.allocated) {
        n = std::min({kChunk, left, ext.length});
        buf.assign(16 + n, 0);
        if (int r = group_.read_lower(lu32, at, std::span<uint8_t>(buf).subspan(16)); r < 0) {
          set_error(fmt::format("resync: reading LU {} at {}: {}", lu, at, std::strerror(-r)));
          return false;
        }
      } else {
        flags = proto::kResyncZeros;
        n = std::min(left, ext.length);
        buf.assign(24, 0);
        std::memcpy(buf.data() + 16, &n, 8);
      }
      std::memcpy(buf.data(), &lu32, 4);
      std::memcpy(buf.data() + 4, &flags, 4);
      std::memcpy(buf.data() + 8, &at, 8);
      if (int r = proto::send_frame(conn, proto::Frame::kResync, buf, kIoTimeoutMs); r < 0) {
        set_error(fmt::format("resync: sending: {}", std::strerror(-r)));
        return false;
      }
      at += n;
      {
        std::lock_guard lk(mu_);
        counters_.resync_done += n;
        counters_.bytes_sent += buf.size();
      }
      if (resync_rate() != rate) {
        rate = resync_rate();
        paced_from = std::chrono::steady_clock::now();
        paced = 0;
      }
      if (rate && !flags) {
        paced += n;
        const auto due = rate_due(paced_from, paced, rate);
        // In slices, so that stopping the link or a new rate is not held up.
        for (auto now = std::chrono::steady_clock::now();
             now < due && !stop_.load() && resync_rate() == rate;
             now = std::chrono::steady_clock::now())
          std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
              due - now, std::chrono::milliseconds(50)));
      }
    }
  }
  // Every range was read after this point's records reached the backends: once the peer has
  // applied up to here, it holds this side's image of that moment.
  const uint64_t target = group_.published_next() - 1;
  uint8_t t[8];
  std::memcpy(t, &target, 8);
  if (int r = proto::send_frame(conn, proto::Frame::kResyncDone, std::span<const uint8_t>(t, 8),
                                kIoTimeoutMs);
      r < 0) {
    set_error(fmt::format("resync: sending: {}", std::strerror(-r)));
    return false;
  }
  spdlog::info(
      "group {}: link {}: resync sent ({} bytes); the peer is consistent once it has record {}",
      group_.name(), opt_.name, total, target);
  return !stop_.load();
}

bool SiteLink::session(proto::Conn& conn) {
  // The secret as it is now (a file is read at each connection: a new one needs no restart).
  std::string secret = opt_.secret;
  if (!opt_.secret_file.empty()) {
    auto s = config::read_secret_file(opt_.secret_file);
    if (!s) {
      auth_failed(fmt::format("secret_file: {}", s.error()));
      return !stop_.load();
    }
    secret = std::move(*s);
  }
  std::vector<uint64_t> sizes = group_.lun_sizes();
  nlohmann::json lineage = nlohmann::json::array();
  for (const auto& [id, end] : group_.lineage()) lineage.push_back({id, end});
  // In bitmap mode: the regions of the records released before the peer had them (it asks
  // for them as a resync when it lacks records the log no longer holds).
  nlohmann::json dirty = nlohmann::json::array();
  if (bitmap_mode_.load()) {
    std::lock_guard dl(dirty_mu_);
    for (const Region& r : dirty_->ranges(sizes)) dirty.push_back({r.lu, r.offset, r.length});
  }
  nlohmann::json hello = {{"protocol", proto::kProtocolVersion},
                          {"group", group_.name()},
                          {"link", opt_.name},
                          {"log_id", group_.log_id()},
                          {"last", group_.published_next() - 1},
                          {"head", group_.published_head()},
                          {"luns", sizes},
                          {"lineage", lineage},
                          {"mode", opt_.mode == LinkMode::kAsync ? "async" : "sync"}};
  if (bitmap_mode_.load()) hello["dirty"] = dirty;
  // Regions online verify found different: the peer takes them as a resync.
  std::vector<Region> repair;
  {
    std::lock_guard vl(verify_mu_);
    repair = repair_;
  }
  if (!repair.empty()) {
    nlohmann::json r = nlohmann::json::array();
    for (const Region& x : repair) r.push_back({x.lu, x.offset, x.length});
    hello["repair"] = r;
  }
  if (!secret.empty())
    hello["auth"] = {{"method", auth::kMethod}, {"nonce", auth::hex(auth::random_nonce())}};
  const std::string hello_text = hello.dump();
  if (int r = proto::send_frame(conn, proto::Frame::kHello, hello_text, kIoTimeoutMs); r < 0) {
    set_error(
        fmt::format("sending HELLO: {}", r == -EPROTO ? proto::tls_error() : std::strerror(-r)));
    return !stop_.load();
  }
  if (!secret.empty()) {
    const auto hello_bytes =
        std::span(reinterpret_cast<const uint8_t*>(hello_text.data()), hello_text.size());
    auth::Result a = auth::prove_to_secondary(conn, secret, hello_bytes, kIoTimeoutMs);
    if (!a.ok) {
      // This side refuses the peer: it says why before closing.
      if (a.error.starts_with("authentication"))
        proto::send_frame(conn, proto::Frame::kError, a.error, 1000);
      if (a.auth_failure)
        auth_failed(a.error);
      else
        set_error(a.error);
      return !stop_.load();
    }
  }
  std::string security = conn.tls() ? tls::describe(conn) : "plaintext";
  if (!secret.empty()) security += ", secret";
  {
    std::lock_guard lk(mu_);
    counters_.security = security;
  }
  proto::Frame type{};
  std::vector<uint8_t> payload;
  if (int r = proto::recv_frame(conn, &type, &payload, kIoTimeoutMs); r < 0) {
    // TLS 1.3: the peer checks this side's certificate after this side's handshake is done;
    // its refusal is the alert read here.
    if (r == -EPROTO && conn.tls())
      auth_failed(
          fmt::format("TLS handshake failed: the peer refused this side: {}", proto::tls_error()));
    else
      set_error(fmt::format("no answer to HELLO: {}", r == -ECONNRESET
                                                          ? "the peer closed the connection"
                                                          : std::strerror(-r)));
    return !stop_.load();
  }
  if (type == proto::Frame::kError) {
    const std::string msg(payload.begin(), payload.end());
    if (msg.starts_with("authentication") || msg.starts_with("TLS"))
      auth_failed(fmt::format("the peer refused: {}", msg));
    else
      set_error(fmt::format("the peer refused: {}", msg));
    // After its reason: a reader that sees the state sees why.
    if (msg.starts_with("split brain")) state_value_.store(uint8_t(LinkState::kSplitBrain));
    return !stop_.load();
  }
  auto welcome = nlohmann::json::parse(payload.begin(), payload.end(), nullptr, false);
  if (type != proto::Frame::kWelcome || !welcome.is_object() || !welcome.contains("applied") ||
      !welcome["applied"].is_number_unsigned()) {
    set_error("malformed WELCOME");
    return !stop_.load();
  }
  const uint64_t peer_applied = welcome["applied"].get<uint64_t>();
  // A peer ahead of this log (this side lost records it had sent, or the peer is not what
  // it says): shipping on would make it skip the records that reuse those numbers.
  if (peer_applied >= group_.published_next()) {
    set_error(
        fmt::format("split brain: the peer has records up to {}, this log ends at {}: this "
                    "side lost records it had sent, or was restored from an older copy",
                    peer_applied, group_.published_next() - 1));
    state_value_.store(uint8_t(LinkState::kSplitBrain));  // after its reason
    return !stop_.load();
  }
  if (!repair.empty()) {
    // The peer keeps the ranges durably (inconsistent until their resync is done); ranges
    // asked for since the HELLO go with the next one.
    std::lock_guard vl(verify_mu_);
    if (repair_ == repair) repair_.clear();
  }
  // The peer is the authority on what it holds (it may have been restored from older state).
  acked_.store(peer_applied, std::memory_order_release);
  uint64_t from = peer_applied + 1;
  if (from < group_.published_head()) {
    state_value_.store(uint8_t(LinkState::kNeedsResync));
    set_error(fmt::format("the peer has records up to {}, the log starts at {}: a resync is needed", peer_applied,
                          group_.published_head()));
    return !stop_.load();
  }
  // Ranges the peer must have before records (it discarded its own changes since the two
  // sides diverged, or was interrupted in such a resync).
  std::vector<std::array<uint64_t, 3>> ranges;
  if (welcome.contains("resync") && welcome["resync"].is_array())
    for (const auto& r : welcome["resync"]) {
      if (!r.is_array() || r.size() != 3 || !r[0].is_number_unsigned() ||
          !r[1].is_number_unsigned() || !r[2].is_number_unsigned()) {
        set_error("malformed WELCOME (resync)");
        return !stop_.load();
      }
      ranges.push_back({r[0].get<uint64_t>(), r[1].get<uint64_t>(), r[2].get<uint64_t>()});
    }
  if (welcome.contains("resync")) {
    if (!send_resync(conn, ranges)) return !stop_.load();
  }
  leave_bitmap_if_done(peer_applied);
  state_value_.store(uint8_t(LinkState::kConnected));
  set_error("");
  if (opt_.mode == LinkMode::kSync && from >= group_.published_next() && degraded_.exchange(false))
    spdlog::info("group {}: sync link {} is in step: writes wait for the peer", group_.name(), opt_.name);
  group_.kick();
  spdlog::info("group {}: link {} connected to {}, peer has records up to {}", group_.name(), opt_.name, opt_.peer,
               peer_applied);

  std::deque<std::pair<uint64_t, size_t>> in_flight;  // (last seq of a sent batch, its bytes)
  size_t in_flight_bytes = 0;
  std::vector<uint8_t> buf;
  // Since when records have been waiting to be sent (known to this thread), if any.
  std::optional<std::chrono::steady_clock::time_point> waiting_since;
  while (!stop_.load()) {
    // An async link holding writes (fall-behind policy `sync`) behaves as a sync link: it
    // sends at once, as BATCH_HELD frames the peer acknowledges at once.
    const bool held = opt_.mode == LinkMode::kAsync && holding();
    const bool gather = opt_.mode == LinkMode::kAsync && !held;
    const uint64_t want = gather ? kGatherRecords : 1;
    auto now = std::chrono::steady_clock::now();
    uint64_t waiting = group_.published_next() - from;
    if (waiting == 0)
      waiting_since.reset();
    else if (!waiting_since)
      waiting_since = now;
    // Send what the log has, within the in-flight window, once enough waits or long enough.
    if (waiting > 0 && in_flight_bytes < kMaxInFlight &&
        (waiting >= want || now - *waiting_since >= kGatherDelay)) {
      size_t count = 0, off = 0;
      uint64_t last = 0;
      int r = group_.read_raw(from, kReadChunk, &buf, &off, &count, &last);
      if (r == -ERANGE) {
        state_value_.store(uint8_t(LinkState::kNeedsResync));
        set_error(fmt::format("record {} was released before the peer had it: a resync is needed", from));
        return !stop_.load();
      }
      if (r < 0) {
        set_error(fmt::format("reading the log: {}", std::strerror(-r)));
        return !stop_.load();
      }
      // Every batch read goes in one BATCH frame (protocol 2), exactly as on disk: one
      // send and one frame for the peer however many (small) batches the log holds. The
      // peer checks each batch's checksum.
      if (count) {
        const auto frame = std::span<const uint8_t>(buf).first(off);
        const auto type = held ? proto::Frame::kBatchHeld : proto::Frame::kBatch;
        if (int s = proto::send_frame(conn, type, frame, kIoTimeoutMs); s < 0) {
          set_error(fmt::format("sending: {}", std::strerror(-s)));
          return !stop_.load();
        }
        in_flight.emplace_back(last, off);
        in_flight_bytes += off;
        from = last + 1;
        std::lock_guard lk(mu_);
        counters_.sent = last;
        counters_.batches_sent += count;
        counters_.bytes_sent += off;
      }
      // What arrived during the send waits from now.
      now = std::chrono::steady_clock::now();
      waiting_since = now;
    }
    // Wait for an ACK, new records (notify) or stop: with none waiting, for the first; with
    // some, for `want` of them or the rest of kGatherDelay.
    int64_t timeout_us = 1000000;
    waiting = group_.published_next() - from;
    wake_at_.store(from + (waiting ? want : 1));
    waiting = group_.published_next() - from;  // again after the store: an append racing it
    if (waiting > 0 && in_flight_bytes < kMaxInFlight) {
      if (!waiting_since) waiting_since = now;
      timeout_us = waiting >= want
                       ? 0
                       : std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(
                                                  *waiting_since + kGatherDelay - now)
                                                  .count());
    }
    if (conn.buffered()) timeout_us = 0;  // TLS holds bytes poll() cannot see
    pollfd p[2] = {{conn.fd(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    const timespec ts{time_t(timeout_us / 1000000), long(timeout_us % 1000000) * 1000};
    int n = ::ppoll(p, 2, &ts, nullptr);
    wake_at_.store(kNoWake);
    if (n < 0 && errno != EINTR) {
      set_error(fmt::format("poll: {}", std::strerror(errno)));
      return !stop_.load();
    }
    if (p[1].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_fd_.get(), &v, sizeof(v));
    }
    if (((p[0].revents & (POLLIN | POLLHUP | POLLERR)) || conn.buffered()) && conn.frame_ready()) {
      int r = proto::recv_frame(conn, &type, &payload, kIoTimeoutMs);
      if (r < 0) {
        set_error(r == -ECONNRESET ? "the peer closed the connection"
                                   : fmt::format("receiving: {}", r == -EPROTO && conn.tls()
                                                                      ? proto::tls_error()
                                                                      : std::strerror(-r)));
        return !stop_.load();
      }
      if (type == proto::Frame::kError) {
        set_error(fmt::format("the peer failed: {}", std::string(payload.begin(), payload.end())));
        return !stop_.load();
      }
      if (type == proto::Frame::kVerifyResult) {
        auto reply = VerifyReply::decode(payload);
        if (!reply) {
          set_error("malformed VERIFY_RESULT from the peer");
          return !stop_.load();
        }
        std::lock_guard vl(verify_mu_);
        if (verify_sink_) verify_sink_(*reply);
        continue;
      }
      if (type != proto::Frame::kAck || payload.size() != 8) {
        set_error("unexpected frame from the peer");
        return !stop_.load();
      }
      uint64_t seq = 0;
      std::memcpy(&seq, payload.data(), 8);
      if (seq >= from) {
        // Acknowledging what was never sent would release log space and complete held
        // writes the peer does not have.
        set_error(fmt::format("the peer acknowledged record {}, but only up to {} was sent", seq,
                              from - 1));
        return !stop_.load();
      }
      if (seq > acked()) acked_.store(seq, std::memory_order_seq_cst);
      leave_bitmap_if_done(seq);
      while (!in_flight.empty() && in_flight.front().first <= seq) {
        in_flight_bytes -= in_flight.front().second;
        in_flight.pop_front();
      }
      // Caught up: a degraded sync link holds writes again.
      if (opt_.mode == LinkMode::kSync && degraded_.load() && seq + 1 >= group_.published_next()) {
        degraded_.store(false);
        spdlog::info("group {}: sync link {} has caught up: writes wait for the peer again", group_.name(),
                     opt_.name);
      }
      check_fallbehind();
      group_.acknowledged();  // the writer may complete held writes
      const auto now = std::chrono::steady_clock::now();
      if (now - stored_at_ > kStoreEvery) {
        state_.store(SeqState{acked(), group_.log_id()});
        stored_at_ = now;
      }
    }
  }
  return false;
}

}  // namespace zuma::replication
