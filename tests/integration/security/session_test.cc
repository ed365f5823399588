// Liveness and identity of sessions: NOP-In pings drop initiators that stopped answering
// (iscsi.nop_in_interval / nop_in_timeout), login_timeout closes connections that never
// finish logging in, and a second login with the same initiator name + ISID + target
// reinstates the session (RFC 7143 6.3.5): the old connection is closed, also with I/O in
// flight, and the new session's data is what reads back.
#include <doctest/doctest.h>

#include <poll.h>

#include <atomic>
#include <chrono>
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

const std::string kIqn = "iqn.2026-11.org.zuma:session";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

LoginOptions plain_login(const std::string& initiator) {
  LoginOptions o;
  o.initiator = initiator;
  o.target = kIqn;
  return o;
}

}  // namespace

TEST_CASE("NOP-In: an initiator that never answers is dropped; libiscsi, which answers, stays") {
  Zumad z(sec_config({{kIqn, {}}}, "{ nop_in_interval: 1, nop_in_timeout: 2 }"));
  z.start();
  LibiscsiSession good(z.portal(),
                       {.initiator = "iqn.2026-11.org.zuma:nop-libiscsi", .target = kIqn});
  REQUIRE_MESSAGE(good.ok(), good.error());

  SecConnection mute(z.port());
  REQUIRE(mute.login(plain_login("iqn.2026-11.org.zuma:nop-mute")).ok);
  const auto t0 = Clock::now();
  std::atomic<bool> closed{false};
  std::atomic<double> closed_after{-1};
  std::vector<Pdu> seen;
  std::thread watcher([&] {
    closed = mute.wait_closed(20000ms, &seen);  // reads, never answers
    closed_after = seconds_since(t0);
  });
  // libiscsi answers each NOP-In from iscsi_service().
  const bool serviced = good.service_for(7000ms);
  watcher.join();

  CHECK(serviced);
  CHECK(closed.load());
  // Idle 1 s -> ping; 2 s without an answer -> dropped; the timer ticks once a second.
  // Expected 3-5 s: ping at the first tick 1 s after login, dropped at the first tick more
  // than 2 s after the ping. The bound leaves room for loaded CI machines.
  CHECK_MESSAGE(closed_after.load() < 8.0, "dropped after " << closed_after.load() << " s");
  CHECK_MESSAGE(closed_after.load() > 2.0, "dropped after " << closed_after.load() << " s");
  bool pinged = false;
  for (const Pdu& p : seen)
    if (p.opcode() == 0x20 && p.itt() == 0xffffffff && get_be32(&p.bhs[20]) != 0xffffffff)
      pinged = true;
  CHECK_MESSAGE(pinged, "no NOP-In ping (ITT 0xffffffff, TTT set) before the close");
  CHECK(eventually([&] { return z.log().find("NOP-In timeout") != std::string::npos; }, 3000ms));
  CHECK(good.write_read_verify(0, 64, 512, 3) == "");
}

TEST_CASE("login_timeout: connections that do not finish logging in are closed") {
  Zumad z(sec_config({{kIqn, {}}}, "{ login_timeout: 2 }"));
  z.start();
  const auto t0 = Clock::now();

  RawConnection silent(z.port());  // sends nothing at all
  RawConnection half(z.port());    // 20 bytes of a BHS, then nothing
  std::vector<uint8_t> bhs = login_request(0, 1, true, 1, 1, 0, 0, "");
  bhs.resize(20);
  REQUIRE(half.send(bhs));
  SecConnection stuck(z.port());  // security stage done, operational never sent
  {
    LoginOptions o = plain_login("iqn.2026-11.org.zuma:lt-stuck");
    std::string keys = "InitiatorName=" + o.initiator + std::string(1, '\0') +
                       "TargetName=" + kIqn + std::string(1, '\0') + "SessionType=Normal" +
                       std::string(1, '\0') + "AuthMethod=None" + std::string(1, '\0');
    REQUIRE(stuck.send_raw(login_request(0, 1, true, 1, 1, 0, 0, keys)));
  }
  SecConnection logged(z.port());  // a finished login is not affected
  REQUIRE(logged.login(plain_login("iqn.2026-11.org.zuma:lt-logged")).ok);

  CHECK(silent.wait_closed(10000ms));
  const double t_silent = seconds_since(t0);
  CHECK(half.wait_closed(10000ms));
  CHECK(stuck.wait_closed(10000ms));
  const double t_all = seconds_since(t0);
  CHECK_MESSAGE(t_silent >= 1.9, "closed after " << t_silent << " s");
  CHECK_MESSAGE(t_all < 6.5, "the last closed after " << t_all << " s");  // expected 2-3 s

  sleep_ms(500);
  Received p = logged.nop({});
  CHECK_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20), p.what());
}

