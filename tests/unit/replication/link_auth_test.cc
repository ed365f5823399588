// replication/link_auth.*: the HMAC-SHA256 proofs against a computation of the documented
// transcript with OpenSSL's HMAC here, and the exchange between a primary and a secondary
// over a socketpair: the right secret, a wrong one, a replayed proof, a reflected one, and
// malformed frames (each ends that exchange with an error, nothing more).
#include "replication/link_auth.hh"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace zuma::replication;

namespace {

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Two connected ends; closed by the destructor.
struct Pair {
  int fd[2] = {-1, -1};
  Pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0); }
  ~Pair() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
};

const std::string kHello = R"({"group":"db","link":"dr","log_id":7,"auth":{"nonce":"00"}})";

}  // namespace

TEST_CASE("hex and unhex") {
  const std::vector<uint8_t> v = {0x00, 0x7f, 0xab, 0xff};
  CHECK(auth::hex(v) == "007fabff");
  CHECK(auth::unhex("007FabfF") == v);
  CHECK(!auth::unhex("abc"));
  CHECK(!auth::unhex("0g"));
  CHECK(auth::unhex("")->empty());
}

TEST_CASE(
    "a proof is HMAC-SHA256 over label, SHA-256 of the HELLO, the secondary's nonce, the binding") {
  const std::string secret = "a-secret-of-some-length";
  const auth::Nonce n = auth::random_nonce();
  const std::vector<uint8_t> binding(32, 0x42);
  for (auto [side, label] :
       {std::pair{auth::Side::kPrimary, std::string("zuma-replication-auth-v1 primary")},
        std::pair{auth::Side::kSecondary, std::string("zuma-replication-auth-v1 secondary")}}) {
    std::vector<uint8_t> msg(label.begin(), label.end());
    msg.push_back(0);
    uint8_t h[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const uint8_t*>(kHello.data()), kHello.size(), h);
    msg.insert(msg.end(), h, h + sizeof(h));
    msg.insert(msg.end(), n.begin(), n.end());
    msg.insert(msg.end(), binding.begin(), binding.end());
    uint8_t want[32];
    unsigned len = 0;
    HMAC(EVP_sha256(), secret.data(), int(secret.size()), msg.data(), msg.size(), want, &len);
    REQUIRE(len == 32);
    const auth::Proof got = auth::proof(side, secret, bytes(kHello), n, binding);
    CHECK(std::memcmp(got.data(), want, 32) == 0);
    CHECK(auth::proof_matches(got, std::span<const uint8_t>(want, 32)));
    CHECK(!auth::proof_matches(got, std::span<const uint8_t>(want, 31)));
  }
  // Everything it covers changes it.
  const auth::Proof base = auth::proof(auth::Side::kPrimary, secret, bytes(kHello), n, binding);
  auth::Nonce other = n;
  other[0] ^= 1;
  CHECK(!auth::proof_matches(
      base, auth::proof(auth::Side::kSecondary, secret, bytes(kHello), n, binding)));
  CHECK(!auth::proof_matches(
      base, auth::proof(auth::Side::kPrimary, "another-secret-x", bytes(kHello), n, binding)));
  CHECK(!auth::proof_matches(
      base, auth::proof(auth::Side::kPrimary, secret, bytes(kHello + " "), n, binding)));
  CHECK(!auth::proof_matches(
      base, auth::proof(auth::Side::kPrimary, secret, bytes(kHello), other, binding)));
  CHECK(
      !auth::proof_matches(base, auth::proof(auth::Side::kPrimary, secret, bytes(kHello), n, {})));
  CHECK(auth::random_nonce() != auth::random_nonce());
}

TEST_CASE("the exchange: the same secret on both sides passes both ways") {
  Pair p;
  auth::Result secondary;
  std::thread t([&] {
    proto::Conn c(p.fd[1]);
    secondary = auth::check_primary(c, "shared-secret-123", bytes(kHello), 5000);
  });
  proto::Conn c(p.fd[0]);
  const auth::Result primary =
      auth::prove_to_secondary(c, "shared-secret-123", bytes(kHello), 5000);
  t.join();
  CHECK_MESSAGE(primary.ok, primary.error);
  CHECK_MESSAGE(secondary.ok, secondary.error);
}

TEST_CASE("the exchange: another secret is refused by the secondary, which proves nothing") {
  Pair p;
  auth::Result secondary;
  std::thread t([&] {
    proto::Conn c(p.fd[1]);
    secondary = auth::check_primary(c, "the-secondary-secret", bytes(kHello), 5000);
    // As ReplicaServer does: the reason as an ERROR frame, then close.
    if (!secondary.ok) proto::send_frame(c, proto::Frame::kError, secondary.error, 1000);
  });
  proto::Conn c(p.fd[0]);
  const auth::Result primary =
      auth::prove_to_secondary(c, "the-primary-secret", bytes(kHello), 5000);
  t.join();
  CHECK(!secondary.ok);
  CHECK(secondary.auth_failure);
  CHECK(secondary.error ==
        "authentication failed: the primary's proof does not match this group's secret here");
  CHECK(!primary.ok);
  CHECK(primary.auth_failure);
  CHECK(primary.error ==
        "the peer refused: authentication failed: the primary's proof does not match this group's "
        "secret here");
}

