// Data path: patterns written and read back across LUs, sub-unit boundaries, the last
// LBA, out-of-range LBAs, transfers larger than MaxBurstLength under every combination of
// ImmediateData/InitialR2T, odd transfer sizes, concurrent sessions and the async API at
// queue depth 32.
#include <doctest/doctest.h>

#include <poll.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;

namespace {

// LUN 0: 64 MiB of 512-byte blocks on two 32 MiB files (boundary at LBA 65536).
// LUN 1: 16 MiB of 4096-byte blocks in memory.
const char* kLuns =
    "      - { id: 0, name: a, size: 64MiB, block_size: 512, subunits: [ {backend: file, path: "
    "@DIR@/a1.img, size: 32MiB}, {backend: file, path: @DIR@/a2.img} ] }\n"
    "      - { id: 1, name: b, size: 16MiB, block_size: 4096, backend: memory }\n";
constexpr uint64_t kLun0Blocks = 131072;
constexpr uint64_t kBoundary = 65536;
constexpr uint64_t kLun1Blocks = 4096;

const char* kIscsiDefault =
    "{ max_burst_length: 262144, first_burst_length: 65536, max_recv_data_segment_length: "
    "65536, queue_depth: 128 }";

// Writes nblocks of the pattern at lba, reads them back, checks. Returns "" or an error.
std::string write_read(Session& s, int lun, uint64_t lba, uint64_t nblocks, uint32_t bs,
                       uint64_t seed) {
  auto data = make_pattern(nblocks, bs, lba, seed);
  Task w = s.write16(lun, lba, data, bs);
  if (!is_good(w.get()))
    return "WRITE16 lun " + std::to_string(lun) + " lba " + std::to_string(lba) + " blocks " +
           std::to_string(nblocks) + ": " + describe(s.ctx(), w.get());
  Task r = s.read16(lun, lba, static_cast<uint32_t>(nblocks * bs), bs);
  if (!is_good(r.get()))
    return "READ16 lun " + std::to_string(lun) + " lba " + std::to_string(lba) + " blocks " +
           std::to_string(nblocks) + ": " + describe(s.ctx(), r.get());
  if (r->datain.size != static_cast<int>(nblocks * bs))
    return "READ16 returned " + std::to_string(r->datain.size) + " bytes, expected " +
           std::to_string(nblocks * bs);
  std::string bad =
      check_pattern({r->datain.data, static_cast<size_t>(r->datain.size)}, bs, lba, seed);
  if (!bad.empty()) return "READ16 lun " + std::to_string(lun) + ": " + bad;
  return {};
}

std::string read_check(Session& s, int lun, uint64_t lba, uint64_t nblocks, uint32_t bs,
                       uint64_t seed) {
  Task r = s.read16(lun, lba, static_cast<uint32_t>(nblocks * bs), bs);
  if (!is_good(r.get())) return "READ16: " + describe(s.ctx(), r.get());
  return check_pattern({r->datain.data, static_cast<size_t>(r->datain.size)}, bs, lba, seed);
}

std::string file_bytes(const std::string& path, uint64_t offset, uint64_t len) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(len, '\0');
  in.read(out.data(), static_cast<std::streamsize>(len));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

}  // namespace

