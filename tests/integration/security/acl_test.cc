// Target ACLs (targets[].acl): only listed initiators log in (others get 0x0202,
// RFC 7143 11.13.5 "authorization failure"), and SendTargets shows an initiator only the
// targets it may log in to, in discovery sessions and in normal ones.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/integration/harness.hh"
#include "tests/integration/security/sec_client.hh"

using namespace zuma::test;
using namespace zuma::test::sec;

namespace {

const std::string kClosed = "iqn.2026-11.org.zuma:closed";  // acl: [kAllowed]
const std::string kOpen = "iqn.2026-11.org.zuma:open";      // no acl
const std::string kOther = "iqn.2026-11.org.zuma:other";    // acl: [kOtherHost]
const std::string kAllowed = "iqn.2026-11.org.zuma:host-allowed";
const std::string kDenied = "iqn.2026-11.org.zuma:host-denied";
const std::string kOtherHost = "iqn.2026-11.org.zuma:host-other";

std::string config() {
  return sec_config({{kClosed, {"acl: [ " + kAllowed + " ]"}},
                     {kOpen, {}},
                     {kOther, {"acl: [ " + kOtherHost + ", " + kAllowed + "-not ]"}}});
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// SendTargets=<value> in a normal session; the TargetName values of the answer.
std::vector<std::string> send_targets_in_session(SecConnection& c, const std::string& value) {
  std::vector<uint8_t> b(48, 0);
  b[0] = 0x40 | 0x04;  // immediate Text Request (RFC 7143 11.10): CmdSN not advanced
  b[1] = 0x80;
  const uint32_t itt = c.next_itt();
  put_be32(&b[16], itt);
  put_be32(&b[20], 0xffffffff);
  put_be32(&b[24], c.cmdsn());
  put_be32(&b[28], c.exp_statsn());
  const std::string text = "SendTargets=" + value + std::string(1, '\0');
  std::vector<std::string> out;
  if (!c.send_pdu(b, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}))
    return {"<send failed>"};
  for (;;) {
    Received r = c.recv();
    if (r.status != RecvStatus::kPdu) return {"<" + r.what() + ">"};
    if (r.pdu.opcode() != 0x24 || r.pdu.itt() != itt) continue;
    for (auto& [k, v] : parse_keys(r.pdu.data))
      if (k == "TargetName") out.push_back(v);
    return out;  // short answers fit one PDU
  }
}

}  // namespace

TEST_CASE("ACL: a listed initiator logs in, others get 0x0202 and a log line") {
  Zumad z(config());
  z.start();
  {
    LibiscsiSession s(z.portal(), {.initiator = kAllowed, .target = kClosed});
    REQUIRE_MESSAGE(s.ok(), s.error());
    CHECK(s.write_read_verify(0, 16, 512, 1) == "");
  }
  {
    LibiscsiSession s(z.portal(), {.initiator = kDenied, .target = kClosed});
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Authorization failure") != std::string::npos, s.error());
  }
  {
    SecConnection c(z.port());
    LoginOptions o;
    o.initiator = kDenied;
    o.target = kClosed;
    LoginOutcome r = c.login(o);
    CHECK_FALSE(r.ok);
    CHECK_MESSAGE(r.status() == 0x0202, r.error);
    CHECK(c.wait_closed(5000ms));
    CHECK(eventually(
        [&] {
          const std::string log = z.log();
          return log.find(kDenied) != std::string::npos &&
                 log.find("refused by the ACL") != std::string::npos;
        },
        3000ms));
  }
  {
    // A prefix or a different case of an allowed name is another name.
    SecConnection c(z.port());
    LoginOptions o;
    o.initiator = kAllowed + "x";
    o.target = kClosed;
    CHECK(c.login(o).status() == 0x0202);
  }
  {
    // Any initiator may log in to a target without an ACL.
    LibiscsiSession s(z.portal(), {.initiator = kDenied, .target = kOpen});
    REQUIRE_MESSAGE(s.ok(), s.error());
    CHECK(s.write_read_verify(0, 8, 512, 2) == "");
  }
  {
    LibiscsiSession s(z.portal(), {.initiator = kOtherHost, .target = kOther});
    CHECK_MESSAGE(s.ok(), s.error());
    LibiscsiSession d(z.portal(), {.initiator = kAllowed, .target = kOther});
    CHECK_FALSE(d.ok());
  }
}

TEST_CASE("ACL: SendTargets in a discovery session lists only the targets an initiator may use") {
  Zumad z(config());
  z.start();
  DiscoveryResult a = discover_as(z.portal(), kAllowed);
  REQUIRE_MESSAGE(a.error == "", a.error);
  CHECK(sorted(a.targets) == sorted({kClosed, kOpen}));

  DiscoveryResult d = discover_as(z.portal(), kDenied);
  REQUIRE_MESSAGE(d.error == "", d.error);
  CHECK(d.targets == std::vector<std::string>{kOpen});

  DiscoveryResult o = discover_as(z.portal(), kOtherHost);
  REQUIRE_MESSAGE(o.error == "", o.error);
  CHECK(sorted(o.targets) == sorted({kOpen, kOther}));
}

TEST_CASE(
    "ACL: SendTargets=<name> in a normal session does not reveal a target the initiator "
    "may not use") {
  Zumad z(config());
  z.start();
  SecConnection c(z.port());
  LoginOptions o;
  o.initiator = kDenied;
  o.target = kOpen;
  LoginOutcome r = c.login(o);
  REQUIRE_MESSAGE(r.ok, r.error);
  CHECK(send_targets_in_session(c, kClosed).empty());
  CHECK(send_targets_in_session(c, kOpen) == std::vector<std::string>{kOpen});
  CHECK(send_targets_in_session(c, "").size() == 1);  // the session's own target
  // "All" is for discovery sessions only (RFC 7143 appendix C).
  CHECK(send_targets_in_session(c, "All").empty());
  Received p = c.nop({});
  CHECK_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20), p.what());
}
