// MirrorBackend (mirror_backend.hh): two members, identities and ages, background resync.
#include "storage/mirror_backend.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <roaring/roaring.hh>

#include "storage/buffer.hh"
#include "storage/io_context.hh"
#include "storage/iscsi_backend.hh"
#include "storage/sync_io.hh"
#include "storage/thread_name.hh"

namespace zuma::storage {

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kMagic[8] = {'Z', 'U', 'M', 'A', 'M', 'I', 'R', '1'};
constexpr char kDirtyMagic[8] = {'Z', 'M', 'D', 'I', 'R', 'T', 'Y', '1'};

// The member header (the first bytes of the kHeaderBytes after the data), little-endian.
struct Header {
  bool valid = false;  // the magic is there
  uint32_t index = 0;
  std::array<uint8_t, 16> identity{};
  uint64_t age = 0;
  uint64_t size = 0;
};

void put_le(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

std::string hex(const std::array<uint8_t, 16>& id) {
  std::string s;
  for (uint8_t b : id) s += fmt::format("{:02x}", b);
  return s;
}

// Synchronous I/O from a thread without a reactor, or from main at startup (which may have
// one: it is set aside so that every backend takes its synchronous path).
int member_io(Backend& b, IoOp op, uint64_t off, uint8_t* buf, uint64_t len) {
  IoContext* saved = IoContext::current();
  IoContext::clear_current();
  const int r = storage::sync_io(b, op, off, buf, len);
  if (saved != nullptr) saved->make_current();
  return r;
}

bool reachable(const Backend& b) {
  const auto* remote = dynamic_cast<const IscsiBackend*>(&b);
  return remote == nullptr || remote->connected();
}

// One request through the mirror. Pooled per thread; completes on the submitting thread.
struct MirrorOp {
  MirrorBackend::Impl* impl = nullptr;
  IoRequest* parent = nullptr;
  IoContext* ctx = nullptr;
  IoRequest sub[2];
  int result[2] = {0, 0};
  bool target[2] = {false, false};
  unsigned remaining = 0;
  bool degraded = false;  // a write that reached only the member in sync
  int read_from = -1;
  PostedWork work;
  int final_result = 0;
  MirrorOp* next = nullptr;
};

class MirrorPool {
 public:
  ~MirrorPool() {
    while (head_ != nullptr) delete std::exchange(head_, head_->next);
  }
  MirrorOp* get() {
    if (head_ == nullptr) return new MirrorOp();
    return std::exchange(head_, head_->next);
  }
  void put(MirrorOp* op) {
    op->next = head_;
    head_ = op;
  }

 private:
  MirrorOp* head_ = nullptr;
};
thread_local MirrorPool t_mirror_pool;

}  // namespace

struct MirrorBackend::Impl {
  std::array<std::unique_ptr<Backend>, 2> members;
  uint64_t size = 0;
  uint64_t regions = 0;
  std::string state_path;

  std::array<std::atomic<MemberState>, 2> mstate{MemberState::kInSync, MemberState::kInSync};
  std::atomic<uint64_t> age{0};
  std::array<uint8_t, 16> identity{};

  // Guarded by mu.
  mutable std::mutex mu;
  std::condition_variable cv;
  Roaring dirty;               // regions the member that is out has not got
  int out_member = -1;         // the member out or resyncing, or -1
  uint64_t out_age = 0;        // its age when it went out
  bool dirty_complete = true;  // `dirty` covers everything written since out_age
  uint64_t degraded_in_flight = 0;
  std::array<uint64_t, 2> header_age{0, 0};  // the age each member's header holds now
  bool persist_pending = false;              // a member went out; its state is not yet recorded
  std::vector<MirrorOp*> deferred;           // completions waiting for that record
  bool stopping = false;

  std::mutex
      persist_mu;  // one state update at a time (mirror thread, or a caller without a reactor)
  std::thread thread;

  // ---- the member headers and the state files ----
  int write_header(int m, uint64_t a) {
    Buffer buf(kHeaderBytes);
    buf.zero();
    std::memcpy(buf.data(), kMagic, 8);
    put_le(buf.data() + 8, 1, 4);
    put_le(buf.data() + 12, static_cast<uint64_t>(m), 4);
    std::memcpy(buf.data() + 16, identity.data(), 16);
    put_le(buf.data() + 32, a, 8);
    put_le(buf.data() + 40, size, 8);
    int r = member_io(*members[m], IoOp::kWrite, size, buf.data(), kHeaderBytes);
    if (r == 0) r = member_io(*members[m], IoOp::kFlush, 0, nullptr, 0);
    if (r == 0) {
      std::lock_guard lock(mu);
      header_age[m] = a;
    }
    return r;
  }

