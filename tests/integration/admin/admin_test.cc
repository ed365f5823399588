// zumactl against a real zumad: one-shot and --json, the REPL through a pseudo-terminal,
// LUs added and removed at run time as a libiscsi initiator sees them, config reload under
// I/O, and the metrics endpoint checked against the I/O done (issue 6).
// GCC 12 at -O2 with ASan warns falsely (-Wmaybe-uninitialized) inside std::regex's
// std::function members (libstdc++'s code, instantiated here): before every include, so
// it covers the headers too.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.hh"

using namespace zuma::test;
using Json = nlohmann::json;

namespace {

const std::string kIqnB = "iqn.2026-11.org.zuma:b";

std::string zumactl_path() {
  const char* env = std::getenv("ZUMA_ZUMACTL");
  return env && *env ? env : ZUMA_ZUMACTL_PATH;
}

std::string socket_of(const Zumad& z) {
  return z.dir() + "/var/zumad.sock";
}

RunResult zumactl(const Zumad& z, std::vector<std::string> args) {
  args.insert(args.begin(), {zumactl_path(), "--socket", socket_of(z)});
  return run_program(args, std::chrono::seconds(30));
}

Json zumactl_json(const Zumad& z, std::vector<std::string> args) {
  args.insert(args.begin(), "--json");
  RunResult r = zumactl(z, args);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return Json::parse(r.output);
}

// LUN numbers REPORT LUNS returns on the session.
std::vector<int> report_luns(Session& s) {
  Task t(iscsi_reportluns_sync(s.ctx(), 0, 16384));
  REQUIRE_MESSAGE(is_good(t.get()), describe(s.ctx(), t.get()));
  auto* list = static_cast<scsi_reportluns_list*>(scsi_datain_unmarshall(t.get()));
  REQUIRE(list);
  std::vector<int> out;
  for (uint32_t i = 0; i < list->num; ++i) out.push_back(list->luns[i]);
  return out;
}

// TEST UNIT READY until the LUN's pending unit attentions are consumed.
void clear_attentions(Session& s, int lun) {
  for (int i = 0; i < 8; ++i) {
    Task t = s.tur(lun);
    if (is_good(t.get())) return;
  }
  FAIL("unit attentions did not clear on LUN " << lun);
}

// A one-GET HTTP client (the test must not trust zumad's own HTTP code to check it).
// The value of one sample line "NAME{LABELS} VALUE" of a Prometheus text page.
double sample(const std::string& page, const std::string& series) {
  const auto v = metric_sample(page, series);
  if (!v) FAIL("no sample " << series << " in:\n" << page);
  return v.value_or(0);
}

// zumactl in a pseudo-terminal, as a person would use it.
class Pty {
 public:
  Pty(const std::vector<std::string>& argv, const std::string& home) {
    pid_ = ::forkpty(&fd_, nullptr, nullptr, nullptr);
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::setenv("HOME", home.c_str(), 1);
      ::setenv("TERM", "xterm", 1);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Pty() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }
  void type(const std::string& s) {
    REQUIRE(::write(fd_, s.data(), s.size()) == ssize_t(s.size()));
  }
  // Reads until `what` appeared in the output since the last expect(); true if it did.
  bool expect(const std::string& what, std::chrono::seconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto at = out_.find(what, seen_); at != std::string::npos) {
        seen_ = at + what.size();
        return true;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, int(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return false;
      out_.append(buf, size_t(n));
    }
  }
  int wait_exit() {
    int st = 0;
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      char buf[4096];
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0 && ::read(fd_, buf, sizeof buf) > 0) continue;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // POLLHUP returns at once
    }
    return -2;
  }
  const std::string& output() const { return out_; }

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
  std::string out_;
  size_t seen_ = 0;
};

const char* kLuns =
    "      - { id: 0, name: disk0, size: 8MiB, backend: file, path: @DIR@/disk0.img }\n";

}  // namespace