TEST_CASE(
    "session reinstatement with raw clients: same name + ISID closes the old connection; "
    "another ISID does not") {
  Zumad z(sec_config({{kIqn, {}}}));
  z.start();
  const std::string ini = "iqn.2026-11.org.zuma:reinstate-raw";
  SecConnection first(z.port());
  REQUIRE(first.login(plain_login(ini)).ok);

  SecConnection other_isid(z.port());
  LoginOptions o2 = plain_login(ini);
  o2.isid[5] = 0x02;
  REQUIRE(other_isid.login(o2).ok);
  {
    Received p = first.nop({});
    CHECK_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20), p.what());
  }

  SecConnection second(z.port());
  REQUIRE(second.login(plain_login(ini)).ok);
  CHECK(first.wait_closed(5000ms));
  Received p = second.nop({});
  CHECK_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20), p.what());
  Received q = other_isid.nop({});
  CHECK_MESSAGE((q.status == RecvStatus::kPdu && q.pdu.opcode() == 0x20), q.what());
  CHECK(
      eventually([&] { return z.log().find("session reinstated") != std::string::npos; }, 3000ms));
}

namespace {

struct AsyncCommands {
  std::atomic<int> done{0};
  std::atomic<int> good{0};
  std::atomic<int> failed{0};
};

void command_cb(iscsi_context*, int status, void* command_data, void* private_data) {
  auto* w = static_cast<AsyncCommands*>(private_data);
  auto* task = static_cast<scsi_task*>(command_data);
  if (status == SCSI_STATUS_GOOD)
    ++w->good;
  else
    ++w->failed;
  if (task) scsi_free_scsi_task(task);
  ++w->done;
}

}  // namespace

