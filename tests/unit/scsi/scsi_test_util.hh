// Helpers shared by the scsi unit tests (not a test file itself): a fake backend in
// memory that records requests and can fail or complete later, and a way to run one CDB
// through scsi::execute() and look at the outcome.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "scsi/device_server.hh"
#include "scsi/logical_unit.hh"
#include "scsi/task.hh"
#include "storage/backend.hh"

namespace zuma::scsi::test {

using Bytes = std::vector<uint8_t>;

// An in-memory backend. Requests are recorded; `fail_with` (-errno) fails the requests
// of `fail_op` (any op when unset); `defer` queues completions until complete_deferred().
class FakeBackend final : public storage::Backend {
 public:
  struct Call {
    storage::IoOp op;
    uint64_t offset;
    uint64_t length;
    bool fua;
  };

  // Holds `size` bytes, or claims `size` but stores only the first `stored` (for huge LUs
  // whose far blocks the test never touches).
  explicit FakeBackend(uint64_t size, uint64_t stored = ~uint64_t{0})
      : data(std::min(size, stored), 0), size_(size) {}

  uint64_t size() const override { return size_; }
  bool supports(storage::IoOp op) const override {
    if (op == storage::IoOp::kDiscard) return discard;      // SBC (thin provisioning)
    if (op == storage::IoOp::kWriteZeroes) return zeroes;  // SBC
    return op == storage::IoOp::kRead || op == storage::IoOp::kWrite || op == storage::IoOp::kFlush;
  }
  // SBC: provisioning as tracked by `holes` (512-byte units freed by kDiscard, taken again by
  // kWrite), when track_holes is set; otherwise the Backend default (all allocated).
  int extent_status(uint64_t offset, uint64_t max_len, storage::ExtentStatus* out) const override {
    if (!track_holes) return Backend::extent_status(offset, max_len, out);
    const uint64_t end = std::min(size_, offset + max_len);
    const bool hole = is_hole(offset);
    uint64_t at = offset;
    while (at < end && is_hole(at) == hole) at = (at / 512 + 1) * 512;
    *out = storage::ExtentStatus{std::min(at, end) - offset, !hole};
    return extent_error;
  }
  int space_usage(storage::SpaceUsage* out) const override {
    *out = usage;
    return usage_error;
  }
  // Thread-safe (for the concurrency tests); done() runs outside the lock.
  void submit(storage::IoRequest& req) override {
    std::unique_lock lock(mu);
    calls.push_back({req.op, req.offset, req.length, req.fua});
    int res = 0;
    if (fail_with != 0 && (!fail_op || *fail_op == req.op)) {
      res = fail_with;
    } else if (req.op == storage::IoOp::kDiscard || req.op == storage::IoOp::kWriteZeroes) {
      REQUIRE(req.offset + req.length <= size_);
      // Beyond the stored bytes there is nothing to zero.
      if (req.offset < data.size()) {
        std::memset(data.data() + req.offset, 0, std::min(req.length, data.size() - req.offset));
      }
      if (req.op == storage::IoOp::kDiscard) mark(req.offset, req.length, true);
    } else if (req.op == storage::IoOp::kRead || req.op == storage::IoOp::kWrite) {
      REQUIRE(req.offset + req.length <= data.size());
      if (req.op == storage::IoOp::kWrite) mark(req.offset, req.length, false);
      uint64_t off = req.offset;
      for (int i = 0; i < req.iovcnt; ++i) {
        auto* base = static_cast<uint8_t*>(req.iov[i].iov_base);
        if (req.op == storage::IoOp::kRead) {
          std::memcpy(base, data.data() + off, req.iov[i].iov_len);
        } else {
          std::memcpy(data.data() + off, base, req.iov[i].iov_len);
        }
        off += req.iov[i].iov_len;
      }
      REQUIRE(off - req.offset == req.length);
    }
    if (defer) {
      deferred.emplace_back(&req, res);
    } else {
      lock.unlock();
      req.done(req, res);
    }
  }
  std::string describe() const override { return "fake"; }

  void complete_deferred() {
    std::unique_lock lock(mu);
    auto d = std::move(deferred);
    deferred.clear();
    lock.unlock();
    for (auto& [req, res] : d) req->done(*req, res);
  }

