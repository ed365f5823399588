// CHAP (RFC 7143 12.1.3) against a real zumad: libiscsi (MD5 only, one-way and mutual,
// normal and discovery sessions) and the raw client of sec_client.hh for what libiscsi
// cannot do (CHAP_A 6, 7, 8, algorithm choice, reflection). Secrets are never those of
// docs: each test writes its own config.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <string>
#include <vector>

#include "tests/integration/harness.hh"
#include "tests/integration/security/sec_client.hh"

using namespace zuma::test;
using namespace zuma::test::sec;

namespace {

const std::string kIqn = "iqn.2026-11.org.zuma:sec";
const Creds kHost{"host1", "host1-secret-2026"};
const Creds kZuma{"zuma", "zuma-target-secret-26"};

std::string chap_yaml(const Creds& c, const std::optional<Creds>& mutual = std::nullopt,
                      std::string_view algorithms = "") {
  std::string y = "chap: { user: " + c.user + ", secret: \"" + c.secret + "\"";
  if (mutual) y += ", mutual_user: " + mutual->user + ", mutual_secret: \"" + mutual->secret + "\"";
  if (!algorithms.empty()) y += ", algorithms: " + std::string(algorithms);
  return y + " }";
}

LoginOptions raw_login(std::optional<Creds> chap, std::string algorithms = "5") {
  LoginOptions o;
  o.initiator = "iqn.2026-11.org.zuma:sec-raw";
  o.target = kIqn;
  o.chap = std::move(chap);
  o.chap_algorithms = std::move(algorithms);
  return o;
}

// zumad logged one warning naming the initiator and the address it came from.
void check_failure_logged(Zumad& z, const std::string& initiator, const std::string& address) {
  const bool found = eventually(
      [&] {
        const std::string log = z.log();
        size_t pos = 0;
        while ((pos = log.find(" warning ", pos)) != std::string::npos) {
          const size_t eol = log.find('\n', pos);
          const std::string line = log.substr(pos, eol - pos);
          if (line.find(initiator) != std::string::npos &&
              line.find(address) != std::string::npos &&
              line.find("CHAP authentication") != std::string::npos)
            return true;
          pos = eol;
        }
        return false;
      },
      3000ms);
  CHECK_MESSAGE(found, "no warning line naming " << initiator << " and " << address
                                                 << " in the log:\n"
                                                 << z.log_tail(4000));
}

}  // namespace

TEST_CASE(
    "CHAP one-way with libiscsi (MD5): right secret logs in, wrong secret, wrong user and "
    "no credentials are refused") {
  Zumad z(sec_config({{kIqn, {chap_yaml(kHost)}}}));
  z.start();
  const std::string ini = "iqn.2026-11.org.zuma:sec-libiscsi";

  {
    LibiscsiSession s(z.portal(), {.initiator = ini, .target = kIqn, .chap = kHost});
    REQUIRE_MESSAGE(s.ok(), s.error());
    CHECK(s.write_read_verify(8, 16, 512, 11) == "");
  }
  {
    LibiscsiSession s(
        z.portal(),
        {.initiator = ini, .target = kIqn, .chap = Creds{kHost.user, "host1-secret-2027"}});
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Authentication failure") != std::string::npos, s.error());
  }
  {
    LibiscsiSession s(z.portal(),
                      {.initiator = ini, .target = kIqn, .chap = Creds{"host2", kHost.secret}});
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Authentication failure") != std::string::npos, s.error());
  }
  {
    LibiscsiSession s(z.portal(), {.initiator = ini, .target = kIqn});  // offers AuthMethod=None
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Authentication failure") != std::string::npos, s.error());
  }
  // The exact status for "no credentials when required": 0x0201.
  {
    SecConnection c(z.port());
    LoginOutcome r = c.login(raw_login(std::nullopt));
    CHECK_FALSE(r.ok);
    CHECK_MESSAGE(r.status() == 0x0201, r.error);
    CHECK(c.wait_closed(5000ms));
  }
  // After all those failures a good login still works.
  LibiscsiSession s(z.portal(), {.initiator = ini, .target = kIqn, .chap = kHost});
  REQUIRE_MESSAGE(s.ok(), s.error());
  CHECK(s.write_read_verify(100, 8, 512, 12) == "");
}

