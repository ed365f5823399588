// config/diff.cc: what a live reload would change.
#include <doctest/doctest.h>

#include <string>

#include "config/config.hh"

using namespace zuma::config;

namespace {

std::string base(const std::string& extra_luns = "", const std::string& extra = "") {
  return "node: { data_dir: /tmp/zuma-d }\n"
         "portals: [\"127.0.0.1:3260\"]\n" +
         extra +
         "targets:\n"
         "  - iqn: iqn.2026-11.org.zuma:a\n"
         "    luns:\n"
         "      - { id: 0, name: a0, size: 1MiB, backend: memory }\n" +
         extra_luns +
         "  - iqn: iqn.2026-11.org.zuma:b\n"
         "    luns:\n"
         "      - { id: 0, name: b0, size: 1MiB, backend: memory }\n";
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("diff: identical configurations") {
  const Config a = parse(base(), "a"), b = parse(base(), "b");
  const ConfigDiff d = diff(a, b);
  CHECK(d.empty());
  CHECK(d.summary() == "no changes");
}

TEST_CASE("diff: a LU added to one target changes only that target") {
  const Config a = parse(base(), "a");
  const Config b = parse(base("      - { id: 1, name: a1, size: 2MiB, backend: memory }\n"), "b");
  const ConfigDiff d = diff(a, b);
  CHECK(d.luns_added == std::vector<std::string>{"a1"});
  CHECK(d.targets_changed == std::vector<std::string>{"iqn.2026-11.org.zuma:a"});
  CHECK(d.targets_added.empty());
  CHECK(d.luns_removed.empty());
  CHECK(d.restart_needed.empty());
  CHECK(d.summary() == "1 target changed, 1 LU added");
  // And back: removed.
  const ConfigDiff r = diff(b, a);
  CHECK(r.luns_removed == std::vector<std::string>{"a1"});
  CHECK(r.targets_changed == std::vector<std::string>{"iqn.2026-11.org.zuma:a"});
}

TEST_CASE("diff: a LU with a new size is replaced") {
  const Config a = parse(base(), "a");
  std::string text = base();
  text.replace(text.find("name: a0, size: 1MiB"), 20, "name: a0, size: 2MiB");
  const ConfigDiff d = diff(a, parse(text, "b"));
  CHECK(d.luns_changed == std::vector<std::string>{"a0"});
  CHECK(d.targets_changed == std::vector<std::string>{"iqn.2026-11.org.zuma:a"});
}

TEST_CASE("diff: a LU made read-only is replaced") {
  const Config a = parse(base(), "a");
  const std::string text =
      replace(base(), "name: a0, size: 1MiB,", "name: a0, size: 1MiB, read_only: true,");
  const ConfigDiff d = diff(a, parse(text, "b"));
  CHECK(d.luns_changed == std::vector<std::string>{"a0"});
  CHECK(diff(parse(text, "b"), a).luns_changed == std::vector<std::string>{"a0"});
}

TEST_CASE("diff: ACL and CHAP changes change the target") {
  const Config a = parse(base(), "a");
  std::string text = base();
  text.replace(text.find("  - iqn: iqn.2026-11.org.zuma:b\n"), 31,
               "  - iqn: iqn.2026-11.org.zuma:b\n    acl: [ iqn.1994-05.com.redhat:h1 ]\n"
               "    chap: { user: u, secret: \"0123456789abcdef\" }");
  const ConfigDiff d = diff(a, parse(text, "b"));
  CHECK(d.targets_changed == std::vector<std::string>{"iqn.2026-11.org.zuma:b"});
  CHECK(d.luns_added.empty());
}

TEST_CASE("diff: portals, log level; node and iscsi keys need a restart") {
  const Config a = parse(base(), "a");
  std::string text = base("", "iscsi: { queue_depth: 32 }\n");
  text = replace(text, "127.0.0.1:3260", "127.0.0.1:3261");
  text = replace(text, "node: { data_dir: /tmp/zuma-d }", "node: { data_dir: /tmp/zuma-e, log_level: debug }");
  const ConfigDiff d = diff(a, parse(text, "b"));
  REQUIRE(d.portals_added.size() == 1);
  CHECK(d.portals_added[0].port == 3261);
  REQUIRE(d.portals_removed.size() == 1);
  CHECK(d.portals_removed[0].port == 3260);
  CHECK(d.log_level_changed);
  CHECK(d.restart_needed == std::vector<std::string>{"node.data_dir", "node.control_socket", "iscsi"});
  CHECK(d.summary().find("needs a restart: node.data_dir, node.control_socket, iscsi") != std::string::npos);
}

TEST_CASE("diff: targets added and removed") {
  const Config a = parse(base(), "a");
  std::string text = base();
  text.replace(text.find("iqn.2026-11.org.zuma:b"), 22, "iqn.2026-11.org.zuma:c");
  const ConfigDiff d = diff(a, parse(text, "b"));
  CHECK(d.targets_added == std::vector<std::string>{"iqn.2026-11.org.zuma:c"});
  CHECK(d.targets_removed == std::vector<std::string>{"iqn.2026-11.org.zuma:b"});
  CHECK(d.luns_changed.empty());
}

TEST_CASE("diff: replication groups and their LUs change only with a restart") {
  const std::string group = "groups: [{name: g, luns: [a0], log: {path: /tmp/zuma-d/g.rlog, size: 16MiB}}]\n";
  const Config plain = parse(base(), "a");
  const Config grouped = parse(base() + group, "b");
  CHECK(diff(plain, grouped).restart_needed == std::vector<std::string>{"groups"});
  CHECK(diff(grouped, parse(base() + group, "c")).empty());
  // Another log size is another group.
  CHECK(diff(grouped, parse(base() + replace(group, "16MiB", "32MiB"), "d")).restart_needed ==
        std::vector<std::string>{"groups"});
  // A LU of a group cannot be replaced live (the replication layer is set up at startup);
  // one outside the groups can.
  const Config bigger = parse(replace(base(), "name: a0, size: 1MiB", "name: a0, size: 2MiB") + group, "e");
  CHECK(diff(grouped, bigger).restart_needed == std::vector<std::string>{"LU 'a0' (of group 'g')"});
  const Config other = parse(replace(base(), "name: b0, size: 1MiB", "name: b0, size: 2MiB") + group, "f");
  CHECK(diff(grouped, other).restart_needed.empty());
  CHECK(diff(grouped, other).luns_changed == std::vector<std::string>{"b0"});
}