  std::mutex mu;
  std::vector<uint8_t> data;
  std::vector<Call> calls;
  int fail_with = 0;
  std::optional<storage::IoOp> fail_op;
  bool defer = false;
  std::vector<std::pair<storage::IoRequest*, int>> deferred;
  // SBC (thin provisioning): which ops are supported, provisioning state, space usage.
  bool discard = false;
  bool zeroes = false;
  bool track_holes = false;
  std::vector<bool> holes;  // per 512-byte unit of `data`, when track_holes
  int extent_error = 0;
  storage::SpaceUsage usage{};
  int usage_error = 0;

 private:
  bool is_hole(uint64_t off) const { return off / 512 < holes.size() && holes[off / 512]; }
  // Units wholly inside [off, off + len) become holes (hole) or allocated (!hole); a write
  // allocates every unit it touches.
  void mark(uint64_t off, uint64_t len, bool hole) {
    if (!track_holes) return;
    if (holes.size() < data.size() / 512) holes.resize(data.size() / 512, false);
    const uint64_t first = hole ? (off + 511) / 512 : off / 512;
    const uint64_t last = hole ? (off + len) / 512 : (off + len + 511) / 512;
    for (uint64_t u = first; u < last && u < holes.size(); ++u) holes[u] = hole;
  }
  uint64_t size_;
};

inline constexpr const char* kUuid = "12345678-9abc-4def-8123-456789abcdef";

inline LuParams default_params(uint64_t num_blocks = 2048, uint32_t block_size = 512) {
  LuParams p;
  p.name = "lu0";
  p.uuid = kUuid;
  p.block_size = block_size;
  p.num_blocks = num_blocks;
  return p;
}

// A task run through execute(), with its completion count.
struct TestTask {
  Task task;
  int completions = 0;

  static void on_complete(Task& t) { static_cast<TestTask*>(t.owner)->completions++; }

  TestTask() {
    task.on_complete = &TestTask::on_complete;
    task.owner = this;
  }
  TestTask(const TestTask&) = delete;
  TestTask& operator=(const TestTask&) = delete;

  bool good() const { return completions == 1 && task.status == status::kGood; }
  // Fixed-format sense fields.
  uint8_t key() const {
    return task.sense[0] == 0x72 ? task.sense[1] & 0x0F : task.sense[2] & 0x0F;
  }
  uint8_t asc() const { return task.sense[0] == 0x72 ? task.sense[2] : task.sense[12]; }
  uint8_t ascq() const { return task.sense[0] == 0x72 ? task.sense[3] : task.sense[13]; }
  Bytes sense() const { return Bytes(task.sense.begin(), task.sense.begin() + task.sense_len); }
  Bytes data_in() const { return Bytes(task.data.data(), task.data.data() + task.data_in_len); }
};

// One LU on a fake backend, in a LunTable at `lun`, and two I_T nexuses.
struct Fixture {
  FakeBackend* backend = nullptr;
  std::shared_ptr<LogicalUnit> lu;
  LunTable table;
  Nexus nexus{.id = 1,
              .initiator_port = "iqn.1994-05.com.example:host1,i,0x023d00000001",
              .initiator_name = "iqn.1994-05.com.example:host1",
              .target_port = "iqn.2026-11.org.zuma:db,t,0x0001",
              .target_name = "iqn.2026-11.org.zuma:db",
              .relative_port_id = 1,
              .target_port_group = 1};
  Nexus other{.id = 2,
              .initiator_port = "iqn.1994-05.com.example:host2,i,0x023d00000001",
              .initiator_name = "iqn.1994-05.com.example:host2",
              .target_port = "iqn.2026-11.org.zuma:db,t,0x0001",
              .target_name = "iqn.2026-11.org.zuma:db",
              .relative_port_id = 1,
              .target_port_group = 1};

  explicit Fixture(LuParams p = default_params(), uint64_t lun = 0, uint64_t stored = 64ull << 20) {
    auto b = std::make_unique<FakeBackend>(p.num_blocks * p.block_size, stored);
    backend = b.get();
    lu = make_logical_unit(std::move(p), std::move(b));
    table.luns[lun] = lu;
  }

