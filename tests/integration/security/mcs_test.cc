// Sessions with several connections (MaxConnections > 1, RFC 7143 6.3.6) and session
// state kept after a connection failure (DefaultTime2Wait + DefaultTime2Retain, 13.15/
// 13.16), against a real zumad with two reactors (so a second connection usually lands on
// the other reactor and is handed over to its session's), driven by the raw client:
// libiscsi opens one connection per session.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/integration/harness.hh"
#include "tests/integration/security/sec_client.hh"

using namespace zuma::test;
using namespace zuma::test::sec;

namespace {

const std::string kIqn = "iqn.2026-11.org.zuma:mcs";
const std::string kHost = "iqn.2026-11.org.zuma:mcs-host";
constexpr uint32_t kBlock = 512;

LoginOptions leading(uint32_t max_connections) {
  LoginOptions o;
  o.initiator = kHost;
  o.target = kIqn;
  o.max_connections = max_connections;
  o.initial_r2t = true;  // so connections that did not negotiate it agree on it
  return o;
}

LoginOptions adding(uint16_t tsih, uint16_t cid) {
  LoginOptions o = leading(1);
  o.tsih = tsih;
  o.cid = cid;
  return o;
}

// Status (and sense) of a SCSI Response to `itt`, skipping other PDUs; error otherwise.
ScsiResult await_response(SecConnection& c, uint32_t itt, std::chrono::milliseconds timeout) {
  ScsiResult res;
  for (;;) {
    Received r = c.recv(timeout);
    if (r.status != RecvStatus::kPdu) return res.error = r.what(), res;
    const Pdu& p = r.pdu;
    if (p.opcode() == 0x3f) return res.error = "Reject: " + r.what(), res;
    if (p.opcode() != 0x21 || p.itt() != itt) continue;
    res.response = p.bhs[2];
    res.status = p.bhs[3];
    if (p.data.size() > 2) res.sense.assign(p.data.begin() + 2, p.data.end());
    return res;
  }
}

// A command without data (TEST UNIT READY, RESERVE(6), ...) with CmdSN `cmdsn`.
ScsiResult nodata(SecConnection& c, std::vector<uint8_t> cdb, uint32_t cmdsn) {
  const uint32_t itt = c.next_itt();
  if (!c.send_pdu(scsi_command_bhs(0x80 | 0x01, itt, 0, cmdsn, c.exp_statsn(), cdb))) {
    ScsiResult r;
    r.error = "send failed";
    return r;
  }
  return await_response(c, itt, 5000ms);
}

const std::vector<uint8_t> kTur(6, 0);
const std::vector<uint8_t> kReserve6 = {0x16, 0, 0, 0, 0, 0};

// Logout Request (RFC 7143 11.14), immediate; the response code, or -1.
int logout(SecConnection& c, uint8_t reason, uint16_t cid) {
  std::vector<uint8_t> b(48, 0);
  b[0] = 0x40 | 0x06;
  b[1] = uint8_t(0x80 | reason);
  const uint32_t itt = c.next_itt();
  put_be32(&b[16], itt);
  b[20] = uint8_t(cid >> 8);
  b[21] = uint8_t(cid);
  put_be32(&b[24], c.cmdsn());
  put_be32(&b[28], c.exp_statsn());
  if (!c.send_pdu(b)) return -1;
  for (;;) {
    Received r = c.recv(5000ms);
    if (r.status != RecvStatus::kPdu) return -1;
    if (r.pdu.opcode() == 0x26 && r.pdu.itt() == itt) return r.pdu.bhs[2];
  }
}

std::vector<uint8_t> pattern(uint8_t seed) {
  std::vector<uint8_t> d(kBlock);
  for (size_t i = 0; i < d.size(); ++i) d[i] = uint8_t(seed + i * 7);
  return d;
}

}  // namespace

