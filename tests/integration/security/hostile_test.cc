// Hostile clients. Anyone who can reach a portal can open connections and send bytes;
// without CHAP or an ACL they can also log in. zumad must stay up, keep serving
// well-behaved sessions with correct data, and keep its memory and descriptors bounded.
//
// RSS bound (kRssBoundMiB): zumad's own footprint is ~10-20 MiB (code, two reactors with
// their io_urings, spdlog); the 64 MiB memory LU is allocated lazily and the good session
// touches at most 16 MiB of it; each connection costs a 64 KiB staging buffer (tens of
// connections: a few MiB); each command of the good session a buffer of at most 1 MiB
// kept for reuse. 150 MiB of growth over the RSS at the start leaves room for allocator
// slack, and is far below what an unbounded buffer (one 64 MiB write per command) would
// reach. Growth, not the absolute figure: under AddressSanitizer zumad starts at ~180 MiB
// (shadow memory), and that start grows with every library linked in.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.hh"
#include "tests/integration/security/sec_client.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;
using namespace zuma::test::sec;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kIqn = "iqn.2026-11.org.zuma:hostile";
constexpr long kRssBoundMiB = 150;  // growth during the attack

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

LoginOptions plain_login(const std::string& initiator) {
  LoginOptions o;
  o.initiator = initiator;
  o.target = kIqn;
  return o;
}

// Samples zumad's RSS every 50 ms while alive; keeps the peak.
class RssSampler {
 public:
  explicit RssSampler(pid_t pid) : pid_(pid), thread_([this] { run(); }) {}
  ~RssSampler() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  long peak_kib() const { return peak_.load(); }

