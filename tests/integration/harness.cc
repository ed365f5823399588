#include "tests/integration/harness.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <doctest/doctest.h>

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

#ifndef ZUMA_ZUMAD_PATH
#error "ZUMA_ZUMAD_PATH must be defined by the build (path of the zumad binary)"
#endif

namespace zuma::test {
namespace {

using Clock = std::chrono::steady_clock;

// Set by the listener below when an assertion of the running test case fails; read by
// ~Zumad to decide whether to print zumad's log.
std::atomic<bool> g_test_failed{false};

struct FailureListener : public doctest::IReporter {
  explicit FailureListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { g_test_failed = false; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override { g_test_failed = true; }
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData& ad) override {
    if (ad.m_failed) g_test_failed = true;
  }
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("zuma-failure-listener", 1, FailureListener);

bool keep_dirs() {
  const char* k = std::getenv("ZUMA_TEST_KEEP");
  return k && *k && std::string_view(k) != "0";
}

std::string errno_str(std::string_view what) {
  return std::string(what) + ": " + std::strerror(errno);
}

// Polls waitpid(WNOHANG) until the child exits or the deadline passes.
std::optional<int> wait_child(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(st)) return WEXITSTATUS(st);
      if (WIFSIGNALED(st)) return -WTERMSIG(st);
      return -1;
    }
    if (r < 0 && errno != EINTR) return -1000;  // not our child any more
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool port_accepts(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> v;
  for (auto& a : args) v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

}  // namespace

std::string zumad_path() {
  if (const char* p = std::getenv("ZUMA_ZUMAD"); p && *p) return p;
  return ZUMA_ZUMAD_PATH;
}

// ---- files -----------------------------------------------------------------------------

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/zuma-it-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error(errno_str("mkdtemp " + tmpl));
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (keep_dirs()) {
    std::fprintf(stderr, "[harness] keeping %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint16_t free_port() {
  // Never the same port twice in one test process: two zumads of a test pick their ports
  // before either binds, and the kernel may offer a port again once it was closed (a
  // primary once got its secondary's portal port: bind: Address already in use).
  static std::mutex mu;
  static std::set<uint16_t> given;
  std::lock_guard lk(mu);
  for (int tries = 0;; ++tries) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(errno_str("socket"));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      ::close(fd);
      throw std::runtime_error(errno_str("bind"));
    }
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    ::close(fd);
    const uint16_t port = ntohs(sa.sin_port);
    if (given.insert(port).second || tries == 1000) return port;
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void check_image(const std::string& img, const std::vector<uint64_t>& seeds, uint32_t block_size) {
  const std::string bytes = read_file(img);
  REQUIRE(bytes.size() == seeds.size() * block_size);
  for (uint64_t b = 0; b < seeds.size(); ++b) {
    std::span<const uint8_t> block(reinterpret_cast<const uint8_t*>(bytes.data()) + b * block_size,
                                   block_size);
    if (seeds[b] == 0) {
      REQUIRE_MESSAGE(std::all_of(block.begin(), block.end(), [](uint8_t c) { return c == 0; }),
                      img << ": block " << b << " is not zero");
      continue;
    }
    const std::string bad = check_pattern(block, block_size, b, seeds[b]);
    REQUIRE_MESSAGE(bad.empty(), img << ": " << bad);
  }
}

void write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (size_t pos = 0; (pos = text.find(from, pos)) != std::string::npos; pos += to.size())
    text.replace(pos, from.size(), to);
  return text;
}

RunResult run_program(const std::vector<std::string>& argv_in, std::chrono::seconds timeout) {
  std::vector<std::string> args = argv_in;
  std::vector<char*> argv = c_argv(args);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error(errno_str("pipe2"));
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(errno_str("fork"));
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(pipefd[1]);
  RunResult r;
  const auto deadline = Clock::now() + timeout;
  bool killed = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 1000)));
    if (n <= 0) continue;
    char buf[4096];
    ssize_t got = ::read(pipefd[0], buf, sizeof buf);
    if (got <= 0) break;
    r.output.append(buf, static_cast<size_t>(got));
  }
  ::close(pipefd[0]);
  auto code = wait_child(pid, std::chrono::seconds(10));
  if (!code) {
    ::kill(pid, SIGKILL);
    code = wait_child(pid, std::chrono::seconds(10));
  }
  r.exit_code = code.value_or(-9);
  if (killed) r.output += "\n[harness] killed after timeout\n";
  return r;
}