  std::expected<Header, int> read_header(int m) {
    Buffer buf(kHeaderBytes);
    const int r = member_io(*members[m], IoOp::kRead, size, buf.data(), kHeaderBytes);
    if (r < 0) return std::unexpected(r);
    Header h;
    h.valid = std::memcmp(buf.data(), kMagic, 8) == 0 && get_le(buf.data() + 8, 4) == 1;
    h.index = static_cast<uint32_t>(get_le(buf.data() + 12, 4));
    std::memcpy(h.identity.data(), buf.data() + 16, 16);
    h.age = get_le(buf.data() + 32, 8);
    h.size = get_le(buf.data() + 40, 8);
    return h;
  }

  static void write_atomically(const std::string& path, const std::string& bytes) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error(fmt::format("{}: {}", tmp, std::strerror(errno)));
    const bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
                    ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error(fmt::format("{}: {}", path, std::strerror(errno)));
    const std::string dir = std::filesystem::path(path).parent_path().string();
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

  // The state file: identity, age, the member out and the age it went out at.
  void save_state() {
    int out;
    uint64_t oa;
    {
      std::lock_guard lock(mu);
      out = out_member;
      oa = out_age;
    }
    write_atomically(state_path + ".state",
                     fmt::format("zuma-mirror 1\nidentity {}\nage {}\nout {} {}\n", hex(identity),
                                 age.load(), out, oa));
  }

  // ---- state changes ----
  // A member failed a request: it is out from now on; `off`/`len` did not reach it.
  // Returns true when the failure must be recorded before writes are acknowledged.
  bool member_failed(int m, uint64_t off, uint64_t len, int error) {
    std::lock_guard lock(mu);
    if (len > 0) add_dirty(off, len);
    if (mstate[m].load() == MemberState::kOut) return persist_pending;
    if (mstate[m].load() == MemberState::kInSync) {
      // It had everything up to now: from here the bitmap is the whole difference from
      // the age its header holds (which may lag the mirror's while a resync finishes).
      out_age = header_age[m];
      dirty_complete = true;
    }
    spdlog::warn(
        "mirror {}: member {} ({}) is out: {}; writes go to the other member, their "
        "regions are kept for its resync",
        state_path, m, members[m]->describe(), std::strerror(-error));
    mstate[m].store(MemberState::kOut);
    out_member = m;
    persist_pending = true;
    cv.notify_all();
    return true;
  }

  void add_dirty(uint64_t off, uint64_t len) {
    if (len == 0) return;
    const uint64_t first = off / kRegionBytes, last = (off + len - 1) / kRegionBytes;
    dirty.addRange(first, last + 1);
  }

  // Records a member's departure: the member in sync gets a new age, then the state file.
  void persist_failure() {
    std::lock_guard plock(persist_mu);
    int in_sync = -1;
    {
      std::lock_guard lock(mu);
      if (!persist_pending) return;
      for (int i = 0; i < 2; ++i)
        if (mstate[i].load() == MemberState::kInSync) in_sync = i;
    }
    const uint64_t next = age.load() + 1;
    if (in_sync >= 0) {
      if (const int r = write_header(in_sync, next); r < 0)
        spdlog::error("mirror {}: cannot write member {}'s header: {}", state_path, in_sync,
                      std::strerror(-r));
    }
    age.store(next);
    try {
      save_state();
    } catch (const std::exception& e) {
      spdlog::error("mirror {}: {}", state_path, e.what());
    }
    std::vector<MirrorOp*> release;
    {
      std::lock_guard lock(mu);
      persist_pending = false;
      release.swap(deferred);
    }
    for (MirrorOp* op : release) post_completion(op);
  }

