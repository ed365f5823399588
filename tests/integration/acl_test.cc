// ACLs (issue 4): initiator names, source networks and per-initiator LUN mapping, seen
// through real logins, SendTargets and REPORT LUNS.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>

#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;

namespace {

constexpr const char* kHost1 = "iqn.1994-05.com.example:host1";
constexpr const char* kHost2 = "iqn.1994-05.com.example:host2";
constexpr const char* kHost3 = "iqn.1994-05.com.example:host3";

// Three LUs; host1 sees them as numbered, host2 sees only `logs` as LUN 0, host3 is
// admitted only from 192.0.2.0/24 (never loopback), anyone else is refused.
std::string config() {
  std::string c = make_config(
      "      - { id: 0, name: data, size: 8MiB, backend: memory }\n"
      "      - { id: 1, name: logs, size: 4MiB, backend: memory }\n"
      "      - { id: 2, name: spare, size: 4MiB, backend: memory }\n");
  c += "    acl:\n";
  c += std::string("      - ") + kHost1 + "\n";
  c += std::string("      - { initiator: ") + kHost2 + ", luns: { 0: logs } }\n";
  c += std::string("      - { initiator: ") + kHost3 + ", networks: [ \"192.0.2.0/24\" ] }\n";
  return c;
}

std::set<int> report_luns(Session& s) {
  std::set<int> out;
  scsi_task* t = iscsi_reportluns_sync(s.ctx(), 0, 4096);
  Task task(t);
  REQUIRE_MESSAGE(is_good(t), describe(s.ctx(), t));
  auto* list = static_cast<scsi_reportluns_list*>(scsi_datain_unmarshall(t));
  REQUIRE(list);
  for (uint32_t i = 0; i < list->num; ++i) out.insert(list->luns[i]);
  return out;
}

SessionOptions as(const char* initiator) {
  SessionOptions o;
  o.initiator = initiator;
  return o;
}

}  // namespace

TEST_CASE("each initiator sees the LUs its ACL entry maps, under its own numbers") {
  Zumad z(config());
  z.start();
  Session h1(z.portal(), kTestIqn, 0, as(kHost1));
  Session h2(z.portal(), kTestIqn, 0, as(kHost2));
  CHECK(report_luns(h1) == std::set<int>{0, 1, 2});
  CHECK(report_luns(h2) == std::set<int>{0});
  // host2's LUN 0 is `logs` (4 MiB), host1's LUN 0 is `data` (8 MiB) and its LUN 1 is logs.
  CHECK(h1.capacity(0).first * h1.capacity(0).second == 8u << 20);
  CHECK(h2.capacity(0).first * h2.capacity(0).second == 4u << 20);
  auto data = make_pattern(8, 512, 0, 77);
  REQUIRE(is_good(h2.write16(0, 0, data, 512).get()));
  Task r = h1.read16(1, 0, uint32_t(data.size()), 512);
  REQUIRE(is_good(r.get()));
  CHECK(check_pattern(std::span(r->datain.data, r->datain.size), 512, 0, 77).empty());
  // A LUN outside host2's map does not exist for it (SPC-5: LOGICAL UNIT NOT SUPPORTED).
  Task t = h2.tur(1);
  CHECK_MESSAGE(is_sense(t.get(), 0x05, 0x2500), describe(h2.ctx(), t.get()));
}

TEST_CASE("initiators outside the ACL, or outside their networks, are refused with 0x0202") {
  Zumad z(config());
  z.start();
  CHECK_THROWS(Session(z.portal(), kTestIqn, 0, as("iqn.1994-05.com.example:stranger")));
  CHECK_THROWS(Session(z.portal(), kTestIqn, 0, as(kHost3)));  // loopback is not 192.0.2.0/24
  CHECK(z.log().find("refused by the ACL") != std::string::npos);
  Session ok(z.portal(), kTestIqn, 0, as(kHost1));
  CHECK(iscsi_is_logged_in(ok.ctx()));
}