// ---- zumad -----------------------------------------------------------------------------

Zumad::Zumad(std::string config_template, int nports) {
  for (int i = 0; i < nports; ++i) {
    uint16_t p;
    do p = free_port();
    while (std::find(ports_.begin(), ports_.end(), p) != ports_.end());
    ports_.push_back(p);
  }
  std::string text = replace_all(std::move(config_template), "@DIR@", dir_.path());
  for (size_t i = 0; i < ports_.size(); ++i)
    text =
        replace_all(std::move(text), "@PORT" + std::to_string(i) + "@", std::to_string(ports_[i]));
  config_text_ = text;
  config_path_ = dir_.file("zumad.yaml");
  log_path_ = dir_.file("zumad.log");
  write_file(config_path_, config_text_);
  std::filesystem::create_directories(dir_.file("var"));
}

Zumad::~Zumad() {
  if (pid_ > 0) {
    int code = stop();
    CHECK_MESSAGE(code == 0, "zumad (pid " << pid_ << ") exit status " << code
                                           << " at the end of the test (expected 0)");
  }
  if (g_test_failed || std::uncaught_exceptions() > 0 || exit_code_ != 0) {
    std::fprintf(stderr, "\n----- zumad log (%s) -----\n%s\n----- end of zumad log -----\n",
                 log_path_.c_str(), log_tail(64 * 1024).c_str());
  }
}