TEST_CASE(
    "mutual CHAP with libiscsi: the target proves its secret; a wrong target secret or "
    "name makes libiscsi refuse the login") {
  Zumad z(sec_config({{kIqn, {chap_yaml(kHost, kZuma)}}}));
  z.start();
  const std::string ini = "iqn.2026-11.org.zuma:sec-mutual";
  {
    LibiscsiSession s(z.portal(),
                      {.initiator = ini, .target = kIqn, .chap = kHost, .mutual = kZuma});
    REQUIRE_MESSAGE(s.ok(), s.error());
    CHECK(s.write_read_verify(0, 32, 512, 21) == "");
  }
  {
    // libiscsi expects another target secret: zumad's CHAP_R does not match.
    LibiscsiSession s(z.portal(), {.initiator = ini,
                                   .target = kIqn,
                                   .chap = kHost,
                                   .mutual = Creds{kZuma.user, "not-the-target-secret"}});
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Invalid CHAP_R response from the target") != std::string::npos,
                  s.error());
  }
  {
    LibiscsiSession s(z.portal(), {.initiator = ini,
                                   .target = kIqn,
                                   .chap = kHost,
                                   .mutual = Creds{"other-target", kZuma.secret}});
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Wrong CHAP targetname") != std::string::npos, s.error());
  }
  {
    // Wrong initiator secret with mutual CHAP: refused before the target answers.
    LibiscsiSession s(z.portal(), {.initiator = ini,
                                   .target = kIqn,
                                   .chap = Creds{kHost.user, "host1-secret-2027"},
                                   .mutual = kZuma});
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Authentication failure") != std::string::npos, s.error());
  }
  // One-way CHAP against a mutual target is allowed (the initiator chooses not to check).
  LibiscsiSession s(z.portal(), {.initiator = ini, .target = kIqn, .chap = kHost});
  REQUIRE_MESSAGE(s.ok(), s.error());
}

TEST_CASE(
    "discovery CHAP with libiscsi: right secret lists targets, wrong or no secret is "
    "refused with 0x0201; normal sessions are not affected") {
  const Creds disc{"discover", "discovery-secret-2026"};
  Zumad z(sec_config({{kIqn, {}}}, "", "{ " + chap_yaml(disc) + " }"));
  z.start();
  const std::string ini = "iqn.2026-11.org.zuma:sec-disc";

  DiscoveryResult ok = discover_as(z.portal(), ini, disc);
  REQUIRE_MESSAGE(ok.error == "", ok.error);
  CHECK(ok.targets == std::vector<std::string>{kIqn});

  DiscoveryResult wrong = discover_as(z.portal(), ini, Creds{disc.user, "discovery-secret-2027"});
  CHECK(wrong.targets.empty());
  CHECK_MESSAGE(wrong.error.find("Authentication failure") != std::string::npos, wrong.error);

  DiscoveryResult none = discover_as(z.portal(), ini);
  CHECK(none.targets.empty());
  CHECK_MESSAGE(none.error.find("Authentication failure") != std::string::npos, none.error);

  {
    SecConnection c(z.port());
    LoginOptions o;
    o.initiator = ini;
    o.discovery = true;
    LoginOutcome r = c.login(o);
    CHECK_MESSAGE(r.status() == 0x0201, r.error);
  }
  {
    SecConnection c(z.port());
    LoginOptions o;
    o.initiator = ini;
    o.discovery = true;
    o.chap = Creds{disc.user, "discovery-secret-2027"};
    LoginOutcome r = c.login(o);
    CHECK_MESSAGE(r.status() == 0x0201, r.error);
    check_failure_logged(z, ini, c.local_address());
  }
  // discovery.chap does not apply to normal sessions of a target without chap.
  LibiscsiSession s(z.portal(), {.initiator = ini, .target = kIqn});
  REQUIRE_MESSAGE(s.ok(), s.error());
  CHECK(s.write_read_verify(0, 8, 512, 31) == "");
}

TEST_CASE("CHAP with the raw client: CHAP_A 5, 6, 7 and 8, right and wrong secrets") {
  Zumad z(sec_config({{kIqn, {chap_yaml(kHost)}}}));
  z.start();
  for (int a : {kChapMd5, kChapSha1, kChapSha256, kChapSha3_256}) {
    CAPTURE(a);
    {
      SecConnection c(z.port());
      LoginOutcome r = c.login(raw_login(kHost, std::to_string(a)));
      REQUIRE_MESSAGE(r.ok, r.error);
      CHECK(r.chap_a == a);
      Received p = c.nop({});
      CHECK_MESSAGE((p.status == RecvStatus::kPdu && p.pdu.opcode() == 0x20), p.what());
    }
    {
      SecConnection c(z.port());
      LoginOutcome r =
          c.login(raw_login(Creds{kHost.user, "host1-secret-2027"}, std::to_string(a)));
      CHECK_FALSE(r.ok);
      CHECK(r.chap_a == a);
      CHECK_MESSAGE(r.status() == 0x0201, r.error);
      CHECK(c.wait_closed(5000ms));
      check_failure_logged(z, "iqn.2026-11.org.zuma:sec-raw", c.local_address());
    }
  }
}

