// Security of replication links (issue 8; docs/REPLICATION.md "Authentication", "TLS"):
// two zumads on 127.0.0.1, a group of two LUs, one async link. Certificates are made here
// with the openssl CLI (a CA, a certificate for each site, a rogue CA and a certificate it
// signed for site A's name).
//  - mutual TLS and a shared secret: writes reach the secondary, images equal byte for byte;
//    group status says TLS and secret;
//  - a rogue certificate, a primary that does not trust the secondary's CA, a wrong
//    peer_name: refused, said in group status and the log of each side, counted; the
//    certificate file replaced by a good one: the link connects, no restart;
//  - TLS on one side only (either side): refused with a message that says so;
//  - a TLS 1.3 PSK: works; another PSK refused; the PSK file fixed: connects;
//  - the secret: a wrong one refused on both sides (status, metrics, logs); the secret
//    file fixed: the link connects and catches up (images equal); a secret on one side only
//    (either side): refused;
//  - malformed authentication frames close that connection only.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "replication/protocol.hh"
#include "tests/integration/control_client.hh"
#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;
using zuma::admin::Json;
namespace proto = zuma::replication::proto;

namespace {

constexpr uint32_t kBs = 512;
constexpr uint64_t kDataBlocks = 4 * 1024 * 1024 / kBs;
constexpr uint64_t kLogsBlocks = 2 * 1024 * 1024 / kBs;
constexpr const char* kIqn = "iqn.2026-11.org.zuma:db";
const std::string kConnected = "zuma_replication_link_connected{group=\"db\",link=\"dr\"}";
const std::string kLinkFailures =
    "zuma_replication_link_auth_failures_total{group=\"db\",link=\"dr\"}";
const std::string kListenerFailures = "zuma_replication_listener_auth_failures_total";

void openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  const RunResult r = run_program(argv);
  REQUIRE_MESSAGE(r.exit_code == 0, "openssl " << args[0] << ": " << r.output);
}

// A CA, site-a and site-b certificates it signs (ECDSA P-256, names as DNS SANs), and a rogue
// CA with its own certificate for "site-a". Keys are 0600.
struct Pki {
  TempDir dir;
  Pki() {
    ca("ca", "zuma test CA");
    ca("rogue-ca", "rogue CA");
    cert("a", "site-a", "ca");
    cert("b", "site-b", "ca");
    cert("rogue", "site-a", "rogue-ca");
  }
  std::string f(const std::string& name) const { return dir.file(name); }
  void ca(const std::string& n, const std::string& cn) {
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f(n + ".key"), "-out", f(n + ".pem"), "-days", "2", "-subj", "/CN=" + cn});
    ::chmod(f(n + ".key").c_str(), 0600);
  }
  void cert(const std::string& n, const std::string& cn, const std::string& issuer) {
    openssl({"req",
             "-x509",
             "-newkey",
             "ec",
             "-pkeyopt",
             "ec_paramgen_curve:P-256",
             "-nodes",
             "-keyout",
             f(n + ".key"),
             "-out",
             f(n + ".pem"),
             "-days",
             "2",
             "-subj",
             "/CN=" + cn,
             "-CA",
             f(issuer + ".pem"),
             "-CAkey",
             f(issuer + ".key"),
             "-addext",
             "subjectAltName=DNS:" + cn,
             "-addext",
             "basicConstraints=CA:FALSE"});
    ::chmod(f(n + ".key").c_str(), 0600);
  }
  // A tls: mapping for `who` ("a", "b", "rogue") trusting `ca`, expecting `peer`.
  std::string tls(const std::string& who, const std::string& ca, const std::string& peer) const {
    return "{ cert: " + f(who + ".pem") + ", key: " + f(who + ".key") + ", ca: " + f(ca + ".pem") +
           (peer.empty() ? "" : ", peer_name: " + peer) + " }";
  }
};

void write_secret(const std::string& path, const std::string& text) {
  write_file(path, text + "\n");
  ::chmod(path.c_str(), 0600);
}