TEST_CASE("the exchange: a recorded proof does not pass a new challenge (replay)") {
  // A man in the middle records a good exchange ...
  std::vector<uint8_t> recorded;
  {
    Pair p;
    std::thread t([&] {
      proto::Conn c(p.fd[1]);
      CHECK(auth::check_primary(c, "shared-secret-123", bytes(kHello), 5000).ok);
    });
    proto::Conn c(p.fd[0]);
    proto::Frame type{};
    std::vector<uint8_t> nonce;
    REQUIRE(proto::recv_frame(c, &type, &nonce, 5000) == 0);
    const auth::Proof pr =
        auth::proof(auth::Side::kPrimary, "shared-secret-123", bytes(kHello), nonce, {});
    recorded.assign(pr.begin(), pr.end());
    REQUIRE(proto::send_frame(c, proto::Frame::kAuthProof, recorded, 5000) == 0);
    std::vector<uint8_t> ok;
    REQUIRE(proto::recv_frame(c, &type, &ok, 5000) == 0);
    CHECK(type == proto::Frame::kAuthOk);
    t.join();
  }
  // ... and sends the same HELLO and proof again: the secondary's nonce is new.
  Pair p;
  auth::Result secondary;
  std::thread t([&] {
    proto::Conn c(p.fd[1]);
    secondary = auth::check_primary(c, "shared-secret-123", bytes(kHello), 5000);
  });
  proto::Conn c(p.fd[0]);
  proto::Frame type{};
  std::vector<uint8_t> nonce;
  REQUIRE(proto::recv_frame(c, &type, &nonce, 5000) == 0);
  REQUIRE(proto::send_frame(c, proto::Frame::kAuthProof, recorded, 5000) == 0);
  t.join();
  CHECK(!secondary.ok);
  CHECK(secondary.auth_failure);
}

TEST_CASE(
    "the exchange: a fake secondary cannot reflect the primary's proof, nor skip the challenge") {
  SUBCASE("reflection") {
    Pair p;
    std::thread t([&] {
      proto::Conn c(p.fd[1]);
      REQUIRE(proto::send_frame(c, proto::Frame::kAuthChallenge, auth::random_nonce(), 1000) == 0);
      proto::Frame type{};
      std::vector<uint8_t> proof;
      REQUIRE(proto::recv_frame(c, &type, &proof, 5000) == 0);
      REQUIRE(proto::send_frame(c, proto::Frame::kAuthOk, proof, 1000) == 0);  // its own back
    });
    proto::Conn c(p.fd[0]);
    const auth::Result r = auth::prove_to_secondary(c, "shared-secret-123", bytes(kHello), 5000);
    t.join();
    CHECK(!r.ok);
    CHECK(r.auth_failure);
    CHECK(r.error.starts_with("authentication failed: the peer's proof does not match"));
  }
  SUBCASE("a WELCOME without a challenge") {
    Pair p;
    REQUIRE(proto::send_frame(p.fd[1], proto::Frame::kWelcome, std::string("{\"applied\":0}"),
                              1000) == 0);
    proto::Conn c(p.fd[0]);
    const auth::Result r = auth::prove_to_secondary(c, "shared-secret-123", bytes(kHello), 5000);
    CHECK(!r.ok);
    CHECK(r.auth_failure);
    CHECK(r.error.starts_with("authentication: the peer accepted this side without asking"));
  }
  SUBCASE("a challenge of the wrong size") {
    Pair p;
    REQUIRE(proto::send_frame(p.fd[1], proto::Frame::kAuthChallenge, std::vector<uint8_t>(31, 1),
                              1000) == 0);
    proto::Conn c(p.fd[0]);
    const auth::Result r = auth::prove_to_secondary(c, "shared-secret-123", bytes(kHello), 5000);
    CHECK(!r.ok);
    CHECK(r.error == "authentication: malformed AUTH_CHALLENGE");
  }
}

TEST_CASE("malformed proofs end the exchange with an error, bounded before any allocation") {
  auto run = [](const std::function<void(int)>& attacker) {
    Pair p;
    auth::Result r;
    std::thread t([&] {
      proto::Conn c(p.fd[1]);
      r = auth::check_primary(c, "shared-secret-123", bytes(kHello), 5000);
    });
    proto::Frame type{};
    std::vector<uint8_t> nonce;
    REQUIRE(proto::recv_frame(p.fd[0], &type, &nonce, 5000) == 0);
    REQUIRE(type == proto::Frame::kAuthChallenge);
    attacker(p.fd[0]);
    t.join();
    return r;
  };
  auth::Result r = run([](int fd) {
    const proto::FrameHeader h{proto::kMagic, uint16_t(proto::Frame::kAuthProof), 0, 64u << 20, 0};
    REQUIRE(::send(fd, &h, sizeof(h), MSG_NOSIGNAL) == ssize_t(sizeof(h)));
  });
  CHECK(r.error == "authentication failed: malformed frame instead of AUTH_PROOF");
  r = run([](int fd) {
    const proto::FrameHeader h{proto::kMagic, 12345, 0, 32, 0};
    REQUIRE(::send(fd, &h, sizeof(h), MSG_NOSIGNAL) == ssize_t(sizeof(h)));
  });
  CHECK(r.error == "authentication failed: malformed frame instead of AUTH_PROOF");
  r = run([](int fd) {
    REQUIRE(proto::send_frame(fd, proto::Frame::kAuthProof, std::vector<uint8_t>(33, 0), 1000) ==
            0);
  });
  CHECK(r.error == "authentication failed: malformed AUTH_PROOF");
  r = run([](int fd) {
    REQUIRE(proto::send_frame(fd, proto::Frame::kAck, std::vector<uint8_t>(8, 0), 1000) == 0);
  });
  CHECK(r.error == "authentication failed: malformed AUTH_PROOF");
  r = run([](int fd) { ::shutdown(fd, SHUT_RDWR); });
  CHECK(!r.ok);
  CHECK(!r.auth_failure);
  CHECK(r.error == "waiting for AUTH_PROOF: the peer closed the connection");
}