  // ---- completions ----
  static void run_posted(void* arg) {
    auto* op = static_cast<MirrorOp*>(arg);
    IoRequest* parent = op->parent;
    const int result = op->final_result;
    t_mirror_pool.put(op);
    parent->done(*parent, result);
  }
  void post_completion(MirrorOp* op) {
    op->work.run = &run_posted;
    op->work.arg = op;
    op->ctx->post(op->work);
  }
  // Completes now, or once a pending departure is recorded (never acknowledge a write the
  // state on disk would not account for).
  void complete(MirrorOp* op, int result) {
    op->final_result = result;
    const bool is_write = op->parent->op != IoOp::kRead && op->parent->op != IoOp::kFlush;
    if (is_write) {
      std::unique_lock lock(mu);
      if (persist_pending) {
        if (op->ctx != nullptr) {
          deferred.push_back(op);
          cv.notify_all();
          return;
        }
        lock.unlock();
        persist_failure();  // no reactor to post back to: record it here
      }
    }
    run_posted(op);
  }

  static void sub_done(IoRequest& sub, int result) {
    auto* op = static_cast<MirrorOp*>(sub.user);
    const int m = &sub == &op->sub[0] ? 0 : 1;
    op->result[m] = result;
    if (--op->remaining == 0) op->impl->finish(op);
  }

  void finish(MirrorOp* op) {
    IoRequest& p = *op->parent;
    if (p.op == IoOp::kRead) {
      const int m = op->read_from;
      if (op->result[m] < 0 && mstate[1 - m].load() == MemberState::kInSync) {
        member_failed(m, 0, 0, op->result[m]);
        op->read_from = 1 - m;
        return start(op);  // the same read from the other member
      }
      return complete(op, op->result[m]);
    }
    if (op->degraded) {
      {
        std::lock_guard lock(mu);
        add_dirty(p.offset, p.length);  // again: a resync may have copied it meanwhile
        --degraded_in_flight;
        cv.notify_all();
      }
      const int m = op->target[0] ? 0 : 1;
      return complete(op, op->result[m]);
    }
    const bool ok0 = !op->target[0] || op->result[0] == 0;
    const bool ok1 = !op->target[1] || op->result[1] == 0;
    if (ok0 && ok1) return complete(op, 0);
    if (!ok0 && !ok1) return complete(op, op->result[0]);
    const int bad = ok0 ? 1 : 0;
    const bool data = p.op != IoOp::kFlush;
    member_failed(bad, data ? p.offset : 0, data ? p.length : 0, op->result[bad]);
    complete(op, 0);
  }

  void start(MirrorOp* op) {
    IoRequest& p = *op->parent;
    op->remaining = 1;  // held until every sub-request is out (inline completions)
    for (int m = 0; m < 2; ++m) {
      const bool go = p.op == IoOp::kRead ? m == op->read_from : op->target[m];
      if (!go) continue;
      op->sub[m] = p;
      op->sub[m].done = &sub_done;
      op->sub[m].user = op;
      ++op->remaining;
    }
    for (int m = 0; m < 2; ++m) {
      const bool go = p.op == IoOp::kRead ? m == op->read_from : op->target[m];
      if (go) members[m]->submit(op->sub[m]);
    }
    if (--op->remaining == 0) finish(op);
  }

  void submit(IoRequest& req) {
    if (req.op != IoOp::kFlush) {
      const uint64_t end = req.offset + req.length;
      if (end < req.offset || end > size) return req.done(req, -EINVAL);
    }
    MirrorOp* op = t_mirror_pool.get();
    op->impl = this;
    op->parent = &req;
    op->ctx = IoContext::current();
    op->result[0] = op->result[1] = 0;
    op->degraded = false;
    const MemberState s0 = mstate[0].load(), s1 = mstate[1].load();
    if (req.op == IoOp::kRead) {
      op->read_from = s0 == MemberState::kInSync ? 0 : s1 == MemberState::kInSync ? 1 : -1;
      if (op->read_from < 0) {
        t_mirror_pool.put(op);
        return req.done(req, kUnreachable);
      }
      return start(op);
    }
    if (req.op == IoOp::kFlush) {
      // Every member not out: a resyncing member's completed copies become durable too.
      op->target[0] = s0 != MemberState::kOut;
      op->target[1] = s1 != MemberState::kOut;
      if (!op->target[0] && !op->target[1]) {
        t_mirror_pool.put(op);
        return req.done(req, kUnreachable);
      }
      return start(op);
    }
    if (s0 == MemberState::kInSync && s1 == MemberState::kInSync) {
      op->target[0] = op->target[1] = true;
      return start(op);
    }
    {
      std::lock_guard lock(mu);  // the state again, now that it cannot change under us
      const bool in0 = mstate[0].load() == MemberState::kInSync;
      const bool in1 = mstate[1].load() == MemberState::kInSync;
      op->target[0] = in0;
      op->target[1] = in1;
      if (in0 != in1) {
        op->degraded = true;
        add_dirty(req.offset, req.length);
        ++degraded_in_flight;
      }
    }
    if (!op->target[0] && !op->target[1]) {
      t_mirror_pool.put(op);
      return req.done(req, kUnreachable);
    }
    start(op);
  }