// Ports: 0 iSCSI, 1 metrics, 2 replication (secondary). `node_extra` and `group_extra`
// are YAML keys added to node and to the group.
std::string site(const std::string& name, const std::string& node_extra, const std::string& group) {
  return "node: { name: " + name +
         ", data_dir: @DIR@/var, reactors: 2, log_level: info,\n"
         "        metrics: \"127.0.0.1:@PORT1@\"" +
         node_extra +
         " }\n"
         "portals: [ \"127.0.0.1:@PORT0@\" ]\n"
         "targets:\n"
         "  - iqn: " +
         std::string(kIqn) +
         "\n"
         "    luns:\n"
         "      - { id: 0, name: data, size: 4MiB, backend: file, path: @DIR@/data.img }\n"
         "      - { id: 1, name: logs, size: 2MiB, backend: file, path: @DIR@/logs.img }\n"
         "groups:\n" +
         group;
}

std::string secondary_config(const std::string& listener_tls, const std::string& group_extra) {
  return site("site-b",
              ", replication_listen: \"127.0.0.1:@PORT2@\"" +
                  (listener_tls.empty() ? "" : ",\n        replication_tls: " + listener_tls),
              "  - { name: db, role: secondary, luns: [ data, logs ]" + group_extra + " }\n");
}

std::string primary_config(uint16_t peer, const std::string& link_extra,
                           const std::string& mode = "async") {
  return site("site-a", "",
              "  - name: db\n"
              "    luns: [ data, logs ]\n"
              "    log: { path: @DIR@/db.rlog, size: 16MiB }\n"
              "    links:\n"
              "      - { name: dr, peer: \"127.0.0.1:" +
                  std::to_string(peer) + "\", mode: " + mode + link_extra + " }\n");
}

double metric(Zumad& z, const std::string& series) {
  return metric_sample(http_get(z.port(1), "/metrics"), series).value_or(-1);
}

Json status_row(Zumad& z) {
  auto c = connect_control(z);
  REQUIRE_MESSAGE(c.has_value(), c.error());
  auto r = c->call("group status", Json{{"group", "db"}});
  REQUIRE_MESSAGE(r.has_value(), r.error());
  REQUIRE_MESSAGE(r->ok, r->error);
  REQUIRE(r->result["rows"].size() == 1);
  return r->result["rows"][0];
}

// The primary's link is in state auth_failed with an error containing `what`, the failure
// counted on the primary (and on the secondary's listener when `listener`), and the
// secondary's log says `secondary_says`.
void expect_refused(Zumad& primary, Zumad& secondary, const std::string& what,
                    const std::string& secondary_says, bool listener = true) {
  Json row;
  const bool seen = eventually([&] {
    row = status_row(primary);
    return row[2] == "auth_failed" && row[8].get<std::string>().find(what) != std::string::npos;
  });
  CHECK_MESSAGE(seen, "link state " << row[2] << ", last error: " << row[8] << "\n"
                                    << primary.log_tail(3000));
  CHECK(metric(primary, kLinkFailures) >= 1);
  CHECK(metric(primary, kConnected) == 0);
  if (listener) CHECK(metric(secondary, kListenerFailures) >= 1);
  CHECK_MESSAGE(
      eventually([&] { return secondary.log().find(secondary_says) != std::string::npos; }),
      "the secondary's log lacks '" << secondary_says << "':\n"
                                    << secondary.log_tail(3000));
  CHECK(primary.log().find("link dr to 127.0.0.1:" + std::to_string(secondary.port(2))) !=
        std::string::npos);
}

struct Model {
  std::vector<uint64_t> data = std::vector<uint64_t>(kDataBlocks, 0);
  std::vector<uint64_t> logs = std::vector<uint64_t>(kLogsBlocks, 0);
};

// `count` writes of 1..32 blocks at random places of both LUs through the primary.
void write_some(Zumad& primary, Model& m, uint64_t& seed, int count) {
  Session s(primary.portal(), kIqn);
  std::mt19937_64 rng(seed + 17);
  for (int i = 0; i < count; ++i) {
    const int lun = int(rng() % 2);
    auto& image = lun == 0 ? m.data : m.logs;
    const uint64_t blocks = 1 + rng() % 32;
    const uint64_t lba = rng() % (image.size() - blocks + 1);
    const auto data = make_pattern(blocks, kBs, lba, ++seed);
    Task w = s.write16(lun, lba, data, kBs);
    REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
    for (uint64_t b = lba; b < lba + blocks; ++b) image[b] = seed;
  }
}