TEST_CASE("patterns across LUs, the sub-unit boundary and the last LBA") {
  Zumad z(make_config(kLuns, kIscsiDefault));
  z.start();
  Session s(z.portal(), kTestIqn);

  CHECK(write_read(s, 0, 0, 8, 512, 1) == "");
  CHECK(write_read(s, 1, 0, 8, 4096, 2) == "");
  // LUN 0 and LUN 1 do not overlap: rewriting LUN 1 leaves LUN 0 intact.
  CHECK(write_read(s, 1, 0, 8, 4096, 3) == "");
  CHECK(read_check(s, 0, 0, 8, 512, 1) == "");

  // Across the sub-unit boundary (16 blocks on each side), then each side alone.
  CHECK(write_read(s, 0, kBoundary - 16, 32, 512, 4) == "");
  CHECK(write_read(s, 0, kBoundary - 1, 1, 512, 5) == "");
  CHECK(write_read(s, 0, kBoundary, 1, 512, 6) == "");
  CHECK(read_check(s, 0, kBoundary - 16, 15, 512, 4) == "");
  CHECK(read_check(s, 0, kBoundary + 1, 15, 512, 4) == "");

  // The last LBA of each LU, and a transfer ending exactly at the end.
  CHECK(write_read(s, 0, kLun0Blocks - 1, 1, 512, 7) == "");
  CHECK(write_read(s, 0, kLun0Blocks - 100, 100, 512, 8) == "");
  CHECK(write_read(s, 1, kLun1Blocks - 1, 1, 4096, 9) == "");
  CHECK(write_read(s, 1, kLun1Blocks - 7, 7, 4096, 10) == "");

  // Where the concatenation puts the data: after SYNCHRONIZE CACHE the backing files hold
  // LBA 65535 at the end of a1.img and LBA 65536 at the start of a2.img.
  Task sc = s.sync_cache(0);
  CHECK_MESSAGE(is_good(sc.get()), "SYNCHRONIZE CACHE 10: " << describe(s.ctx(), sc.get()));
  auto b1 = make_pattern(1, 512, kBoundary - 1, 5);
  auto b2 = make_pattern(1, 512, kBoundary, 6);
  CHECK(file_bytes(z.file("a1.img"), (kBoundary - 1) * 512, 512) ==
        std::string(b1.begin(), b1.end()));
  CHECK(file_bytes(z.file("a2.img"), 0, 512) == std::string(b2.begin(), b2.end()));
}

TEST_CASE("LBA out of range gives CHECK CONDITION ILLEGAL REQUEST / LBA OUT OF RANGE") {
  Zumad z(make_config(kLuns, kIscsiDefault));
  z.start();
  Session s(z.portal(), kTestIqn);
  struct Case {
    int lun;
    uint32_t bs;
    uint64_t lba;
    uint32_t blocks;
  };
  const Case cases[] = {
      {0, 512, kLun0Blocks, 1},       // first LBA past the end
      {0, 512, kLun0Blocks - 1, 2},   // starts inside, ends outside
      {0, 512, ~uint64_t{0}, 1},      // largest LBA
      {0, 512, ~uint64_t{0} - 1, 4},  // lba + count wraps around 2^64
      {1, 4096, kLun1Blocks, 1},     {1, 4096, kLun1Blocks - 3, 8},
  };
  for (const Case& c : cases) {
    CAPTURE(c.lun);
    CAPTURE(c.lba);
    CAPTURE(c.blocks);
    Task r = s.read16(c.lun, c.lba, c.blocks * c.bs, c.bs);
    CHECK_MESSAGE(is_sense(r.get(), SCSI_SENSE_ILLEGAL_REQUEST, 0x2100),
                  "READ16: " << describe(s.ctx(), r.get()));
    auto data = make_pattern(c.blocks, c.bs, 0, 11);
    Task w = s.write16(c.lun, c.lba, data, c.bs);
    CHECK_MESSAGE(is_sense(w.get(), SCSI_SENSE_ILLEGAL_REQUEST, 0x2100),
                  "WRITE16: " << describe(s.ctx(), w.get()));
  }
  // The session is still usable and nothing was written at the end.
  CHECK(write_read(s, 0, kLun0Blocks - 1, 1, 512, 12) == "");
}

