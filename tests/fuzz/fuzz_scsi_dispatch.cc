// libFuzzer target: the device server (scsi::execute) with random CDBs and data.
//
// A LunTable with two memory LUs (LUN 0: 1 MiB of 512-byte blocks; LUN 1: 1 MiB of
// 4096-byte blocks, thin) and two I_T nexuses, built once. Each input is a sequence of
// tasks; each task is
//   byte 0: LUN selector (0, 1, 2 -> LUN 5 which does not exist, 3 -> LUN 16383)
//   byte 1: bits 0-1 task attribute, 2-3 data direction, 4 nexus, 5 reset the LU first,
//           6 the nexus is lost first
//   byte 2: CDB length (taken modulo 261, at least 1)
//   bytes 3-5: expected data transfer length (24 bits, so at most 16 MiB - 1)
//   then the CDB bytes, then for Data-Out as many data bytes as the input still has,
//   up to the expected length.
// Completion may come inline or later (the contract of scsi/task.hh); without an
// io_uring on this thread the memory backend completes inline, and the harness waits a
// bounded time for any task that does not. Checked: ASan/UBSan, on_complete exactly once,
// and the transport contract: data_in_len <= expected length and <= the buffer, sense
// only with CHECK CONDITION, sense_len <= 252.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "scsi/device_server.hh"
#include "scsi/task.hh"
#include "storage/memory_backend.hh"

using namespace zuma;

namespace {

struct Env {
  scsi::LunTable table;
  std::shared_ptr<scsi::LogicalUnit> lus[2];
  scsi::Nexus nexus[2];
  Env() {
    for (int i = 0; i < 2; ++i) {
      scsi::LuParams p;
      p.name = i ? "fuzz1" : "fuzz0";
      p.uuid = i ? "4f1b2c3d-0000-4000-8000-000000000001" : "4f1b2c3d-0000-4000-8000-000000000000";
      p.block_size = i ? 4096 : 512;
      p.num_blocks = (1u << 20) / p.block_size;
      p.thin = i == 1;
      lus[i] =
          scsi::make_logical_unit(std::move(p), std::make_unique<storage::MemoryBackend>(1u << 20));
      table.luns.emplace(uint64_t(i), lus[i]);
      nexus[i].id = uint64_t(i + 1);
      nexus[i].initiator_name = "iqn.2026-11.org.zuma:fuzz-" + std::to_string(i);
      nexus[i].initiator_port = nexus[i].initiator_name + ",i,0x80000000000" + std::to_string(i);
      nexus[i].target_name = "iqn.2026-11.org.zuma:fuzz";
      nexus[i].target_port = "iqn.2026-11.org.zuma:fuzz,t,0x0001";
    }
  }
};

Env& env() {
  static Env* e = new Env;
  return *e;
}

struct Done {
  std::atomic<int> calls{0};
};

void on_complete(scsi::Task& t) {
  static_cast<Done*>(t.owner)->calls++;
}

[[noreturn]] void fail(const char* what, const scsi::Task& t) {
  std::fprintf(stderr,
               "fuzz_scsi_dispatch: %s (opcode 0x%02x, LUN %llu, status 0x%02x, "
               "data_in_len %u, expected %u, sense_len %u)\n",
               what, t.cdb[0], static_cast<unsigned long long>(t.lun), t.status, t.data_in_len,
               t.expected_len, t.sense_len);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Env& e = env();
  size_t at = 0;
  for (int n = 0; n < 8 && size - at >= 6; ++n) {
    const uint8_t sel = data[at], ctl = data[at + 1];
    const size_t cdb_len = std::max<size_t>(1, data[at + 2] % 261);
    const uint32_t edtl = uint32_t(data[at + 3]) << 16 | uint32_t(data[at + 4]) << 8 | data[at + 5];
    at += 6;
    auto task = std::make_unique<scsi::Task>();
    scsi::Task& t = *task;
    static constexpr uint64_t kLuns[4] = {0, 1, 5, 16383};
    t.lun = kLuns[sel & 3];
    const size_t take = std::min(cdb_len, size - at);
    std::memcpy(t.cdb.data(), data + at, take);
    at += take;
    t.cdb_len = uint16_t(std::max<size_t>(take, 1));
    t.attr = scsi::TaskAttr(ctl & 3);
    t.dir = scsi::DataDir((ctl >> 2) & 3);
    t.expected_len = edtl;
    const scsi::Nexus& nx = e.nexus[(ctl >> 4) & 1];
    t.nexus = &nx;
    if (t.lun < 2 && (ctl & 0x20)) scsi::reset_logical_unit(*e.lus[t.lun], nx);
    if (t.lun < 2 && (ctl & 0x40)) scsi::nexus_lost(*e.lus[t.lun], nx);
    if (t.dir == scsi::DataDir::kOut || t.dir == scsi::DataDir::kBidi) {
      const size_t len = std::min<size_t>(edtl, size - at);
      t.data.resize(len);
      if (len) std::memcpy(t.data.data(), data + at, len);
      at += len;
    }
    Done done;
    t.on_complete = &on_complete;
    t.owner = &done;
    scsi::execute(e.table, t);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (done.calls.load() == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (done.calls.load() == 0) fail("task never completed", t);
    if (done.calls.load() != 1) fail("on_complete called more than once", t);
    if (t.data_in_len > t.expected_len) fail("data_in_len > expected length", t);
    if (t.data_in_len > t.data.size()) fail("data_in_len > buffer size", t);
    if (t.sense_len > 252) fail("sense_len > 252", t);
    if (t.status == scsi::status::kCheckCondition && t.sense_len == 0)
      fail("CHECK CONDITION without sense", t);
    if (t.status == scsi::status::kGood && t.sense_len != 0) fail("GOOD with sense data", t);
  }
  return 0;
}
