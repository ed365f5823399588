// The etcd client's encodings (the requests themselves run against a real etcd in
// integration.cluster) and its behaviour with no etcd to talk to.
#include "target/etcd_client.hh"

#include <doctest/doctest.h>

namespace zuma::target {
namespace {

TEST_CASE("base64 as RFC 4648 gives it") {
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(base64_encode(std::string("\xff\x00\xfe", 3)) == "/wD+");
  for (const std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"})
    CHECK(base64_decode(base64_encode(s)) == s);
  CHECK(base64_decode(std::string("/wD+")) == std::string("\xff\x00\xfe", 3));
  CHECK_FALSE(base64_decode("Zm9").has_value());   // not a multiple of 4
  CHECK_FALSE(base64_decode("Zm9*").has_value());  // not in the alphabet
  CHECK_FALSE(base64_decode("Z=9v").has_value());  // padding in the middle
}

TEST_CASE("prefix_end is the first key past the prefix") {
  CHECK(prefix_end("/zuma/c/") == "/zuma/c0");
  CHECK(prefix_end(std::string("a\xff", 2)) == "b");
  CHECK(prefix_end(std::string("\xff", 1)) == std::string(1, '\0'));
}

TEST_CASE("no etcd: every call fails with the endpoints named") {
  // Port 1 on loopback: nothing listens (connection refused at once).
  EtcdClient c({"http://127.0.0.1:1"}, std::chrono::milliseconds(500));
  CHECK_FALSE(c.get("/k").has_value());
  CHECK(c.last_error().find("127.0.0.1:1") != std::string::npos);
  CHECK_FALSE(c.put("/k", "v"));
  CHECK_FALSE(c.put_if("/k", "v", 0).has_value());
  CHECK_FALSE(c.grant(5).has_value());
}

}  // namespace
}  // namespace zuma::target
