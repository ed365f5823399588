// ACLs (issue 4): initiator names, source networks and per-initiator LUN mapping, seen
// through real logins, SendTargets and REPORT LUNS.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
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

namespace {

// The NAA designator (VPD 83h, association LU, 16 bytes) of LUN 0 of the session's target.
std::vector<uint8_t> naa_of(Session& s) {
  Task t = s.inquiry(0, true, 0x83, 255);
  REQUIRE_MESSAGE(is_good(t.get()), describe(s.ctx(), t.get()));
  const uint8_t* p = t->datain.data;
  const size_t n = std::min<size_t>(size_t(t->datain.size), 4 + (size_t(p[2]) << 8 | p[3]));
  for (size_t off = 4; off + 4 <= n; off += 4 + p[off + 3]) {
    const uint8_t* d = p + off;
    if ((d[1] & 0x0F) == 0x3 && ((d[1] >> 4) & 0x3) == 0 && d[3] == 16 && off + 20 <= n)
      return {d + 4, d + 20};
  }
  FAIL("no NAA designator in VPD 83h");
  return {};
}

// EXTENDED COPY (LID1) of `blocks` 512-byte blocks from LBA `src` of the LU named by
// designator `from` to LBA `dst` of `to` (SPC-4: E4h CSCD descriptors, a 02h segment).
Task xcopy(Session& s, const std::vector<uint8_t>& from, const std::vector<uint8_t>& to,
           uint16_t blocks, uint64_t src, uint64_t dst) {
  std::vector<uint8_t> p(16, 0);
  p[3] = 64;   // two CSCD descriptors
  p[11] = 28;  // one segment descriptor
  for (const auto* id : {&from, &to}) {
    uint8_t d[32] = {0xE4, 0, 0, 0, 0x01, 0x03, 0, 16};
    std::memcpy(d + 8, id->data(), 16);
    d[30] = 0x02;  // block size 512
    p.insert(p.end(), d, d + 32);
  }
  uint8_t seg[28] = {0x02, 0, 0, 0x18, 0, 0, 0, 1};
  seg[10] = uint8_t(blocks >> 8);
  seg[11] = uint8_t(blocks);
  for (int i = 0; i < 8; ++i) {
    seg[12 + i] = uint8_t(src >> (56 - 8 * i));
    seg[20 + i] = uint8_t(dst >> (56 - 8 * i));
  }
  p.insert(p.end(), seg, seg + 28);
  iscsi_data data{p.size(), p.data()};
  return Task(iscsi_extended_copy_sync(s.ctx(), 0, &data));
}

}  // namespace

// SPC-5 third-party copy across the targets of one zumad, within what the initiator may
// reach itself: another target whose ACL admits it works; one that does not admit it is
// COPY TARGET DEVICE NOT REACHABLE (CVE-2020-28374 is about exactly this).
TEST_CASE("EXTENDED COPY reaches another target's LU only where the initiator is admitted") {
  const std::string b = "iqn.2026-11.org.zuma:copy-b", c = "iqn.2026-11.org.zuma:copy-c";
  std::string cfg = make_config("      - { id: 0, name: a0, size: 4MiB, backend: memory }\n");
  cfg += "  - iqn: " + b + "\n    luns:\n      - { id: 0, name: b0, size: 4MiB, backend: memory }\n";
  cfg += "  - iqn: " + c + "\n    acl: [ " + kHost2 + " ]\n" +
         "    luns:\n      - { id: 0, name: c0, size: 4MiB, backend: memory }\n";
  Zumad z(cfg);
  z.start();
  Session a(z.portal(), kTestIqn, 0, as(kHost1));
  Session sb(z.portal(), b, 0, as(kHost1));
  Session sc(z.portal(), c, 0, as(kHost2));
  const auto naa_a = naa_of(a), naa_b = naa_of(sb), naa_c = naa_of(sc);
  CHECK(naa_a != naa_b);

  const auto data = make_pattern(64, 512, 100, 31);
  REQUIRE(is_good(a.write16(0, 100, data, 512).get()));
  Task t = xcopy(a, naa_a, naa_b, 64, 100, 2000);
  REQUIRE_MESSAGE(is_good(t.get()), describe(a.ctx(), t.get()));
  Task r = sb.read16(0, 2000, 64 * 512, 512);
  REQUIRE(is_good(r.get()));
  CHECK(check_pattern(std::span(r->datain.data, r->datain.size), 512, 100, 31).empty());
  // And back, from b's LU into a's.
  t = xcopy(a, naa_b, naa_a, 64, 2000, 3000);
  REQUIRE_MESSAGE(is_good(t.get()), describe(a.ctx(), t.get()));
  r = a.read16(0, 3000, 64 * 512, 512);
  REQUIRE(is_good(r.get()));
  CHECK(check_pattern(std::span(r->datain.data, r->datain.size), 512, 100, 31).empty());

  // host1 is not in c's ACL: neither a destination nor a source there (0Ah, 0Dh/02h).
  const auto before = sc.read16(0, 0, 64 * 512, 512);
  REQUIRE(is_good(before.get()));
  t = xcopy(a, naa_a, naa_c, 64, 100, 0);
  CHECK_MESSAGE(is_sense(t.get(), 0x0A, 0x0D02), describe(a.ctx(), t.get()));
  t = xcopy(a, naa_c, naa_a, 64, 0, 100);
  CHECK_MESSAGE(is_sense(t.get(), 0x0A, 0x0D02), describe(a.ctx(), t.get()));
  const auto after = sc.read16(0, 0, 64 * 512, 512);
  REQUIRE(is_good(after.get()));
  CHECK(std::equal(before->datain.data, before->datain.data + before->datain.size,
                   after->datain.data));
  // host2, admitted by c, may copy from a (open to everyone) into c.
  Session a2(z.portal(), kTestIqn, 0, as(kHost2));
  t = xcopy(a2, naa_a, naa_c, 64, 100, 0);
  REQUIRE_MESSAGE(is_good(t.get()), describe(a2.ctx(), t.get()));
  r = sc.read16(0, 0, 64 * 512, 512);
  REQUIRE(is_good(r.get()));
  CHECK(check_pattern(std::span(r->datain.data, r->datain.size), 512, 100, 31).empty());
}
