// CRC32C header and data digests (RFC 7143 11.1, 13.1; RFC 3385). libiscsi does header
// digests only; the raw client of sec_client.hh computes both with its own CRC32C table
// and can corrupt either on purpose.
//
// What zumad must do (RFC 7143 7.8, error recovery level 0):
// - a header digest error: the PDU's length cannot be trusted, so the connection closes;
//   other sessions go on;
// - a data digest error on immediate data or a Data-Out: the command ends with CHECK
//   CONDITION, ABORTED COMMAND / PROTOCOL SERVICE CRC ERROR (0x0B/0x47/0x05), its data is
//   not written, the session goes on;
// - a data digest error on any other PDU: Reject, reason 0x02 (data digest error).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/integration/harness.hh"
#include "tests/integration/control_client.hh"
#include "tests/integration/security/sec_client.hh"

using namespace zuma::test;
using namespace zuma::test::sec;

namespace {

const std::string kIqn = "iqn.2026-11.org.zuma:digest";

LoginOptions digest_login(const std::string& initiator) {
  LoginOptions o;
  o.initiator = initiator;
  o.target = kIqn;
  o.header_digest = "CRC32C,None";
  o.data_digest = "CRC32C,None";
  return o;
}

bool is_crc_error(const ScsiResult& r) {
  return r.error.empty() && r.status == 0x02 && r.sense_key() == 0x0b && r.asc() == 0x47 &&
         r.ascq() == 0x05;
}

}  // namespace

namespace {
// zumad's protocol counters (show node; the metrics export the same ones).
zuma::admin::Json node_counters(Zumad& z) {
  auto c = zuma::test::connect_control(z);
  REQUIRE_MESSAGE(c, c.error());
  auto r = c->call("show node", zuma::admin::Json::object());
  REQUIRE_MESSAGE(r, r.error());
  REQUIRE(r->ok);
  return r->result;
}
}  // namespace

TEST_CASE("the client's CRC32C is the iSCSI one (RFC 3720 B.4 vectors)") {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), inc(32);
  for (int i = 0; i < 32; ++i) inc[size_t(i)] = uint8_t(i);
  CHECK(crc32c(zeros) == 0x8a9136aau);
  CHECK(crc32c(ones) == 0x62a8ab43u);
  CHECK(crc32c(inc) == 0x46dd794eu);
}

TEST_CASE("header digests with libiscsi: required by the config, data written and read intact") {
  Zumad z(sec_config({{kIqn, {}}}, "{ header_digest: [CRC32C] }"));
  z.start();
  LibiscsiSession s(z.portal(), {.initiator = "iqn.2026-11.org.zuma:hd-libiscsi",
                                 .target = kIqn,
                                 .header_digest_crc32c = true});
  REQUIRE_MESSAGE(s.ok(), s.error());
  for (uint64_t i = 0; i < 8; ++i) {
    CAPTURE(i);
    CHECK(s.write_read_verify(i * 256, 256, 512, 100 + i) == "");  // 128 KiB each
  }
}

TEST_CASE("a required digest the initiator does not mention: zumad offers it (RFC 7143 6.2)") {
  Zumad z(sec_config({{kIqn, {}}}, "{ header_digest: [CRC32C], data_digest: [CRC32C, None] }"));
  z.start();
  LoginOptions o;
  o.initiator = "iqn.2026-11.org.zuma:digest-quiet";
  o.target = kIqn;
  o.header_digest = "";  // neither digest key sent
  o.data_digest = "";
  SecConnection c(z.port());
  LoginOutcome r = c.login(o);
  REQUIRE_MESSAGE(r.ok, r.error << "; target keys: " << keys_str(r.keys));
  CHECK(key_value(r.keys, "HeaderDigest") == "CRC32C");
  CHECK_FALSE(has_key(r.keys, "DataDigest"));  // None is acceptable: nothing to offer
  CHECK(c.header_digest());
  CHECK_FALSE(c.data_digest());
  Received p = c.nop({});
  CHECK_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20 && p.pdu.header_digest_ok),
                p.what());
}

