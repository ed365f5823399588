#include "replication/group_log.hh"

#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "storage/factory.hh"
#include "storage/io_context.hh"
#include "storage/memory_backend.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma;
using namespace zuma::replication;
using storage::Backend;
using storage::IoOp;
using storage::IoRequest;

namespace {

using zuma::storage::test::TempDir;

// Runs one request on a thread without an IoContext (every layer completes inline there).
int run(Backend& b, IoOp op, uint64_t off, std::vector<uint8_t>* data, bool fua = false, uint64_t len = 0) {
  iovec iov{};
  IoRequest req;
  req.op = op;
  req.fua = fua;
  req.offset = off;
  req.length = data ? data->size() : len;
  if (data) {
    iov = {data->data(), data->size()};
    req.iov = &iov;
    req.iovcnt = 1;
  }
  int result = 1;
  req.user = &result;
  req.done = [](IoRequest& r, int res) { *static_cast<int*>(r.user) = res; };
  b.submit(req);
  REQUIRE(result != 1);  // completed inline
  return result;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed * 31 + i);
  return v;
}

std::vector<uint8_t> read_back(Backend& b, uint64_t off, size_t n) {
  std::vector<uint8_t> v(n);
  REQUIRE(run(b, IoOp::kRead, off, &v) == 0);
  return v;
}

// A backend that acknowledges writes without storing them: the state of a backend that
// lost the writes still in flight when the machine went down.
class LosingBackend final : public Backend {
 public:
  explicit LosingBackend(std::unique_ptr<Backend> real) : real_(std::move(real)) {}
  uint64_t size() const override { return real_->size(); }
  bool supports(IoOp op) const override { return real_->supports(op); }
  std::string describe() const override { return "losing"; }
  void submit(IoRequest& req) override {
    if (req.op == IoOp::kWrite || req.op == IoOp::kDiscard || req.op == IoOp::kWriteZeroes) {
      req.done(req, 0);
      return;
    }
    real_->submit(req);
  }

 private:
  std::unique_ptr<Backend> real_;
};

GroupLogOptions options(const TempDir& t, uint64_t size = 4 << 20) {
  GroupLogOptions o;
  o.name = "db";
  o.log = RingLogOptions{(t / "db.rlog"), size, true};
  return o;
}

}  // namespace

TEST_CASE("writes through the layer reach the backend and the log, in order, across LUs") {
  TempDir t;
  auto g = GroupLog::open(options(t));
  REQUIRE(g);
  auto lu0 = (*g)->attach(0, std::make_unique<storage::MemoryBackend>(1 << 20));
  auto lu1 = (*g)->attach(1, std::make_unique<storage::MemoryBackend>(1 << 20));
  REQUIRE((*g)->start());
  auto a = pattern(4096, 1), b = pattern(8192, 2), c = pattern(512, 3);
  CHECK(run(*lu0, IoOp::kWrite, 4096, &a) == 0);
  CHECK(run(*lu1, IoOp::kWrite, 0, &b, /*fua=*/true) == 0);
  CHECK(run(*lu0, IoOp::kWrite, 65536, &c) == 0);
  CHECK(run(*lu1, IoOp::kWriteZeroes, 4096, nullptr, false, 4096) == 0);
  CHECK(run(*lu0, IoOp::kFlush, 0, nullptr) == 0);
  CHECK(read_back(*lu0, 4096, 4096) == a);
  CHECK(read_back(*lu0, 65536, 512) == c);
  auto b2 = b;
  std::memset(b2.data() + 4096, 0, 4096);
  CHECK(read_back(*lu1, 0, 8192) == b2);
  auto st = (*g)->stats();
  CHECK(st.appended_records == 4);
  CHECK(st.next_seq == 5);
  CHECK(st.syncs == 2);  // the FUA write and the flush
  CHECK(lu0->describe().find("replicated(group db, lu 0)") == 0);
}

