// admin/control_server.cc and protocol.cc: a real Unix socket, requests and replies,
// socket mode, stale sockets, malformed input.
#include "admin/control_server.hh"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "admin/protocol.hh"

using namespace zuma::admin;

namespace {

std::string temp_socket() {
  char dir[] = "/tmp/zuma-admin-XXXXXX";
  REQUIRE(::mkdtemp(dir));
  return std::string(dir) + "/c.sock";
}

CommandTable echo_table() {
  CommandTable t = standard_table();
  t.set_handler("show node", [](const Json&) { return Json{{"name", "test"}}; });
  t.set_handler("logout", [](const Json& a) -> Json {
    if (a["session"] == 7) throw CommandError("no session 7");
    return Json{{"message", "ok " + a["session"].dump()}};
  });
  t.set_handler("log level", [](const Json&) -> Json { throw std::runtime_error("boom"); });
  return t;
}

}  // namespace

TEST_CASE("requests and replies over the socket; mode 0600; removed at stop") {
  const std::string path = temp_socket();
  const CommandTable table = echo_table();
  {
    ControlServer srv(path, table);
    srv.start();
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto c = Client::connect(path);
    REQUIRE(c.has_value());
    auto r = c->call("show node", Json::object());
    REQUIRE(r.has_value());
    CHECK(r->ok);
    CHECK(r->result["name"] == "test");
    // Several requests on one connection, errors as values.
    r = c->call("logout", Json{{"session", 3}});
    CHECK(r->result["message"] == "ok 3");
    r = c->call("logout", Json{{"session", 7}});
    CHECK(!r->ok);
    CHECK(r->error == "no session 7");
    r = c->call("logout", Json{{"session", "x"}});
    CHECK(r->error == "logout: SESSION must be integer");
    r = c->call("show luns", Json::object());  // no handler installed
    CHECK(r->error == "unknown command 'show luns'");
    r = c->call("log level", Json::object());
    CHECK(r->error == "log level: internal error: boom");
    // A second server on the same live socket is refused.
    ControlServer other(path, table);
    CHECK_THROWS_WITH_AS(other.start(), doctest::Contains("another zumad is listening"),
                         std::runtime_error);
  }
  CHECK(::access(path.c_str(), F_OK) != 0);
  ::rmdir(path.substr(0, path.rfind('/')).c_str());
}

TEST_CASE("malformed lines get an error and the connection stays usable") {
  const std::string path = temp_socket();
  const CommandTable table = echo_table();
  ControlServer srv(path, table);
  srv.start();
  CHECK(Json::parse(srv.dispatch("not json"))["error"] ==
        "malformed request: expected {\"cmd\": \"...\", \"args\": {...}}");
  CHECK(Json::parse(srv.dispatch("{\"cmd\": 5}"))["ok"] == false);
  CHECK(Json::parse(srv.dispatch("{\"cmd\": \"show node\"}"))["ok"] == true);  // args optional
  auto c = Client::connect(path);
  REQUIRE(c.has_value());
  // Raw bytes: a broken line, then a good request on the same connection.
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  zuma::storage::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  LineChannel ch(std::move(fd));
  REQUIRE(ch.write_line("{broken", std::chrono::seconds(1)));
  REQUIRE(ch.write_line(make_request("show node", Json::object()), std::chrono::seconds(1)));
  auto l1 = ch.read_line(std::chrono::seconds(5));
  auto l2 = ch.read_line(std::chrono::seconds(5));
  REQUIRE(l1.has_value());
  REQUIRE(l2.has_value());
  CHECK(Json::parse(*l1)["ok"] == false);
  CHECK(Json::parse(*l2)["result"]["name"] == "test");
  srv.stop();
  ::rmdir(path.substr(0, path.rfind('/')).c_str());
}

TEST_CASE("a stale socket file is replaced; a non-socket file is refused") {
  const std::string path = temp_socket();
  const CommandTable table = echo_table();
  {
    // A socket file nobody listens on (a killed daemon's).
    zuma::storage::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  {
    ControlServer srv(path, table);
    srv.start();
    CHECK(Client::connect(path).has_value());
  }
  FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f);
  std::fclose(f);
  ControlServer srv(path, table);
  CHECK_THROWS_WITH_AS(srv.start(), doctest::Contains("exists and is not a socket"),
                       std::runtime_error);
  ::unlink(path.c_str());
  ::rmdir(path.substr(0, path.rfind('/')).c_str());
}

TEST_CASE("Client::connect reports where it could not connect") {
  auto c = Client::connect("/nonexistent-dir/zumad.sock");
  REQUIRE(!c.has_value());
  CHECK(c.error() == "cannot connect to /nonexistent-dir/zumad.sock: No such file or directory");
}