TEST_CASE("CHAP algorithm choice: the strongest offered and allowed; none acceptable -> 0x0201") {
  SUBCASE("all allowed") {
    Zumad z(sec_config({{kIqn, {chap_yaml(kHost)}}}));
    z.start();
    struct Case {
      std::string offered;
      int picked;
    };
    for (const Case& k :
         {Case{"5,7", 7}, Case{"7,5", 7}, Case{"5,6", 6}, Case{"8,5,6,7", 8}, Case{"99,5", 5}}) {
      CAPTURE(k.offered);
      SecConnection c(z.port());
      LoginOutcome r = c.login(raw_login(kHost, k.offered));
      CHECK_MESSAGE(r.ok, r.error);
      CHECK(r.chap_a == k.picked);
    }
    // Only unknown values: nothing to pick.
    SecConnection c(z.port());
    LoginOutcome r = c.login(raw_login(kHost, "4,9,128"));
    CHECK_FALSE(r.ok);
    CHECK_MESSAGE(r.status() == 0x0201, r.error);
  }
  SUBCASE("algorithms: [MD5]") {
    Zumad z(sec_config({{kIqn, {chap_yaml(kHost, std::nullopt, "[MD5]")}}}));
    z.start();
    {
      SecConnection c(z.port());
      LoginOutcome r = c.login(raw_login(kHost, "7"));
      CHECK_FALSE(r.ok);
      CHECK_MESSAGE(r.status() == 0x0201, r.error);
      CHECK(c.wait_closed(5000ms));
    }
    {
      SecConnection c(z.port());
      LoginOutcome r = c.login(raw_login(kHost, "7,8,6,5"));
      CHECK_MESSAGE(r.ok, r.error);
      CHECK(r.chap_a == kChapMd5);
    }
  }
  SUBCASE("algorithms: [SHA-256, SHA3-256]: libiscsi (MD5 only) is refused") {
    Zumad z(sec_config({{kIqn, {chap_yaml(kHost, std::nullopt, "[SHA-256, SHA3-256]")}}}));
    z.start();
    LibiscsiSession s(z.portal(),
                      {.initiator = "iqn.2026-11.org.zuma:sec-md5", .target = kIqn, .chap = kHost});
    CHECK_FALSE(s.ok());
    CHECK_MESSAGE(s.error().find("Authentication failure") != std::string::npos, s.error());
    SecConnection c(z.port());
    LoginOutcome r = c.login(raw_login(kHost, "5,6,7"));
    CHECK_MESSAGE(r.ok, r.error);
    CHECK(r.chap_a == kChapSha256);
  }
}

TEST_CASE("CHAP challenges are fresh: two logins never see the same CHAP_C") {
  Zumad z(sec_config({{kIqn, {chap_yaml(kHost)}}}));
  z.start();
  std::vector<std::string> seen;
  for (int i = 0; i < 4; ++i) {
    SecConnection c(z.port());
    LoginOutcome r = c.login(raw_login(kHost, "7"));
    REQUIRE_MESSAGE(r.ok, r.error);
    const std::string ch = key_value(r.keys, "CHAP_C");
    auto bytes = decode_binary(ch);
    REQUIRE(bytes);
    CHECK(bytes->size() >= 16);  // RFC 7143 12.1.3 recommends at least the hash length
    for (const std::string& s : seen) CHECK(s != ch);
    seen.push_back(ch);
  }
}