TEST_CASE("after a crash the log's tail is replayed into the backends") {
  TempDir t;
  const std::string img0 = (t / "lu0.img"), img1 = (t / "lu1.img");
  auto open_file = [](const std::string& p) {
    auto b = storage::open_backend({"file", p, 1 << 20});
    REQUIRE(b);
    return std::move(*b);
  };
  auto a = pattern(4096, 7), b = pattern(4096, 8), z = std::vector<uint8_t>(4096, 0);
  {
    auto g = GroupLog::open(options(t));
    REQUIRE(g);
    // The backends lose every write (the machine stopped before they reached them).
    auto lu0 = (*g)->attach(0, std::make_unique<LosingBackend>(open_file(img0)));
    auto lu1 = (*g)->attach(1, std::make_unique<LosingBackend>(open_file(img1)));
    REQUIRE((*g)->start());
    CHECK(run(*lu0, IoOp::kWrite, 8192, &a) == 0);
    CHECK(run(*lu1, IoOp::kWrite, 0, &b) == 0);
    CHECK(run(*lu1, IoOp::kWrite, 4096, &a) == 0);
    CHECK(run(*lu1, IoOp::kWriteZeroes, 4096, nullptr, false, 4096) == 0);
    CHECK(read_back(*lu0, 8192, 4096) == z);  // lost, as intended
  }
  auto g = GroupLog::open(options(t));
  REQUIRE(g);
  auto lu0 = (*g)->attach(0, open_file(img0));
  auto lu1 = (*g)->attach(1, open_file(img1));
  REQUIRE((*g)->start());
  CHECK((*g)->stats().replayed_records == 4);
  CHECK(read_back(*lu0, 8192, 4096) == a);
  CHECK(read_back(*lu1, 0, 4096) == b);
  CHECK(read_back(*lu1, 4096, 4096) == z);  // the later write-zeroes wins, in log order
  // Replayed and flushed: the log is empty again.
  CHECK((*g)->stats().head_seq == (*g)->stats().next_seq);
}

TEST_CASE("a record for a LU the group no longer has stops the start with a clear error") {
  TempDir t;
  {
    auto g = GroupLog::open(options(t));
    REQUIRE(g);
    auto lu0 = (*g)->attach(0, std::make_unique<storage::MemoryBackend>(1 << 20));
    auto lu1 = (*g)->attach(1, std::make_unique<LosingBackend>(std::make_unique<storage::MemoryBackend>(1 << 20)));
    REQUIRE((*g)->start());
    auto a = pattern(512, 1);
    CHECK(run(*lu1, IoOp::kWrite, 0, &a) == 0);
  }
  auto g = GroupLog::open(options(t));
  REQUIRE(g);
  auto lu0 = (*g)->attach(0, std::make_unique<storage::MemoryBackend>(1 << 20));
  auto r = (*g)->start();
  REQUIRE_FALSE(r);
  CHECK(r.error().find("is for LU 1 but the group has 1 LUs") != std::string::npos);
}

TEST_CASE("a small log never fills up: the writer flushes the backends and releases") {
  TempDir t;
  auto g = GroupLog::open(options(t, RingLog::kMinSize));  // 64 KiB of ring
  REQUIRE(g);
  auto lu0 = (*g)->attach(0, std::make_unique<storage::MemoryBackend>(4 << 20));
  REQUIRE((*g)->start());
  for (int i = 0; i < 200; ++i) {
    auto d = pattern(8192, uint8_t(i));
    REQUIRE(run(*lu0, IoOp::kWrite, uint64_t(i % 64) * 8192, &d) == 0);
  }
  for (int i = 136; i < 200; ++i) CHECK(read_back(*lu0, uint64_t(i % 64) * 8192, 8192) == pattern(8192, uint8_t(i)));
  auto st = (*g)->stats();
  CHECK(st.appended_records == 200);
  CHECK(st.pressure_flushes > 0);
  CHECK(st.used_bytes <= st.capacity);
}