 private:
  void run() {
    while (!stop_) {
      long r = rss_kib(pid_);
      if (r > peak_) peak_ = r;
      sleep_ms(50);
    }
  }
  pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

// Attack threads, stopped and joined however the test case ends.
struct Attackers {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  ~Attackers() { join(); }
  void join() {
    stop = true;
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }
};

struct Counters {
  std::atomic<int> connections{0};
  std::atomic<int> rejected_or_closed{0};
  std::atomic<int> hung{0};  // no Reject and no close within the poll timeout
  std::atomic<int> logins{0};
};

// What a connection that sent garbage got back: fine if Reject, a login error, or close.
// 5 s: garbage that happens to be a valid login header waiting for its data is closed by
// login_timeout (3 s, checked once a second).
void judge(RawConnection& c, Counters& k) {
  RecvResult r = c.recv(std::chrono::milliseconds(5000));
  if (r.status == RecvStatus::kClosed ||
      (r.status == RecvStatus::kPdu &&
       (r.pdu.opcode() == 0x3f || (r.pdu.opcode() == 0x23 && r.pdu.bhs[36] != 0))))
    ++k.rejected_or_closed;
  else if (r.status == RecvStatus::kTimeout)
    ++k.hung;
}

void attack_garbage(uint16_t port, std::atomic<bool>& stop, Counters& k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  while (!stop) {
    try {
      RawConnection c(port);
      ++k.connections;
      std::vector<uint8_t> g(1024 + rng() % 8192);
      for (auto& b : g) b = uint8_t(rng());
      if (rng() % 2) g[0] = 0x43;  // looks like a login request
      c.send(g);
      judge(c, k);
    } catch (const std::exception&) {
    }
  }
}

void attack_oversize(uint16_t port, std::atomic<bool>& stop, Counters& k) {
  for (int i = 0; !stop; ++i) {
    try {
      RawConnection c(port);
      ++k.connections;
      std::vector<uint8_t> pdu = login_request(0, 1, true, 1, 1, 0, 0, "");
      put_be24(&pdu[5], i % 2 ? 0xffffff : 8193 + uint32_t(i % 100000));  // > 8192 during login
      pdu.resize(pdu.size() + 65536, 'A');
      c.send(pdu);
      judge(c, k);
      // Logged in: a data segment beyond MaxRecvDataSegmentLength (RFC 7143 13.12).
      RawConnection l(port);
      ++k.connections;
      if (l.login(kIqn, "iqn.2026-11.org.zuma:hostile-oversize-" + std::to_string(i)) != "")
        continue;
      ++k.logins;
      std::vector<uint8_t> cmd(kBhsLen, 0);
      cmd[0] = 0x01;
      cmd[1] = 0x80 | 0x20 | 0x01;
      put_be32(&cmd[16], 1);
      put_be32(&cmd[20], 16u << 20);
      put_be32(&cmd[24], l.cmdsn());
      put_be24(&cmd[5], 0xfffff0);
      cmd[32] = 0x2a;
      cmd.resize(cmd.size() + 300000, 'B');
      l.send(cmd);
      judge(l, k);
    } catch (const std::exception&) {
    }
  }
}

void attack_login_flood(uint16_t port, std::atomic<bool>& stop, Counters& k) {
  for (int i = 0; !stop; ++i) {
    try {
      RawConnection c(port);
      ++k.connections;
      if (i % 3 == 0) continue;  // connect and hang up
      std::string e = c.login(kIqn, "iqn.2026-11.org.zuma:flood-" + std::to_string(i % 50));
      if (e.empty()) ++k.logins;
      // hang up without logging out
    } catch (const std::exception&) {
    }
  }
}

// Things the reviewers of the receive path worried about, sent once each after login.
void attack_odd_pdus(uint16_t port, Counters& k) {
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> pdus = [] {
    std::vector<std::pair<std::string, std::vector<uint8_t>>> v;
    auto base = [](uint8_t op) {
      std::vector<uint8_t> b(kBhsLen, 0);
      b[0] = op;
      b[1] = 0x80;
      return b;
    };
    auto d = base(0x05);  // Data-Out with the reserved ITT 0xffffffff
    put_be32(&d[16], 0xffffffff);
    put_be32(&d[20], 0xffffffff);
    v.emplace_back("Data-Out ITT 0xffffffff", d);
    auto d2 = base(0x05);  // Data-Out for a task that does not exist
    put_be32(&d2[16], 0x12345);
    put_be24(&d2[5], 512);
    d2.resize(d2.size() + 512, 0);
    v.emplace_back("Data-Out unknown ITT", d2);
    auto s = base(0x10);  // SNACK
    v.emplace_back("SNACK", s);
    auto t = base(0x02);  // TMF ABORT TASK for a task that does not exist
    t[1] = 0x80 | 1;
    put_be32(&t[16], 77);
    put_be32(&t[20], 0xdead);
    v.emplace_back("TMF abort unknown", t);
    auto a = base(0x01);  // SCSI command with 255 words of AHS
    a[4] = 255;
    a[1] = 0x80 | 0x40 | 0x01;
    put_be32(&a[16], 99);
    a[32] = 0x00;
    a.resize(a.size() + 255 * 4, 0xff);
    v.emplace_back("AHS 1020 bytes of 0xff", a);
    return v;
  }();
  for (const auto& [name, pdu] : pdus) {
    RawConnection c(port);  // throws if zumad is gone: the test case reports it
    ++k.connections;
    if (c.login(kIqn, "iqn.2026-11.org.zuma:hostile-odd") != "") continue;
    c.send(pdu);
    c.ping(std::chrono::milliseconds(2000));  // answered, or the connection was closed
  }
}

void require_alive(Zumad& z, const char* when) {
  REQUIRE_MESSAGE(z.running(), "zumad died " << std::string(when) << " (exit status "
                                             << z.wait_exit(0ms).value_or(999)
                                             << ", -11 = SIGSEGV); its log:\n"
                                             << z.log_tail(3000));
}

}  // namespace

