// replication/link_tls.* (and the TLS path of protocol.cc's frames): contexts from files
// made here with the openssl CLI (a CA, two node certificates, a rogue CA's certificate),
// handshakes between two threads over a socketpair: mutual TLS, a rogue certificate, a
// wrong peer name, a PSK right and wrong; frames large and small through TLS; the channel
// binding both ends agree on; what the first bytes of a connection are.
#include "replication/link_tls.hh"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace zuma::replication;
using zuma::config::ReplicationTls;

namespace {

void sh(const std::string& cmd) {
  REQUIRE_MESSAGE(std::system((cmd + " >/dev/null 2>&1").c_str()) == 0, cmd);
}

// A CA, certificates of site-a and site-b from it, a rogue CA's certificate for site-a.
struct Pki {
  std::string dir;
  Pki() {
    char t[] = "/tmp/zuma-tls-test-XXXXXX";
    REQUIRE(::mkdtemp(t));
    dir = t;
    for (const char* ca : {"ca", "rogue-ca"})
      sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
         f(std::string(ca) + ".key") + " -out " + f(std::string(ca) + ".pem") +
         " -days 2 -subj /CN=" + ca);
    cert("a", "site-a", "ca");
    cert("b", "site-b", "ca");
    cert("rogue", "site-a", "rogue-ca");
    write("psk1", "0123456789abcdef0123456789abcdef\n");
    write("psk2", "fedcba9876543210fedcba9876543210\n");
  }
  ~Pki() { std::filesystem::remove_all(dir); }
  std::string f(const std::string& n) const { return dir + "/" + n; }
  void cert(const std::string& n, const std::string& cn, const std::string& ca) {
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
       f(n + ".key") + " -out " + f(n + ".pem") + " -days 2 -subj /CN=" + cn + " -CA " +
       f(ca + ".pem") + " -CAkey " + f(ca + ".key") + " -addext subjectAltName=DNS:" + cn);
  }
  void write(const std::string& n, const std::string& text) {
    std::ofstream(f(n)) << text;
    ::chmod(f(n).c_str(), 0600);
  }
  ReplicationTls certs(const std::string& who, const std::string& ca,
                       const std::string& peer = "") const {
    ReplicationTls t;
    t.cert = f(who + ".pem");
    t.key = f(who + ".key");
    t.ca = f(ca + ".pem");
    t.peer_name = peer;
    return t;
  }
  ReplicationTls psk(const std::string& file,
                     const std::string& identity = "zuma-replication") const {
    ReplicationTls t;
    t.psk_file = f(file);
    t.psk_identity = identity;
    return t;
  }
};

struct Handshake {
  std::expected<proto::Conn, std::string> client = std::unexpected(std::string("not run"));
  std::expected<proto::Conn, std::string> server = std::unexpected(std::string("not run"));
  int fd[2] = {-1, -1};
  ~Handshake() {
    client = std::unexpected(std::string());  // the SSL sessions go before their sockets
    server = std::unexpected(std::string());
    for (int x : fd)
      if (x >= 0) ::close(x);
  }
};

// Client (a link) with `c`, server (a listener) with `s`, on the two ends of a socketpair.
void run(Handshake& h, const ReplicationTls& c, const ReplicationTls& s) {
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, h.fd) == 0);
  auto sctx = tls::make_context(s, true);
  auto cctx = tls::make_context(c, false);
  REQUIRE_MESSAGE(sctx.has_value(), sctx.error());
  REQUIRE_MESSAGE(cctx.has_value(), cctx.error());
  std::thread t([&] {
    h.server = tls::handshake(*sctx, s, h.fd[1], true, 5000);
    // A refusal of the client's certificate reaches the client as an alert after its own
    // handshake is done (TLS 1.3): the server closes, as ReplicaServer does.
    if (!h.server) ::shutdown(h.fd[1], SHUT_RDWR);
  });
  h.client = tls::handshake(*cctx, c, h.fd[0], false, 5000);
  t.join();
}

