// libFuzzer target: the secondary's end of a site link (replication/replica.cc), as a
// primary, or anybody who reaches the replication listener, drives it.
//
// Each input gets a fresh ReplicaServer on 127.0.0.1 (a free port) serving two groups with
// fresh state files: "db" (two 1 MiB memory LUs, no secret) and "sec" (one 1 MiB memory LU,
// secret kSecret). The harness connects and sends, by byte 0 of the input:
//   byte0 & 0x01  raw: the rest of the input as it is (frame headers, HELLO, anything);
//   otherwise the rest is chunks [type u8][length u16 LE][payload], each sent as one frame
//   with a correct frame header (the type as given: unknown types too), and first
//   byte0 & 0x02  a valid HELLO (the current protocol, log id kLogId, the group's LU
//                 sizes) for "db",
//   byte0 & 0x04  or for "sec", offering authentication (a nonce): the chunks then start
//                 with what should be AUTH_PROOF;
//   byte0 & 0x08  BATCH and BATCH_HELD payloads sealed: every whole log batch in them (as
//                 far as its header's length goes) gets the log id kLogId and its correct
//                 XXH3-64 checksum (docs/REPLICATION.md "The log on disk"), so that record
//                 parsing and apply are reached;
//   byte0 & 0x10  the group's owner asks for a resync of LU 0's first 128 KiB in its
//                 WELCOME (RESYNC and RESYNC_DONE frames are then what it expects first).
// Then the harness half-closes its end, reads until the server closes the connection (20 s
// at most: a connection that never ends is a finding) and checks that the group is free
// again (not connected) within 5 s. ZUMA_FUZZ_LOG=debug prints the server's log.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <xxhash.h>

#include <nlohmann/json.hpp>

#include "replication/protocol.hh"
#include "replication/replica.hh"
#include "storage/memory_backend.hh"
#include "tests/fuzz/net_harness.hh"

using namespace zuma;
using namespace zuma::replication;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kLogId = 0x5a756d61465a5a01;
constexpr uint64_t kLuBytes = 1 << 20;
constexpr const char* kSecret = "fuzz-secret";
// A frame the server stops reading (it closed early) fails after this; what it read so far
// is the input.
constexpr int kSendMs = 2000;

[[noreturn]] void fail(const char* what) {
  fuzz::fail("fuzz_replica_stream", what);
}

// The batch header's fields (docs/REPLICATION.md "The log on disk"): len at 16, log id at
// 32, checksum at 48, 64 bytes in all.
void seal_batches(std::vector<uint8_t>& p) {
  size_t off = 0;
  while (p.size() - off >= 64) {
    uint64_t len = 0;
    std::memcpy(&len, p.data() + off + 16, 8);
    if (len < 64 || len > p.size() - off) return;
    std::memcpy(p.data() + off + 32, &kLogId, 8);
    std::memset(p.data() + off + 48, 0, 8);
    const uint64_t sum = XXH3_64bits(p.data() + off, len);
    std::memcpy(p.data() + off + 48, &sum, 8);
    off += len;
  }
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
  const std::filesystem::path& dir = fuzz::work_dir("fuzz_replica_stream");
  std::filesystem::remove(dir / "db.state");
  std::filesystem::remove(dir / "sec.state");

  storage::MemoryBackend db0(kLuBytes), db1(kLuBytes), sec0(kLuBytes);
  auto started = ReplicaServer::start("127.0.0.1:0");
  if (!started) fail("the replica server does not start");
  std::unique_ptr<ReplicaServer> server = std::move(*started);
  ReplicaGroupOptions db{"db", (dir / "db.state").string(), {&db0, &db1}, {}, {}, {}, {}};
  if (mode & 0x10)
    db.admit = [](const HelloInfo&, const SeqState&) {
      Admission a;
      a.resync = std::vector<Region>{{0, 0, 128 << 10}};
      return a;
    };
  if (!server->add_group(db)) fail("add_group db");
  if (!server->add_group({"sec", (dir / "sec.state").string(), {&sec0}, {}, {}, {}, {}}))
    fail("add_group sec");
  server->set_secrets([](const std::string& g) {
    if (g == "db") return GroupSecret{true, "", ""};
    if (g == "sec") return GroupSecret{true, kSecret, ""};
    return GroupSecret{};
  });

  const int fd = proto::connect_to("127.0.0.1:" + std::to_string(server->port()), 2000);
  if (fd < 0) fail("cannot connect to the replica server");
  if (mode & 0x01) {
    fuzz::write_all(fd, rest.data(), rest.size());
  } else {
    if (mode & 0x06) {
      const bool auth = mode & 0x04;
      nlohmann::json h = {{"protocol", proto::kProtocolVersion},
                          {"group", auth ? "sec" : "db"},
                          {"link", "fuzz"},
                          {"log_id", kLogId},
                          {"last", 0},
                          {"luns", auth ? std::vector<uint64_t>{kLuBytes}
                                        : std::vector<uint64_t>{kLuBytes, kLuBytes}}};
      if (auth) h["auth"] = {{"method", "hmac-sha256"}, {"nonce", std::string(64, 'a')}};
      proto::send_frame(fd, proto::Frame::kHello, h.dump(), kSendMs);
    }
    size_t off = 0;
    std::vector<uint8_t> payload;
    while (rest.size() - off >= 3) {
      const uint8_t type = rest[off];
      const size_t len =
          std::min<size_t>(rest[off + 1] | size_t(rest[off + 2]) << 8, rest.size() - off - 3);
      payload.assign(rest.begin() + off + 3, rest.begin() + off + 3 + len);
      off += 3 + len;
      if ((mode & 0x08) &&
          (type == uint8_t(proto::Frame::kBatch) || type == uint8_t(proto::Frame::kBatchHeld)))
        seal_batches(payload);
      // The type as it is, known or not (send_frame does not check it; the server must).
      proto::send_frame(fd, proto::Frame(type), payload, kSendMs);
    }
  }
  ::shutdown(fd, SHUT_WR);
  if (!fuzz::drain_until_closed(fd, std::chrono::seconds(20)))
    fail("the server did not close the connection after the input ended");
  ::close(fd);
  for (const char* g : {"db", "sec"}) {
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (server->stats(g)->connected) {
      if (Clock::now() > until) fail("a group stays connected after its connection closed");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return 0;
}