TEST_CASE("session reinstatement with libiscsi and writes in flight on the old session") {
  // A file LU: its writes complete asynchronously (io_uring), so some are still executing
  // when the new login arrives.
  Zumad z(sec_config(
      {{kIqn, {}, "{ id: 0, name: r0, size: 64MiB, backend: file, path: @DIR@/r0.img }"}}));
  z.start();
  const std::string ini = "iqn.2026-11.org.zuma:reinstate-libiscsi";
  const std::pair<uint32_t, uint32_t> isid{0x5a5a5a, 0x0101};
  constexpr uint32_t kBs = 512, kBlocks = 128;  // 64 KiB per write
  constexpr int kWrites = 64;                   // 4 MiB in flight, LBAs 0..8191

  AsyncCommands aw;  // outlives `old` (its callbacks may run when the context is destroyed)
  std::vector<std::vector<uint8_t>> bufs;
  for (int i = 0; i < kWrites; ++i)
    bufs.push_back(make_pattern(kBlocks, kBs, uint64_t(i) * kBlocks, 1));
  auto old = std::make_unique<LibiscsiSession>(
      z.portal(), LibiscsiLogin{.initiator = ini, .target = kIqn, .isid = isid});
  REQUIRE_MESSAGE(old->ok(), old->error());
  for (int i = 0; i < kWrites; ++i) {
    scsi_task* t = iscsi_write16_task(old->ctx(), 0, uint64_t(i) * kBlocks, bufs[size_t(i)].data(),
                                      kBlocks * kBs, kBs, 0, 0, 0, 0, 0, command_cb, &aw);
    REQUIRE(t != nullptr);
  }
  // And reads whose Data-In cannot all be sent: the old session does not read its socket,
  // so answers are still queued in zumad when the connection is closed.
  constexpr int kReads = 32;  // 32 x 1 MiB, more than the socket buffers hold
  for (int i = 0; i < kReads; ++i) {
    scsi_task* t = iscsi_read16_task(old->ctx(), 0, uint64_t(i) * 2048, 2048 * kBs, kBs, 0, 0, 0, 0,
                                     0, command_cb, &aw);
    REQUIRE(t != nullptr);
  }
  // Push the PDUs out (the CmdSN window allows them all), without reading answers.
  const auto flush_deadline = Clock::now() + std::chrono::seconds(10);
  while (iscsi_out_queue_length(old->ctx()) > 0 && Clock::now() < flush_deadline) {
    pollfd p{iscsi_get_fd(old->ctx()), POLLOUT, 0};
    if (::poll(&p, 1, 100) > 0) iscsi_service(old->ctx(), p.revents & POLLOUT);
  }
  sleep_ms(300);  // let zumad execute them
  const int answered_before = aw.done.load();
  INFO("old session: " << answered_before << " writes answered before the second login");

  LibiscsiSession fresh(z.portal(), {.initiator = ini, .target = kIqn, .isid = isid});
  REQUIRE_MESSAGE(fresh.ok(), fresh.error());

  // The old connection is closed by the target: libiscsi sees the socket end.
  bool old_closed = false;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!old_closed && Clock::now() < deadline) {
    pollfd p{iscsi_get_fd(old->ctx()), short(iscsi_which_events(old->ctx())), 0};
    int n = ::poll(&p, 1, 100);
    if (iscsi_service(old->ctx(), n > 0 ? p.revents : 0) < 0) old_closed = true;
  }
  CHECK_MESSAGE(old_closed, "the old connection was not closed within 10 s");
  CHECK(
      eventually([&] { return z.log().find("session reinstated") != std::string::npos; }, 3000ms));
  MESSAGE("old session: " << aw.good.load() << " of " << kWrites + kReads << " commands answered");

  // The reinstated I_T nexus learns of the loss of the old one (SAM-5: I_T NEXUS LOSS
  // OCCURRED, 29h/07h) on its first command to the LU: the new session reads no command
  // before the old one has ended. That may be the TEST UNIT READY of
  // iscsi_full_connect_sync or one of these; never a command after a GOOD status (the
  // writes below would fail).
  bool ready = false;
  for (int i = 0; i < 3 && !ready; ++i) {
    Task t(iscsi_testunitready_sync(fresh.ctx(), 0));
    ready = is_good(t.get());
    if (!ready) CHECK_MESSAGE(is_sense(t.get(), 0x06, 0x2907), describe(fresh.ctx(), t.get()));
  }
  REQUIRE(ready);

  // The new session overwrites the whole range, reads it back, and again a little later
  // (no write of the old session may land after the new session's).
  const auto data = make_pattern(uint64_t(kWrites) * kBlocks, kBs, 0, 2);
  Task w(iscsi_write16_sync(fresh.ctx(), 0, 0, const_cast<uint8_t*>(data.data()),
                            uint32_t(data.size()) / 2, kBs, 0, 0, 0, 0, 0));
  REQUIRE_MESSAGE(is_good(w.get()), describe(fresh.ctx(), w.get()));
  Task w2(iscsi_write16_sync(fresh.ctx(), 0, data.size() / 2 / kBs,
                             const_cast<uint8_t*>(data.data()) + data.size() / 2,
                             uint32_t(data.size()) / 2, kBs, 0, 0, 0, 0, 0));
  REQUIRE_MESSAGE(is_good(w2.get()), describe(fresh.ctx(), w2.get()));
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    if (round) sleep_ms(1000);
    for (uint32_t half = 0; half < 2; ++half) {
      const uint64_t lba = half * (data.size() / 2 / kBs);
      Task r(iscsi_read16_sync(fresh.ctx(), 0, lba, uint32_t(data.size()) / 2, kBs, 0, 0, 0, 0, 0));
      REQUIRE_MESSAGE(is_good(r.get()), describe(fresh.ctx(), r.get()));
      CHECK(check_pattern({r->datain.data, size_t(r->datain.size)}, kBs, lba, 2) == "");
    }
  }
  old.reset();  // runs the remaining callbacks (cancelled)
  CHECK(aw.done.load() == kWrites + kReads);

  // Nothing of the old session lingers: zumad stops at once (a connection that never
  // finishes makes Server::stop wait its whole 10 s grace period).
  const auto t0 = Clock::now();
  const int code = z.stop(std::chrono::seconds(20));
  CHECK(code == 0);
  CHECK_MESSAGE(seconds_since(t0) < 5.0, "zumad took " << seconds_since(t0)
                                                       << " s to stop after SIGTERM; its log:\n"
                                                       << z.log_tail(3000));
}