TEST_CASE("reactor threads: group commit, completions back on the submitting thread") {
  TempDir t;
  auto g = GroupLog::open(options(t, 16 << 20));
  REQUIRE(g);
  auto lu0 = (*g)->attach(0, std::make_unique<storage::MemoryBackend>(8 << 20));
  auto lu1 = (*g)->attach(1, std::make_unique<storage::MemoryBackend>(8 << 20));
  REQUIRE((*g)->start());
  constexpr int kThreads = 3, kPerThread = 400, kInFlight = 32;
  std::atomic<int> wrong_thread{0}, errors{0};
  auto worker = [&](int tid) {
    auto ctx = storage::IoContext::create();
    REQUIRE(ctx);
    (*ctx)->make_current();
    struct Io {
      IoRequest req;
      iovec iov;
      std::vector<uint8_t> data;
      std::thread::id owner;
      std::atomic<int>* wrong;
      std::atomic<int>* errs;
      int* outstanding;
    };
    int outstanding = 0;
    std::vector<Io> ios(kPerThread);
    int next = 0;
    while (next < kPerThread || outstanding > 0) {
      while (next < kPerThread && outstanding < kInFlight) {
        Io& io = ios[next];
        io.data = pattern(4096, uint8_t(tid * 50 + next));
        io.iov = {io.data.data(), io.data.size()};
        io.owner = std::this_thread::get_id();
        io.wrong = &wrong_thread;
        io.errs = &errors;
        io.outstanding = &outstanding;
        io.req = IoRequest{IoOp::kWrite, next % 50 == 0, uint64_t(tid * kPerThread + next) * 4096, 4096, &io.iov, 1};
        io.req.user = &io;
        io.req.done = [](IoRequest& r, int res) {
          auto& io = *static_cast<Io*>(r.user);
          if (std::this_thread::get_id() != io.owner) io.wrong->fetch_add(1);
          if (res != 0) io.errs->fetch_add(1);
          --*io.outstanding;
        };
        ++outstanding;
        ((next % 2) ? *lu1 : *lu0).submit(io.req);
        ++next;
      }
      (*ctx)->flush();
      if ((*ctx)->poll() == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    storage::IoContext::clear_current();
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back(worker, i);
  for (auto& th : threads) th.join();
  CHECK(wrong_thread.load() == 0);
  CHECK(errors.load() == 0);
  for (int tid = 0; tid < kThreads; ++tid)
    for (int n = 0; n < kPerThread; ++n)
      REQUIRE(read_back((n % 2) ? *lu1 : *lu0, uint64_t(tid * kPerThread + n) * 4096, 4096) ==
              pattern(4096, uint8_t(tid * 50 + n)));
  auto st = (*g)->stats();
  CHECK(st.appended_records == uint64_t(kThreads * kPerThread));
  CHECK(st.next_seq == uint64_t(kThreads * kPerThread) + 1);
  MESSAGE("records per batch: " << double(st.appended_records) / double(st.appended_batches));
}

namespace {

// A started group with one 8 MiB memory LU, and an IoContext current on this thread (the
// test thread acts as a reactor).
struct OneLuReactor {
  TempDir t;
  std::unique_ptr<GroupLog> g;
  std::unique_ptr<Backend> lu;
  std::unique_ptr<storage::IoContext> ctx;
  OneLuReactor() {
    auto o = GroupLog::open(options(t, 16 << 20));
    REQUIRE(o);
    g = std::move(*o);
    lu = g->attach(0, std::make_unique<storage::MemoryBackend>(8 << 20));
    REQUIRE(g->start());
    auto c = storage::IoContext::create();
    REQUIRE(c);
    ctx = std::move(*c);
    ctx->make_current();
  }
  ~OneLuReactor() {
    storage::IoContext::clear_current();
    lu.reset();
    g.reset();  // before the context it posts to
  }
};

}  // namespace

TEST_CASE("a write submitted while the writer idles is appended on its own thread, in order") {
  // GroupLog::try_append_inline: no hand-off to the writer thread and back; the record
  // gets the next sequence number and the completion runs on the submitting thread.
  OneLuReactor f;
  constexpr int kWrites = 10;
  for (int i = 0; i < kWrites; ++i) {
    // Long enough for the writer to be asleep with nothing queued.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto data = pattern(4096, uint8_t(i + 1));
    iovec iov{data.data(), data.size()};
    IoRequest req{IoOp::kWrite, false, uint64_t(i % 3) * 4096, 4096, &iov, 1};
    struct Done {
      bool done = false;
      int res = -1;
      std::thread::id on;
    } d;
    req.user = &d;
    req.done = [](IoRequest& r, int res) {
      auto& d = *static_cast<Done*>(r.user);
      d.done = true;
      d.res = res;
      d.on = std::this_thread::get_id();
    };
    f.lu->submit(req);
    for (int spins = 0; !d.done && spins < 100000; ++spins) {
      f.ctx->flush();
      if (f.ctx->poll() == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    REQUIRE(d.done);
    CHECK(d.res == 0);
    CHECK(d.on == std::this_thread::get_id());
  }
  auto st = f.g->stats();
  CHECK(st.inline_appends == kWrites);
  CHECK(st.appended_records == kWrites);
  CHECK(st.next_seq == kWrites + 1);
  // The last write to each block is what the LU holds (blocks 0, 1, 2 last written by
  // writes 9, 7 and 8).
  CHECK(read_back(*f.lu, 0, 4096) == pattern(4096, 10));
  CHECK(read_back(*f.lu, 4096, 4096) == pattern(4096, 8));
  CHECK(read_back(*f.lu, 8192, 4096) == pattern(4096, 9));
}

TEST_CASE("the writes one reactor pass submits go to the log as one batch, in order") {
  OneLuReactor f;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the writer asleep
  constexpr int kWrites = 6;
  std::vector<std::vector<uint8_t>> data;
  std::vector<iovec> iov(kWrites);
  std::vector<IoRequest> req(kWrites);
  std::vector<int> order;
  for (int i = 0; i < kWrites; ++i) data.push_back(pattern(4096, uint8_t(40 + i)));
  for (int i = 0; i < kWrites; ++i) {
    iov[i] = {data[i].data(), data[i].size()};
    // Writes 0 and 5 go to the same block: the later one must be what the LU holds.
    req[i] = IoRequest{IoOp::kWrite, false, uint64_t(i % 5) * 4096, 4096, &iov[i], 1};
    req[i].user = &order;
    req[i].done = [](IoRequest& r, int res) {
      CHECK(res == 0);
      static_cast<std::vector<int>*>(r.user)->push_back(int(r.offset / 4096));
    };
  }
  const auto before = f.g->stats();
  for (auto& r : req) f.lu->submit(r);
  CHECK(order.empty());  // gathered until the end of the pass
  f.ctx->flush();
  // Block 0 is written twice: the second write waits for the first (overlap), and is
  // gathered for the next pass.
  for (int spins = 0; order.size() < kWrites && spins < 100000; ++spins) {
    f.ctx->flush();
    if (f.ctx->poll() == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  REQUIRE(order.size() == kWrites);
  const auto after = f.g->stats();
  CHECK(after.appended_records - before.appended_records == kWrites);
  CHECK(after.inline_appends - before.inline_appends == kWrites);
  CHECK(after.appended_batches - before.appended_batches == 2);  // 5 writes, then the 6th
  CHECK(read_back(*f.lu, 0, 4096) == data[5]);
  for (int i = 1; i < 5; ++i) CHECK(read_back(*f.lu, uint64_t(i) * 4096, 4096) == data[i]);
}

namespace {

// Holds every write it is given until release(): the order in which the layer below the
// replication layer sees writes, and when.
class HoldingBackend final : public Backend {
 public:
  explicit HoldingBackend(uint64_t size) : real_(size) {}
  uint64_t size() const override { return real_.size(); }
  bool supports(IoOp op) const override { return real_.supports(op); }
  std::string describe() const override { return "holding"; }
  void submit(IoRequest& req) override {
    if (req.op != IoOp::kWrite) {
      real_.submit(req);
      return;
    }
    std::lock_guard lk(mu_);
    held_.push_back(&req);
    offsets_.push_back(req.offset);
  }
  // Completes the oldest held write (after writing it).
  void release_one() {
    IoRequest* r;
    {
      std::lock_guard lk(mu_);
      REQUIRE(!held_.empty());
      r = held_.front();
      held_.erase(held_.begin());
    }
    real_.submit(*r);
  }
  std::vector<uint64_t> offsets() {
    std::lock_guard lk(mu_);
    return offsets_;
  }

 private:
  storage::MemoryBackend real_;
  std::mutex mu_;
  std::vector<IoRequest*> held_;
  std::vector<uint64_t> offsets_;
};

struct AsyncWrite {
  std::vector<uint8_t> data;
  iovec iov{};
  IoRequest req;
  std::atomic<int> result{1};
  AsyncWrite(uint64_t off, size_t n, uint8_t seed) : data(pattern(n, seed)) {
    iov = {data.data(), data.size()};
    req.op = IoOp::kWrite;
    req.offset = off;
    req.length = n;
    req.iov = &iov;
    req.iovcnt = 1;
    req.user = this;
    req.done = [](IoRequest& r, int res) { static_cast<AsyncWrite*>(r.user)->result = res; };
  }
};

}  // namespace

TEST_CASE("overlapping writes reach the backend one at a time, in log order") {
  // The layer below may complete two overlapping writes in either order; the log must
  // hold them in the order the image got them, or a secondary applying the log in order
  // ends with other data in the overlap.
  TempDir t;
  auto g = GroupLog::open(options(t));
  REQUIRE(g);
  auto holder = std::make_unique<HoldingBackend>(1 << 20);
  HoldingBackend* below = holder.get();
  auto lu = (*g)->attach(0, std::move(holder));
  REQUIRE((*g)->start());
  AsyncWrite w1(0, 4096, 1), w2(2048, 4096, 2), w3(65536, 4096, 3);
  lu->submit(w1.req);
  auto wait_for = [&](size_t n) {
    for (int i = 0; i < 2000 && below->offsets().size() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return below->offsets().size();
  };
  REQUIRE(wait_for(1) == 1);
  lu->submit(w2.req);  // overlaps w1: parked until w1 is done
  lu->submit(w3.req);  // elsewhere: goes through
  REQUIRE(wait_for(2) == 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(below->offsets() == std::vector<uint64_t>{0, 65536});
  below->release_one();  // w1
  CHECK(w1.result == 0);
  REQUIRE(wait_for(3) == 3);
  CHECK(below->offsets() == std::vector<uint64_t>{0, 65536, 2048});
  below->release_one();  // w3
  below->release_one();  // w2
  CHECK(w2.result == 0);
  CHECK(w3.result == 0);
  // The image holds w2 in the overlap, as the log's order says.
  auto want = w1.data;
  std::memcpy(want.data() + 2048, w2.data.data(), 2048);
  std::vector<uint8_t> got(4096);
  CHECK(run(*lu, IoOp::kRead, 0, &got) == 0);
  CHECK(got == want);
}