void Zumad::start() {
  if (pid_ > 0) throw std::logic_error("zumad already running");
  std::vector<std::string> args = {zumad_path(), "--config", config_path_};
  std::vector<char*> argv = c_argv(args);
  int logfd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) throw std::runtime_error(errno_str("open " + log_path_));
  std::string banner = "[harness] starting " + args[0] + " --config " + config_path_ + "\n";
  (void)!::write(logfd, banner.data(), banner.size());
  const pid_t parent = ::getpid();
  const std::string& cwd = dir_.path();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(logfd);
    throw std::runtime_error(errno_str("fork"));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(126);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(logfd, 1);
    ::dup2(logfd, 2);
    if (::chdir(cwd.c_str()) != 0) _exit(125);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(logfd);
  pid_ = pid;

  const auto deadline = Clock::now() + std::chrono::seconds(10);
  std::vector<bool> up(ports_.size(), false);
  for (;;) {
    if (auto code = wait_child(pid_, std::chrono::milliseconds(0))) {
      pid_ = -1;
      exit_code_ = *code;
      throw std::runtime_error("zumad exited with status " + std::to_string(*code) +
                               " before its portals accepted connections; its log:\n" + log_tail());
    }
    bool all = true;
    for (size_t i = 0; i < ports_.size(); ++i) {
      if (!up[i]) up[i] = port_accepts(ports_[i]);
      all = all && up[i];
    }
    if (all) return;
    if (Clock::now() >= deadline) {
      stop(std::chrono::seconds(2));
      throw std::runtime_error(
          "zumad did not accept connections on every portal within 10 s; "
          "its log:\n" +
          log_tail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Zumad::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

std::optional<int> Zumad::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return exit_code_;
  auto code = wait_child(pid_, timeout);
  if (code) {
    pid_ = -1;
    exit_code_ = *code;
  }
  return code;
}

bool Zumad::running() {
  return pid_ > 0 && !wait_exit(std::chrono::milliseconds(0));
}

int Zumad::stop(std::chrono::seconds grace) {
  if (pid_ <= 0) return exit_code_;
  ::kill(pid_, SIGTERM);
  auto code = wait_child(pid_, grace);
  if (!code) {
    std::fprintf(stderr, "[harness] zumad pid %d ignored SIGTERM for %llds; SIGKILL\n", pid_,
                 static_cast<long long>(grace.count()));
    ::kill(pid_, SIGKILL);
    code = wait_child(pid_, std::chrono::seconds(10));
    code = -9;
  }
  pid_ = -1;
  exit_code_ = *code;
  return *code;
}

std::string Zumad::portal(size_t i) const {
  return "127.0.0.1:" + std::to_string(port(i));
}

std::string Zumad::url(std::string_view iqn, int lun, size_t portal_index) const {
  return "iscsi://" + portal(portal_index) + "/" + std::string(iqn) + "/" + std::to_string(lun);
}

std::string Zumad::log() const {
  return read_file(log_path_);
}

std::string Zumad::log_tail(size_t max_bytes) const {
  std::string l = log();
  if (l.size() <= max_bytes) return l;
  return "[... " + std::to_string(l.size() - max_bytes) + " bytes cut ...]\n" +
         l.substr(l.size() - max_bytes);
}

std::string make_config(std::string_view luns_yaml, std::string_view iscsi_yaml, int nports,
                        std::string_view iqn) {
  std::string c = "node: { name: it, data_dir: @DIR@/var, reactors: 2, log_level: info }\n";
  c += "portals: [ ";
  for (int i = 0; i < nports; ++i) {
    if (i) c += ", ";
    c += "\"127.0.0.1:@PORT" + std::to_string(i) + "@\"";
  }
  c += " ]\n";
  if (!iscsi_yaml.empty()) c += "iscsi: " + std::string(iscsi_yaml) + "\n";
  c += "targets:\n  - iqn: " + std::string(iqn) + "\n    luns:\n";
  c += luns_yaml;
  if (!c.ends_with('\n')) c += '\n';
  return c;
}

// ---- libiscsi --------------------------------------------------------------------------

void TaskDeleter::operator()(scsi_task* t) const {
  if (t) scsi_free_scsi_task(t);
}

bool is_good(const scsi_task* task) {
  return task && task->status == SCSI_STATUS_GOOD;
}

bool is_sense(const scsi_task* task, int key, int ascq) {
  return task && task->status == SCSI_STATUS_CHECK_CONDITION &&
         static_cast<int>(task->sense.key) == key && task->sense.ascq == ascq;
}

std::string describe(iscsi_context* ctx, const scsi_task* task) {
  char buf[256];
  if (!task) {
    return std::string("transport error: ") + (ctx ? iscsi_get_error(ctx) : "no context");
  }
  switch (task->status) {
    case SCSI_STATUS_GOOD:
      return "GOOD";
    case SCSI_STATUS_CHECK_CONDITION: {
      const char* k = scsi_sense_key_str(task->sense.key);
      std::snprintf(buf, sizeof buf, "CHECK CONDITION %s(0x%x) ASC/ASCQ 0x%04x", k ? k : "?",
                    static_cast<unsigned>(task->sense.key),
                    static_cast<unsigned>(task->sense.ascq));
      return buf;
    }
    default:
      std::snprintf(buf, sizeof buf, "status 0x%x (%s)", static_cast<unsigned>(task->status),
                    ctx ? iscsi_get_error(ctx) : "");
      return buf;
  }
}

Session::Session(const std::string& portal, std::string_view iqn, int lun,
                 const SessionOptions& opts) {
  static std::atomic<unsigned> counter{0};
  std::string initiator = opts.initiator;
  if (initiator.empty())
    initiator =
        "iqn.2026-11.org.zuma:it-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  ctx_ = iscsi_create_context(initiator.c_str());
  if (!ctx_) throw std::runtime_error("iscsi_create_context failed");
  std::string target(iqn);
  iscsi_set_targetname(ctx_, target.c_str());
  iscsi_set_session_type(ctx_, ISCSI_SESSION_NORMAL);
  iscsi_set_noautoreconnect(ctx_, 1);
  iscsi_set_timeout(ctx_, opts.timeout_s);
  if (opts.immediate_data)
    iscsi_set_immediate_data(
        ctx_, *opts.immediate_data ? ISCSI_IMMEDIATE_DATA_YES : ISCSI_IMMEDIATE_DATA_NO);
  if (opts.initial_r2t)
    iscsi_set_initial_r2t(ctx_, *opts.initial_r2t ? ISCSI_INITIAL_R2T_YES : ISCSI_INITIAL_R2T_NO);
  if (iscsi_full_connect_sync(ctx_, portal.c_str(), lun) != 0) {
    std::string err = "login to " + portal + " " + target + " failed: " + iscsi_get_error(ctx_);
    iscsi_destroy_context(ctx_);
    ctx_ = nullptr;
    throw std::runtime_error(err);
  }
  if (opts.clear_unit_attentions) {
    // As initiators do after login (SAM-5 5.14: a new I_T nexus starts with a power-on
    // unit attention on every LU): TEST UNIT READY each reported LUN until no UA is left.
    scsi_task* rl = iscsi_reportluns_sync(ctx_, 0, 16384);
    Task report(rl);
    auto* list = rl && rl->status == SCSI_STATUS_GOOD
                     ? static_cast<scsi_reportluns_list*>(scsi_datain_unmarshall(rl))
                     : nullptr;
    for (uint32_t i = 0; list && i < list->num; ++i) {
      for (int tries = 0; tries < 8; ++tries) {
        Task t(iscsi_testunitready_sync(ctx_, int(list->luns[i])));
        if (!t || t->status != SCSI_STATUS_CHECK_CONDITION ||
            t->sense.key != SCSI_SENSE_UNIT_ATTENTION)
          break;
      }
    }
  }
}

Session::~Session() {
  if (!ctx_) return;
  if (iscsi_is_logged_in(ctx_)) {
    iscsi_set_timeout(ctx_, 5);
    (void)iscsi_logout_sync(ctx_);
  }
  iscsi_destroy_context(ctx_);
}

std::string Session::error() const {
  return iscsi_get_error(ctx_);
}

Task Session::tur(int lun) {
  return Task(iscsi_testunitready_sync(ctx_, lun));
}

Task Session::inquiry(int lun, bool evpd, int page, int alloc) {
  return Task(iscsi_inquiry_sync(ctx_, lun, evpd ? 1 : 0, page, alloc));
}

Task Session::read_capacity16(int lun) {
  return Task(iscsi_readcapacity16_sync(ctx_, lun));
}

Task Session::read16(int lun, uint64_t lba, uint32_t bytes, uint32_t block_size) {
  return Task(
      iscsi_read16_sync(ctx_, lun, lba, bytes, static_cast<int>(block_size), 0, 0, 0, 0, 0));
}

Task Session::write16(int lun, uint64_t lba, std::span<const uint8_t> data, uint32_t block_size) {
  return Task(iscsi_write16_sync(ctx_, lun, lba, const_cast<uint8_t*>(data.data()),
                                 static_cast<uint32_t>(data.size()), static_cast<int>(block_size),
                                 0, 0, 0, 0, 0));
}

Task Session::sync_cache(int lun) {
  return Task(iscsi_synchronizecache10_sync(ctx_, lun, 0, 0, 0, 0));
}

std::pair<uint64_t, uint32_t> Session::capacity(int lun) {
  Task t = read_capacity16(lun);
  if (!is_good(t.get()))
    throw std::runtime_error("READ CAPACITY 16 on LUN " + std::to_string(lun) + ": " +
                             describe(ctx_, t.get()));
  auto* rc = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(t.get()));
  if (!rc) throw std::runtime_error("READ CAPACITY 16: cannot unmarshall");
  return {rc->returned_lba + 1, rc->block_length};
}

std::vector<std::pair<std::string, std::string>> discover(const std::string& portal) {
  iscsi_context* ctx = iscsi_create_context("iqn.2026-11.org.zuma:it-discovery");
  if (!ctx) throw std::runtime_error("iscsi_create_context failed");
  std::unique_ptr<iscsi_context, int (*)(iscsi_context*)> guard(ctx, iscsi_destroy_context);
  iscsi_set_session_type(ctx, ISCSI_SESSION_DISCOVERY);
  iscsi_set_noautoreconnect(ctx, 1);
  iscsi_set_timeout(ctx, 30);
  if (iscsi_connect_sync(ctx, portal.c_str()) != 0)
    throw std::runtime_error("connect " + portal + ": " + iscsi_get_error(ctx));
  if (iscsi_login_sync(ctx) != 0)
    throw std::runtime_error("discovery login " + portal + ": " + iscsi_get_error(ctx));
  iscsi_discovery_address* da = iscsi_discovery_sync(ctx);
  if (!da) throw std::runtime_error("SendTargets " + portal + ": " + iscsi_get_error(ctx));
  std::vector<std::pair<std::string, std::string>> out;
  for (auto* a = da; a; a = a->next)
    for (auto* p = a->portals; p; p = p->next)
      out.emplace_back(a->target_name ? a->target_name : "", p->portal ? p->portal : "");
  iscsi_free_discovery_data(ctx, da);
  (void)iscsi_logout_sync(ctx);
  return out;
}

// ---- patterns --------------------------------------------------------------------------

namespace {
uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void fill_block(uint8_t* b, uint32_t block_size, uint64_t lba, uint64_t seed) {
  std::memcpy(b, &lba, 8);  // little endian hosts only (x86-64, arm64)
  std::memcpy(b + 8, &seed, 8);
  uint64_t s = lba * 0x100000001b3ULL ^ seed;
  for (uint32_t off = 16; off < block_size; off += 8) {
    uint64_t v = splitmix64(s);
    std::memcpy(b + off, &v, std::min<uint32_t>(8, block_size - off));
  }
}
}  // namespace

void fill_pattern(std::span<uint8_t> buf, uint32_t block_size, uint64_t first_lba, uint64_t seed) {
  for (size_t i = 0; i * block_size < buf.size(); ++i)
    fill_block(buf.data() + i * block_size, block_size, first_lba + i, seed);
}

std::vector<uint8_t> make_pattern(uint64_t nblocks, uint32_t block_size, uint64_t first_lba,
                                  uint64_t seed) {
  std::vector<uint8_t> v(nblocks * block_size);
  fill_pattern(v, block_size, first_lba, seed);
  return v;
}

std::string check_pattern(std::span<const uint8_t> buf, uint32_t block_size, uint64_t first_lba,
                          uint64_t seed) {
  if (buf.size() % block_size != 0)
    return "buffer of " + std::to_string(buf.size()) + " bytes is not whole blocks";
  std::vector<uint8_t> want(block_size);
  for (size_t i = 0; i * block_size < buf.size(); ++i) {
    fill_block(want.data(), block_size, first_lba + i, seed);
    const uint8_t* got = buf.data() + i * block_size;
    if (std::memcmp(got, want.data(), block_size) != 0) {
      uint64_t glba, gseed;
      std::memcpy(&glba, got, 8);
      std::memcpy(&gseed, got + 8, 8);
      size_t off = 0;
      while (got[off] == want[off]) ++off;
      std::ostringstream m;
      m << "block " << i << " (LBA " << first_lba + i << ", seed " << seed << ") differs at byte "
        << off << "; it carries LBA " << glba << " seed " << gseed;
      return m.str();
    }
  }
  return {};
}

// ---- raw iSCSI -------------------------------------------------------------------------

void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
void put_be24(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 16);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v);
}
uint32_t get_be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
uint32_t get_be24(const uint8_t* p) {
  return uint32_t{p[0]} << 16 | uint32_t{p[1]} << 8 | p[2];
}