TEST_CASE("large and odd-sized transfers under every ImmediateData/InitialR2T combination") {
  struct Variant {
    const char* iscsi;
    std::optional<bool> client_immediate, client_r2t;
  };
  const Variant variants[] = {
      {"{ max_burst_length: 262144, first_burst_length: 65536, max_recv_data_segment_length: "
       "65536, immediate_data: true, initial_r2t: false }",
       {},
       {}},
      {"{ max_burst_length: 262144, first_burst_length: 65536, max_recv_data_segment_length: "
       "65536, immediate_data: false, initial_r2t: true }",
       {},
       {}},
      {"{ max_burst_length: 262144, first_burst_length: 65536, max_recv_data_segment_length: "
       "65536, immediate_data: true, initial_r2t: true }",
       {},
       {}},
      {"{ max_burst_length: 262144, first_burst_length: 65536, max_recv_data_segment_length: "
       "65536, immediate_data: false, initial_r2t: false }",
       {},
       {}},
      // The initiator asks for the strict variant against zumad's defaults.
      {"{ max_burst_length: 262144, first_burst_length: 65536 }", false, true},
      // zumad's defaults as they are (no iscsi: section).
      {"", {}, {}},
  };
  uint64_t seed = 100;
  for (const Variant& v : variants) {
    CAPTURE(v.iscsi);
    Zumad z(make_config(kLuns, v.iscsi));
    z.start();
    SessionOptions opts;
    opts.immediate_data = v.client_immediate;
    opts.initial_r2t = v.client_r2t;
    Session s(z.portal(), kTestIqn, 0, opts);

    // 8 MiB across the sub-unit boundary: 32 bursts of MaxBurstLength.
    CHECK(write_read(s, 0, kBoundary - 8192, 16384, 512, ++seed) == "");
    // 6 MiB + 3 blocks on the 4 KiB LU.
    CHECK(write_read(s, 1, 5, 1539, 4096, ++seed) == "");
    // Odd block counts around FirstBurstLength, MaxRecvDataSegmentLength, MaxBurstLength.
    for (uint64_t n : {1, 3, 7, 127, 129, 255, 257, 511, 513, 1023, 2049, 4095}) {
      CAPTURE(n);
      CHECK(write_read(s, 0, 1000 + n, n, 512, ++seed) == "");
    }
    for (uint64_t n : {1, 3, 15, 17, 63, 65, 129}) {
      CAPTURE(n);
      CHECK(write_read(s, 1, 2000 + n, n, 4096, ++seed) == "");
    }
  }
}