TEST_CASE("configured limits hold when the initiator does not negotiate the keys") {
  // RFC 7143 13: a key nobody offers keeps its default (ImmediateData=Yes,
  // MaxBurstLength=262144, FirstBurstLength=65536). When zumad's config is stricter, zumad
  // must offer its value itself (RFC 7143 6.2: either side may offer a key); otherwise the
  // session runs with more than the administrator allowed.
  Zumad z(
      sec_config({{kIqn, {}}},
                 "{ immediate_data: false, max_burst_length: 65536, first_burst_length: 16384 }"));
  z.start();
  SecConnection c(z.port());
  LoginOptions o = plain_login("iqn.2026-11.org.zuma:defaults");
  o.offer_session_keys = false;  // only MaxRecvDataSegmentLength and the digests
  LoginOutcome r = c.login(o);
  REQUIRE_MESSAGE(r.ok, r.error);
  CHECK_MESSAGE(key_value(r.keys, "ImmediateData") == "No",
                "ImmediateData not proposed; the session allows immediate data against the "
                "config; target keys: "
                    << keys_str(r.keys));
  CHECK_MESSAGE(key_value(r.keys, "MaxBurstLength") == "65536", keys_str(r.keys));
  CHECK_MESSAGE(key_value(r.keys, "FirstBurstLength") == "16384", keys_str(r.keys));

  // What zumad does: the R2Ts of a 256 KiB WRITE ask for at most MaxBurstLength each.
  const uint8_t cdb[10] = {0x2a, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0};  // 512 blocks
  const uint32_t itt = c.next_itt();
  REQUIRE(c.send_pdu(
      scsi_command_bhs(0x80 | 0x20 | 0x01, itt, 256 * 1024, c.take_cmdsn(), c.exp_statsn(), cdb)));
  Received p = c.recv(5000ms);
  REQUIRE_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x31), p.what());
  const uint32_t desired = get_be32(&p.pdu.bhs[44]);
  CHECK_MESSAGE(desired <= 65536u,
                "R2T asks for " << desired << " bytes; max_burst_length is 65536");
}

namespace {

// One Login Request (RFC 7143 11.12) from stage `csg`; `transit` to `nsg`, or `cont` (C
// bit: more text follows). Returns the response, or what came instead.
Received login_pdu(SecConnection& c, uint8_t csg, uint8_t nsg, bool transit, bool cont,
                   const std::string& keys) {
  std::vector<uint8_t> pdu =
      login_request(csg, transit ? nsg : 0, transit, 7, c.cmdsn(), c.exp_statsn(), 0, keys);
  if (cont) pdu[1] |= 0x40;
  if (!c.send_raw(pdu)) return Received{RecvStatus::kClosed, {}};
  return c.recv(5000ms);
}

size_t count_key(const Keys& keys, std::string_view k) {
  size_t n = 0;
  for (auto& kv : keys) n += kv.first == k;
  return n;
}

}  // namespace

TEST_CASE("initiator habits: lists, keys repeated across C-bit PDUs, unknown and X- keys") {
  using namespace std::string_literals;
  Zumad z(sec_config({{kIqn, {}}}));
  z.start();
  const std::string security = "InitiatorName=iqn.2026-11.org.zuma:habits\0TargetName="s + kIqn +
                               "\0SessionType=Normal\0AuthMethod=CHAP,None\0"s;
  SecConnection c(z.port());
  Received r = login_pdu(c, 0, 1, true, false, security);
  REQUIRE_MESSAGE((r.status == RecvStatus::kPdu && r.pdu.bhs[36] == 0), r.what());
  CHECK(key_value(parse_keys(r.pdu.data), "AuthMethod") == "None");  // from the list
  // Operational stage over two PDUs: the first with C=1, the second repeating one key with
  // the same value (as initiators that resend their keys do).
  r = login_pdu(c, 1, 3, false, true,
                "HeaderDigest=None,CRC32C\0MaxBurstLength=131072\0X-com.example.Tuning=7\0"
                "Y-Unknown-Key=1\0"s);
  REQUIRE_MESSAGE((r.status == RecvStatus::kPdu && r.pdu.bhs[36] == 0), r.what());
  CHECK(r.pdu.data.empty());  // RFC 7143 11.12.2: an empty answer until the text is whole
  r = login_pdu(c, 1, 3, true, false,
                "MaxBurstLength=131072\0DataDigest=None\0MaxRecvDataSegmentLength=65536\0"s);
  REQUIRE_MESSAGE((r.status == RecvStatus::kPdu && r.pdu.bhs[36] == 0), r.what());
  const Keys k = parse_keys(r.pdu.data);
  CHECK_MESSAGE((r.pdu.bhs[1] & 0x83) == 0x83, r.what());  // T=1, NSG=3: full feature phase
  CHECK_MESSAGE(key_value(k, "HeaderDigest") == "None", keys_str(k));
  CHECK_MESSAGE(count_key(k, "MaxBurstLength") == 1, keys_str(k));  // answered once
  CHECK_MESSAGE(key_value(k, "MaxBurstLength") == "131072", keys_str(k));
  CHECK_MESSAGE(key_value(k, "Y-Unknown-Key") == "NotUnderstood", keys_str(k));
  CHECK_MESSAGE(!has_key(k, "X-com.example.Tuning"), keys_str(k));  // ignored
  CHECK(c.clear_unit_attentions() == "");

  // The same key again with another value: renegotiation, the login fails (RFC 7143 6.2).
  SecConnection d(z.port());
  r = login_pdu(d, 0, 1, true, false, security);
  REQUIRE_MESSAGE((r.status == RecvStatus::kPdu && r.pdu.bhs[36] == 0), r.what());
  r = login_pdu(d, 1, 3, false, true, "MaxBurstLength=131072\0"s);
  REQUIRE_MESSAGE((r.status == RecvStatus::kPdu && r.pdu.bhs[36] == 0), r.what());
  r = login_pdu(d, 1, 3, true, false, "MaxBurstLength=65536\0"s);
  REQUIRE(r.status == RecvStatus::kPdu);
  CHECK_MESSAGE((r.pdu.bhs[36] == 0x02 && r.pdu.bhs[37] == 0x00), r.what());
}

