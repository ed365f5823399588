// Malformed input from a raw TCP client. Each attack must get a Reject PDU (or, during
// login, a Login Response with an error status) or a closed connection, promptly: a poll
// timeout of 5 s counts as a hang. After every attack zumad is still running, a libiscsi
// session opened before the attacks still reads and writes, and a new login works.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;
using namespace std::chrono_literals;

namespace {

const char* kLuns =
    "      - { id: 0, name: a, size: 16MiB, block_size: 512, subunits: [ {backend: file, path: "
    "@DIR@/a.img} ] }\n";
// login_timeout well above the poll timeout, so a close caused by it counts as a hang.
const char* kIscsi = "{ max_recv_data_segment_length: 65536, login_timeout: 30 }";

enum class Phase { kLogin, kFullFeature };

// What the target did with the attack; "" if acceptable.
std::string judge(const RecvResult& r, Phase phase) {
  switch (r.status) {
    case RecvStatus::kClosed:
      return {};
    case RecvStatus::kTimeout:
      return "no Reject and no close within 5 s (hang)";
    case RecvStatus::kPdu:
      if (r.pdu.opcode() == 0x3f) return {};  // Reject
      // RFC 7143 11.13.5: a login error is a Login Response with status class != 0.
      if (phase == Phase::kLogin && r.pdu.opcode() == 0x23 && r.pdu.bhs[36] != 0) return {};
      return "unexpected answer: " + r.what();
  }
  return "?";
}

struct Checker {
  Zumad& z;
  Session& old_session;
  uint64_t seed = 1000;

  // zumad alive, the old session works, a new raw login works.
  void after(const std::string& attack) {
    CAPTURE(attack);
    REQUIRE_MESSAGE(z.running(), "zumad died after: " << attack);
    auto data = make_pattern(64, 512, 256, ++seed);
    Task w = old_session.write16(0, 256, data, 512);
    CHECK_MESSAGE(is_good(w.get()), "old session WRITE16 after "
                                        << attack << ": " << describe(old_session.ctx(), w.get()));
    Task r = old_session.read16(0, 256, 64 * 512, 512);
    REQUIRE_MESSAGE(is_good(r.get()), "old session READ16 after "
                                          << attack << ": "
                                          << describe(old_session.ctx(), r.get()));
    CHECK(check_pattern({r->datain.data, static_cast<size_t>(r->datain.size)}, 512, 256, seed) ==
          "");
    RawConnection c(z.port());
    CHECK(c.login(kTestIqn) == "");
    CHECK(c.ping());
  }
};

std::vector<uint8_t> scsi_read10_pdu(uint32_t itt, uint32_t cmdsn, uint32_t exp_statsn) {
  // RFC 7143 11.3: SCSI Command, F=1 R=1, ATTR simple, LUN 0, EDTL 512, READ(10) LBA 0 x1.
  std::vector<uint8_t> p(kBhsLen, 0);
  p[0] = 0x01;
  p[1] = 0x80 | 0x40 | 0x01;
  put_be32(&p[16], itt);
  put_be32(&p[20], 512);
  put_be32(&p[24], cmdsn);
  put_be32(&p[28], exp_statsn);
  p[32] = 0x28;
  p[40] = 1;  // transfer length (bytes 7..8 of the CDB)
  return p;
}

}  // namespace