TEST_CASE(
    "hostile clients: a good session keeps working with correct data; zumad stays up and "
    "bounded") {
  Zumad z(sec_config({{kIqn, {}, "{ id: 0, name: h0, size: 64MiB, backend: memory }"}},
                     "{ login_timeout: 3 }"));
  z.start();
  Session good(z.portal(), kIqn);
  const long rss_start = rss_kib(z.pid());
  const int fds_start = open_fds(z.pid());
  RssSampler rss(z.pid());
  Counters k;
  Attackers attackers;

  // 24 connections that send half a PDU, then stall, held to the end: 8 with a partial
  // BHS, 8 with a whole BHS announcing data that never comes, 8 logged in with a partial
  // SCSI command (full feature phase: login_timeout does not apply; they are idle).
  std::vector<std::unique_ptr<RawConnection>> stalled;
  for (int i = 0; i < 24; ++i) {
    require_alive(z, "while opening the stalled connections");
    auto c = std::make_unique<RawConnection>(z.port());
    ++k.connections;
    std::vector<uint8_t> pdu = login_request(0, 1, true, 1, 1, 0, 0, std::string(4000, 'x'));
    if (i < 8) {
      pdu.resize(30);
    } else if (i < 16) {
      pdu.resize(kBhsLen + 100);
    } else {
      REQUIRE(c->login(kIqn, "iqn.2026-11.org.zuma:stall-" + std::to_string(i)) == "");
      pdu.assign(kBhsLen, 0);
      pdu[0] = 0x01;
      pdu.resize(40);
    }
    c->send(pdu);
    stalled.push_back(std::move(c));
  }
  std::atomic<bool>& stop = attackers.stop;
  attackers.threads.emplace_back(attack_garbage, z.port(), std::ref(stop), std::ref(k), 1);
  attackers.threads.emplace_back(attack_garbage, z.port(), std::ref(stop), std::ref(k), 2);
  attackers.threads.emplace_back(attack_oversize, z.port(), std::ref(stop), std::ref(k));
  attackers.threads.emplace_back(attack_login_flood, z.port(), std::ref(stop), std::ref(k));
  attackers.threads.emplace_back(attack_login_flood, z.port(), std::ref(stop), std::ref(k));
  require_alive(z, "before the odd PDUs");
  attack_odd_pdus(z.port(), k);
  require_alive(z, "after the odd PDUs");

  // The well-behaved session: ~10 s of verified 32 KiB writes and reads.
  const auto t0 = Clock::now();
  int ops = 0, bad = 0;
  std::string first_error;
  for (uint64_t i = 0; seconds_since(t0) < 10.0; ++i) {
    const uint64_t lba = (i * 64) % (32768 - 64);
    auto data = make_pattern(64, 512, lba, 1000 + i);
    Task w = good.write16(0, lba, data, 512);
    Task r = good.read16(0, lba, 64 * 512, 512);
    std::string e;
    if (!is_good(w.get()))
      e = "WRITE16: " + describe(good.ctx(), w.get());
    else if (!is_good(r.get()))
      e = "READ16: " + describe(good.ctx(), r.get());
    else
      e = check_pattern({r->datain.data, size_t(r->datain.size)}, 512, lba, 1000 + i);
    ++ops;
    if (!e.empty()) {
      ++bad;
      if (first_error.empty()) first_error = e;
      if (!z.running()) break;
    }
  }
  const double elapsed = seconds_since(t0);
  attackers.join();

  // Half PDUs during login were closed by login_timeout (3 s); the logged-in ones stay.
  int closed_stalled = 0;
  for (int i = 0; i < 16; ++i)
    if (stalled[size_t(i)]->wait_closed(std::chrono::milliseconds(3000))) ++closed_stalled;
  rss.stop();

  MESSAGE("hostile run: " << elapsed << " s, good session " << ops << " write+read pairs (" << bad
                          << " bad), " << k.connections.load() << " hostile connections, "
                          << k.logins.load() << " hostile logins, " << k.rejected_or_closed.load()
                          << " rejected/closed, " << k.hung.load() << " without answer, RSS "
                          << rss_start / 1024 << " MiB at start, peak " << rss.peak_kib() / 1024
                          << " MiB, fds " << fds_start << " at start");
  require_alive(z, "during the attack");
  CHECK_MESSAGE(bad == 0, first_error);
  CHECK(ops > 20);
  CHECK(k.connections.load() >= 20);
  CHECK(k.hung.load() == 0);
  CHECK(closed_stalled == 16);
  CHECK_MESSAGE((rss.peak_kib() - rss_start) / 1024 < kRssBoundMiB,
                "peak RSS " << rss.peak_kib() / 1024 << " MiB, " << rss_start / 1024
                            << " MiB at start");

  // Everything hostile closes: descriptors come back to where they were.
  stalled.clear();
  CHECK_MESSAGE(eventually([&] { return open_fds(z.pid()) <= fds_start + 2; }, 10000ms),
                "zumad has " << open_fds(z.pid()) << " descriptors open, " << fds_start
                             << " before the attack");
  // And a new session works.
  Session after(z.portal(), kIqn);
  CHECK(is_good(after.tur(0).get()));
}

