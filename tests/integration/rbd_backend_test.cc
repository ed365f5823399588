// RbdBackend (storage/rbd_backend.cc) against a real single-node Ceph cluster on 127.0.0.1
// (ceph-cluster.sh: one mon, one memstore OSD, started and stopped by this test). Label
// ceph: needs ceph-mon, ceph-osd and ceph-common (scripts/install-deps.sh).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "storage/rbd_backend.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kImageBytes = 64 << 20;

// ceph-cluster.sh in a child process: the cluster lives until its stdin is closed.
class Cluster {
 public:
  explicit Cluster(const TempDir& dir) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::execlp("bash", "bash", ZUMA_CEPH_CLUSTER_SH, dir.path().c_str(), "rbd", "img:64M",
               "small:1M", "img2:64M", nullptr);
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    FILE* f = ::fdopen(out[0], "r");
    char line[4096];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      std::string l(line);
      while (!l.empty() && l.back() == '\n') l.pop_back();
      if (l == "ready") {
        ready_ = true;
        break;
      }
      if (const auto eq = l.find('='); eq != std::string::npos)
        env_[l.substr(0, eq)] = l.substr(eq + 1);
    }
    std::fclose(f);
  }
  ~Cluster() {
    ::close(stdin_);  // the script stops the daemons and removes their files
    int st;
    ::waitpid(pid_, &st, 0);
  }
  bool ready() const { return ready_; }
  std::string get(const std::string& k) const { return env_.at(k); }
  pid_t osd() const { return std::stoi(env_.at("CEPH_OSD_PID")); }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  bool ready_ = false;
  std::map<std::string, std::string> env_;
};

// One cluster for every test case (it takes a few seconds to start); stopped at exit.
Cluster& cluster() {
  static TempDir dir;
  static Cluster c(dir);
  return c;
}

RbdSpec spec_for(const Cluster& c, const std::string& image, uint64_t size) {
  RbdSpec s;
  s.pool = "rbd";
  s.image = image;
  s.user = "zuma";
  s.keyring = c.get("CEPH_KEYRING");
  s.ceph_conf = c.get("CEPH_CONF");
  s.size = size;
  s.timeout_s = 3;
  return s;
}

int run_sync(Backend& b, IoOp op, uint64_t off, std::vector<uint8_t>& buf, uint64_t len = ~0ull) {
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest r = make_req(op, off, len == ~0ull ? buf.size() : len, &iov, buf.empty() ? 0 : 1, &d);
  b.submit(r);
  REQUIRE(d.calls == 1);  // no IoContext here: complete when submit() returns
  return d.result;
}

// Every thread of `pid` stopped (SIGSTOP takes effect thread by thread: one still running
// can answer a request sent meanwhile). False after 5 s.
bool all_stopped(pid_t pid) {
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    bool all = true;
    for (const auto& t : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid))) {
      std::ifstream f(t.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(f)), {});
      const auto paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T')
        all = false;
    }
    if (all) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int run_range(Backend& b, IoOp op, uint64_t off, uint64_t len) {
  Done d;
  IoRequest r = make_req(op, off, len, nullptr, 0, &d);
  b.submit(r);
  REQUIRE(d.calls == 1);
  return d.result;
}

}  // namespace