TEST_CASE("several sessions at once") {
  Zumad z(make_config(kLuns, kIscsiDefault));
  z.start();
  constexpr int kSessions = 4;
  constexpr uint64_t kRegion = 4096;  // blocks of LUN 0 per session
  {
    // A shared region every session reads.
    Session s(z.portal(), kTestIqn);
    REQUIRE(write_read(s, 0, kLun0Blocks - 256, 256, 512, 999) == "");
  }
  std::vector<std::string> errors(kSessions);
  std::vector<std::thread> threads;
  for (int t = 0; t < kSessions; ++t) {
    threads.emplace_back([&, t] {
      try {
        Session s(z.portal(), kTestIqn);
        uint64_t base = static_cast<uint64_t>(t) * kRegion + kBoundary - 2 * kRegion;
        std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
        for (int i = 0; i < 40 && errors[t].empty(); ++i) {
          uint64_t n = 1 + rng() % 512;
          uint64_t lba = base + rng() % (kRegion - n);
          errors[t] = write_read(s, 0, lba, n, 512, static_cast<uint64_t>(t) << 32 | i);
          if (errors[t].empty() && i % 5 == 0)
            errors[t] = read_check(s, 0, kLun0Blocks - 256, 256, 512, 999);
          if (errors[t].empty() && i % 7 == 0)
            errors[t] = write_read(s, 1, static_cast<uint64_t>(t) * 512 + rng() % 256, 64, 4096,
                                   static_cast<uint64_t>(t) << 32 | i | 1u << 31);
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kSessions; ++t) {
    CAPTURE(t);
    CHECK(errors[t] == "");
  }
}

namespace {

// Async driver: keeps up to `depth` READ16/WRITE16 in flight on one session.
struct AsyncOp {
  bool write = false;
  uint64_t lba = 0, nblocks = 0, seed = 0;
  size_t slot = 0;
  std::vector<uint8_t> data;  // write buffer, alive until completion
};

struct AsyncRun {
  iscsi_context* ctx;
  std::string error;
  int inflight = 0;
  uint64_t done = 0;
  std::vector<bool> busy;
  std::vector<uint64_t> slot_seed;  // seed last written to a slot (0 = never)
  std::vector<uint64_t> slot_len;   // blocks last written
};

struct CbData {
  AsyncRun* run;
  AsyncOp op;
};

void async_cb(iscsi_context* ctx, int status, void* command_data, void* private_data) {
  auto* cb = static_cast<CbData*>(private_data);
  auto* task = static_cast<scsi_task*>(command_data);
  AsyncRun& run = *cb->run;
  const AsyncOp& op = cb->op;
  if (status != SCSI_STATUS_GOOD && run.error.empty()) {
    run.error = std::string(op.write ? "WRITE16" : "READ16") + " lba " + std::to_string(op.lba) +
                " blocks " + std::to_string(op.nblocks) + ": " + describe(ctx, task);
  } else if (!op.write && run.error.empty()) {
    std::string bad = check_pattern({task->datain.data, static_cast<size_t>(task->datain.size)},
                                    512, op.lba, op.seed);
    if (!bad.empty()) run.error = "async READ16: " + bad;
  }
  if (op.write && status == SCSI_STATUS_GOOD) {
    run.slot_seed[op.slot] = op.seed;
    run.slot_len[op.slot] = op.nblocks;
  }
  run.busy[op.slot] = false;
  --run.inflight;
  ++run.done;
  if (task) scsi_free_scsi_task(task);
  delete cb;
}

bool submit(AsyncRun& run, AsyncOp op) {
  auto* cb = new CbData{&run, std::move(op)};
  AsyncOp& o = cb->op;
  scsi_task* t;
  if (o.write) {
    o.data = make_pattern(o.nblocks, 512, o.lba, o.seed);
    t = iscsi_write16_task(run.ctx, 0, o.lba, o.data.data(), static_cast<uint32_t>(o.data.size()),
                           512, 0, 0, 0, 0, 0, async_cb, cb);
  } else {
    t = iscsi_read16_task(run.ctx, 0, o.lba, static_cast<uint32_t>(o.nblocks * 512), 512, 0, 0, 0,
                          0, 0, async_cb, cb);
  }
  if (!t) {
    run.error = std::string("cannot queue task: ") + iscsi_get_error(run.ctx);
    delete cb;
    return false;
  }
  run.busy[o.slot] = true;
  ++run.inflight;
  return true;
}

// Runs the event loop until nothing is in flight or the deadline passes.
void service(AsyncRun& run, std::chrono::steady_clock::time_point deadline, bool drain) {
  while (run.inflight > 0) {
    pollfd p{iscsi_get_fd(run.ctx), static_cast<short>(iscsi_which_events(run.ctx)), 0};
    int n = ::poll(&p, 1, 1000);
    if (n < 0) continue;
    if (iscsi_service(run.ctx, n > 0 ? p.revents : 0) < 0) {
      if (run.error.empty()) run.error = std::string("iscsi_service: ") + iscsi_get_error(run.ctx);
      return;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      if (run.error.empty())
        run.error =
            "async I/O timed out with " + std::to_string(run.inflight) + " commands in flight";
      return;
    }
    if (!drain) return;
  }
}

}  // namespace

TEST_CASE("async API at queue depth 32") {
  Zumad z(make_config(kLuns, kIscsiDefault));
  z.start();
  constexpr int kDepth = 32;
  constexpr size_t kSlots = 2048;  // 64 blocks each: all of LUN 0
  constexpr uint64_t kSlotBlocks = 64;
  // Declared before the session: tasks still queued when the session is destroyed complete
  // (cancelled) into it.
  AsyncRun run{nullptr,
               {},
               0,
               0,
               std::vector<bool>(kSlots),
               std::vector<uint64_t>(kSlots),
               std::vector<uint64_t>(kSlots)};
  Session s(z.portal(), kTestIqn);
  run.ctx = s.ctx();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  std::mt19937_64 rng(42);
  uint64_t seed = 1;

  // Phase 1: every slot written once; phase 2: every slot read back; phase 3: random mix.
  for (int phase = 1; phase <= 3 && run.error.empty(); ++phase) {
    size_t next = 0;
    const size_t total = phase == 3 ? 8000 : kSlots;
    while (next < total && run.error.empty()) {
      while (run.inflight < kDepth && next < total && run.error.empty()) {
        AsyncOp op;
        if (phase == 3) {
          do op.slot = rng() % kSlots;
          while (run.busy[op.slot]);
          op.write = rng() % 2 == 0;
        } else {
          op.slot = next;
          op.write = phase == 1;
        }
        op.lba = op.slot * kSlotBlocks;
        if (op.write) {
          op.nblocks = 1 + rng() % kSlotBlocks;
          op.seed = ++seed;
        } else {
          op.nblocks = run.slot_len[op.slot];
          op.seed = run.slot_seed[op.slot];
        }
        ++next;
        if (op.nblocks == 0) continue;  // never written
        if (!submit(run, std::move(op))) break;
      }
      service(run, deadline, false);
    }
    service(run, deadline, true);
  }
  CHECK(run.error == "");
  CHECK(run.inflight == 0);
  MESSAGE("async commands completed: " << run.done);
}