TEST_CASE("MaxConnections=2: one session over two connections, CmdSN ordered across them") {
  Zumad z(sec_config({{kIqn, {}}}, "{ max_connections: 4 }"));
  z.start();

  SecConnection a(z.port());
  LoginOutcome la = a.login(leading(2));
  REQUIRE_MESSAGE(la.ok, la.error);
  CHECK(key_value(la.keys, "MaxConnections") == "2");  // min(offered 2, zumad's 4), 13.2
  REQUIRE(a.clear_unit_attentions() == "");
  const uint16_t tsih = a.tsih();
  REQUIRE(tsih != 0);

  SecConnection b(z.port());
  LoginOutcome lb = b.login(adding(tsih, 1));
  REQUIRE_MESSAGE(lb.ok, lb.error);
  CHECK(b.tsih() == tsih);
  // Leading-only keys on the added connection change nothing (it offers none here); its
  // Login Response carries the session's CmdSN window.
  CHECK_MESSAGE(b.cmdsn() == a.cmdsn(), "ExpCmdSN " << b.cmdsn() << " vs " << a.cmdsn());
  CHECK(eventually([&] { return z.log().find("(cid 1)") != std::string::npos; }, 5000ms));
  // Connections are dealt to the two reactors in turn: B came in on the other one and was
  // handed over to the session's.
  CHECK(z.log().find("its login continues on reactor") != std::string::npos);

  // The same LU and the same I_T nexus: no unit attention on the new connection, and data
  // written through one connection reads back through the other.
  ScsiResult t = nodata(b, kTur, a.cmdsn());
  CHECK_MESSAGE(t.good(), t.describe());
  a.set_cmdsn(a.cmdsn() + 1);
  const auto old_data = pattern(0x11), new_data = pattern(0x77);
  ScsiResult w = a.write10(8, old_data, kBlock, kBlock);
  REQUIRE_MESSAGE(w.good(), w.describe());
  b.set_cmdsn(a.cmdsn());
  ScsiResult r = b.read10(8, 1, kBlock);
  REQUIRE_MESSAGE(r.good(), r.describe());
  CHECK(r.data == old_data);
  a.set_cmdsn(b.cmdsn());

  SUBCASE("a command waits for the CmdSN before it, sent later on the other connection") {
    // WRITE with CmdSN n+1 on B first; READ with CmdSN n on A after it. RFC 7143 4.2.2.1:
    // the target delivers in CmdSN order, so the READ sees the old data and the WRITE
    // completes only after it.
    const uint32_t n = a.cmdsn();
    const uint8_t cdb[10] = {0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0};
    const uint32_t itt = b.next_itt();
    auto bhs = scsi_command_bhs(0x80 | 0x20 | 0x01, itt, kBlock, n + 1, b.exp_statsn(), cdb);
    REQUIRE(b.send_pdu(bhs, new_data));
    ScsiResult early = await_response(b, itt, 500ms);
    CHECK_MESSAGE(early.error.find("within the timeout") != std::string::npos,
                  "the WRITE ran before CmdSN " << n << ": " << early.describe());
    a.set_cmdsn(n);
    ScsiResult rd = a.read10(8, 1, kBlock);
    REQUIRE_MESSAGE(rd.good(), rd.describe());
    CHECK_MESSAGE(rd.data == old_data, "the READ saw the WRITE queued behind it");
    ScsiResult wr = early.error.empty() ? early : await_response(b, itt, 5000ms);
    CHECK_MESSAGE(wr.good(), wr.describe());
    b.set_cmdsn(n + 2);
    ScsiResult after = b.read10(8, 1, kBlock);
    REQUIRE_MESSAGE(after.good(), after.describe());
    CHECK(after.data == new_data);
  }

  SUBCASE("limits, logout of one connection by CID, connection reinstatement, logout") {
    // A third connection is more than negotiated (11.13.5: 0x0206).
    SecConnection c3(z.port());
    LoginOutcome l3 = c3.login(adding(tsih, 2));
    CHECK_MESSAGE(l3.status() == 0x0206, l3.error);
    // An unknown TSIH, or the right TSIH with another ISID: no such session (0x020a).
    SecConnection bad(z.port());
    LoginOutcome lbad = bad.login(adding(uint16_t(tsih + 1), 5));
    CHECK_MESSAGE(lbad.status() == 0x020a, lbad.error);
    SecConnection bad2(z.port());
    LoginOptions o2 = adding(tsih, 5);
    o2.isid[5] ^= 0x01;
    LoginOutcome lbad2 = bad2.login(o2);
    CHECK_MESSAGE(lbad2.status() == 0x020a, lbad2.error);

    // Logout with reason 1 for CID 1, sent on CID 0: B closes, A goes on (11.14.1).
    CHECK(logout(a, 1, 1) == 0);
    CHECK(b.wait_closed(5000ms));
    ScsiResult r2 = a.read10(8, 1, kBlock);
    CHECK_MESSAGE(r2.good(), r2.describe());
    CHECK(logout(a, 1, 9) == 1);  // CID not found (11.15.1)

    // A login with CID 0 again reinstates A's connection (6.3.4): the old one closes, the
    // session and its nexus go on (no unit attention).
    SecConnection a2(z.port());
    LoginOutcome la2 = a2.login(adding(tsih, 0));
    REQUIRE_MESSAGE(la2.ok, la2.error);
    CHECK(a.wait_closed(5000ms));
    ScsiResult t2 = nodata(a2, kTur, a2.cmdsn());
    CHECK_MESSAGE(t2.good(), t2.describe());
    a2.set_cmdsn(a2.cmdsn() + 1);
    ScsiResult r3 = a2.read10(8, 1, kBlock);
    CHECK_MESSAGE(r3.good(), r3.describe());
    CHECK(r3.data == old_data);

    // Logout reason 0 closes the session: its TSIH takes no more connections.
    CHECK(logout(a2, 0, 0) == 0);
    CHECK(a2.wait_closed(5000ms));
    SecConnection late(z.port());
    LoginOutcome llate = late.login(adding(tsih, 1));
    CHECK_MESSAGE(llate.status() == 0x020a, llate.error);
  }
  CHECK(z.stop() == 0);
}

