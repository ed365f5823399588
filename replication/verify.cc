#include "replication/verify.hh"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "replication/apply.hh"
#include "storage/sync_io.hh"
#include "storage/thread_name.hh"

namespace zuma::replication {
namespace {

constexpr size_t kMarkerFixed = 8 + 8 + 4 + 4 + 8 + 8 + 16 + 2;
constexpr size_t kReplySize = 48;
// Markers not yet answered by the slowest peer: the peers hash at their own pace, and a
// cancelled verify leaves at most this many behind in the log.
constexpr uint64_t kWindow = 32;
// A peer that answers nothing for this long (while connected) ends the verify.
constexpr auto kNoAnswer = std::chrono::seconds(60);

void put(std::vector<uint8_t>& v, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  v.insert(v.end(), b, b + n);
}

template <class T>
T get(std::span<const uint8_t> p, size_t at) {
  T v;
  std::memcpy(&v, p.data() + at, sizeof(T));
  return v;
}

bool same(const XXH128_hash_t& a, const XXH128_hash_t& b) {
  return XXH128_isEqual(a, b) != 0;
}

}  // namespace

std::vector<uint8_t> VerifyMarker::encode() const {
  std::vector<uint8_t> v;
  v.reserve(kMarkerFixed + link.size());
  const uint32_t zero = 0;
  const uint16_t n = uint16_t(std::min<size_t>(link.size(), 0xffff));
  put(v, &id, 8);
  put(v, &index, 8);
  put(v, &lu, 4);
  put(v, &zero, 4);
  put(v, &offset, 8);
  put(v, &length, 8);
  put(v, &hash.low64, 8);
  put(v, &hash.high64, 8);
  put(v, &n, 2);
  put(v, link.data(), n);
  return v;
}

std::optional<VerifyMarker> VerifyMarker::decode(std::span<const uint8_t> p) {
  if (p.size() < kMarkerFixed) return std::nullopt;
  VerifyMarker m;
  m.id = get<uint64_t>(p, 0);
  m.index = get<uint64_t>(p, 8);
  m.lu = get<uint32_t>(p, 16);
  m.offset = get<uint64_t>(p, 24);
  m.length = get<uint64_t>(p, 32);
  m.hash.low64 = get<uint64_t>(p, 40);
  m.hash.high64 = get<uint64_t>(p, 48);
  const uint16_t n = get<uint16_t>(p, 56);
  if (p.size() != kMarkerFixed + n) return std::nullopt;
  m.link.assign(reinterpret_cast<const char*>(p.data()) + kMarkerFixed, n);
  return m;
}

std::vector<uint8_t> VerifyReply::encode() const {
  std::vector<uint8_t> v;
  v.reserve(kReplySize);
  const uint32_t zero = 0;
  const uint64_t reserved = 0;
  put(v, &id, 8);
  put(v, &index, 8);
  put(v, &status, 4);
  put(v, &zero, 4);
  put(v, &hash.low64, 8);
  put(v, &hash.high64, 8);
  put(v, &reserved, 8);
  return v;
}

std::optional<VerifyReply> VerifyReply::decode(std::span<const uint8_t> p) {
  if (p.size() != kReplySize) return std::nullopt;
  VerifyReply r;
  r.id = get<uint64_t>(p, 0);
  r.index = get<uint64_t>(p, 8);
  r.status = get<uint32_t>(p, 16);
  r.hash.low64 = get<uint64_t>(p, 24);
  r.hash.high64 = get<uint64_t>(p, 32);
  return r;
}

int hash_region(storage::Backend& b, uint64_t offset, uint64_t length, XXH128_hash_t* out) {
  if (offset > b.size() || length > b.size() - offset) return -EINVAL;
  thread_local std::vector<uint8_t> buf;
  buf.resize(length);
  iovec v{buf.data(), length};
  storage::IoRequest req{storage::IoOp::kRead};
  req.offset = offset;
  req.length = length;
  req.iov = &v;
  req.iovcnt = 1;
  if (int r = storage::submit_and_wait(b, req); r < 0) return r;
  *out = XXH3_128bits(buf.data(), length);
  return 0;
}

const char* to_string(VerifyStatus::State s) {
  switch (s) {
    case VerifyStatus::State::kRunning:
      return "running";
    case VerifyStatus::State::kDone:
      return "done";
    case VerifyStatus::State::kCancelled:
      return "cancelled";
    case VerifyStatus::State::kFailed:
      return "failed";
  }
  return "?";
}

std::expected<std::unique_ptr<Verifier>, std::string> Verifier::start(GroupLog& group,
                                                                      std::vector<SiteLink*> links,
                                                                      bool repair) {
  if (links.empty())
    return std::unexpected(fmt::format("group {} has no site link to verify", group.name()));
  for (SiteLink* l : links) {
    const LinkStats s = l->stats();
    if (s.state != LinkState::kConnected)
      return std::unexpected(
          fmt::format("group {}: link {} is {}, not connected: nothing to compare with",
                      group.name(), l->name(), to_string(s.state)));
    if (s.bitmap)
      return std::unexpected(fmt::format(
          "group {}: link {} is in bitmap mode: its peer lacks regions until it has resynced",
          group.name(), l->name()));
  }
  std::unique_ptr<Verifier> v(new Verifier(group, std::move(links), repair));
  v->thread_ = std::thread([p = v.get()] {
    storage::name_this_thread("verify/" + p->group_.name());
    p->run();
  });
  return v;
}

Verifier::Verifier(GroupLog& g, std::vector<SiteLink*> links, bool repair)
    : group_(g), links_(std::move(links)), started_(std::chrono::steady_clock::now()) {
  std::random_device rd;
  status_.id = (uint64_t(rd()) << 32 | rd()) | 1;
  status_.repair = repair;
  const auto sizes = g.lun_sizes();
  for (uint32_t lu = 0; lu < sizes.size(); ++lu)
    for (uint64_t off = 0; off < sizes[lu]; off += kVerifyRegion)
      regions_.push_back(Region{lu, off, std::min(kVerifyRegion, sizes[lu] - off)});
  status_.regions = regions_.size();
  hashes_.resize(regions_.size());
  answered_.assign(links_.size(), 0);
  for (SiteLink* l : links_) {
    status_.links.push_back(VerifyStatus::Link{l->name(), 0, {}});
    reconnects_.push_back(l->stats().reconnects);
  }
}

Verifier::~Verifier() {
  cancel("stopped");
  if (thread_.joinable()) thread_.join();
}

void Verifier::join() {
  if (thread_.joinable()) thread_.join();
}

void Verifier::cancel(const std::string& why) {
  {
    std::lock_guard lk(mu_);
    if (cancel_.load()) return;
    cancel_why_ = why;
    cancel_.store(true);
  }
  cv_.notify_all();
}

VerifyStatus Verifier::status() const {
  std::lock_guard lk(mu_);
  VerifyStatus s = status_;
  if (s.state == VerifyStatus::State::kRunning)
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  return s;
}

void Verifier::on_reply(size_t li, const VerifyReply& r) {
  {
    std::lock_guard lk(mu_);
    if (r.id != status_.id || status_.state != VerifyStatus::State::kRunning)
      return;                                                          // an old one's
    if (r.index >= status_.hashed || r.index < answered_[li]) return;  // resent after a reconnect
    auto& link = status_.links[li];
    if (r.status == VerifyReply::kInconsistent) {
      cancel_why_ =
          fmt::format("the peer of link {} is inconsistent (a resync is unfinished)", link.name);
      cancel_.store(true);
    } else if (r.status != VerifyReply::kHashed) {
      cancel_why_ = fmt::format("the peer of link {} could not read LU {} at {}", link.name,
                                regions_[r.index].lu, regions_[r.index].offset);
      cancel_.store(true);
    } else {
      answered_[li] = r.index + 1;
      ++link.compared;
      if (!same(r.hash, hashes_[r.index])) {
        link.mismatched.push_back(regions_[r.index]);
        spdlog::warn("group {}: verify: link {}: LU {} bytes {}+{} differ from the peer's",
                     group_.name(), link.name, regions_[r.index].lu, regions_[r.index].offset,
                     regions_[r.index].length);
      }
    }
  }
  cv_.notify_all();
}

void Verifier::finish(VerifyStatus::State s, const std::string& msg) {
  std::lock_guard lk(mu_);
  status_.state = s;
  status_.message = msg;
  status_.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

void Verifier::run() {
  spdlog::info("group {}: verify {:016x} of {} regions ({} bytes each) over {} link(s) starts",
               group_.name(), status_.id, regions_.size(), kVerifyRegion, links_.size());
  std::string link_name;  // every link answers, unless only one of several is verified
  if (links_.size() == 1 && group_.link_stats().size() > 1) link_name = links_[0]->name();
  for (size_t i = 0; i < links_.size(); ++i)
    links_[i]->set_verify_sink([this, i](const VerifyReply& r) { on_reply(i, r); });
  auto last_progress = std::chrono::steady_clock::now();
  uint64_t last_answered = 0;
  // The links' resync_rate paces the hashing too (both sides read each region): the
  // slowest link's, bytes per second since the start, or since the rate last changed
  // (config reload).
  auto links_rate = [this] {
    uint64_t r = 0;
    for (SiteLink* l : links_)
      if (const uint64_t v = l->resync_rate()) r = r ? std::min(r, v) : v;
    return r;
  };
  uint64_t rate = links_rate(), hashed_bytes = 0;
  auto paced_from = started_;
  std::string failed;
  bool done = false;
  for (uint64_t k = 0; !done && failed.empty() && !cancel_.load();) {
    // A link that dropped (or fell into bitmap mode) since the start ends the verify: what
    // its peer applies from now on is not compared.
    for (size_t i = 0; i < links_.size() && !cancel_.load(); ++i) {
      const LinkStats s = links_[i]->stats();
      if (s.state != LinkState::kConnected || s.reconnects != reconnects_[i] || s.bitmap)
        cancel(fmt::format("link {} {}{}", links_[i]->name(),
                           s.bitmap ? "entered bitmap mode" : "disconnected",
                           s.last_error.empty() ? "" : " (" + s.last_error + ")"));
    }
    if (cancel_.load()) break;
    uint64_t slowest = UINT64_MAX;
    {
      std::lock_guard lk(mu_);
      for (uint64_t a : answered_) slowest = std::min(slowest, a);
    }
    if (slowest == regions_.size()) {
      done = true;
      break;
    }
    if (slowest != last_answered) {
      last_answered = slowest;
      last_progress = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last_progress > kNoAnswer) {
      cancel(fmt::format("no answer from a peer for {} s", kNoAnswer.count()));
      break;
    }
    if (const uint64_t r = links_rate(); r != rate) {
      rate = r;
      paced_from = std::chrono::steady_clock::now();
      hashed_bytes = 0;
    }
    const auto due = rate_due(paced_from, hashed_bytes, rate);
    if (slowest == k) last_progress = std::chrono::steady_clock::now();  // nothing asked: no wait
    if (k < regions_.size() && k - slowest < kWindow && std::chrono::steady_clock::now() >= due) {
      const Region r = regions_[k];
      hashed_bytes += r.length;
      XXH128_hash_t h{};
      std::string err;
      const auto t0 = std::chrono::steady_clock::now();
      const bool fenced =
          group_.with_region_fenced(r.lu, r.offset, r.length, std::chrono::seconds(30), [&] {
            if (int e = group_.hash_lower(r.lu, r.offset, r.length, &h); e < 0) {
              err = fmt::format("reading LU {} at {}: {}", r.lu, r.offset, std::strerror(-e));
              return;
            }
            {
              // Before the marker exists: its answer may come back before this returns.
              std::lock_guard lk(mu_);
              hashes_[k] = h;
              status_.hashed = k + 1;
            }
            VerifyMarker m{status_.id, k, r.lu, r.offset, r.length, h, link_name};
            auto seq = group_.append_marker(RecordType::kVerify, m.encode());
            if (!seq) err = seq.error();
          });
      const uint64_t stall = uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::steady_clock::now() - t0)
                                          .count());
      if (!fenced) err = "writes in flight did not finish within 30 s";
      if (!err.empty()) {
        failed = err;
        break;
      }
      ++k;
      std::lock_guard lk(mu_);
      status_.max_stall_us = std::max(status_.max_stall_us, stall);
      continue;
    }
    std::unique_lock lk(mu_);
    const auto now = std::chrono::steady_clock::now();
    cv_.wait_for(lk, k < regions_.size() && now < due
                         ? std::min<std::chrono::steady_clock::duration>(
                               due - now, std::chrono::milliseconds(100))
                         : std::chrono::steady_clock::duration(std::chrono::milliseconds(100)));
  }
  for (SiteLink* l : links_) l->set_verify_sink(nullptr);
  if (!failed.empty()) {
    spdlog::error("group {}: verify {:016x} failed: {}", group_.name(), status_.id, failed);
    finish(VerifyStatus::State::kFailed, failed);
    return;
  }
  if (!done) {
    std::string why;
    {
      std::lock_guard lk(mu_);
      why = cancel_why_;
    }
    spdlog::warn("group {}: verify {:016x} cancelled: {}", group_.name(), status_.id, why);
    finish(VerifyStatus::State::kCancelled, why);
    return;
  }
  std::string msg, summary;
  std::vector<std::pair<SiteLink*, std::vector<Region>>> repairs;
  {
    std::lock_guard lk(mu_);
    for (size_t i = 0; i < links_.size(); ++i) {
      const auto& l = status_.links[i];
      summary += fmt::format("{}link {}: {} regions compared, {} mismatched",
                             summary.empty() ? "" : "; ", l.name, l.compared, l.mismatched.size());
      if (status_.repair && !l.mismatched.empty())
        repairs.emplace_back(links_[i], merge_regions(l.mismatched));
    }
  }
  for (auto& [link, regions] : repairs) {
    uint64_t bytes = 0;
    for (const Region& r : regions) bytes += r.length;
    link->request_repair(regions);
    msg += fmt::format("{}link {}: {} bytes in {} ranges resent", msg.empty() ? "repair: " : "; ",
                       link->name(), bytes, regions.size());
  }
  spdlog::info("group {}: verify {:016x} done: {}{}", group_.name(), status_.id, summary,
               msg.empty() ? "" : "; " + msg);
  finish(VerifyStatus::State::kDone, msg);
}

}  // namespace zuma::replication
