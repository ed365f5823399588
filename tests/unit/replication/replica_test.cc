// The secondary's refusals, driven by a raw protocol client.
#include "tests/unit/storage/test_util.hh"
#include "replication/replica.hh"

#include <doctest/doctest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "replication/protocol.hh"
#include "replication/ring_log.hh"
#include "storage/memory_backend.hh"

using namespace zuma;
using namespace zuma::replication;

namespace {

using zuma::storage::test::TempDir;

struct Fixture {
  TempDir t;
  storage::MemoryBackend lu0{1 << 20};
  std::unique_ptr<ReplicaServer> server;
  std::unique_ptr<RingLog> log;  // a primary's log, to make real batches
  explicit Fixture(
      std::chrono::microseconds async_ack_delay = ReplicaGroupOptions{}.async_ack_delay) {
    auto s = ReplicaServer::start("127.0.0.1:0");
    REQUIRE(s);
    server = std::move(*s);
    REQUIRE(
        server->add_group({"db", (t / "replica.state"), {&lu0}, {}, {}, {}, {}, async_ack_delay}));
    auto l = RingLog::open({(t / "primary.rlog"), 1 << 20, true});
    REQUIRE(l);
    log = std::move(*l);
  }
  int connect() {
    int fd = proto::connect_to("127.0.0.1:" + std::to_string(server->port()), 2000);
    REQUIRE(fd >= 0);
    return fd;
  }
  // Sends HELLO; returns the answer's type and text.
  std::pair<proto::Frame, std::string> hello(int fd, const std::string& group,
                                             std::vector<uint64_t> sizes, uint64_t log_id,
                                             const std::string& link = "t",
                                             const std::string& mode = "sync") {
    nlohmann::json h = {{"protocol", proto::kProtocolVersion},
                        {"group", group},
                        {"link", link},
                        {"log_id", log_id},
                        {"luns", sizes},
                        {"mode", mode}};
    REQUIRE(proto::send_frame(fd, proto::Frame::kHello, h.dump(), 2000) == 0);
    proto::Frame type{};
    std::vector<uint8_t> p;
    REQUIRE(proto::recv_frame(fd, &type, &p, 5000) == 0);
    return {type, std::string(p.begin(), p.end())};
  }
  std::vector<uint8_t> batch(uint64_t offset, uint8_t fill) {
    std::vector<uint8_t> data(512, fill);
    iovec iov{data.data(), data.size()};
    AppendRecord r{RecordType::kWrite, 0, offset, 512, &iov, 1};
    uint64_t seq = 0;
    REQUIRE(log->append({&r, 1}, &seq) == 0);
    std::vector<uint8_t> out;
    size_t count = 0;
    REQUIRE(log->read_raw(seq, 1, &out, &count) == 0);
    REQUIRE(count == 1);
    return out;
  }
  // Connects and says HELLO until the secondary has let go of the previous connection.
  std::pair<proto::Frame, std::string> hello_retry(int* fd, uint64_t log_id) {
    for (int i = 0; i < 200; ++i) {
      *fd = connect();
      auto a = hello(*fd, "db", {1 << 20}, log_id);
      if (a.first != proto::Frame::kError || a.second.find("already has a primary") == std::string::npos) return a;
      ::close(*fd);
      usleep(10000);
    }
    FAIL("the secondary kept the group busy");
    return {};
  }
  std::pair<proto::Frame, std::string> answer(int fd) {
    proto::Frame type{};
    std::vector<uint8_t> p;
    REQUIRE(proto::recv_frame(fd, &type, &p, 5000) == 0);
    return {type, std::string(p.begin(), p.end())};
  }
};

}  // namespace

TEST_CASE("HELLO for an unknown group, other LU sizes, or garbage is refused with a reason") {
  Fixture f;
  {
    int fd = f.connect();
    auto [type, text] = f.hello(fd, "nope", {1 << 20}, 7);
    CHECK(type == proto::Frame::kError);
    CHECK(text == "no replica group nope here");
    ::close(fd);
  }
  {
    int fd = f.connect();
    auto [type, text] = f.hello(fd, "db", {2 << 20}, 7);
    CHECK(type == proto::Frame::kError);
    CHECK(text == "group db: the primary's LUs have sizes 2097152, this secondary's 1048576");
    ::close(fd);
  }
  {
    int fd = f.connect();
    REQUIRE(proto::send_frame(fd, proto::Frame::kHello, std::string("{not json"), 2000) == 0);
    auto [type, text] = f.answer(fd);
    CHECK(type == proto::Frame::kError);
    CHECK(text.find("malformed HELLO") == 0);
    ::close(fd);
  }
  {
    // Not even a frame: the connection is closed, the server carries on.
    int fd = f.connect();
    const char junk[] = "GET / HTTP/1.0\r\n\r\n";
    REQUIRE(::write(fd, junk, sizeof(junk)) == ssize_t(sizeof(junk)));
    proto::Frame type{};
    std::vector<uint8_t> p;
    const int r = proto::recv_frame(fd, &type, &p, 5000);
    CHECK((r == -ECONNRESET || (r == 0 && type == proto::Frame::kError)));
    ::close(fd);
  }
  CHECK(f.server->stats("db")->applied == 0);
}