TEST_CASE("DefaultTime2Retain: a failed session is kept that long for its initiator, then ends") {
  // Time2Wait 0 and Time2Retain 2 (min/max with the initiator's offer, 13.15/13.16): after
  // its only connection breaks, the session (and its RESERVE(6)) lasts 2 s more.
  Zumad z(sec_config({{kIqn, {}}},
                     "{ max_connections: 2, default_time2wait: 0, default_time2retain: 2 }"));
  z.start();
  SecConnection a(z.port());
  LoginOptions o = leading(2);
  o.default_time2retain = 30;
  LoginOutcome la = a.login(o);
  REQUIRE_MESSAGE(la.ok, la.error);
  CHECK(key_value(la.keys, "DefaultTime2Retain") == "2");
  CHECK(key_value(la.keys, "DefaultTime2Wait") == "0");
  REQUIRE(a.clear_unit_attentions() == "");
  const uint16_t tsih = a.tsih();
  // Another initiator's session, which will meet the reservation.
  SecConnection other(z.port());
  LoginOptions oo = leading(1);
  oo.initiator = kHost + "-other";
  REQUIRE(other.login(oo).ok);
  REQUIRE(other.clear_unit_attentions() == "");
  ScsiResult res = nodata(a, kReserve6, a.cmdsn());
  REQUIRE_MESSAGE(res.good(), res.describe());
  a.set_cmdsn(a.cmdsn() + 1);
  auto other_tur = [&] {
    ScsiResult t = nodata(other, kTur, other.cmdsn());
    other.set_cmdsn(other.cmdsn() + 1);
    return t;
  };
  CHECK(other_tur().status == 0x18);  // RESERVATION CONFLICT

  // The connection breaks without a logout; within Time2Retain the initiator continues
  // the session with its TSIH: same nexus (no unit attention), reservation still held.
  const uint32_t next = a.cmdsn();
  a.close();
  CHECK(
      eventually([&] { return z.log().find("no connection left") != std::string::npos; }, 5000ms));
  CHECK(other_tur().status == 0x18);
  SecConnection a2(z.port());
  LoginOutcome l2 = a2.login(adding(tsih, 0));
  REQUIRE_MESSAGE(l2.ok, l2.error);
  a2.set_cmdsn(next);
  ScsiResult t = nodata(a2, kTur, next);
  CHECK_MESSAGE(t.good(), t.describe());
  CHECK(other_tur().status == 0x18);

  // Broken again and not continued: after 2 s the session ends as an I_T nexus loss, which
  // releases the RESERVE(6) (SPC-2); its TSIH is gone.
  a2.close();
  CHECK(eventually([&] { return z.log().find("not continued within") != std::string::npos; },
                   8000ms));
  ScsiResult free = other_tur();
  CHECK_MESSAGE(free.good(), free.describe());
  SecConnection a3(z.port());
  LoginOutcome l3 = a3.login(adding(tsih, 0));
  CHECK_MESSAGE(l3.status() == 0x020a, l3.error);
  CHECK(z.stop() == 0);
}