TEST_CASE("header_digest: [CRC32C] / data_digest: [CRC32C]: no session without the digest") {
  Zumad z(sec_config({{kIqn, {}}}, "{ header_digest: [CRC32C], data_digest: [CRC32C] }"));
  z.start();
  LoginOptions o;
  o.initiator = "iqn.2026-11.org.zuma:digest-none";
  o.target = kIqn;
  o.header_digest = "CRC32C";
  o.data_digest = "CRC32C";
  std::string key;
  SUBCASE("HeaderDigest=None offered") {
    o.header_digest = "None";
    key = "HeaderDigest";
  }
  SUBCASE("DataDigest=None offered") {
    o.data_digest = "None";
    key = "DataDigest";
  }
  SUBCASE("HeaderDigest not offered; zumad's own offer of CRC32C answered Reject") {
    o.header_digest = "";
    o.proposal_answers = {{"HeaderDigest", "Reject"}};
    key = "HeaderDigest";
  }
  SUBCASE("DataDigest not offered; zumad's own offer of CRC32C answered None") {
    o.data_digest = "";
    o.proposal_answers = {{"DataDigest", "None"}};
    key = "DataDigest";
  }
  CAPTURE(key);
  SecConnection c(z.port());
  LoginOutcome r = c.login(o);
  // RFC 7143 6.2.1/13.1: no acceptable value -> "Reject" for the key, which keeps its
  // default (None); a key not offered zumad offers itself (6.2), and a refusal leaves
  // None too. A session without the digest the administrator requires (CONFIG.md:
  // "[CRC32C] requires header digests") must not reach full feature phase.
  if (!o.header_digest.empty() && !o.data_digest.empty())
    CHECK_MESSAGE(key_value(r.keys, key) == "Reject", keys_str(r.keys));
  else
    CHECK_MESSAGE(key_value(r.keys, key) == "CRC32C", keys_str(r.keys));  // zumad's offer
  CHECK_MESSAGE(!r.ok, "logged in without " << key
                                            << " although the config requires it; target "
                                               "keys: "
                                            << keys_str(r.keys));
  CHECK_MESSAGE(r.status() == 0x0200, r.error);
  // Both digests offered: the login works.
  SecConnection good(z.port());
  o.header_digest = o.data_digest = "CRC32C";
  LoginOutcome g = good.login(o);
  CHECK_MESSAGE(g.ok, g.error);
  CHECK(good.header_digest());
  CHECK(good.data_digest());
}