TEST_CASE(
    "malformed PDUs are rejected or the connection is closed; zumad and other sessions "
    "carry on") {
  Zumad z(make_config(kLuns, kIscsi));
  z.start();
  Session old_session(z.portal(), kTestIqn);
  Checker check{z, old_session};
  check.after("nothing (baseline)");

  SUBCASE("garbage: 64 bytes of 0xff before login") {
    RawConnection c(z.port());
    std::vector<uint8_t> g(64, 0xff);
    c.send(g);
    auto r = c.recv(5s);
    CHECK_MESSAGE(judge(r, Phase::kLogin) == "", r.what());
    c.close();
    check.after("0xff garbage");
  }

  SUBCASE("garbage: an HTTP request before login") {
    RawConnection c(z.port());
    std::string http = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: zuma-test\r\n\r\n";
    http.resize(256, '\0');
    c.send({reinterpret_cast<const uint8_t*>(http.data()), http.size()});
    auto r = c.recv(5s);
    CHECK_MESSAGE(judge(r, Phase::kLogin) == "", r.what());
    c.close();
    check.after("HTTP garbage");
  }

  SUBCASE("a truncated BHS, then close") {
    {
      RawConnection c(z.port());
      auto pdu = login_request(0, 1, true, 1, 1, 0, 0, "");
      c.send({pdu.data(), 20});
    }
    check.after("truncated BHS");
    // Also truncated in the middle of the data segment.
    {
      RawConnection c(z.port());
      std::string keys =
          std::string("InitiatorName=iqn.x") + '\0' + "TargetName=" + kTestIqn + '\0';
      auto pdu = login_request(0, 1, true, 1, 1, 0, 0, keys);
      c.send({pdu.data(), kBhsLen + 10});
    }
    check.after("truncated data segment");
  }

  SUBCASE("Login Request with DataSegmentLength 0xffffff (16 MiB)") {
    RawConnection c(z.port());
    auto pdu = login_request(0, 1, true, 1, 1, 0, 0, "");
    put_be24(&pdu[5], 0xffffff);
    c.send(pdu);
    std::vector<uint8_t> filler(65536, 'A');
    c.send(filler);  // may fail if zumad already closed: fine
    auto r = c.recv(5s);
    CHECK_MESSAGE(judge(r, Phase::kLogin) == "", r.what());
    c.close();
    check.after("login DataSegmentLength 16 MiB");
  }

  SUBCASE("Login Request with TotalAHSLength 255 and nothing after") {
    RawConnection c(z.port());
    auto pdu = login_request(0, 1, true, 1, 1, 0, 0, "");
    pdu[4] = 255;
    c.send(pdu);
    std::vector<uint8_t> filler(1020, 0);
    c.send(filler);
    auto r = c.recv(5s);
    CHECK_MESSAGE(judge(r, Phase::kLogin) == "", r.what());
    c.close();
    check.after("login with AHS");
  }

  SUBCASE("a SCSI Command before login") {
    RawConnection c(z.port());
    c.send(scsi_read10_pdu(1, 1, 0));
    auto r = c.recv(5s);
    CHECK_MESSAGE(judge(r, Phase::kLogin) == "", r.what());
    c.close();
    check.after("SCSI Command before login");
  }

  for (uint8_t opcode : {uint8_t{0x3f}, uint8_t{0x0f}, uint8_t{0x1c}}) {
    SUBCASE(("unknown opcode after login: " + std::to_string(opcode)).c_str()) {
      RawConnection c(z.port());
      REQUIRE(c.login(kTestIqn) == "");
      REQUIRE(c.ping());
      std::vector<uint8_t> p(kBhsLen, 0);
      p[0] = opcode;
      p[1] = 0x80;
      put_be32(&p[16], c.next_itt());
      put_be32(&p[24], c.cmdsn());
      put_be32(&p[28], c.exp_statsn());
      c.send(p);
      auto r = c.recv(5s);
      CHECK_MESSAGE(judge(r, Phase::kFullFeature) == "", r.what());
      if (r.status == RecvStatus::kPdu && r.pdu.opcode() == 0x3f) {
        char reason[8];
        std::snprintf(reason, sizeof reason, "0x%02x", r.pdu.bhs[2]);
        MESSAGE("Reject reason " << std::string(reason));
        // RFC 7143 11.17.1: the rejected BHS comes back as the data segment.
        CHECK(r.pdu.data.size() >= kBhsLen);
        // After a Reject the connection must either keep working or be closed, not hang.
        bool ok = c.ping(3s);
        if (!ok) CHECK_MESSAGE(c.wait_closed(3s), "neither answers a NOP-Out nor closes");
      }
      c.close();
      check.after("unknown opcode " + std::to_string(opcode));
    }
  }

  SUBCASE("garbage after login: 48 bytes of 0xff") {
    RawConnection c(z.port());
    REQUIRE(c.login(kTestIqn) == "");
    std::vector<uint8_t> g(48, 0xff);
    c.send(g);
    auto r = c.recv(5s);
    CHECK_MESSAGE(judge(r, Phase::kFullFeature) == "", r.what());
    c.close();
    check.after("garbage after login");
  }

  SUBCASE("SCSI Command with immediate data over MaxRecvDataSegmentLength") {
    RawConnection c(z.port());
    REQUIRE(c.login(kTestIqn) == "");
    auto p = scsi_read10_pdu(c.next_itt(), c.cmdsn(), c.exp_statsn());
    p[1] = 0x80 | 0x20 | 0x01;  // F W, WRITE(10)
    p[32] = 0x2a;
    put_be32(&p[20], 0xffffff);
    put_be24(&p[5], 0xffffff);
    c.send(p);
    std::vector<uint8_t> filler(65536, 0x55);
    c.send(filler);
    auto r = c.recv(5s);
    CHECK_MESSAGE(judge(r, Phase::kFullFeature) == "", r.what());
    c.close();
    check.after("oversized immediate data");
  }

  SUBCASE("100 connections that never send anything") {
    {
      std::vector<std::unique_ptr<RawConnection>> conns;
      for (int i = 0; i < 100; ++i) conns.push_back(std::make_unique<RawConnection>(z.port()));
      check.after("100 idle connections open");
    }
    check.after("100 idle connections closed");
  }
}