TEST_CASE("rbd backend: against a single-node Ceph cluster") {
  const Cluster& cl = cluster();
  REQUIRE_MESSAGE(cl.ready(), "the Ceph cluster did not come up (ceph-cluster.sh's log above)");

  SUBCASE("open refuses what cannot serve the sub-unit, naming it") {
    auto small = RbdBackend::open(spec_for(cl, "small", 2 << 20));
    REQUIRE_FALSE(small.has_value());
    CHECK(small.error() ==
          "rbd rbd/small: the image holds 1048576 bytes, the sub-unit needs 2097152 (grow it: rbd "
          "resize --size 2097152 rbd/small)");
    auto none = RbdBackend::open(spec_for(cl, "nope", 1 << 20));
    REQUIRE_FALSE(none.has_value());
    CHECK(none.error() ==
          "rbd rbd/nope: no such image (create it: rbd create --size 1048576 rbd/nope)");
    RbdSpec nopool = spec_for(cl, "img", 1 << 20);
    nopool.pool = "nopool";
    auto np = RbdBackend::open(nopool);
    REQUIRE_FALSE(np.has_value());
    CHECK(np.error().starts_with("rbd nopool/img: "));
    // client.admin's key is not in client.zuma's keyring: cephx refuses.
    RbdSpec stranger = spec_for(cl, "img", 1 << 20);
    stranger.user = "client.admin";
    auto st = RbdBackend::open(stranger);
    REQUIRE_FALSE(st.has_value());
    CHECK(st.error().starts_with("rbd rbd/img: connecting to the cluster: "));
  }

  SUBCASE("I/O round trips: read, write, flush, discard, write zeroes") {
    auto b = RbdBackend::open(spec_for(cl, "img", kImageBytes));
    REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error()));
    RbdBackend& be = **b;
    CHECK(be.size() == kImageBytes);
    CHECK(be.describe() == "rbd:rbd/img");
    for (IoOp op : {IoOp::kRead, IoOp::kWrite, IoOp::kFlush, IoOp::kDiscard, IoOp::kWriteZeroes})
      CHECK(be.supports(op));

    // Synchronous (no reactor on this thread), across an object boundary (4 MiB objects).
    const uint64_t at = (4 << 20) - 96 * 1024 + 512;
    auto data = pattern(192 * 1024, 1);
    CHECK(run_sync(be, IoOp::kWrite, at, data) == 0);
    std::vector<uint8_t> none;
    CHECK(run_sync(be, IoOp::kFlush, 0, none) == 0);
    std::vector<uint8_t> back(data.size());
    CHECK(run_sync(be, IoOp::kRead, at, back) == 0);
    CHECK(back == data);
    // Buffers longer than the request: only `length` bytes move.
    std::vector<uint8_t> longer(8192, 0xEE);
    CHECK(run_sync(be, IoOp::kRead, at, longer, 4096) == 0);
    CHECK(std::equal(longer.begin(), longer.begin() + 4096, data.begin()));
    CHECK(longer[4096] == 0xEE);
    // Never written: zeros.
    std::vector<uint8_t> fresh(4096, 0xEE);
    CHECK(run_sync(be, IoOp::kRead, 32 << 20, fresh) == 0);
    CHECK(fresh == std::vector<uint8_t>(4096, 0));
    // Beyond the end.
    CHECK(run_sync(be, IoOp::kRead, kImageBytes - 512, back) == -EINVAL);

    // Discard of 4 KiB inside an object (below librbd's discard granularity): reads zeros
    // there (rbd_skip_partial_discard=false), the neighbours intact.
    CHECK(run_range(be, IoOp::kDiscard, at + 8192, 4096) == 0);
    CHECK(run_sync(be, IoOp::kRead, at, back) == 0);
    auto want = data;
    std::fill(want.begin() + 8192, want.begin() + 8192 + 4096, 0);
    CHECK(back == want);
    // Write zeroes of 512 bytes, and of a range across the object boundary.
    CHECK(run_range(be, IoOp::kWriteZeroes, at + 512, 512) == 0);
    CHECK(run_range(be, IoOp::kWriteZeroes, (4 << 20) - 1024, 2048) == 0);
    CHECK(run_sync(be, IoOp::kRead, at, back) == 0);
    std::fill(want.begin() + 512, want.begin() + 1024, 0);
    const uint64_t z = (4 << 20) - 1024 - at;
    std::fill(want.begin() + z, want.begin() + z + 2048, 0);
    CHECK(back == want);

    // Asynchronous: 16 writes in flight, each completion posted back to this thread.
    CurrentContext ctx;
    const auto me = std::this_thread::get_id();
    struct Slot {
      Done d;
      std::thread::id thread;
      std::vector<uint8_t> buf;
      iovec iov[2];
      IoRequest r;
    };
    std::vector<Slot> slots(16);
    for (size_t i = 0; i < slots.size(); ++i) {
      Slot& s = slots[i];
      s.buf = pattern(16384, static_cast<uint32_t>(100 + i));
      s.iov[0] = {s.buf.data(), 4096};
      s.iov[1] = {s.buf.data() + 4096, s.buf.size() - 4096};
      s.r = make_req(IoOp::kWrite, (8 << 20) + i * 1048576 + 4096, s.buf.size(), s.iov, 2, &s.d);
      s.r.fua = true;
      s.r.user = &s;
      s.r.done = [](IoRequest& req, int result) {
        auto* sl = static_cast<Slot*>(req.user);
        sl->thread = std::this_thread::get_id();
        sl->d.result = result;
        ++sl->d.calls;
      };
      be.submit(s.r);
    }
    REQUIRE(drive(*ctx, [&] {
      for (auto& s : slots)
        if (s.d.calls == 0) return false;
      return true;
    }));
    for (size_t i = 0; i < slots.size(); ++i) {
      CHECK(slots[i].d.calls == 1);
      CHECK(slots[i].d.result == 0);
      CHECK(slots[i].thread == me);
    }
    IoContext::clear_current();
    for (size_t i = 0; i < slots.size(); ++i) {
      std::vector<uint8_t> got(slots[i].buf.size());
      CHECK(run_sync(be, IoOp::kRead, (8 << 20) + i * 1048576 + 4096, got) == 0);
      CHECK(got == slots[i].buf);
    }
    ctx->make_current();

    // The data is in the cluster, not in this image handle: a second one reads it.
    IoContext::clear_current();
    auto again = RbdBackend::open(spec_for(cl, "img", kImageBytes));
    REQUIRE(again.has_value());
    CHECK(run_sync(**again, IoOp::kRead, at, back) == 0);
    CHECK(back == want);
  }

  SUBCASE("an unreachable cluster: kUnreachable within the timeout, then recovery") {
    auto b = RbdBackend::open(spec_for(cl, "img2", kImageBytes));
    REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error()));
    RbdBackend& be = **b;
    auto data = pattern(65536, 7);
    CHECK(run_sync(be, IoOp::kWrite, 1 << 20, data) == 0);

    // The OSD stops answering (frozen: to the client, as a partition looks).
    REQUIRE(::kill(cl.osd(), SIGSTOP) == 0);
    REQUIRE(all_stopped(cl.osd()));
    auto t0 = Clock::now();
    std::vector<uint8_t> back(data.size());
    CHECK(run_sync(be, IoOp::kRead, 1 << 20, back) == kUnreachable);
    CHECK(run_sync(be, IoOp::kWrite, 2 << 20, data) == kUnreachable);
    CHECK(Clock::now() - t0 < std::chrono::seconds(10));  // 2 x the 3 s timeout, not a hang
    {
      CurrentContext ctx;
      Done d;
      iovec iov{back.data(), back.size()};
      IoRequest r = make_req(IoOp::kRead, 1 << 20, back.size(), &iov, 1, &d);
      t0 = Clock::now();
      be.submit(r);
      CHECK(d.calls == 0);
      REQUIRE(drive(*ctx, [&] { return d.calls > 0; }));
      CHECK(d.result == kUnreachable);
      CHECK(Clock::now() - t0 < std::chrono::seconds(6));
    }

    // Back: the same handle works again, the data intact.
    REQUIRE(::kill(cl.osd(), SIGCONT) == 0);
    int r = kUnreachable;
    for (int i = 0; i < 10 && r == kUnreachable; ++i) r = run_sync(be, IoOp::kRead, 1 << 20, back);
    CHECK(r == 0);
    CHECK(back == data);
    CHECK(run_sync(be, IoOp::kWrite, 2 << 20, data) == 0);
  }
}

TEST_CASE("rbd backend: no monitor answers: open fails within the timeout") {
  TempDir dir;
  RbdSpec s;
  s.pool = "rbd";
  s.image = "img";
  s.user = "zuma";
  s.mon_host = "127.0.0.1:1";  // nothing listens there
  s.keyring = dir / "none.keyring";
  s.size = 1 << 20;
  s.timeout_s = 2;
  // A keyring that names the user, so the failure is the unreachable monitor.
  write_file(s.keyring, 0, [] {
    std::string k = "[client.zuma]\n\tkey = AQBmS1VnAAAAABAAc2vVxBKRYl5JwZ2+WIwtHQ==\n";
    return std::vector<uint8_t>(k.begin(), k.end());
  }());
  const auto t0 = Clock::now();
  auto b = RbdBackend::open(s);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.error().starts_with("rbd rbd/img: "));
  CHECK(Clock::now() - t0 < std::chrono::seconds(8));
}