TEST_CASE(
    "mutual CHAP with the raw client: the target's answer is right for every algorithm; "
    "a reflected challenge is refused") {
  Zumad z(sec_config({{kIqn, {chap_yaml(kHost, kZuma)}}}));
  z.start();
  for (int a : {kChapMd5, kChapSha1, kChapSha256, kChapSha3_256}) {
    CAPTURE(a);
    SecConnection c(z.port());
    LoginOptions o = raw_login(kHost, std::to_string(a));
    o.mutual = kZuma;
    LoginOutcome r = c.login(o);  // checks the target's CHAP_N and CHAP_R
    CHECK_MESSAGE(r.ok, r.error);
  }
  {
    // RFC 7143 12.1.3: the initiator sends the target's own challenge back to have the
    // target compute the answer it needs (reflection attack).
    SecConnection c(z.port());
    LoginOptions o = raw_login(kHost, "7");
    o.reflect_challenge = true;
    LoginOutcome r = c.login(o);
    CHECK_FALSE(r.ok);
    CHECK_MESSAGE(r.status() == 0x0201, r.error);
    CHECK_FALSE(has_key(r.keys, "CHAP_R"));  // no answer leaked
    CHECK(c.wait_closed(5000ms));
    CHECK(eventually([&] { return z.log().find("reflected") != std::string::npos; }, 3000ms));
  }
}

TEST_CASE("mutual CHAP asked of a target without mutual credentials is refused") {
  Zumad z(sec_config({{kIqn, {chap_yaml(kHost)}}}));
  z.start();
  SecConnection c(z.port());
  LoginOptions o = raw_login(kHost, "7");
  o.mutual = kZuma;
  LoginOutcome r = c.login(o);
  CHECK_FALSE(r.ok);
  CHECK_MESSAGE(r.status() == 0x0201, r.error);
}

TEST_CASE("CHAP secret_file: a world-readable file fails --check-config; a 0600 one works") {
  TempDir dir;
  const std::string secret_path = dir.file("host1.secret");
  write_file(secret_path, kHost.secret + "\n");  // one trailing newline is dropped
  ::chmod(secret_path.c_str(), 0644);
  const std::string yaml =
      replace_all(sec_config({{kIqn, {"chap: { user: host1, secret_file: " + secret_path + " }"}}}),
                  "@PORT0@", "3260");
  const std::string cfg = dir.file("zumad.yaml");
  write_file(cfg, replace_all(yaml, "@DIR@", dir.path()));

  RunResult bad = run_program({zumad_path(), "--check-config", cfg});
  CHECK(bad.exit_code != 0);
  CHECK_MESSAGE(bad.output.find("world-readable") != std::string::npos, bad.output);
  CHECK_MESSAGE(bad.output.find(secret_path) != std::string::npos, bad.output);
  // FILE:LINE of the secret_file key (line 5 of sec_config's text).
  CHECK_MESSAGE(bad.output.find(cfg + ":5:") != std::string::npos, bad.output);

  ::chmod(secret_path.c_str(), 0600);
  RunResult good = run_program({zumad_path(), "--check-config", cfg});
  CHECK_MESSAGE(good.exit_code == 0, good.output);

  Zumad z(sec_config({{kIqn, {"chap: { user: host1, secret_file: " + secret_path + " }"}}}));
  z.start();
  LibiscsiSession s(z.portal(),
                    {.initiator = "iqn.2026-11.org.zuma:sec-file", .target = kIqn, .chap = kHost});
  REQUIRE_MESSAGE(s.ok(), s.error());
  CHECK(s.write_read_verify(0, 8, 512, 41) == "");
}

TEST_CASE("CHAP secret_file: exactly one trailing newline is dropped") {
  // "secret\n\n": the secret is "secret\n" (the second newline is part of it).
  TempDir dir;
  const std::string lf = dir.file("lf.secret"), crlf = dir.file("crlf.secret");
  write_file(lf, kHost.secret + "\n\n");
  write_file(crlf, kHost.secret + "\r\n");
  ::chmod(lf.c_str(), 0600);
  ::chmod(crlf.c_str(), 0600);
  const std::string iqn2 = "iqn.2026-11.org.zuma:sec-crlf";
  Zumad z(sec_config({{kIqn, {"chap: { user: host1, secret_file: " + lf + " }"}},
                      {iqn2, {"chap: { user: host1, secret_file: " + crlf + " }"}}}));
  z.start();
  auto try_login = [&](const std::string& target, const std::string& secret) {
    SecConnection c(z.port());
    LoginOptions o = raw_login(Creds{kHost.user, secret});
    o.target = target;
    return c.login(o);
  };
  LoginOutcome one_left = try_login(kIqn, kHost.secret + "\n");
  CHECK_MESSAGE(one_left.ok, one_left.error);
  LoginOutcome stripped_both = try_login(kIqn, kHost.secret);
  CHECK(stripped_both.status() == 0x0201);
  LoginOutcome crlf_dropped = try_login(iqn2, kHost.secret);
  CHECK_MESSAGE(crlf_dropped.ok, crlf_dropped.error);
}