void wait_settled(Zumad& primary, Zumad& secondary) {
  double next = -1, acked = -1, applied = -1;
  const bool ok = eventually([&] {
    next = metric(primary, "zuma_replication_log_next_seq{group=\"db\"}");
    acked = metric(primary, "zuma_replication_link_acked_seq{group=\"db\",link=\"dr\"}");
    applied = metric(secondary, "zuma_replication_replica_applied_seq{group=\"db\"}");
    return next > 1 && acked == next - 1 && applied == acked;
  });
  REQUIRE_MESSAGE(ok, "not settled: next " << next << ", acked " << acked << ", applied " << applied
                                           << "\n"
                                           << primary.log_tail(3000) << "\n"
                                           << secondary.log_tail(3000));
}

// Both stop (exit 0); the secondary's images equal the primary's and the model.
void stop_and_compare(Zumad& primary, Zumad& secondary, const Model& m) {
  CHECK(primary.stop() == 0);
  CHECK(secondary.stop() == 0);
  check_image(primary.file("data.img"), m.data, kBs);
  check_image(primary.file("logs.img"), m.logs, kBs);
  for (const char* name : {"data.img", "logs.img"})
    CHECK_MESSAGE(read_file(primary.file(name)) == read_file(secondary.file(name)),
                  name << " differs between the primary and the secondary");
}

void wait_connected(Zumad& primary) {
  REQUIRE_MESSAGE(
      eventually([&] { return metric(primary, kConnected) == 1; }, std::chrono::seconds(30)),
      "the link did not connect:\n"
          << primary.log_tail(3000));
}

}  // namespace

TEST_CASE("mutual TLS and a secret: the secondary's images equal the primary's") {
  Pki pki;
  Zumad secondary(secondary_config(pki.tls("b", "ca", "site-a"), ", secret_file: @DIR@/db.secret"),
                  3);
  Zumad primary(primary_config(secondary.port(2), ", secret_file: @DIR@/dr.secret, tls: " +
                                                      pki.tls("a", "ca", "site-b")),
                2);
  write_secret(secondary.file("db.secret"), "replication-secret-2026");
  write_secret(primary.file("dr.secret"), "replication-secret-2026");
  secondary.start();
  primary.start();
  Model m;
  uint64_t seed = 0;
  write_some(primary, m, seed, 150);
  wait_settled(primary, secondary);
  const Json row = status_row(primary);
  CHECK(row[2] == "connected");
  CHECK(row[10].get<std::string>().find("TLSv1.3") != std::string::npos);
  CHECK(row[10].get<std::string>().find("secret") != std::string::npos);
  CHECK(secondary.log().find("certificate /CN=site-a") != std::string::npos);
  CHECK(metric(primary, kLinkFailures) == 0);
  CHECK(metric(secondary, kListenerFailures) == 0);
  stop_and_compare(primary, secondary, m);
}