  // Runs `cdb` on `lun` from `n` (default: nexus). dir/expected_len describe the
  // transfer the initiator announced; `out` is the Data-Out it sent.
  std::unique_ptr<TestTask> run(std::initializer_list<uint8_t> cdb, DataDir dir = DataDir::kIn,
                                uint32_t expected_len = 4096, const Bytes& out = {},
                                uint64_t lun = 0, const Nexus* n = nullptr) {
    auto t = std::make_unique<TestTask>();
    std::copy(cdb.begin(), cdb.end(), t->task.cdb.begin());
    t->task.cdb_len = 16;
    if (cdb.size() > 16) t->task.cdb_len = static_cast<uint16_t>(cdb.size());
    t->task.lun = lun;
    t->task.dir = dir;
    t->task.expected_len = expected_len;
    t->task.nexus = n ? n : &nexus;
    if (!out.empty()) {
      t->task.data.resize(out.size());
      std::memcpy(t->task.data.data(), out.data(), out.size());
    }
    execute(table, t->task);
    return t;
  }
};

// CDB builders.
inline Bytes cdb10(uint8_t op, uint8_t flags, uint32_t lba, uint16_t len) {
  return {op,
          flags,
          static_cast<uint8_t>(lba >> 24),
          static_cast<uint8_t>(lba >> 16),
          static_cast<uint8_t>(lba >> 8),
          static_cast<uint8_t>(lba),
          0,
          static_cast<uint8_t>(len >> 8),
          static_cast<uint8_t>(len),
          0};
}

inline Bytes cdb16(uint8_t op, uint8_t flags, uint64_t lba, uint32_t len) {
  Bytes c(16, 0);
  c[0] = op;
  c[1] = flags;
  for (int i = 0; i < 8; ++i) c[2 + i] = static_cast<uint8_t>(lba >> (56 - 8 * i));
  for (int i = 0; i < 4; ++i) c[10 + i] = static_cast<uint8_t>(len >> (24 - 8 * i));
  return c;
}

inline Bytes cdb12(uint8_t op, uint8_t flags, uint32_t lba, uint32_t len) {
  Bytes c(12, 0);
  c[0] = op;
  c[1] = flags;
  for (int i = 0; i < 4; ++i) c[2 + i] = static_cast<uint8_t>(lba >> (24 - 8 * i));
  for (int i = 0; i < 4; ++i) c[6 + i] = static_cast<uint8_t>(len >> (24 - 8 * i));
  return c;
}

// Runs a CDB given as a vector.
inline std::unique_ptr<TestTask> run_cdb(Fixture& f, const Bytes& cdb, DataDir dir = DataDir::kIn,
                                         uint32_t expected_len = 1u << 20, const Bytes& out = {},
                                         uint64_t lun = 0, const Nexus* n = nullptr) {
  auto t = std::make_unique<TestTask>();
  std::copy(cdb.begin(), cdb.end(), t->task.cdb.begin());
  t->task.cdb_len = static_cast<uint16_t>(std::max<size_t>(16, cdb.size()));
  t->task.lun = lun;
  t->task.dir = dir;
  t->task.expected_len = expected_len;
  t->task.nexus = n ? n : &f.nexus;
  if (!out.empty()) {
    t->task.data.resize(out.size());
    std::memcpy(t->task.data.data(), out.data(), out.size());
  }
  execute(f.table, t->task);
  return t;
}

// Bytes [from, to) of b.
inline Bytes slice(const Bytes& b, size_t from, size_t to) {
  REQUIRE(to <= b.size());
  return Bytes(b.begin() + from, b.begin() + to);
}

inline Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return b;
}

// Expects CHECK CONDITION with fixed-format sense key/ASC/ASCQ.
#define CHECK_SENSE(t, k, a, q)                         \
  do {                                                  \
    CHECK((t)->completions == 1);                       \
    CHECK((t)->task.status == status::kCheckCondition); \
    CHECK(int((t)->key()) == (k));                      \
    CHECK(int((t)->asc()) == (a));                      \
    CHECK(int((t)->ascq()) == (q));                     \
  } while (0)

// Expects INVALID FIELD IN CDB with the fixed-format field pointer at (byte, bit).
#define CHECK_INVALID_CDB(t, byte, bit)                                   \
  do {                                                                    \
    CHECK_SENSE(t, 0x5, 0x24, 0x00);                                      \
    CHECK(int((t)->task.sense[15]) == (0xC8 | (bit)));                    \
    CHECK(int((t)->task.sense[16] << 8 | (t)->task.sense[17]) == (byte)); \
  } while (0)

}  // namespace zuma::scsi::test