uint32_t RawPdu::itt() const {
  return get_be32(&bhs[16]);
}

namespace {
std::array<uint32_t, 256> make_crc_table() {
  // Reflected CRC32C polynomial 0x1EDC6F41 -> 0x82F63B78.
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
size_t pad4(size_t n) {
  return (4 - (n & 3)) & 3;
}
}  // namespace

uint32_t crc32c(std::span<const uint8_t> data) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  uint32_t c = 0xffffffffu;
  for (uint8_t b : data) c = table[(c ^ b) & 0xff] ^ (c >> 8);
  return ~c;
}

std::array<uint8_t, 4> digest_bytes(uint32_t crc) {
  return {uint8_t(crc), uint8_t(crc >> 8), uint8_t(crc >> 16), uint8_t(crc >> 24)};
}

std::vector<uint8_t> login_request(uint8_t csg, uint8_t nsg, bool transit, uint32_t itt,
                                   uint32_t cmdsn, uint32_t exp_statsn, uint16_t tsih,
                                   std::string_view keys) {
  // RFC 7143 11.12: Login Request BHS.
  std::vector<uint8_t> pdu(kBhsLen + ((keys.size() + 3) & ~size_t{3}), 0);
  uint8_t* b = pdu.data();
  b[0] = 0x40 | 0x03;  // I=1, opcode 0x03
  b[1] = static_cast<uint8_t>((transit ? 0x80 : 0) | (csg & 3) << 2 | (nsg & 3));
  b[2] = 0;  // VersionMax
  b[3] = 0;  // VersionMin
  put_be24(b + 5, static_cast<uint32_t>(keys.size()));
  // ISID: type 0x2 (random), qualifier fixed for tests.
  const uint8_t isid[6] = {0x80, 0x5a, 0x55, 0x4d, 0x41, 0x01};
  std::memcpy(b + 8, isid, 6);
  b[14] = static_cast<uint8_t>(tsih >> 8);
  b[15] = static_cast<uint8_t>(tsih);
  put_be32(b + 16, itt);
  // CID 0 at 20..21
  put_be32(b + 24, cmdsn);
  put_be32(b + 28, exp_statsn);
  std::memcpy(b + kBhsLen, keys.data(), keys.size());
  return pdu;
}