  // ---- resynchronisation (mirror thread) ----
  void run() {
    auto retry_at = Clock::now();
    auto backoff = std::chrono::milliseconds(500);
    std::unique_lock lock(mu);
    while (!stopping) {
      cv.wait_for(lock, std::chrono::milliseconds(200));
      if (stopping) break;
      if (persist_pending) {
        lock.unlock();
        persist_failure();
        lock.lock();
        continue;
      }
      const int m = out_member;
      if (m < 0 || Clock::now() < retry_at) continue;
      if (mstate[m].load() != MemberState::kOut || !reachable(*members[m])) continue;
      lock.unlock();
      const bool ok = resync(m);
      lock.lock();
      if (ok) {
        backoff = std::chrono::milliseconds(500);
      } else {
        retry_at = Clock::now() + backoff;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
      }
    }
  }

  // Brings member m up to date from the other; true when it is in sync again.
  bool resync(int m) {
    const int src = 1 - m;
    if (mstate[src].load() != MemberState::kInSync) return false;
    auto h = read_header(m);
    if (!h) return false;
    bool full;
    {
      std::lock_guard lock(mu);
      full = !h->valid || h->identity != identity || h->index != static_cast<uint32_t>(m) ||
             h->age != out_age || !dirty_complete;
      if (full) dirty.addRange(0, regions);
    }
    if (full) {
      // Claim the member at the age it is now copied from: should this resync stop half
      // way, the next one continues from the bitmap instead of starting over.
      if (write_header(m, out_age) < 0) return false;
    }
    {
      std::lock_guard lock(mu);
      dirty_complete = true;  // the bitmap now holds every region m lacks
      mstate[m].store(MemberState::kResyncing);
    }
    const uint64_t total = dirty_regions_now();
    spdlog::info(
        "mirror {}: member {} ({}) is back ({}); resynchronising {} of {} regions "
        "from member {}",
        state_path, m, members[m]->describe(),
        !h->valid                 ? "no header: a new or replaced member"
        : h->identity != identity ? "another mirror's member: replaced"
        : h->age != out_age       ? fmt::format("age {}, expected {}", h->age, out_age)
        : !dirty_complete         ? "its dirty regions were lost"
                                  : fmt::format("age {}", h->age),
        total, regions, src);
    Buffer buf(kRegionBytes);
    uint64_t copied = 0;
    auto last_log = Clock::now();
    for (;;) {
      uint64_t r;
      {
        std::unique_lock lock(mu);
        if (stopping) return false;
        if (dirty.isEmpty()) {
          if (degraded_in_flight == 0) break;
          cv.wait_for(lock, std::chrono::milliseconds(10));
          continue;
        }
        r = dirty.minimum();
        dirty.remove(static_cast<uint32_t>(r));
      }
      const uint64_t off = r * kRegionBytes;
      const uint64_t len = std::min(kRegionBytes, size - off);
      int res = member_io(*members[src], IoOp::kRead, off, buf.data(), len);
      if (res == 0) res = member_io(*members[m], IoOp::kWrite, off, buf.data(), len);
      if (res < 0) {
        std::lock_guard lock(mu);
        dirty.add(static_cast<uint32_t>(r));
        mstate[m].store(MemberState::kOut);
        spdlog::warn("mirror {}: resync of member {} stopped at region {}: {}", state_path, m, r,
                     std::strerror(-res));
        return false;
      }
      ++copied;
      if (Clock::now() - last_log > std::chrono::seconds(2)) {
        last_log = Clock::now();
        spdlog::info("mirror {}: resync of member {}: {} regions copied, {} left", state_path, m,
                     copied, dirty_regions_now());
      }
    }
    // Nothing left and no degraded write in flight: in sync from the next write on.
    {
      std::lock_guard lock(mu);
      mstate[m].store(MemberState::kInSync);
      out_member = -1;
      out_age = 0;
      dirty_complete = true;
    }
    {
      std::lock_guard plock(persist_mu);
      const uint64_t next = age.load() + 1;
      int r = member_io(*members[m], IoOp::kFlush, 0, nullptr, 0);
      for (int i = 0; i < 2 && r == 0; ++i) r = write_header(i, next);
      age.store(next);
      try {
        save_state();
      } catch (const std::exception& e) {
        spdlog::error("mirror {}: {}", state_path, e.what());
      }
      if (r < 0)
        spdlog::error("mirror {}: recording the new age: {}", state_path, std::strerror(-r));
    }
    spdlog::info("mirror {}: member {} resynchronised ({} regions copied); age {}", state_path, m,
                 copied, age.load());
    return true;
  }

