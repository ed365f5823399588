// zumactl's client end of the control socket, for tests that run a real zumad.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <expected>
#include <string>
#include <thread>

#include "admin/protocol.hh"
#include "tests/integration/harness.hh"

namespace zuma::test {

// Connects to <dir>/var/zumad.sock. zumad binds its control socket just after its
// portals, so this retries for up to 5 s.
inline std::expected<admin::Client, std::string> connect_control(Zumad& z) {
  auto c = admin::Client::connect(z.file("var/zumad.sock"));
  for (int i = 0; i < 100 && !c; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    c = admin::Client::connect(z.file("var/zumad.sock"));
  }
  return c;
}

// Runs `verb` on z's control socket and REQUIREs that it succeeded (the message has zumad's
// log tail); its result.
inline admin::Json call(Zumad& z, const std::string& verb, const admin::Json& args) {
  auto c = connect_control(z);
  REQUIRE_MESSAGE(c.has_value(), c.error());
  auto r = c->call(verb, args);
  REQUIRE_MESSAGE(r.has_value(), r.error());
  REQUIRE_MESSAGE(r->ok, verb << ": " << r->error << "\n" << z.log_tail(3000));
  return r->result;
}

}  // namespace zuma::test