namespace {

// A login split over two PDUs (RFC 7143 11.12.2): the first with C=1 (more text follows),
// the second T=1 from the operational stage to full feature phase, the text of both
// parsed together. No AuthMethod key (an operational-stage PDU may not carry one). The
// checks zumad makes only on "the first PDU" (target, ACL, CHAP policy) must still
// happen. Returns what the second PDU got back.
Received split_login(SecConnection& c, const std::string& first_text, bool first_transit) {
  using namespace std::string_literals;
  std::vector<uint8_t> p1 =
      login_request(0, first_transit ? 1 : 0, first_transit, 1, 1, 0, 0, first_text);
  p1[1] |= 0x40;  // C: continue
  if (!c.send_raw(p1)) return {};
  Received r1 = c.recv(5000ms);
  if (r1.status != RecvStatus::kPdu || r1.pdu.bhs[36] != 0) return r1;
  const std::string ops = "HeaderDigest=None"s + '\0' + "DataDigest=None"s + '\0' +
                          "MaxRecvDataSegmentLength=262144"s + '\0';
  std::vector<uint8_t> p2 = login_request(1, 3, true, 1, 1, get_be32(&r1.pdu.bhs[24]) + 1, 0, ops);
  if (!c.send_raw(p2)) return {};
  return c.recv(5000ms);
}

}  // namespace

TEST_CASE("a first login PDU with the C bit does not skip discovery CHAP") {
  using namespace std::string_literals;
  Zumad z(sec_config({{kIqn, {}}}, "",
                     "{ chap: { user: discover, secret: \"discovery-secret-2026\" } }"));
  z.start();
  SecConnection c(z.port());
  const std::string text =
      "InitiatorName=iqn.2026-11.org.zuma:sec-cbit"s + '\0' + "SessionType=Discovery"s + '\0';
  Received r = split_login(c, text, false);
  MESSAGE("second login PDU got: " << r.what());
  REQUIRE_MESSAGE(z.running(), "zumad died; log:\n" << z.log_tail(3000));
  const bool refused =
      r.status != RecvStatus::kPdu || (r.pdu.opcode() == 0x23 && r.pdu.bhs[36] != 0);
  CHECK_MESSAGE(refused,
                "a discovery session reached full feature phase without CHAP: " << r.what());
  if (!refused) {
    // What a stranger can then learn.
    std::vector<uint8_t> b(48, 0);
    b[0] = 0x40 | 0x04;
    b[1] = 0x80;
    put_be32(&b[16], 9);
    put_be32(&b[20], 0xffffffff);
    const std::string st = "SendTargets=All"s + '\0';
    c.send_pdu(b, {reinterpret_cast<const uint8_t*>(st.data()), st.size()});
    Received t = c.recv(5000ms);
    MESSAGE("SendTargets=All answered without CHAP: "
            << (t.status == RecvStatus::kPdu ? keys_str(parse_keys(t.pdu.data)) : t.what()));
  }
}

TEST_CASE("a first login PDU with the C bit does not skip target CHAP, nor crash zumad") {
  using namespace std::string_literals;
  Zumad z(sec_config({{kIqn, {chap_yaml(kHost)}}}));
  z.start();
  SecConnection c(z.port());
  const std::string text = "InitiatorName=iqn.2026-11.org.zuma:sec-cbit"s + '\0' + "TargetName="s +
                           kIqn + '\0' + "SessionType=Normal"s + '\0';
  Received r = split_login(c, text, false);
  MESSAGE("second login PDU got: " << r.what());
  const bool alive = !eventually([&] { return !z.running(); }, 1000ms);  // gives a crash 1 s
  CHECK_MESSAGE(alive, "zumad died (exit status " << z.wait_exit(0ms).value_or(999)
                                                  << ", -11 = SIGSEGV) after a login whose first "
                                                     "PDU had the C bit; its log:\n"
                                                  << z.log_tail(2000));
  if (!alive) return;
  const bool refused =
      r.status != RecvStatus::kPdu || (r.pdu.opcode() == 0x23 && r.pdu.bhs[36] != 0);
  CHECK_MESSAGE(refused, "a session reached full feature phase without CHAP: " << r.what());
  // A correct login still works afterwards.
  LibiscsiSession s(z.portal(),
                    {.initiator = "iqn.2026-11.org.zuma:sec-after", .target = kIqn, .chap = kHost});
  CHECK_MESSAGE(s.ok(), s.error());
}