TEST_CASE("zumactl one-shot, --json and exit codes") {
  Zumad z(make_config(kLuns));
  z.start();
  RunResult r = zumactl(z, {"show", "node"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  // Aligned "key  value" lines (the width is the longest key's).
  CHECK(std::regex_search(r.output, std::regex("(^|\n)name {2,}it\n")));
  CHECK(std::regex_search(r.output, std::regex("(^|\n)luns {2,}1\n")));
  CHECK(std::regex_search(r.output, std::regex("(^|\n)login_failures {2,}0\n")));

  Json luns = zumactl_json(z, {"show", "luns"});
  REQUIRE(luns["rows"].size() == 1);
  CHECK(luns["columns"][0] == "NAME");
  CHECK(luns["rows"][0][0] == "disk0");
  CHECK(luns["rows"][0][3] == 8 << 20);

  r = zumactl(z, {"show", "portals"});
  CHECK(r.output == "ADDRESS          TPGT\n" + z.portal() + "     1\n");

  r = zumactl(z, {"frobnicate"});
  CHECK(r.exit_code == 2);
  CHECK(r.output == "error: unknown command 'frobnicate'; try 'help'\n");
  r = zumactl(z, {"remove", "lun", "nope"});
  CHECK(r.exit_code == 1);
  CHECK(r.output == "error: no LU 'nope'\n");
  r = zumactl(z, {"--json", "remove", "lun", "nope"});
  CHECK(r.exit_code == 1);
  CHECK(Json::parse(r.output)["error"] == "no LU 'nope'");
  r = run_program({zumactl_path(), "--socket", z.dir() + "/nothing.sock", "show", "node"});
  CHECK(r.exit_code == 3);
  CHECK(r.output.find("cannot connect to " + z.dir() + "/nothing.sock") != std::string::npos);
  r = zumactl(z, {"help", "add", "lun"});
  CHECK(r.exit_code == 0);
  CHECK(r.output.starts_with("usage: add lun TARGET --id ID --name NAME --size SIZE"));
  r = zumactl(z, {"log", "level", "debug"});
  CHECK(r.exit_code == 0);
  CHECK(zumactl_json(z, {"log", "level"})["level"] == "debug");
  CHECK(z.stop() == 0);
}

TEST_CASE("the REPL in a pseudo-terminal: typing, TAB completion, help, an error") {
  Zumad z(make_config(kLuns));
  z.start();
  Pty t({zumactl_path(), "--socket", socket_of(z)}, z.dir());
  REQUIRE_MESSAGE(t.expect("zumactl> "), t.output());
  // Only the completed words make a command zumad runs: "sh" + TAB + "lu" + TAB is
  // "show luns" (the echo is full of cursor movements, so the result is what is checked).
  t.type("sh\t");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  t.type("lu\t");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  t.type("\r");
  REQUIRE_MESSAGE(t.expect("NAME "), t.output());
  REQUIRE_MESSAGE(t.expect("disk0"), t.output());
  REQUIRE_MESSAGE(t.expect("zumactl> "), t.output());
  // A live object name from zumad: "di" + TAB is "disk0".
  t.type("show stats --lun di\t");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  t.type("\r");
  REQUIRE_MESSAGE(t.expect("AVG_LAT_US"), t.output());
  REQUIRE_MESSAGE(t.expect("disk0 "), t.output());
  t.type("help remove lun\r");
  REQUIRE_MESSAGE(t.expect("usage: remove lun NAME [--force]"), t.output());
  t.type("frobnicate\r");
  REQUIRE_MESSAGE(t.expect("error: unknown command 'frobnicate'; try 'help'"), t.output());
  REQUIRE_MESSAGE(t.expect("zumactl> "), t.output());
  t.type("quit\r");
  CHECK(t.wait_exit() == 0);
  CHECK(z.stop() == 0);
}

TEST_CASE("a LU added at run time is in REPORT LUNS and usable; removing it in use needs --force") {
  Zumad z(make_config(kLuns));
  z.start();
  Session s(z.portal(), kTestIqn);
  CHECK(report_luns(s) == std::vector<int>{0});

  RunResult r = zumactl(z, {"add", "lun", kTestIqn, "--id", "3", "--name", "extra", "--size",
                            "4MiB", "--path", z.file("extra.img"), "--thin"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output == "1 target changed, 1 LU added\n");
  // The session that was already logged in sees it (SPC-5 REPORTED LUNS DATA HAS CHANGED).
  Task ua = s.tur(0);
  CHECK(is_sense(ua.get(), 0x06, 0x3f0e));
  CHECK(report_luns(s) == std::vector<int>{0, 3});
  clear_attentions(s, 3);
  CHECK(s.capacity(3) == std::make_pair<uint64_t, uint32_t>(8192, 512));
  const auto data = make_pattern(16, 512, 100, 7);
  Task w = s.write16(3, 100, data, 512);
  REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
  // A new session reads it back.
  Session s2(z.portal(), kTestIqn);
  Task rd = s2.read16(3, 100, 16 * 512, 512);
  REQUIRE(is_good(rd.get()));
  CHECK(check_pattern(std::span(rd->datain.data, size_t(rd->datain.size)), 512, 100, 7) == "");

  // In use by two sessions: refused, nothing changes.
  r = zumactl(z, {"remove", "lun", "extra"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("error: LU 'extra' is in use by session") != std::string::npos);
  CHECK(report_luns(s) == std::vector<int>{0, 3});
  r = zumactl(z, {"remove", "lun", "extra", "--force"});
  CHECK(r.exit_code == 0);
  CHECK(r.output == "1 target changed, 1 LU removed\n");
  clear_attentions(s, 0);
  CHECK(report_luns(s) == std::vector<int>{0});
  Task gone = s.read16(3, 0, 512, 512);
  CHECK(is_sense(gone.get(), 0x05, 0x2500));  // LOGICAL UNIT NOT SUPPORTED
  // The sessions themselves go on.
  clear_attentions(s2, 0);
  Task ok = s2.read16(0, 0, 512, 512);
  CHECK(is_good(ok.get()));
  CHECK(zumactl_json(z, {"show", "sessions"})["rows"].size() == 2);
  CHECK(z.stop() == 0);
}

TEST_CASE("config reload under I/O; config save writes the running state back") {
  Zumad z(make_config(kLuns));
  z.start();
  const uint16_t port1 = free_port();
  const std::string portal1 = "127.0.0.1:" + std::to_string(port1);
  Session s(z.portal(), kTestIqn);
  std::atomic<bool> stop{false};
  std::atomic<int> done{0};
  std::string failure;
  std::thread io([&] {
    const auto data = make_pattern(8, 512, 0, 1);
    while (!stop) {
      Task w = s.write16(0, uint64_t(done % 1000) * 8, data, 512);
      if (!is_good(w.get())) {
        failure = "write: " + describe(s.ctx(), w.get());
        return;
      }
      Task rd = s.read16(0, uint64_t(done % 1000) * 8, 8 * 512, 512);
      if (!is_good(rd.get())) {
        failure = "read: " + describe(s.ctx(), rd.get());
        return;
      }
      ++done;
    }
  });
  // A second target, a second portal and a log level, added to the file and reloaded.
  std::string text = read_file(z.config_path());
  text = replace_all(text, "portals: [ \"" + z.portal() + "\" ]",
                     "portals: [ \"" + z.portal() + "\", \"" + portal1 + "\" ]");
  text = replace_all(text, "log_level: info", "log_level: debug");
  text += "  - iqn: " + kIqnB +
          "\n    luns:\n      - { id: 0, name: b0, size: 4MiB, backend: memory }\n";
  write_file(z.config_path(), text);
  while (done < 50 && failure.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  RunResult r = zumactl(z, {"config", "reload"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output == "1 target added, 1 LU added, 1 portal added, log level changed\n");
  const int before = done;
  while (done < before + 50 && failure.empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop = true;
  io.join();
  CHECK(failure == "");
  // The new target answers on the new portal.
  Session b(portal1, kIqnB);
  CHECK(b.capacity(0) == std::make_pair<uint64_t, uint32_t>(8192, 512));
  CHECK(zumactl_json(z, {"log", "level"})["level"] == "debug");
  // Nothing left to apply; a change zumad cannot make live is refused.
  CHECK(zumactl(z, {"config", "reload"}).output == "no changes\n");
  write_file(z.config_path(), replace_all(text, "reactors: 2", "reactors: 1"));
  r = zumactl(z, {"config", "reload"});
  CHECK(r.exit_code == 1);
  CHECK(r.output == "error: cannot change node.reactors while zumad runs (restart it)\n");

  // config save: a run-time change reaches the file, which parses to the same state.
  write_file(z.config_path(), "# kept comment\n" + text);
  REQUIRE(zumactl(z, {"add", "acl", kIqnB, "iqn.1994-05.com.redhat:h1"}).exit_code == 0);
  r = zumactl(z, {"config", "save"});
  CHECK(r.exit_code == 0);
  const std::string saved = read_file(z.config_path());
  CHECK(saved.starts_with("# kept comment\n"));
  CHECK(saved.find("initiator: \"iqn.1994-05.com.redhat:h1\"") != std::string::npos);
  CHECK(zumactl(z, {"config", "reload"}).output == "no changes\n");
  CHECK(run_program({zumad_path(), "--check-config", z.config_path()}).exit_code == 0);
  CHECK(z.stop() == 0);
}

TEST_CASE("metrics: counters match the I/O done") {
  std::string cfg = make_config(kLuns);  // @PORT1@: the metrics endpoint
  cfg = replace_all(cfg, "log_level: info }", "log_level: info, metrics: \"127.0.0.1:@PORT1@\" }");
  Zumad z(cfg, 2);
  z.start();
  const std::string before = http_get(z.port(1), "/metrics");
  CHECK(before.find("200 OK") != std::string::npos);
  CHECK(sample(before, "zuma_lu_writes_total{lu=\"disk0\"}") == 0);
  {
    Session s(z.portal(), kTestIqn);
    const auto data = make_pattern(8, 512, 0, 3);
    for (int i = 0; i < 20; ++i) REQUIRE(is_good(s.write16(0, uint64_t(i) * 8, data, 512).get()));
    for (int i = 0; i < 7; ++i) REQUIRE(is_good(s.read16(0, uint64_t(i) * 8, 4096, 512).get()));
    const std::string page = http_get(z.port(1), "/metrics");
    CHECK(sample(page, "zuma_lu_writes_total{lu=\"disk0\"}") == 20);
    CHECK(sample(page, "zuma_lu_written_bytes_total{lu=\"disk0\"}") == 20 * 4096);
    CHECK(sample(page, "zuma_lu_reads_total{lu=\"disk0\"}") == 7);
    CHECK(sample(page, "zuma_lu_read_bytes_total{lu=\"disk0\"}") == 7 * 4096);
    CHECK(sample(page, "zuma_sessions") == 1);
    const double commands = sample(page, "zuma_lu_commands_total{lu=\"disk0\"}");
    CHECK(commands >= 27);
    CHECK(sample(page, "zuma_lu_latency_seconds_count{lu=\"disk0\"}") == commands);
    CHECK(sample(page, "zuma_lu_latency_seconds_bucket{lu=\"disk0\",le=\"+Inf\"}") == commands);
    std::smatch m;
    const std::regex session_writes(
        "zuma_session_writes_total\\{session=\"[0-9]+\",initiator=\"[^\"]+\",target=\"" +
        std::string(kTestIqn) + "\"\\} 20\n");
    CHECK(std::regex_search(page, m, session_writes));
  }
  // A closed session's I/O stays counted per LU.
  for (int i = 0; i < 100 && zumactl_json(z, {"show", "sessions"})["rows"].size() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::string after = http_get(z.port(1), "/metrics");
  CHECK(sample(after, "zuma_lu_writes_total{lu=\"disk0\"}") == 20);
  CHECK(sample(after, "zuma_sessions") == 0);
  Json stats = zumactl_json(z, {"show", "stats"});
  REQUIRE(stats["rows"].size() == 1);
  CHECK(stats["rows"][0][3] == 20);
  CHECK(z.stop() == 0);
}

// sd_notify(3) without libsystemd (admin/systemd_notify.cc): under Type=notify zumad sends
// READY=1 once its portals listen, and STOPPING=1 when SIGTERM starts the shutdown.
TEST_CASE("systemd notification: READY=1 when listening, STOPPING=1 on SIGTERM") {
  for (const bool abstract : {false, true}) {
    CAPTURE(abstract);
    Zumad z(make_config(kLuns));
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    // An abstract name is "@NAME" in $NOTIFY_SOCKET and "\0NAME" in the address.
    const std::string name =
        abstract ? "@zuma-notify-" + std::to_string(::getpid()) : z.file("notify.sock");
    std::memcpy(a.sun_path, name.data(), name.size());
    if (abstract) a.sun_path[0] = '\0';
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a),
                   socklen_t(offsetof(sockaddr_un, sun_path) + name.size())) == 0);
    auto receive = [&] {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10000) != 1) return std::string("(nothing within 10 s)");
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      return n < 0 ? std::string("(recv failed)") : std::string(buf, size_t(n));
    };
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
    z.start();
    ::unsetenv("NOTIFY_SOCKET");
    const std::string ready = receive();
    CHECK(ready.starts_with("READY=1\n"));
    CHECK(ready.find("STATUS=1 LUs in 1 targets") != std::string::npos);
    // Ready means ready: a login works at once.
    { Session s(z.portal(), kTestIqn); }
    z.signal(SIGTERM);
    CHECK(receive() == "STOPPING=1");
    CHECK(z.wait_exit(std::chrono::seconds(10)) == 0);
    ::close(fd);
  }
}

// zumactl resize lun while a session uses the LU: CAPACITY DATA HAS CHANGED (2Ah/09h), the
// new READ CAPACITY, the data kept, the new blocks usable; shrinking needs --shrink; `config
// save` writes the new size.
TEST_CASE("resize lun online: the initiator sees 2Ah/09h and the new capacity") {
  Zumad z(make_config(kLuns));
  z.start();
  Session s(z.portal(), kTestIqn);
  clear_attentions(s, 0);
  REQUIRE(s.capacity(0) == std::make_pair<uint64_t, uint32_t>(16384, 512));
  const auto data = make_pattern(16, 512, 16368, 3);
  Task w = s.write16(0, 16368, data, 512);
  REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));

  RunResult r = zumactl(z, {"resize", "lun", "disk0", "16MiB"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output == "LU 'disk0' resized from 8MiB to 16MiB (32768 blocks of 512 bytes)\n");
  Task ua = s.tur(0);
  CHECK(is_sense(ua.get(), 0x06, 0x2a09));
  CHECK(s.capacity(0) == std::make_pair<uint64_t, uint32_t>(32768, 512));
  Task rd = s.read16(0, 16368, 16 * 512, 512);
  REQUIRE(is_good(rd.get()));
  CHECK(check_pattern(std::span(rd->datain.data, size_t(rd->datain.size)), 512, 16368, 3) == "");
  const auto tail = make_pattern(16, 512, 32752, 4);
  Task w2 = s.write16(0, 32752, tail, 512);
  REQUIRE_MESSAGE(is_good(w2.get()), describe(s.ctx(), w2.get()));
  CHECK(zumactl_json(z, {"show", "luns"})["rows"][0][3] == 16 << 20);

  r = zumactl(z, {"resize", "lun", "disk0", "4MiB"});
  CHECK(r.exit_code == 1);
  CHECK(r.output ==
        "error: LU 'disk0': shrinking from 16MiB to 4MiB loses the data beyond the new end; "
        "give --shrink to do it\n");
  r = zumactl(z, {"resize", "lun", "disk0", "1000"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("a positive multiple of its block size (512 bytes)") != std::string::npos);
  r = zumactl(z, {"resize", "lun", "disk0", "4MiB", "--shrink"});
  CHECK(r.exit_code == 0);
  CHECK(is_sense(s.tur(0).get(), 0x06, 0x2a09));
  CHECK(s.capacity(0) == std::make_pair<uint64_t, uint32_t>(8192, 512));
  Task beyond = s.read16(0, 8192, 512, 512);
  CHECK(is_sense(beyond.get(), 0x05, 0x2100));  // LOGICAL BLOCK ADDRESS OUT OF RANGE

  r = zumactl(z, {"config", "save"});
  REQUIRE(r.exit_code == 0);
  CHECK(read_file(z.config_path()).find("size: 4194304\n") != std::string::npos);
  CHECK(z.stop() == 0);
}

namespace {

// A libiscsi login with CHAP credentials (or none): true when it succeeds.
bool chap_login(const std::string& portal, const std::string& iqn, const std::string& initiator,
                const std::string& user, const std::string& secret) {
  iscsi_context* ctx = iscsi_create_context(initiator.c_str());
  REQUIRE(ctx);
  iscsi_set_targetname(ctx, iqn.c_str());
  iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
  iscsi_set_noautoreconnect(ctx, 1);
  iscsi_set_timeout(ctx, 10);
  if (!user.empty()) iscsi_set_initiator_username_pwd(ctx, user.c_str(), secret.c_str());
  const bool ok = iscsi_full_connect_sync(ctx, portal.c_str(), 0) == 0;
  if (ok) iscsi_logout_sync(ctx);
  iscsi_destroy_context(ctx);
  return ok;
}

SessionOptions as_initiator(const std::string& name) {
  SessionOptions o;
  o.initiator = name;
  return o;
}

}  // namespace

// The verbs the other tests do not reach, each seen by an initiator: add/remove target,
// add/remove acl, set/remove chap, add/remove portal, show node/targets/connections/config,
// logout.
TEST_CASE("every live change verb as an initiator sees it") {
  Zumad z(make_config(kLuns));
  z.start();
  const std::string t2 = "iqn.2026-11.org.zuma:t2";
  const std::string host1 = "iqn.1994-05.com.example:host1";
  const std::string host2 = "iqn.1994-05.com.example:host2";

  RunResult r = zumactl(z, {"add", "target", t2, "--name", "t2disk", "--size", "4MiB",
                            "--backend", "memory", "--alias", "second"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  {
    Session s(z.portal(), t2, 0, as_initiator(host2));
    CHECK(s.capacity(0) == std::make_pair<uint64_t, uint32_t>(8192, 512));
  }
  Json targets = zumactl_json(z, {"show", "targets"});
  REQUIRE(targets["rows"].size() == 2);
  CHECK(targets["rows"][1][0] == t2);
  CHECK(targets["rows"][1][1] == "second");
  CHECK(zumactl_json(z, {"show", "node"})["targets"] == 2);

  // An ACL entry closes the target to everyone else; removing it opens it again.
  REQUIRE(zumactl(z, {"add", "acl", t2, host1}).exit_code == 0);
  CHECK_THROWS(Session(z.portal(), t2, 0, as_initiator(host2)));
  { Session ok(z.portal(), t2, 0, as_initiator(host1)); }
  REQUIRE(zumactl(z, {"remove", "acl", t2, host1}).exit_code == 0);
  { Session ok(z.portal(), t2, 0, as_initiator(host2)); }

  // CHAP: required at the next login, then not.
  REQUIRE(zumactl(z, {"set", "chap", t2, "--user", "u1", "--secret", "sixteen-bytes-ok"})
              .exit_code == 0);
  CHECK_FALSE(chap_login(z.portal(), t2, host2, "", ""));
  CHECK_FALSE(chap_login(z.portal(), t2, host2, "u1", "the-wrong-secret"));
  CHECK(chap_login(z.portal(), t2, host2, "u1", "sixteen-bytes-ok"));
  CHECK(zumactl_json(z, {"show", "targets"})["rows"][1][4] != "off");
  r = zumactl(z, {"set", "chap", t2, "--user", "u1", "--secret", "short"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("12") != std::string::npos);  // the length rule is named
  REQUIRE(zumactl(z, {"remove", "chap", t2}).exit_code == 0);
  CHECK(chap_login(z.portal(), t2, host2, "", ""));

  // A second portal, then without it.
  const std::string portal2 = "127.0.0.1:" + std::to_string(free_port());
  REQUIRE(zumactl(z, {"add", "portal", portal2, "--tpgt", "2"}).exit_code == 0);
  { Session via2(portal2, kTestIqn); }
  REQUIRE(zumactl(z, {"remove", "portal", portal2}).exit_code == 0);
  CHECK_THROWS(Session(portal2, kTestIqn));

  // show connections: the negotiated parameters of a live session; show config: the YAML
  // of the running state (the new target in it).
  Session s(z.portal(), kTestIqn, 0, as_initiator(host1));
  Json conns = zumactl_json(z, {"show", "connections"});
  bool saw_burst = false;
  for (const auto& row : conns["rows"])
    if (row[1] == "MaxBurstLength") saw_burst = true;
  CHECK(saw_burst);
  CHECK(zumactl(z, {"show", "config"}).output.find(t2) != std::string::npos);

  // Remove the target (no session on it now); logins to it then fail as unknown.
  REQUIRE(zumactl(z, {"remove", "target", t2}).exit_code == 0);
  CHECK_THROWS(Session(z.portal(), t2, 0, as_initiator(host2)));
  CHECK(zumactl_json(z, {"show", "targets"})["rows"].size() == 1);

  // logout: zumad asks the initiator to log out (and closes the session if it does not).
  Json sessions = zumactl_json(z, {"show", "sessions"});
  REQUIRE(sessions["rows"].size() == 1);
  const std::string id = to_string(sessions["rows"][0][0]);
  REQUIRE(zumactl(z, {"logout", id}).exit_code == 0);
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = zumactl_json(z, {"show", "sessions"})["rows"].empty();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(gone);
  CHECK(z.stop() == 0);
}

// copy lun: a background job with progress; the copy is exact; in use needs --force; a
// watched job left with Ctrl-C goes on; --rate paces it; cancel stops it.
TEST_CASE("copy lun: exact data, progress bar with ETA, background, cancel") {
  Zumad z(make_config(
      "      - { id: 0, name: src, size: 8MiB, backend: memory }\n"
      "      - { id: 1, name: dst, size: 16MiB, backend: file, path: @DIR@/dst.img }\n"
      "      - { id: 2, name: small, size: 4MiB, backend: memory }\n"));
  z.start();
  Session s(z.portal(), kTestIqn);
  const auto data = make_pattern(16384, 512, 0, 21);  // all of src
  REQUIRE(is_good(s.write16(0, 0, data, 512).get()));

  RunResult r = zumactl(z, {"copy", "lun", "src", "dst"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("LU 'dst' is in use by session") != std::string::npos);
  r = zumactl(z, {"copy", "lun", "src", "small", "--force"});
  CHECK(r.exit_code == 1);
  CHECK(r.output == "error: LU 'small' (4MiB) is smaller than 'src' (8MiB)\n");
  r = zumactl(z, {"copy", "lun", "src", "src"});
  CHECK(r.exit_code == 1);

  r = zumactl(z, {"copy", "lun", "src", "dst", "--force"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.starts_with("job 1: copying 8MiB of 'src' to 'dst'\n"));
  CHECK(r.output.find("job 1 done: 8.0 MiB in ") != std::string::npos);
  Task rd = s.read16(1, 0, 8 << 20, 512);
  REQUIRE(is_good(rd.get()));
  CHECK(check_pattern(std::span(rd->datain.data, size_t(rd->datain.size)), 512, 0, 21) == "");
  Json job = zumactl_json(z, {"show", "job", "1"});
  CHECK(job["state"] == "done");
  CHECK(job["done"] == 8 << 20);
  CHECK(job["total"] == 8 << 20);

  // In the shell: the bar with rate and ETA, Ctrl-C leaves the job running.
  Pty t({zumactl_path(), "--socket", socket_of(z)}, z.dir());
  REQUIRE_MESSAGE(t.expect("zumactl> "), t.output());
  t.type("copy lun src dst --force --rate 2MiB\r");
  REQUIRE_MESSAGE(t.expect("ETA"), t.output());
  REQUIRE_MESSAGE(t.expect("MiB/s"), t.output());
  t.type("\x03");
  REQUIRE_MESSAGE(t.expect("job 2 goes on in the background"), t.output());
  REQUIRE_MESSAGE(t.expect("zumactl> "), t.output());
  t.type("show jobs\r");
  REQUIRE_MESSAGE(t.expect("running"), t.output());
  t.type("cancel job 2\r");
  REQUIRE_MESSAGE(t.expect("job 2: cancelling"), t.output());
  t.type("quit\r");
  CHECK(t.wait_exit() == 0);
  Json j2;
  for (int i = 0; i < 50; ++i) {
    j2 = zumactl_json(z, {"show", "job", "2"});
    if (j2["state"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(j2["state"] == "cancelled");
  CHECK(j2["done"].get<uint64_t>() < (8u << 20));  // 2 MiB/s for a few seconds at most

  // --background: the id at once; `watch job` follows it to the end.
  r = zumactl(z, {"--json", "copy", "lun", "src", "dst", "--force", "--background"});
  REQUIRE(r.exit_code == 0);
  CHECK(Json::parse(r.output)["job"] == 3);
  r = zumactl(z, {"watch", "job", "3"});
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("job 3 done") != std::string::npos);
  CHECK(zumactl(z, {"show", "job", "9"}).output == "error: no job 9\n");
  CHECK(z.stop() == 0);
}
