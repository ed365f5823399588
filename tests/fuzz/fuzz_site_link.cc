// libFuzzer target: the primary's end of a site link (replication/site_link.cc), as a
// secondary, or anybody the link's peer address reaches, answers it.
//
// Each input gets a fresh group: a 1 MiB log, two 1 MiB memory LUs, kRecords writes
// already in the log, and one async link to the harness's listener on 127.0.0.1 (a free
// port), with the secret kSecret if byte0 & 0x08. The harness accepts the link, reads its
// HELLO, then sends, by byte 0 of the input:
//   byte0 & 0x01  raw: the rest of the input as it is (frame headers, WELCOME, anything);
//   otherwise the rest is chunks [type u8][length u16 LE][payload], each sent as one frame
//   with a correct frame header (the type as given: unknown types too), and first
//   byte0 & 0x02  a valid WELCOME: applied = (byte0 >> 4) % (kRecords + 1), the group's log id;
//   byte0 & 0x04  ACK chunks carry a sequence number (their first byte % (kRecords + 2): one
//                 past what the log holds included) instead of their payload.
// Then the harness half-closes its end and reads until the link closes the connection (20 s
// at most: a connection that never ends is a finding). Invariants: the link never counts
// as acknowledged a record the log does not hold, and the group still completes a write
// (nothing the peer said wedges it). ZUMA_FUZZ_LOG=debug prints the link's log.
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "replication/group_log.hh"
#include "replication/protocol.hh"
#include "replication/site_link.hh"
#include "storage/io_context.hh"
#include "storage/memory_backend.hh"
#include "storage/unique_fd.hh"
#include "tests/fuzz/net_harness.hh"

using namespace zuma;
using namespace zuma::replication;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kLuBytes = 1 << 20;
constexpr uint64_t kRecords = 3;  // the writes before the link connects
constexpr const char* kSecret = "fuzz-secret";
constexpr int kSendMs = 2000;

[[noreturn]] void fail(const char* what) {
  fuzz::fail("fuzz_site_link", what);
}

// This thread is the group's reactor: writes are submitted and completed on it.
storage::IoContext& reactor() {
  static storage::IoContext* ctx = [] {
    auto c = storage::IoContext::create();
    if (!c) fail("IoContext::create");
    (*c)->make_current();
    return c->release();
  }();
  return *ctx;
}

// 4 KiB writes, one per (LU, offset), submitted together (one log batch): true once every
// one completed with success; a write that does not complete within 5 s is a finding.
bool write_4k(std::initializer_list<std::pair<storage::Backend*, uint64_t>> writes, uint8_t fill) {
  std::vector<uint8_t> data(4096, fill);
  iovec iov{data.data(), data.size()};
  std::vector<storage::IoRequest> reqs;
  std::vector<int> results(writes.size(), 1);
  reqs.reserve(writes.size());
  for (const auto& [b, off] : writes) {
    reqs.push_back({storage::IoOp::kWrite, false, off, data.size(), &iov, 1});
    reqs.back().user = &results[reqs.size() - 1];
    reqs.back().done = [](storage::IoRequest& r, int res) { *static_cast<int*>(r.user) = res; };
  }
  size_t i = 0;
  for (const auto& w : writes) w.first->submit(reqs[i++]);
  const auto pending = [&] { return std::count(results.begin(), results.end(), 1) > 0; };
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (pending() && Clock::now() < deadline) {
    reactor().flush();
    if (reactor().poll() == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  if (pending()) fail("a write to the group did not complete within 5 s");
  return std::count(results.begin(), results.end(), 0) == long(results.size());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::log_level_from_env();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const std::span<const uint8_t> rest(data + 1, size - 1);
  const std::filesystem::path& dir = fuzz::work_dir("fuzz_site_link");
  for (const char* f : {"db.rlog", "peer.state"}) std::filesystem::remove(dir / f);
  reactor();

  uint16_t port = 0;
  storage::UniqueFd listener(proto::listen_on("127.0.0.1:0", &port));
  if (listener.get() < 0) fail("listen_on");

  GroupLogOptions o;
  o.name = "db";
  o.log = RingLogOptions{(dir / "db.rlog").string(), 1 << 20, true};
  auto opened = GroupLog::open(o);
  if (!opened) fail("GroupLog::open");
  std::unique_ptr<GroupLog> group = std::move(*opened);
  std::unique_ptr<storage::Backend> lu0 =
      group->attach(0, std::make_unique<storage::MemoryBackend>(kLuBytes));
  std::unique_ptr<storage::Backend> lu1 =
      group->attach(1, std::make_unique<storage::MemoryBackend>(kLuBytes));
  LinkOptions lo;
  lo.name = "peer";
  lo.peer = "127.0.0.1:" + std::to_string(port);
  lo.state_path = (dir / "peer.state").string();
  if (mode & 0x08) lo.secret = kSecret;
  if (!group->add_link(lo)) fail("add_link");
  if (!group->start()) fail("GroupLog::start");
  if (!write_4k({{lu0.get(), 0}, {lu1.get(), 4096}, {lu0.get(), 8192}}, 1)) fail("a write failed");

  pollfd lp{listener.get(), POLLIN, 0};
  if (::poll(&lp, 1, 5000) != 1) fail("the link did not connect within 5 s");
  storage::UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (conn.get() < 0) fail("accept");
  const int fd = conn.get();
  proto::Frame type{};
  std::vector<uint8_t> hello;
  if (proto::recv_frame(fd, &type, &hello, 5000) < 0 || type != proto::Frame::kHello)
    fail("no HELLO from the link");

  if (mode & 0x01) {
    fuzz::write_all(fd, rest.data(), rest.size());
  } else {
    if (mode & 0x02) {
      const nlohmann::json w = {{"applied", (mode >> 4) % (kRecords + 1)},
                                {"log_id", group->log_id()}};
      proto::send_frame(fd, proto::Frame::kWelcome, w.dump(), kSendMs);
    }
    size_t off = 0;
    std::vector<uint8_t> payload;
    while (rest.size() - off >= 3) {
      const uint8_t t = rest[off];
      const size_t len =
          std::min<size_t>(rest[off + 1] | size_t(rest[off + 2]) << 8, rest.size() - off - 3);
      payload.assign(rest.begin() + off + 3, rest.begin() + off + 3 + len);
      off += 3 + len;
      if ((mode & 0x04) && t == uint8_t(proto::Frame::kAck) && !payload.empty()) {
        const uint64_t seq = payload[0] % (kRecords + 2);
        payload.assign(reinterpret_cast<const uint8_t*>(&seq),
                       reinterpret_cast<const uint8_t*>(&seq) + 8);
      }
      // The type as it is, known or not (send_frame does not check it; the link must).
      proto::send_frame(fd, proto::Frame(t), payload, kSendMs);
    }
  }
  ::shutdown(fd, SHUT_WR);
  if (!fuzz::drain_until_closed(fd, std::chrono::seconds(20)))
    fail("the link did not close the connection after the input ended");

  const LinkStats st = group->link_stats().at(0).second;
  if (st.acked > kRecords) fail("the link counts a record the log never held as acknowledged");
  // Whatever the peer said, the group goes on taking writes (async: the log has room).
  if (!write_4k({{lu0.get(), 64 << 10}}, 0xee)) fail("a write after the session failed");
  lu0.reset();
  lu1.reset();
  group.reset();
  return 0;
}