TEST_CASE("TLS: a rogue certificate, an untrusted CA and a wrong peer name are refused") {
  Pki pki;
  const std::string listener = pki.tls("b", "ca", "");
  SUBCASE("the primary's certificate is signed by another CA; replaced by a good one: connects") {
    Zumad secondary(secondary_config(listener, ""), 3);
    // The link's certificate files are copies, so that the test can fix them in place.
    Zumad primary(
        primary_config(secondary.port(2), ", tls: { cert: @DIR@/a.pem, key: @DIR@/a.key, ca: " +
                                              pki.f("ca.pem") + " }"),
        2);
    std::filesystem::copy_file(pki.f("rogue.pem"), primary.file("a.pem"));
    std::filesystem::copy_file(pki.f("rogue.key"), primary.file("a.key"));
    secondary.start();
    primary.start();
    expect_refused(primary, secondary, "TLS handshake failed", "certificate verify failed");
    const Json srow = status_row(secondary);
    CHECK(srow[8].get<std::string>().find("certificate verify failed") != std::string::npos);
    // Rotation without a restart: the next connection reads the files again.
    std::filesystem::copy_file(pki.f("a.pem"), primary.file("a.pem"),
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(pki.f("a.key"), primary.file("a.key"),
                               std::filesystem::copy_options::overwrite_existing);
    wait_connected(primary);
    Model m;
    uint64_t seed = 0;
    write_some(primary, m, seed, 40);
    wait_settled(primary, secondary);
    stop_and_compare(primary, secondary, m);
  }
  SUBCASE("the primary does not trust the secondary's CA") {
    Zumad secondary(secondary_config(listener, ""), 3);
    Zumad primary(primary_config(secondary.port(2), ", tls: " + pki.tls("a", "rogue-ca", "")), 2);
    secondary.start();
    primary.start();
    expect_refused(primary, secondary, "certificate verify failed", "TLS handshake failed");
  }
  SUBCASE("the secondary's certificate is not for the expected peer name") {
    Zumad secondary(secondary_config(listener, ""), 3);
    Zumad primary(primary_config(secondary.port(2), ", tls: " + pki.tls("a", "ca", "site-x")), 2);
    secondary.start();
    primary.start();
    expect_refused(primary, secondary, "hostname mismatch", "TLS handshake failed");
  }
}

TEST_CASE("TLS on one side only is refused, said on both sides") {
  Pki pki;
  SUBCASE("the listener has TLS, the link not") {
    Zumad secondary(secondary_config(pki.tls("b", "ca", ""), ""), 3);
    Zumad primary(primary_config(secondary.port(2), ""), 2);
    secondary.start();
    primary.start();
    expect_refused(primary, secondary, "TLS required", "TLS required");
  }
  SUBCASE("the link has TLS, the listener not") {
    Zumad secondary(secondary_config("", ""), 3);
    Zumad primary(primary_config(secondary.port(2), ", tls: " + pki.tls("a", "ca", "")), 2);
    secondary.start();
    primary.start();
    expect_refused(primary, secondary, "does not use TLS",
                   "this node's replication listener does not");
  }
}

TEST_CASE("TLS 1.3 PSK: the right key replicates, another is refused until the file is fixed") {
  Zumad secondary(secondary_config("{ psk_file: @DIR@/psk }", ""), 3);
  Zumad primary(primary_config(secondary.port(2), ", tls: { psk_file: @DIR@/psk }", "sync"), 2);
  write_secret(secondary.file("psk"), "0123456789abcdef0123456789abcdef");
  write_secret(primary.file("psk"), "fedcba9876543210fedcba9876543210");
  secondary.start();
  primary.start();
  expect_refused(primary, secondary, "TLS handshake failed", "TLS handshake failed");
  write_secret(primary.file("psk"), "0123456789abcdef0123456789abcdef");
  wait_connected(primary);
  CHECK(status_row(primary)[10].get<std::string>().find("TLSv1.3") != std::string::npos);
  REQUIRE(eventually([&] {
    return metric(primary, "zuma_replication_link_holding{group=\"db\",link=\"dr\"}") == 1;
  }));
  Model m;
  uint64_t seed = 0;
  write_some(primary, m, seed, 60);  // sync: each acknowledged by the secondary
  wait_settled(primary, secondary);
  stop_and_compare(primary, secondary, m);
}

TEST_CASE("the secret: a wrong one is refused on both sides; fixed, the link catches up") {
  Zumad secondary(secondary_config("", ", secret_file: @DIR@/db.secret"), 3);
  Zumad primary(primary_config(secondary.port(2), ", secret_file: @DIR@/dr.secret"), 2);
  write_secret(secondary.file("db.secret"), "the-right-secret-2026");
  write_secret(primary.file("dr.secret"), "a-wrong-secret-2026");
  secondary.start();
  primary.start();
  expect_refused(primary, secondary, "authentication failed", "does not match this group's secret");
  const Json srow = status_row(secondary);
  CHECK(srow[8].get<std::string>().find("authentication failed") != std::string::npos);
  CHECK(metric(secondary, "zuma_replication_replica_applied_seq{group=\"db\"}") == 0);
  // Writes meanwhile stay in the primary's log; the fixed file is read at the next attempt.
  Model m;
  uint64_t seed = 0;
  write_some(primary, m, seed, 80);
  write_secret(primary.file("dr.secret"), "the-right-secret-2026");
  wait_connected(primary);
  wait_settled(primary, secondary);
  CHECK(status_row(primary)[10] == "plaintext, secret");
  stop_and_compare(primary, secondary, m);
}

TEST_CASE("a secret on one side only is refused") {
  SUBCASE("the secondary has one, the primary's link not") {
    Zumad secondary(secondary_config("", ", secret: \"only-here-secret-1\""), 3);
    Zumad primary(primary_config(secondary.port(2), ""), 2);
    secondary.start();
    primary.start();
    expect_refused(primary, secondary, "authentication required", "authentication required");
  }
  SUBCASE("the primary's link has one, the secondary not") {
    Zumad secondary(secondary_config("", ""), 3);
    Zumad primary(primary_config(secondary.port(2), ", secret: \"only-there-secret\""), 2);
    secondary.start();
    primary.start();
    expect_refused(primary, secondary, "authentication not configured",
                   "authentication not configured");
    // Then the secondary is given the secret (a restart: inline secrets are read at start).
    CHECK(secondary.stop() == 0);
    write_file(secondary.config_path(),
               replace_all(read_file(secondary.config_path()), "luns: [ data, logs ] }",
                           "luns: [ data, logs ], secret: \"only-there-secret\" }"));
    secondary.start();
    wait_connected(primary);
  }
}

TEST_CASE("malformed authentication frames close that connection only") {
  Zumad secondary(secondary_config("", ", secret: \"replication-secret\""), 3);
  secondary.start();
  const std::string listen = "127.0.0.1:" + std::to_string(secondary.port(2));
  auto hello = [](const std::string& nonce) {
    return R"({"protocol":)" + std::to_string(proto::kProtocolVersion) +
           R"(,"group":"db","link":"dr","log_id":7,"last":0,"head":1,)"
           R"("luns":[4194304,2097152],"lineage":[],"auth":{"method":"hmac-sha256","nonce":")" +
           nonce + "\"}}";
  };
  const std::string good_nonce(64, 'a');
  auto expect_closed = [](int fd) {
    proto::Frame type{};
    std::vector<uint8_t> p;
    int r = proto::recv_frame(fd, &type, &p, 10000);
    while (r == 0 && type == proto::Frame::kError) r = proto::recv_frame(fd, &type, &p, 10000);
    CHECK(r == -ECONNRESET);
  };
  auto challenged = [&](int fd) {
    REQUIRE(proto::send_frame(fd, proto::Frame::kHello, hello(good_nonce), 2000) == 0);
    proto::Frame type{};
    std::vector<uint8_t> p;
    REQUIRE(proto::recv_frame(fd, &type, &p, 5000) == 0);
    REQUIRE(type == proto::Frame::kAuthChallenge);
    CHECK(p.size() == 32);
  };
  struct Fd {
    int fd;
    ~Fd() { ::close(fd); }
  };
  {  // a bad nonce in HELLO
    Fd c{proto::connect_to(listen, 2000)};
    REQUIRE(c.fd >= 0);
    REQUIRE(proto::send_frame(c.fd, proto::Frame::kHello, hello("xyz"), 2000) == 0);
    proto::Frame type{};
    std::vector<uint8_t> p;
    REQUIRE(proto::recv_frame(c.fd, &type, &p, 5000) == 0);
    CHECK(type == proto::Frame::kError);
    CHECK(std::string(p.begin(), p.end()) == "authentication failed: malformed HELLO (auth)");
    expect_closed(c.fd);
  }
  {  // a proof that announces 1 GiB: closed before anything is allocated
    Fd c{proto::connect_to(listen, 2000)};
    challenged(c.fd);
    const proto::FrameHeader h{proto::kMagic, uint16_t(proto::Frame::kAuthProof), 0, 1u << 30, 0};
    REQUIRE(::send(c.fd, &h, sizeof(h), MSG_NOSIGNAL) == ssize_t(sizeof(h)));
    expect_closed(c.fd);
  }
  {  // a proof of the wrong size, and one of the right size that is wrong
    for (size_t n : {size_t(31), size_t(32)}) {
      Fd c{proto::connect_to(listen, 2000)};
      challenged(c.fd);
      REQUIRE(proto::send_frame(c.fd, proto::Frame::kAuthProof, std::vector<uint8_t>(n, 0x55),
                                2000) == 0);
      expect_closed(c.fd);
    }
  }
  {  // another frame type instead of the proof; then one of an unknown type
    Fd c{proto::connect_to(listen, 2000)};
    challenged(c.fd);
    REQUIRE(proto::send_frame(c.fd, proto::Frame::kAck, std::vector<uint8_t>(8, 0), 2000) == 0);
    expect_closed(c.fd);
    Fd d{proto::connect_to(listen, 2000)};
    challenged(d.fd);
    const proto::FrameHeader h{proto::kMagic, 999, 0, 32, 0};
    REQUIRE(::send(d.fd, &h, sizeof(h), MSG_NOSIGNAL) == ssize_t(sizeof(h)));
    expect_closed(d.fd);
  }
  CHECK(metric(secondary, kListenerFailures) >= 5);
  // The listener still serves a real primary with the right secret.
  Zumad primary(primary_config(secondary.port(2), ", secret: \"replication-secret\""), 2);
  primary.start();
  Model m;
  uint64_t seed = 0;
  write_some(primary, m, seed, 30);
  wait_settled(primary, secondary);
  stop_and_compare(primary, secondary, m);
}