TEST_CASE("batches are applied in order and acknowledged; a gap or a damaged batch is refused") {
  Fixture f;
  const uint64_t id = f.log->log_id();
  int fd = f.connect();
  auto [type, text] = f.hello(fd, "db", {1 << 20}, id);
  REQUIRE(type == proto::Frame::kWelcome);
  CHECK(nlohmann::json::parse(text)["applied"] == 0);
  auto b1 = f.batch(0, 0x11), b2 = f.batch(512, 0x22), b3 = f.batch(1024, 0x33);
  REQUIRE(proto::send_frame(fd, proto::Frame::kBatch, b1, 2000) == 0);
  auto ack = f.answer(fd);
  REQUIRE(ack.first == proto::Frame::kAck);
  uint64_t seq = 0;
  std::memcpy(&seq, ack.second.data(), 8);
  CHECK(seq == 1);
  // Record 3 before record 2: a hole in the sequence.
  REQUIRE(proto::send_frame(fd, proto::Frame::kBatch, b3, 2000) == 0);
  auto err = f.answer(fd);
  CHECK(err.first == proto::Frame::kError);
  CHECK(err.second == "gap in the sequence: expected 2, got 3");
  ::close(fd);

  // Reconnect: the secondary says where it is; a batch with one flipped byte is refused.
  auto again = f.hello_retry(&fd, id);
  REQUIRE(again.first == proto::Frame::kWelcome);
  CHECK(nlohmann::json::parse(again.second)["applied"] == 1);
  auto bad = b2;
  bad[bad.size() - 1] ^= 1;
  REQUIRE(proto::send_frame(fd, proto::Frame::kBatch, bad, 2000) == 0);
  err = f.answer(fd);
  CHECK(err.first == proto::Frame::kError);
  CHECK(err.second == "batch of seq 2: checksum mismatch");
  ::close(fd);
  CHECK(f.server->stats("db")->applied == 1);
  CHECK(f.server->stats("db")->last_error == "batch of seq 2: checksum mismatch");
}

TEST_CASE("an async link is acknowledged after the delay; a BATCH_HELD frame at once") {
  // A delay no test waits out: an acknowledgement within seconds comes from BATCH_HELD.
  Fixture f(std::chrono::seconds(30));
  int fd = f.connect();
  REQUIRE(f.hello(fd, "db", {1 << 20}, f.log->log_id(), "t", "async").first ==
          proto::Frame::kWelcome);
  REQUIRE(proto::send_frame(fd, proto::Frame::kBatch, f.batch(0, 0x11), 2000) == 0);
  pollfd p{fd, POLLIN, 0};
  CHECK(::poll(&p, 1, 300) == 0);  // applied, not acknowledged
  CHECK(storage::test::eventually([&] { return f.server->stats("db")->records >= 1; },
                                  std::chrono::seconds(5)));
  // The link now holds writes (fall-behind policy sync): both records acknowledged at once.
  REQUIRE(proto::send_frame(fd, proto::Frame::kBatchHeld, f.batch(512, 0x22), 2000) == 0);
  auto ack = f.answer(fd);
  REQUIRE(ack.first == proto::Frame::kAck);
  uint64_t seq = 0;
  std::memcpy(&seq, ack.second.data(), 8);
  CHECK(seq == 2);
  CHECK(f.server->stats("db")->acks == 1);
  ::close(fd);
}

TEST_CASE("a secondary bound to one primary log refuses another log") {
  Fixture f;
  int fd = -1;
  auto a = f.hello_retry(&fd, f.log->log_id());
  REQUIRE(a.first == proto::Frame::kWelcome);
  ::close(fd);
  auto b = f.hello_retry(&fd, f.log->log_id() ^ 0xff);
  CHECK(b.first == proto::Frame::kError);
  CHECK(b.second.find("a full resync is needed") != std::string::npos);
  ::close(fd);
}

TEST_CASE(
    "the same link saying HELLO again replaces its half-open connection; another link is refused") {
  Fixture f;
  const uint64_t id = f.log->log_id();
  // A connection the primary has given up on (a partition) but that is open and silent here.
  int stale = f.connect();
  REQUIRE(f.hello(stale, "db", {1 << 20}, id).first == proto::Frame::kWelcome);
  int other = f.connect();
  auto refused = f.hello(other, "db", {1 << 20}, id, "another");
  CHECK(refused.first == proto::Frame::kError);
  CHECK(refused.second == "group db already has a primary connected");
  ::close(other);
  // The same link reconnects: welcomed at once, and the stale connection is closed.
  int fd = f.connect();
  auto again = f.hello(fd, "db", {1 << 20}, id);
  CHECK(again.first == proto::Frame::kWelcome);
  CHECK(f.server->stats("db")->connected);
  proto::Frame type{};
  std::vector<uint8_t> p;
  CHECK(proto::recv_frame(stale, &type, &p, 5000) == -ECONNRESET);
  ::close(stale);
  ::close(fd);
}