// After a client handshake that passed: whether its first read sees the server's refusal.
std::string first_read_error(proto::Conn& c) {
  proto::Frame type{};
  std::vector<uint8_t> p;
  const int r = proto::recv_frame(c, &type, &p, 2000);
  return r == -EPROTO ? proto::tls_error() : r < 0 ? std::strerror(-r) : "a frame";
}

}  // namespace

TEST_CASE("contexts: a file that is missing, a key of another certificate, a short PSK") {
  Pki pki;
  auto bad = pki.certs("a", "ca");
  bad.cert = pki.f("nope.pem");
  auto r = tls::make_context(bad, false);
  REQUIRE(!r);
  CHECK(r.error().starts_with("cert '" + pki.f("nope.pem") + "'"));
  bad = pki.certs("a", "ca");
  bad.key = pki.f("b.key");
  r = tls::make_context(bad, true);
  REQUIRE(!r);
  CHECK(r.error().starts_with("key '" + pki.f("b.key") + "'"));
  bad = pki.certs("a", "ca");
  bad.ca = pki.f("nope-ca.pem");
  r = tls::make_context(bad, true);
  REQUIRE(!r);
  CHECK(r.error().starts_with("ca '" + pki.f("nope-ca.pem") + "'"));
  pki.write("short", "0123456789\n");
  r = tls::make_context(pki.psk("short"), true);
  REQUIRE(!r);
  CHECK(r.error() == "'" + pki.f("short") + "': a secret needs 16 to 255 bytes, this one has 10");
}

TEST_CASE("mutual TLS: frames large and small both ways, one channel binding, the peers named") {
  Pki pki;
  Handshake h;
  run(h, pki.certs("a", "ca", "site-b"), pki.certs("b", "ca", "site-a"));
  REQUIRE_MESSAGE(h.client.has_value(), h.client.error());
  REQUIRE_MESSAGE(h.server.has_value(), h.server.error());
  CHECK(tls::describe(*h.client).starts_with("TLSv1.3 "));
  CHECK(tls::peer_identity(*h.server) == "certificate /CN=site-a");
  CHECK(tls::peer_identity(*h.client) == "certificate /CN=site-b");
  const auto cb = tls::channel_binding(*h.client);
  CHECK(cb.size() == 32);
  CHECK(cb == tls::channel_binding(*h.server));
  CHECK(tls::channel_binding(proto::Conn(h.fd[0])).empty());
  std::vector<uint8_t> big(5 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 7 + (i >> 12));
  std::vector<uint8_t> got;
  proto::Frame type{};
  std::thread t(
      [&] { REQUIRE(proto::send_frame(*h.client, proto::Frame::kBatch, big, 5000) == 0); });
  REQUIRE(proto::recv_frame(*h.server, &type, &got, 5000) == 0);
  t.join();
  CHECK(type == proto::Frame::kBatch);
  CHECK(got == big);
  REQUIRE(proto::send_frame(*h.server, proto::Frame::kAck, std::vector<uint8_t>(8, 9), 1000) == 0);
  REQUIRE(proto::recv_frame(*h.client, &type, &got, 1000) == 0);
  CHECK(type == proto::Frame::kAck);
  CHECK(got == std::vector<uint8_t>(8, 9));
  CHECK(!h.client->buffered());
  // An oversize frame is refused by its header, as without TLS.
  REQUIRE(proto::send_frame(*h.server, proto::Frame::kAck, std::vector<uint8_t>(100, 1), 1000) ==
          0);
  CHECK(proto::recv_frame(*h.client, &type, &got, 1000, 64) == -EPROTO);
}