  uint64_t dirty_regions_now() const {
    std::lock_guard lock(mu);
    return dirty.cardinality();
  }

  // ---- open / close ----
  void load(std::string& error) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(state_path).parent_path(), ec);
    std::ifstream in(state_path + ".state");
    bool have_state = false;
    int saved_out = -1;
    uint64_t saved_out_age = 0, saved_age = 0;
    if (in) {
      std::string line, key;
      std::getline(in, line);
      if (line != "zuma-mirror 1") {
        error = fmt::format("{}.state: not a mirror state file", state_path);
        return;
      }
      while (std::getline(in, line)) {
        std::istringstream ls(line);
        ls >> key;
        if (key == "identity") {
          std::string h;
          ls >> h;
          for (size_t i = 0; i < 16 && 2 * i + 1 < h.size(); ++i)
            identity[i] = static_cast<uint8_t>(std::stoul(h.substr(2 * i, 2), nullptr, 16));
        } else if (key == "age") {
          ls >> saved_age;
        } else if (key == "out") {
          ls >> saved_out >> saved_out_age;
        }
      }
      have_state = true;
    }
    std::array<std::optional<Header>, 2> hdr;
    for (int m = 0; m < 2; ++m) {
      if (!reachable(*members[m])) continue;
      if (auto h = read_header(m)) hdr[m] = *h;
    }
    if (!have_state) {
      std::random_device rd;
      for (auto& b : identity) b = static_cast<uint8_t>(rd());
      const int src = hdr[0] ? 0 : hdr[1] ? 1 : -1;
      if (src < 0) {
        error = "a new mirror needs at least one member it can reach";
        return;
      }
      age = 1;
      mstate[1 - src] = MemberState::kOut;
      out_member = 1 - src;
      out_age = 0;
      dirty_complete = false;  // a new member is copied whole
      if (const int r = write_header(src, 1); r < 0) {
        error = fmt::format("member {}: writing its header: {}", src, std::strerror(-r));
        return;
      }
      spdlog::info(
          "mirror {}: new, identity {}; member {} is the source, member {} is copied "
          "from it",
          state_path, hex(identity), src, 1 - src);
      return;
    }
    uint64_t best = 0;
    std::array<bool, 2> ours{false, false};
    for (int m = 0; m < 2; ++m) {
      ours[m] = hdr[m] && hdr[m]->valid && hdr[m]->identity == identity &&
                hdr[m]->index == static_cast<uint32_t>(m);
      if (ours[m]) best = std::max(best, hdr[m]->age);
    }
    // A crash between a header's new age and the state file leaves the header ahead.
    const uint64_t current = std::max(saved_age, best);
    if (best < current) {
      error = fmt::format(
          "no reachable member holds the current data (mirror {} age {}; "
          "reachable members' ages: {}, {})",
          hex(identity), current, ours[0] ? std::to_string(hdr[0]->age) : "none",
          ours[1] ? std::to_string(hdr[1]->age) : "none");
      return;
    }
    age = current;
    for (int m = 0; m < 2; ++m) {
      if (ours[m]) header_age[m] = hdr[m]->age;
      if (ours[m] && hdr[m]->age == current) continue;
      mstate[m] = MemberState::kOut;
      out_member = m;
      out_age = ours[m] ? hdr[m]->age : 0;
      dirty_complete = false;
      if (ours[m] && m == saved_out && saved_out_age == out_age) load_dirty(m);
      spdlog::warn("mirror {}: member {} ({}) is {}; it is resynchronised when it can be reached",
                   state_path, m, members[m]->describe(),
                   !hdr[m]    ? "unreachable"
                   : !ours[m] ? "not this mirror's member (new or replaced)"
                              : fmt::format("stale (age {} < {})", hdr[m]->age, current));
    }
  }

  // The dirty regions saved at the last clean shutdown, if they belong to this outage.
  void load_dirty(int m) {
    std::ifstream in(state_path + ".dirty", std::ios::binary);
    if (!in) return;
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    if (bytes.size() < 28 || std::memcmp(bytes.data(), kDirtyMagic, 8) != 0) return;
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    if (get_le(p + 8, 8) != age.load() || get_le(p + 16, 8) != out_age ||
        get_le(p + 24, 4) != static_cast<uint64_t>(m))
      return;
    try {
      dirty = Roaring::readSafe(bytes.data() + 28, bytes.size() - 28);
      dirty_complete = true;
    } catch (const std::exception&) {
      dirty = Roaring();
    }
  }

  void save_dirty() {
    std::string bytes(28, '\0');
    std::memcpy(bytes.data(), kDirtyMagic, 8);
    auto* p = reinterpret_cast<uint8_t*>(bytes.data());
    put_le(p + 8, age.load(), 8);
    put_le(p + 16, out_age, 8);
    put_le(p + 24, static_cast<uint64_t>(out_member), 4);
    dirty.runOptimize();
    std::string body(dirty.getSizeInBytes(), '\0');
    dirty.write(body.data());
    write_atomically(state_path + ".dirty", bytes + body);
  }
};