TEST_CASE("data digests with the raw client") {
  // 16 KiB PDUs, so a 128 KiB WRITE takes several unsolicited and solicited Data-Outs.
  Zumad z(sec_config({{kIqn, {}}},
                     "{ first_burst_length: 65536, max_recv_data_segment_length: 16384 }"));
  z.start();
  SecConnection c(z.port());
  LoginOutcome r = c.login(digest_login("iqn.2026-11.org.zuma:dd-raw"));
  REQUIRE_MESSAGE(r.ok, r.error);
  REQUIRE(c.header_digest());
  REQUIRE(c.data_digest());
  REQUIRE(c.clear_unit_attentions() == "");

  const auto a = make_pattern(8, 512, 64, 1);
  ScsiResult w = c.write10(64, a, 512, 4096);
  REQUIRE_MESSAGE(w.good(), w.describe());
  ScsiResult rd = c.read10(64, 8, 512);  // Data-In digests are checked by the client
  REQUIRE_MESSAGE(rd.good(), rd.describe());
  CHECK(check_pattern(rd.data, 512, 64, 1) == "");

  SUBCASE("corrupted data digest on a WRITE's immediate data") {
    const auto b = make_pattern(8, 512, 64, 2);
    ScsiResult bad = c.write10(64, b, 512, 4096, /*corrupt_pdu=*/0);
    CHECK_MESSAGE(is_crc_error(bad), bad.describe());
    // Nothing of it was written; the session goes on.
    ScsiResult again = c.read10(64, 8, 512);
    REQUIRE_MESSAGE(again.good(), again.describe());
    CHECK(check_pattern(again.data, 512, 64, 1) == "");
  }
  SUBCASE("corrupted data digest on an unsolicited Data-Out") {
    const auto b = make_pattern(16, 512, 64, 3);
    ScsiResult bad = c.write10(64, b, 512, 4096, /*corrupt_pdu=*/1);  // immediate 4 KiB + Data-Out
    CHECK_MESSAGE(is_crc_error(bad), bad.describe());
    ScsiResult again = c.read10(64, 8, 512);
    REQUIRE_MESSAGE(again.good(), again.describe());
    CHECK(check_pattern(again.data, 512, 64, 1) == "");
  }
  SUBCASE("corrupted data digest on a solicited Data-Out (after an R2T)") {
    // 128 KiB: 8 KiB immediate (PDU 0), 56 KiB unsolicited Data-Out (PDUs 1-4), the rest
    // after an R2T (PDUs 5-8).
    const auto b = make_pattern(256, 512, 1024, 4);
    ScsiResult bad = c.write10(1024, b, 512, 8192, /*corrupt_pdu=*/6);
    CHECK_MESSAGE(is_crc_error(bad), bad.describe());
  }
  SUBCASE("corrupted data digest on a NOP-Out: Reject reason 0x02") {
    const std::vector<uint8_t> ping(100, 0x5a);
    Received p = c.nop(ping, {.corrupt_data_digest = true});
    REQUIRE_MESSAGE(p.status == RecvStatus::kPdu, p.what());
    CHECK_MESSAGE(p.pdu.opcode() == 0x3f, p.what());
    CHECK_MESSAGE(p.pdu.bhs[2] == 0x02, p.what());
    Received ok = c.nop(ping);
    REQUIRE_MESSAGE(ok.status == RecvStatus::kPdu, ok.what());
    CHECK(ok.pdu.opcode() == 0x20);
    CHECK(ok.pdu.data == ping);
  }

  // Each corrupted PDU was counted once (show node, zuma_iscsi_*_total); no header error.
  const auto n = node_counters(z);
  CHECK(n["data_digest_errors"] == 1);
  CHECK(n["header_digest_errors"] == 0);

  // After each case: the session still reads and writes with good digests.
  const auto d = make_pattern(128, 512, 2048, 5);
  ScsiResult w2 = c.write10(2048, d, 512, 16384);
  REQUIRE_MESSAGE(w2.good(), w2.describe());
  ScsiResult r2 = c.read10(2048, 128, 512);
  REQUIRE_MESSAGE(r2.good(), r2.describe());
  CHECK(check_pattern(r2.data, 512, 2048, 5) == "");
}

TEST_CASE("a corrupted header digest closes that connection only") {
  Zumad z(sec_config({{kIqn, {}}}));
  z.start();
  LibiscsiSession other(z.portal(), {.initiator = "iqn.2026-11.org.zuma:hd-bystander",
                                     .target = kIqn,
                                     .header_digest_crc32c = true});
  REQUIRE_MESSAGE(other.ok(), other.error());
  SecConnection second(z.port());
  REQUIRE(second.login(digest_login("iqn.2026-11.org.zuma:hd-second")).ok);

  SUBCASE("on a NOP-Out") {
    SecConnection c(z.port());
    REQUIRE(c.login(digest_login("iqn.2026-11.org.zuma:hd-victim")).ok);
    Received p = c.nop({}, {.corrupt_header_digest = true});
    CHECK_MESSAGE(p.status == RecvStatus::kClosed, p.what());
  }
  SUBCASE("on a WRITE with immediate data") {
    SecConnection c(z.port());
    REQUIRE(c.login(digest_login("iqn.2026-11.org.zuma:hd-victim")).ok);
    std::vector<uint8_t> b(48, 0);
    b[0] = 0x01;
    b[1] = 0x80 | 0x20 | 0x01;
    put_be32(&b[16], 7);
    put_be32(&b[20], 4096);
    put_be32(&b[24], c.cmdsn());
    put_be32(&b[28], c.exp_statsn());
    b[32] = 0x2a;
    b[40] = 8;
    std::vector<uint8_t> data(4096, 0xee);
    CHECK(c.send_pdu(b, data, {.corrupt_header_digest = true}));
    CHECK(c.wait_closed(5000ms));
  }
  CHECK(
      eventually([&] { return z.log().find("header digest error") != std::string::npos; }, 3000ms));
  CHECK(node_counters(z)["header_digest_errors"] == 1);
  CHECK(other.write_read_verify(0, 64, 512, 7) == "");
  Received p = second.nop({});
  CHECK_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20), p.what());
}
