// IscsiBackend (storage/iscsi_backend.cc) against a real remote: Debian's tgtd on a free
// 127.0.0.1 port with a private control socket, stopped by its PID. Skipped (with a
// message) when tgtd is not installed.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "storage/iscsi_backend.hh"
#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

namespace {

constexpr uint64_t kLunBytes = 8 << 20;

bool port_open(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

int free_port() {
  std::mt19937 rng(std::random_device{}());
  for (;;) {
    const int p = 20000 + static_cast<int>(rng() % 12000);
    if (!port_open(p)) return p;
  }
}

// tgtd serving `image` as LUN 1 of iqn.2026-11.org.tgt:u on 127.0.0.1:port.
class Tgtd {
 public:
  Tgtd(const TempDir& dir, int port, std::string image)
      : sock_(dir / "tgt.ipc"), port_(port), image_(std::move(image)), log_(dir / "tgtd.log") {}
  ~Tgtd() { stop(); }
  bool start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::setenv("TGT_IPC_SOCKET", sock_.c_str(), 1);
      const std::string portal = fmt::format("portal=127.0.0.1:{}", port_);
      ::execlp("tgtd", "tgtd", "-f", "--iscsi", portal.c_str(), nullptr);
      ::_exit(127);
    }
    for (int i = 0;
         i < 100 && !adm("--mode target --op new --tid 1 --targetname iqn.2026-11.org.tgt:u"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return adm(fmt::format(
               "--mode logicalunit --op new --tid 1 --lun 1 --bstype rdwr --backing-store {}",
               image_)) &&
           adm("--mode target --op bind --tid 1 --initiator-address ALL");
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);  // tgtd ignores SIGTERM
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    ::unlink((sock_ + ".0").c_str());
    ::unlink((sock_ + ".0.lock").c_str());
  }
  std::string url() const {
    return fmt::format("iscsi://127.0.0.1:{}/iqn.2026-11.org.tgt:u/1", port_);
  }

 private:
  bool adm(const std::string& args) {
    return std::system(
               fmt::format("TGT_IPC_SOCKET={} timeout 10 tgtadm --lld iscsi {} >/dev/null 2>&1",
                           sock_, args)
                   .c_str()) == 0;
  }
  std::string sock_;
  int port_;
  std::string image_;
  std::string log_;
  pid_t pid_ = -1;
};

bool have_tgtd() {
  return std::system("command -v tgtd >/dev/null 2>&1") == 0;
}

IscsiSpec spec_for(const std::string& url, uint64_t size) {
  IscsiSpec s;
  s.url = url;
  s.initiator = "iqn.2026-11.org.zuma:unit";
  s.size = size;
  s.timeout_s = 3;
  return s;
}

int run_sync(Backend& b, IoOp op, uint64_t off, std::vector<uint8_t>& buf) {
  iovec iov{buf.data(), buf.size()};
  Done d;
  IoRequest r = make_req(op, off, buf.size(), &iov, buf.empty() ? 0 : 1, &d);
  b.submit(r);
  REQUIRE(d.calls == 1);  // no IoContext here: complete when submit() returns
  return d.result;
}

}  // namespace

TEST_CASE("iscsi backend: I/O against tgtd; unreachable, then back after a restart") {
  if (!have_tgtd()) {
    MESSAGE("tgtd not installed: skipped");
    return;
  }
  TempDir dir;
  const std::string image = dir / "lun.img";
  REQUIRE(::truncate(image.c_str(), 0) != 0);  // absent: create it
  write_file(image, kLunBytes - 1, {0});
  const int port = free_port();
  Tgtd tgt(dir, port, image);
  REQUIRE(tgt.start());

  // Larger than the LUN: refused at open, naming both sizes.
  auto big = IscsiBackend::open(spec_for(tgt.url(), 2 * kLunBytes));
  REQUIRE_FALSE(big.has_value());
  CHECK(big.error() == fmt::format("iscsi {}: the remote LUN holds {} bytes, the sub-unit needs {}",
                                   tgt.url(), kLunBytes, 2 * kLunBytes));

  auto b = IscsiBackend::open(spec_for(tgt.url(), kLunBytes));
  REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error()));
  IscsiBackend& be = **b;
  CHECK(be.size() == kLunBytes);
  CHECK(be.connected());
  CHECK(be.describe() == "iscsi:" + tgt.url());

  // Synchronous (no reactor on this thread): write, FUA write, flush, read back.
  auto data = pattern(256 * 1024, 1);
  CHECK(run_sync(be, IoOp::kWrite, 1 << 20, data) == 0);
  std::vector<uint8_t> none;
  CHECK(run_sync(be, IoOp::kFlush, 0, none) == 0);
  CHECK(read_file(image, 1 << 20, data.size()) == data);
  std::vector<uint8_t> back(data.size());
  CHECK(run_sync(be, IoOp::kRead, 1 << 20, back) == 0);
  CHECK(back == data);
  std::vector<uint8_t> odd(100);
  CHECK(run_sync(be, IoOp::kRead, 0, odd) == -EINVAL);  // not whole blocks

  // Asynchronous: the completion is posted back and runs on this (the reactor's) thread.
  {
    CurrentContext ctx;
    auto d2 = pattern(64 * 1024, 2);
    iovec iov[2] = {{d2.data(), 1000 * 8}, {d2.data() + 8000, d2.size() - 8000}};
    Done d;
    IoRequest w = make_req(IoOp::kWrite, 4096, d2.size(), iov, 2, &d);
    w.fua = true;
    be.submit(w);
    CHECK(d.calls == 0);
    REQUIRE(drive(*ctx, [&] { return d.calls > 0; }));
    CHECK(d.result == 0);
    CHECK(read_file(image, 4096, d2.size()) == d2);
  }

  // The remote dies: I/O fails at once with kUnreachable (NOT READY), never hangs.
  tgt.stop();
  REQUIRE(eventually([&] { return !be.connected(); }, std::chrono::seconds(10)));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(run_sync(be, IoOp::kRead, 1 << 20, back) == kUnreachable);
  CHECK(run_sync(be, IoOp::kWrite, 1 << 20, data) == kUnreachable);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));

  // Back on the same port: logged in again by itself (backoff), the data intact.
  Tgtd again(dir, port, image);
  REQUIRE(again.start());
  REQUIRE(eventually([&] { return be.connected(); }, std::chrono::seconds(15)));
  std::fill(back.begin(), back.end(), 0);
  CHECK(run_sync(be, IoOp::kRead, 1 << 20, back) == 0);
  CHECK(back == data);
}

TEST_CASE("iscsi backend: an unreachable remote is refused at open, promptly") {
  const int port = free_port();
  const std::string url = fmt::format("iscsi://127.0.0.1:{}/iqn.2026-11.org.tgt:none/1", port);
  const auto t0 = std::chrono::steady_clock::now();
  auto b = IscsiBackend::open(spec_for(url, 1 << 20));
  REQUIRE_FALSE(b.has_value());
  CHECK(b.error().starts_with("iscsi " + url + ": "));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(4));
  // Offline allowed (a mirror member): opens, reports unreachable.
  IscsiSpec s = spec_for(url, 1 << 20);
  s.allow_offline = true;
  auto off = IscsiBackend::open(s);
  REQUIRE(off.has_value());
  CHECK_FALSE((*off)->connected());
  std::vector<uint8_t> buf(4096);
  CHECK(run_sync(**off, IoOp::kRead, 0, buf) == kUnreachable);
}