std::string http_get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string resp;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size())) {
      char buf[65536];
      for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10000) <= 0) break;
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        resp.append(buf, size_t(n));
      }
    }
  }
  ::close(fd);
  return resp;
}

std::optional<double> metric_sample(const std::string& page, const std::string& series) {
  const size_t at = page.find("\n" + series + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::stod(page.substr(at + series.size() + 2));
}

std::string RecvResult::what() const {
  switch (status) {
    case RecvStatus::kClosed:
      return "connection closed";
    case RecvStatus::kTimeout:
      return "nothing within the timeout";
    case RecvStatus::kPdu: {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "PDU opcode 0x%02x byte1 0x%02x byte2 0x%02x byte3 0x%02x byte36 0x%02x "
                    "byte37 0x%02x ITT 0x%08x, %zu data bytes%s%s",
                    pdu.opcode(), pdu.bhs[1], pdu.bhs[2], pdu.bhs[3], pdu.bhs[36], pdu.bhs[37],
                    pdu.itt(), pdu.data.size(), pdu.header_digest_ok ? "" : ", BAD header digest",
                    pdu.data_digest_ok ? "" : ", BAD data digest");
      return buf;
    }
  }
  return "?";
}

RawConnection::RawConnection(uint16_t port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(errno_str("socket"));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    std::string e = errno_str("connect 127.0.0.1:" + std::to_string(port));
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error(e);
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawConnection::~RawConnection() {
  close();
}

void RawConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RawConnection::send(std::span<const uint8_t> bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    // Bounded wait so a peer that stops reading cannot hang the test.
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, 5000) <= 0) return false;
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