MirrorBackend::MirrorBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::expected<std::unique_ptr<MirrorBackend>, std::string> MirrorBackend::open(
    std::array<std::unique_ptr<Backend>, 2> members, uint64_t size, std::string state) {
  using R = std::expected<std::unique_ptr<MirrorBackend>, std::string>;
  for (int m = 0; m < 2; ++m) {
    if (!members[m]) return R(std::unexpect, fmt::format("mirror member {} is missing", m));
    if (members[m]->size() < size + kHeaderBytes)
      return R(std::unexpect,
               fmt::format("mirror member {} ({}) holds {} bytes; it needs {} (the sub-unit's {} "
                           "and a {}-byte header)",
                           m, members[m]->describe(), members[m]->size(), size + kHeaderBytes, size,
                           kHeaderBytes));
  }
  auto impl = std::make_unique<Impl>();
  impl->members = std::move(members);
  impl->size = size;
  impl->regions = (size + kRegionBytes - 1) / kRegionBytes;
  impl->state_path = std::move(state);
  std::string error;
  try {
    impl->load(error);
    if (error.empty()) impl->save_state();
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty())
    return R(std::unexpect, fmt::format("mirror {}: {}", impl->state_path, error));
  std::error_code ec;
  std::filesystem::remove(impl->state_path + ".dirty", ec);  // in memory now
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    name_this_thread("mirror");
    raw->run();
  });
  return R(std::unique_ptr<MirrorBackend>(new MirrorBackend(std::move(impl))));
}

MirrorBackend::~MirrorBackend() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
    impl_->cv.notify_all();
  }
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->persist_failure();
  try {
    if (impl_->out_member >= 0 && impl_->dirty_complete) impl_->save_dirty();
    impl_->save_state();
  } catch (const std::exception& e) {
    spdlog::error("mirror {}: {}", impl_->state_path, e.what());
  }
}

uint64_t MirrorBackend::size() const {
  return impl_->size;
}

bool MirrorBackend::supports(IoOp op) const {
  return impl_->members[0]->supports(op) && impl_->members[1]->supports(op);
}

void MirrorBackend::submit(IoRequest& req) {
  impl_->submit(req);
}

std::string MirrorBackend::describe() const {
  return fmt::format("mirror({}, {})", impl_->members[0]->describe(),
                     impl_->members[1]->describe());
}

MirrorBackend::MemberState MirrorBackend::member_state(int i) const {
  return impl_->mstate[i].load();
}

uint64_t MirrorBackend::age() const {
  return impl_->age.load();
}

uint64_t MirrorBackend::dirty_regions() const {
  return impl_->dirty_regions_now();
}

}  // namespace zuma::storage