namespace {

// TASK MANAGEMENT FUNCTION REQUEST (RFC 7143 11.5), immediate, LUN 0, no referenced task.
std::vector<uint8_t> tmf_bhs(uint8_t function, uint32_t itt, uint32_t cmdsn, uint32_t exp_statsn) {
  std::vector<uint8_t> b(48, 0);
  b[0] = 0x40 | 0x02;
  b[1] = uint8_t(0x80 | function);
  auto be32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (24 - 8 * i));
  };
  be32(16, itt);
  be32(20, 0xffffffff);  // Referenced Task Tag: none
  be32(24, cmdsn);
  be32(28, exp_statsn);
  return b;
}

// The TMF response (opcode 0x22) to `itt`, skipping anything else; -1 when none came.
int tmf_response(SecConnection& c, uint32_t itt) {
  for (int i = 0; i < 16; ++i) {
    Received r = c.recv(5000ms);
    if (r.status != RecvStatus::kPdu) return -1;
    if (r.pdu.opcode() == 0x22 && r.pdu.itt() == itt) return r.pdu.bhs[2];
  }
  return -1;
}

bool pings(SecConnection& c) {
  Received p = c.nop({});
  return p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20;
}

}  // namespace

TEST_CASE("TARGET WARM RESET keeps connections; TARGET COLD RESET closes every connection to the target") {
  const std::string other = "iqn.2026-11.org.zuma:session-other";
  Zumad z(sec_config({{kIqn, {}}, {other, {}}}));
  z.start();
  SecConnection a(z.port()), b(z.port()), c(z.port());
  REQUIRE(a.login(plain_login("iqn.2026-11.org.zuma:reset-a")).ok);
  REQUIRE(b.login(plain_login("iqn.2026-11.org.zuma:reset-b")).ok);
  LoginOptions oc = plain_login("iqn.2026-11.org.zuma:reset-c");
  oc.target = other;
  REQUIRE(c.login(oc).ok);

  // Warm reset (function 6): a LU reset of every LU, connections stay (11.5.1).
  uint32_t itt = a.next_itt();
  REQUIRE(a.send_pdu(tmf_bhs(6, itt, a.cmdsn(), a.exp_statsn())));
  CHECK(tmf_response(a, itt) == 0);  // Function complete
  CHECK(pings(a));
  CHECK(pings(b));
  CHECK(pings(c));

  // Cold reset (function 7): the response, then every connection to the target closes;
  // a session to another target of the same zumad stays.
  itt = a.next_itt();
  REQUIRE(a.send_pdu(tmf_bhs(7, itt, a.cmdsn(), a.exp_statsn())));
  CHECK(tmf_response(a, itt) == 0);
  CHECK(a.wait_closed(5000ms));
  CHECK(b.wait_closed(5000ms));
  CHECK(pings(c));
  CHECK(eventually([&] { return z.log().find("target cold reset") != std::string::npos; }, 3000ms));

  // Logging in again works; the new I_T nexus first sees a reset unit attention (29h).
  SecConnection d(z.port());
  REQUIRE(d.login(plain_login("iqn.2026-11.org.zuma:reset-b")).ok);
  ScsiResult r = d.read10(0, 1, 512);
  CHECK_MESSAGE(r.asc() == 0x29, r.describe());
  CHECK(d.clear_unit_attentions() == "");
  CHECK(d.read10(0, 1, 512).good());
}