RecvResult RawConnection::recv(std::chrono::milliseconds timeout) {
  RecvResult r;
  const auto deadline = Clock::now() + timeout;
  auto need = [&](size_t n) -> RecvStatus {
    while (rbuf_.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return RecvStatus::kTimeout;
      pollfd p{fd_, POLLIN, 0};
      int pr = ::poll(&p, 1, static_cast<int>(left.count()));
      if (pr < 0 && errno == EINTR) continue;
      if (pr <= 0) return RecvStatus::kTimeout;
      uint8_t buf[65536];
      ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return RecvStatus::kClosed;  // EOF or ECONNRESET
      rbuf_.insert(rbuf_.end(), buf, buf + got);
    }
    return RecvStatus::kPdu;
  };
  if ((r.status = need(kBhsLen)) != RecvStatus::kPdu) return r;
  // RFC 7143 11.1: BHS, AHS, header digest, data segment (padded), data digest.
  const size_t hlen = kBhsLen + size_t{rbuf_[4]} * 4;
  const size_t dsl = get_be24(&rbuf_[5]);
  const size_t dstart = hlen + (hd_ ? 4 : 0);
  const size_t padded = dsl + pad4(dsl);
  const size_t total = dstart + padded + (dd_ && dsl ? 4 : 0);
  if ((r.status = need(total)) != RecvStatus::kPdu) return r;
  auto at = [&](size_t i) { return rbuf_.begin() + static_cast<long>(i); };
  r.pdu.bhs.assign(rbuf_.begin(), at(kBhsLen));
  r.pdu.ahs.assign(at(kBhsLen), at(hlen));
  if (hd_) {
    auto want = digest_bytes(crc32c({rbuf_.data(), hlen}));
    r.pdu.header_digest_ok = std::equal(want.begin(), want.end(), at(hlen));
  }
  r.pdu.data.assign(at(dstart), at(dstart + dsl));
  if (dd_ && dsl) {
    auto want = digest_bytes(crc32c({rbuf_.data() + dstart, padded}));
    r.pdu.data_digest_ok = std::equal(want.begin(), want.end(), at(dstart + padded));
  }
  rbuf_.erase(rbuf_.begin(), at(total));
  return r;
}

bool RawConnection::send_pdu(std::span<const uint8_t> bhs, std::span<const uint8_t> data,
                             const SendOptions& so) {
  std::vector<uint8_t> out(bhs.begin(), bhs.end());
  put_be24(&out[5], static_cast<uint32_t>(data.size()));
  if (hd_) {
    auto d = digest_bytes(crc32c(out));
    if (so.corrupt_header_digest) d[0] ^= 0x5a;
    out.insert(out.end(), d.begin(), d.end());
  }
  const size_t data_at = out.size();
  out.insert(out.end(), data.begin(), data.end());
  out.resize(out.size() + pad4(data.size()), 0);
  if (dd_ && !data.empty()) {
    auto d = digest_bytes(crc32c({out.data() + data_at, out.size() - data_at}));
    if (so.corrupt_data_digest) d[3] ^= 0xa5;
    out.insert(out.end(), d.begin(), d.end());
  }
  return send(out);
}

