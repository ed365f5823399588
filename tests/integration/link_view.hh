// What the metrics endpoints of a primary and its secondary say about group "db" and its
// link "dr" (integration.replication, fault.replication), and a poll until it is as
// wanted. Each zumad's metrics are on its port(1).
#pragma once
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "tests/integration/harness.hh"

namespace zuma::test {

struct LinkView {
  double next = -1, acked = -1, connected = -1, degraded = -1;  // the primary's link
  double applied = -1, peer = -1;  // the secondary: applied sequence, primary connected
};

inline LinkView look(Zumad& primary, Zumad& secondary) {
  const std::string p = http_get(primary.port(1), "/metrics");
  const std::string s = http_get(secondary.port(1), "/metrics");
  auto get = [](const std::string& page, const std::string& series) {
    return metric_sample(page, series).value_or(-1);
  };
  LinkView v;
  v.next = get(p, "zuma_replication_log_next_seq{group=\"db\"}");
  v.acked = get(p, "zuma_replication_link_acked_seq{group=\"db\",link=\"dr\"}");
  v.connected = get(p, "zuma_replication_link_connected{group=\"db\",link=\"dr\"}");
  v.degraded = get(p, "zuma_replication_link_degraded{group=\"db\",link=\"dr\"}");
  v.applied = get(s, "zuma_replication_replica_applied_seq{group=\"db\"}");
  v.peer = get(s, "zuma_replication_replica_connected{group=\"db\"}");
  return v;
}

// Polls (every 20 ms, `limit` at most) until `ok` holds for what both endpoints show;
// fails the test with the last view otherwise.
template <class Pred>
LinkView wait_for(Zumad& primary, Zumad& secondary, const char* what, Pred ok,
                  std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  LinkView v;
  while (std::chrono::steady_clock::now() < deadline) {
    v = look(primary, secondary);
    if (ok(v)) return v;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("link did not get to: " << std::string(what) << " (next " << v.next << ", acked " << v.acked
                               << ", connected " << v.connected << ", degraded " << v.degraded
                               << ", secondary applied " << v.applied << ", primary connected "
                               << v.peer << ")");
  return v;
}

}  // namespace zuma::test