TEST_CASE("a client that stops reading and disconnects leaves nothing behind") {
  // Each round: log in, queue 8 READs of 4 MiB without reading the answers (the socket
  // fills, Data-In waits in zumad), then hang up. Nothing may stay allocated or open.
  Zumad z(sec_config({{kIqn, {}, "{ id: 0, name: h1, size: 64MiB, backend: memory }"}}));
  z.start();
  // zumad opens its control socket just after its portals accept (z.start() waits for
  // those only): count its descriptors once that one exists too.
  REQUIRE(eventually([&] { return std::filesystem::exists(z.file("var/zumad.sock")); }, 5000ms));
  sleep_ms(100);
  const int fds_start = open_fds(z.pid());
  std::vector<long> rss_after;
  for (int round = 0; round < 8; ++round) {
    SecConnection c(z.port());
    REQUIRE(c.login(plain_login("iqn.2026-11.org.zuma:no-reader")).ok);
    for (uint32_t i = 0; i < 8; ++i) {
      const uint8_t cdb[10] = {0x28, 0, 0, 0, uint8_t(i), 0, 0, 0x20, 0x00, 0};  // 8192 blocks
      REQUIRE(c.send_pdu(scsi_command_bhs(0x80 | 0x40 | 0x01, c.next_itt(), 4u << 20,
                                          c.take_cmdsn(), c.exp_statsn(), cdb)));
    }
    sleep_ms(200);
    c.close();
    sleep_ms(200);
    rss_after.push_back(rss_kib(z.pid()) / 1024);
  }
  MESSAGE("RSS after each round (MiB):" << [&] {
    std::string s;
    for (long r : rss_after) s += " " + std::to_string(r);
    return s;
  }());
  CHECK_MESSAGE(eventually([&] { return open_fds(z.pid()) <= fds_start; }, 5000ms),
                "zumad has " << open_fds(z.pid()) << " descriptors open, " << fds_start << " before");
  // Leaked commands keep their 4 MiB buffers: ~32 MiB more per round.
  CHECK_MESSAGE(rss_after.back() - rss_after[1] < 64,
                "RSS grew from " << rss_after[1] << " to " << rss_after.back() << " MiB");
  // A connection that never finishes also holds up shutdown for the whole grace period.
  const auto t0 = Clock::now();
  CHECK(z.stop(std::chrono::seconds(20)) == 0);
  CHECK_MESSAGE(seconds_since(t0) < 5.0, "zumad took " << seconds_since(t0) << " s to stop");
}