TEST_CASE("mutual TLS refusals: a rogue certificate, an untrusted CA, another peer name") {
  Pki pki;
  SUBCASE("the client's certificate is from another CA") {
    Handshake h;
    run(h, pki.certs("rogue", "ca"), pki.certs("b", "ca"));
    REQUIRE(!h.server);
    CHECK(h.server.error().find("certificate verify failed") != std::string::npos);
    if (h.client) CHECK(first_read_error(*h.client).find("alert") != std::string::npos);
  }
  SUBCASE("the client does not trust the server's CA") {
    Handshake h;
    run(h, pki.certs("a", "rogue-ca"), pki.certs("b", "ca"));
    REQUIRE(!h.client);
    CHECK(h.client.error().find("certificate verify failed") != std::string::npos);
    CHECK(h.client.error().find("not signed by this link's ca") != std::string::npos);
  }
  SUBCASE("the server's certificate has another name") {
    Handshake h;
    run(h, pki.certs("a", "ca", "site-x"), pki.certs("b", "ca"));
    REQUIRE(!h.client);
    CHECK(h.client.error().find("hostname mismatch") != std::string::npos);
  }
  SUBCASE("the server expects another client name") {
    Handshake h;
    run(h, pki.certs("a", "ca"), pki.certs("b", "ca", "site-c"));
    REQUIRE(!h.server);
    CHECK(h.server.error().find("hostname mismatch") != std::string::npos);
  }
}

TEST_CASE("TLS 1.3 PSK: the same key works; another key or identity is refused") {
  Pki pki;
  {
    Handshake h;
    run(h, pki.psk("psk1"), pki.psk("psk1"));
    REQUIRE_MESSAGE(h.client.has_value(), h.client.error());
    REQUIRE_MESSAGE(h.server.has_value(), h.server.error());
    CHECK(tls::describe(*h.server).starts_with("TLSv1.3 TLS_AES_128_GCM_SHA256"));
    CHECK(tls::channel_binding(*h.client) == tls::channel_binding(*h.server));
  }
  {
    Handshake h;
    run(h, pki.psk("psk2"), pki.psk("psk1"));
    CHECK(!h.client);
    REQUIRE(!h.server);
  }
  {
    Handshake h;
    run(h, pki.psk("psk1", "someone-else"), pki.psk("psk1"));
    CHECK(!h.client);
    REQUIRE(!h.server);
    CHECK(h.server.error().find("the peer's PSK identity 'someone-else' is not this side's") !=
          std::string::npos);
  }
  {  // certificates on one side, a PSK on the other
    Handshake h;
    run(h, pki.certs("a", "ca"), pki.psk("psk1"));
    CHECK(!h.client);
    CHECK(!h.server);
  }
}

TEST_CASE("the first bytes of a connection: TLS, a frame, something else, nothing") {
  int fd[2];
  auto pair = [&] { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0); };
  pair();
  const uint8_t hello[] = {0x16, 0x03, 0x01, 0x00, 0x10};
  REQUIRE(::write(fd[0], hello, sizeof(hello)) == ssize_t(sizeof(hello)));
  CHECK(tls::peek_first_bytes(fd[1], 1000) == tls::FirstBytes::kTls);
  CHECK(::recv(fd[1], (void*)hello, 0, 0) == 0);  // still there: peeked
  ::close(fd[0]), ::close(fd[1]);
  pair();
  REQUIRE(proto::send_frame(fd[0], proto::Frame::kHello, std::string("{}"), 1000) == 0);
  CHECK(tls::peek_first_bytes(fd[1], 1000) == tls::FirstBytes::kFrame);
  proto::Frame type{};
  std::vector<uint8_t> p;
  CHECK(proto::recv_frame(fd[1], &type, &p, 1000) == 0);  // the frame is intact
  ::close(fd[0]), ::close(fd[1]);
  pair();
  REQUIRE(::write(fd[0], "GET / HTTP/1.0\r\n", 16) == 16);
  CHECK(tls::peek_first_bytes(fd[1], 1000) == tls::FirstBytes::kOther);
  ::close(fd[0]);
  pair();
  ::close(fd[0]);
  CHECK(tls::peek_first_bytes(fd[1], 1000) == tls::FirstBytes::kNothing);
  ::close(fd[1]);
}