std::string RawConnection::local_address() const {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  char buf[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &sa.sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(sa.sin_port));
}

bool RawConnection::wait_closed(std::chrono::milliseconds timeout, std::vector<RawPdu>* seen) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    RecvResult r = recv(left);
    if (r.status == RecvStatus::kClosed) return true;
    if (r.status == RecvStatus::kTimeout) return false;
    if (seen) seen->push_back(std::move(r.pdu));
  }
}

std::string RawConnection::login(std::string_view iqn, std::string_view initiator) {
  using namespace std::string_literals;
  std::string keys1 = "InitiatorName="s + std::string(initiator) + '\0' +
                      "TargetName=" + std::string(iqn) + '\0' + "SessionType=Normal"s + '\0' +
                      "AuthMethod=None"s + '\0';
  std::string keys2 = "HeaderDigest=None"s + '\0' + "DataDigest=None"s + '\0' +
                      "MaxRecvDataSegmentLength=262144"s + '\0' + "InitialR2T=Yes"s + '\0' +
                      "ImmediateData=No"s + '\0' + "MaxBurstLength=262144"s + '\0' +
                      "FirstBurstLength=65536"s + '\0' + "MaxOutstandingR2T=1"s + '\0' +
                      "DataPDUInOrder=Yes"s + '\0' + "DataSequenceInOrder=Yes"s + '\0' +
                      "ErrorRecoveryLevel=0"s + '\0' + "MaxConnections=1"s + '\0' +
                      "DefaultTime2Wait=0"s + '\0' + "DefaultTime2Retain=0"s + '\0';
  const uint32_t itt = next_itt();
  uint16_t tsih = 0;
  // Stage 0 (security) -> 1 (operational) -> 3 (full feature), RFC 7143 6.3.
  struct Step {
    uint8_t csg, nsg;
    std::string keys;
  };
  const Step steps[2] = {{0, 1, keys1}, {1, 3, keys2}};
  for (const Step& s : steps) {
    std::string keys = s.keys;
    for (int attempt = 0;; ++attempt) {
      if (attempt == 4) return "target did not transit after 4 login PDUs";
      auto pdu = login_request(s.csg, s.nsg, true, itt, cmdsn_, exp_statsn_, tsih, keys);
      if (!send(pdu)) return "send failed during login";
      RecvResult r = recv();
      if (r.status != RecvStatus::kPdu) return "login: " + r.what();
      if (r.pdu.opcode() != 0x23) return "login: unexpected " + r.what();
      const uint8_t* b = r.pdu.bhs.data();
      exp_statsn_ = get_be32(b + 24) + 1;
      cmdsn_ = get_be32(b + 28);  // ExpCmdSN
      tsih = static_cast<uint16_t>(b[14] << 8 | b[15]);
      if (b[36] != 0) {
        char m[96];
        std::snprintf(m, sizeof m, "login rejected: status class 0x%02x detail 0x%02x", b[36],
                      b[37]);
        return m;
      }
      bool transit = b[1] & 0x80;
      if (transit && (b[1] & 3) == s.nsg) break;
      keys.clear();  // the target wants another round without new keys
    }
  }
  return {};
}

bool RawConnection::ping(std::chrono::milliseconds timeout) {
  // RFC 7143 11.18: NOP-Out, immediate, asking for a NOP-In (TTT 0xffffffff).
  std::vector<uint8_t> pdu(kBhsLen, 0);
  uint32_t itt = next_itt();
  pdu[0] = 0x40 | 0x00;
  pdu[1] = 0x80;
  put_be32(&pdu[16], itt);
  put_be32(&pdu[20], 0xffffffff);
  put_be32(&pdu[24], cmdsn_);
  put_be32(&pdu[28], exp_statsn_);
  if (!send(pdu)) return false;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    RecvResult r = recv(left);
    if (r.status != RecvStatus::kPdu) return false;
    if (r.pdu.opcode() == 0x20 && get_be32(&r.pdu.bhs[16]) == itt) {
      exp_statsn_ = get_be32(&r.pdu.bhs[24]) + 1;
      return true;
    }
  }
}

}  // namespace zuma::test