TEST_CASE("stalled WRITEs of a logged-in initiator cannot pin unbounded memory") {
  // The initiator answers every R2T but holds back the last 4 KiB of each command, so
  // every command waits with its buffer full. zumad's memory must stay bounded: a sane
  // per-session budget (FirstBurstLength x queue depth for unsolicited data, plus the
  // solicited bytes it chooses to have outstanding) is a few tens of MiB. zumad must get
  // there by pacing its R2Ts (not every command is asked for its data while the others
  // stall), and once the held bytes come, every command must get its R2Ts and end GOOD.
  uint32_t edtl = 0;
  int commands = 0;
  std::string iscsi_yaml;  // the default write_buffer_budget (32 MiB) unless set
  size_t max_held = 0;     // commands that get all their data asked for while others stall
  SUBCASE("48 WRITE(16) of 8 MiB, the LU's MAXIMUM TRANSFER LENGTH") {
    edtl = 8u << 20;
    commands = 48;
    max_held = 4;  // 32 MiB of budget: four 8 MiB commands
  }
  SUBCASE("the same with write_buffer_budget: 8MiB") {
    edtl = 8u << 20;
    commands = 48;
    iscsi_yaml = "{ write_buffer_budget: 8MiB }";
    max_held = 1;
  }
  SUBCASE("6 WRITE(16) of 64 MiB, beyond MAXIMUM TRANSFER LENGTH (8 MiB)") {
    edtl = 64u << 20;
    commands = 6;
  }
  CAPTURE(edtl);
  CAPTURE(commands);
  CAPTURE(iscsi_yaml);
  Zumad z(sec_config({{kIqn, {}, "{ id: 0, name: h2, size: 128MiB, backend: null }"}}, iscsi_yaml));
  z.start();
  const long rss_start = rss_kib(z.pid()) / 1024;
  SecConnection c(z.port());
  LoginOptions o = plain_login("iqn.2026-11.org.zuma:slow-writer");
  o.initial_r2t = true;  // every byte is solicited
  o.immediate_data = false;
  REQUIRE(c.login(o).ok);
  REQUIRE(c.clear_unit_attentions() == "");  // so every WRITE below can end GOOD

  struct Cmd {
    uint32_t itt = 0;
    bool held = false;
  };
  std::vector<Cmd> cmds;
  const uint32_t blocks = edtl / 512;
  for (int i = 0; i < commands; ++i) {
    const uint64_t lba = uint64_t(i) * blocks % (262144 - blocks);
    uint8_t cdb[16] = {0x8a, 0};
    put_be32(&cdb[6], uint32_t(lba));
    put_be32(&cdb[10], blocks);
    const uint32_t itt = c.next_itt();
    REQUIRE(c.send_pdu(
        scsi_command_bhs(0x80 | 0x20 | 0x01, itt, edtl, c.take_cmdsn(), c.exp_statsn(), cdb)));
    cmds.push_back({itt, false});
  }
  const std::vector<uint8_t> chunk(262144, 0x77);
  struct Held {
    uint32_t itt, ttt, data_sn, offset;
  };
  std::vector<Held> held;  // commands whose last 4 KiB are withheld
  int responses = 0, good = 0;
  long peak = 0;
  // Answers R2Ts (withholding the last 4 KiB of each command while `hold`) and counts
  // responses, until `want` commands are held or answered or nothing comes for 3 s.
  auto serve = [&](bool hold, int want) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (int(held.size()) + responses < want && Clock::now() < deadline) {
      Received r = c.recv(3000ms);
      if (r.status != RecvStatus::kPdu) return;
      peak = std::max(peak, rss_kib(z.pid()) / 1024);
      if (r.pdu.opcode() == 0x21) {
        ++responses;  // refused (a length beyond the LU's limits) or done
        if (r.pdu.bhs[2] == 0 && r.pdu.bhs[3] == 0) ++good;
        continue;
      }
      if (r.pdu.opcode() != 0x31) continue;
      const uint32_t ttt = get_be32(&r.pdu.bhs[20]), off = get_be32(&r.pdu.bhs[40]),
                     len = get_be32(&r.pdu.bhs[44]);
      const bool last = off + len == edtl;
      uint32_t sn = 0;
      for (uint32_t at = off; at < off + len;) {
        const uint32_t n = std::min<uint32_t>(262144, off + len - at);
        if (hold && last && at + n == off + len) {
          REQUIRE(n > 4096);
          REQUIRE(c.send_pdu(data_out_bhs(r.pdu.itt(), ttt, c.exp_statsn(), sn++, at, false),
                             std::span(chunk).first(n - 4096)));
          held.push_back({r.pdu.itt(), ttt, sn, at + n - 4096});
          break;
        }
        REQUIRE(c.send_pdu(
            data_out_bhs(r.pdu.itt(), ttt, c.exp_statsn(), sn++, at, at + n == off + len),
            std::span(chunk).first(n)));
        at += n;
      }
    }
  };
  serve(true, commands);
  sleep_ms(300);
  peak = std::max(peak, rss_kib(z.pid()) / 1024);
  MESSAGE("stalled writes: " << held.size() << " commands held, " << responses
                             << " answered; RSS " << rss_start << " MiB before, peak " << peak
                             << " MiB");
  CHECK(z.running());
  CHECK_MESSAGE(peak - rss_start < 128, "one initiator pinned " << peak - rss_start << " MiB");
  if (edtl <= (8u << 20)) {
    // zumad paced its R2Ts (the write budget): not every command got its data asked for.
    CHECK(int(held.size()) < commands);
    CHECK(!held.empty());
    CHECK(held.size() == max_held);
    // The held bytes arrive: the waiting commands get their R2Ts in turn and all finish.
    const size_t first_held = held.size();
    for (size_t i = 0; i < first_held; ++i) {
      const Held& h = held[i];
      REQUIRE(c.send_pdu(data_out_bhs(h.itt, h.ttt, c.exp_statsn(), h.data_sn, h.offset, true),
                         std::span(chunk).first(4096)));
    }
    held.clear();
    serve(false, commands);
    CHECK(responses == commands);
    CHECK(good == commands);
  } else {
    CHECK(responses == commands);  // each refused at once: nothing buffered, no R2T
    CHECK(held.empty());
  }
  c.close();
}
