// config/config.cc: YAML -> Config, validation messages (exact text, line:column, key),
// parse_size.
#include "config/config.hh"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>

using namespace zuma::config;

namespace {

// The message parse() throws for `yaml` (file name "t.yaml"), or "OK".
std::string error_of(const std::string& yaml) {
  try {
    parse(yaml, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "OK";
}

// A config whose only LUN is `lun`, a flow mapping; the LUN starts at line 5, column 9.
std::string with_lun(const std::string& lun) {
  return "portals: [\"127.0.0.1:3260\"]\n"
         "targets:\n"
         "  - iqn: iqn.2026-11.org.zuma:t\n"
         "    luns:\n"
         "      - " +
         lun + "\n";
}

// A config whose only target is `target` (written from line 3, column 5 on).
std::string with_target(const std::string& target) {
  return "portals: [\"127.0.0.1:3260\"]\n"
         "targets:\n"
         "  - " +
         target + "\n";
}

// A valid config with `iscsi:` set to the flow mapping `iscsi` on line 1 (column 8 on).
std::string with_iscsi(const std::string& iscsi) {
  return "iscsi: " + iscsi + "\n" + with_lun("{id: 0, name: a, size: 1MiB, backend: memory}");
}

// A valid config with `portals:` set to `portals` on line 1 (column 10 on).
std::string with_portals(const std::string& portals) {
  return "portals: " + portals +
         "\n"
         "targets:\n"
         "  - {iqn: iqn.2026-11.org.zuma:t, luns: [{id: 0, name: a, size: 1MiB, backend: "
         "memory}]}\n";
}

}  // namespace

TEST_CASE("parse_size") {
  CHECK(parse_size("0") == 0u);
  CHECK(parse_size("512") == 512u);
  CHECK(parse_size("512B") == 512u);
  CHECK(parse_size("4KiB") == 4096u);
  CHECK(parse_size("4K") == 4096u);
  CHECK(parse_size("3MiB") == 3u << 20);
  CHECK(parse_size("3M") == 3u << 20);
  CHECK(parse_size("1GiB") == 1u << 30);
  CHECK(parse_size("1G") == 1u << 30);
  CHECK(parse_size("2TiB") == uint64_t{2} << 40);
  CHECK(parse_size("2T") == uint64_t{2} << 40);
  CHECK(parse_size("0GiB") == 0u);
  CHECK(parse_size("007") == 7u);
  CHECK(parse_size("18446744073709551615") == std::numeric_limits<uint64_t>::max());
  CHECK(parse_size("16777215TiB") == uint64_t{16777215} << 40);

  // Overflow.
  CHECK_FALSE(parse_size("18446744073709551616"));
  CHECK_FALSE(parse_size("99999999999999999999999"));
  CHECK_FALSE(parse_size("16777216TiB"));  // exactly 2^64
  CHECK_FALSE(parse_size("17179869184G"));
  // Not an integer, or not one of the listed suffixes (which are case-sensitive).
  CHECK_FALSE(parse_size("1.5GiB"));
  CHECK_FALSE(parse_size("1gib"));
  CHECK_FALSE(parse_size("1GIB"));
  CHECK_FALSE(parse_size("1k"));
  CHECK_FALSE(parse_size("1Gi"));
  CHECK_FALSE(parse_size("1GB"));
  CHECK_FALSE(parse_size("1GiBB"));
  CHECK_FALSE(parse_size("1 GiB"));
  CHECK_FALSE(parse_size(" 1"));
  CHECK_FALSE(parse_size(""));
  CHECK_FALSE(parse_size("GiB"));
  CHECK_FALSE(parse_size("-1"));
  CHECK_FALSE(parse_size("+1"));
  CHECK_FALSE(parse_size("0x10"));
  CHECK_FALSE(parse_size("1e9"));
}

TEST_CASE("a full config round-trips into the structs") {
  const Config c = parse(R"(node:
  name: site-a
  data_dir: /srv/zuma
  control_socket: /run/zumad.sock
  reactors: 4
  log_level: debug
portals:
  - "127.0.0.1:3260"
  - "[::1]:3261"
  - { address: "0.0.0.0:3262", tpgt: 7 }
  - "127.0.0.2"
iscsi:
  max_recv_data_segment_length: 65536
  max_burst_length: 16777215
  first_burst_length: 512
  immediate_data: false
  initial_r2t: true
  max_outstanding_r2t: 16
  default_time2wait: 0
  default_time2retain: 3600
  max_connections: 4
  queue_depth: 4096
  nop_in_interval: 5
  nop_in_timeout: 10
  login_timeout: 30
targets:
  - iqn: iqn.2026-11.org.zuma:db
    alias: Database disks
    acl: [ iqn.1994-05.com.redhat:host1, eui.02004567A425678D ]
    luns:
      - id: 0
        name: data
        size: 20GiB
        block_size: 4096
        thin: true
        write_cache: false
        subunits:
          - { backend: file, path: /srv/zuma/data-a.img, size: 8GiB }
          - { backend: file, path: /srv/zuma/data-b.img }
          - { backend: memory, size: 4GiB }
      - { id: 16383, name: logs, size: 4GiB, backend: file, path: ./var/logs.img }
  - iqn: naa.52004567BA64678D
    luns:
      - { id: 3, name: scratch, size: 1T, backend: null }
)",
                         "full.yaml");
  CHECK(c.path == "full.yaml");
  CHECK(c.node.name == "site-a");
  CHECK(c.node.data_dir == "/srv/zuma");
  CHECK(c.node.control_socket == "/run/zumad.sock");
  CHECK(c.node.reactors == 4);
  CHECK(c.node.log_level == "debug");

  REQUIRE(c.portals.size() == 4);
  CHECK(c.portals[0].host == "127.0.0.1");
  CHECK(c.portals[0].port == 3260);
  CHECK(c.portals[0].tpgt == 1);
  CHECK(c.portals[0].loc.str() == "full.yaml:8:5");
  CHECK(c.portals[1].host == "::1");
  CHECK(c.portals[1].port == 3261);
  CHECK(c.portals[2].host == "0.0.0.0");
  CHECK(c.portals[2].port == 3262);
  CHECK(c.portals[2].tpgt == 7);
  CHECK(c.portals[3].host == "127.0.0.2");
  CHECK(c.portals[3].port == 3260);

  CHECK(c.iscsi.max_recv_data_segment_length == 65536);
  CHECK(c.iscsi.max_burst_length == 16777215);
  CHECK(c.iscsi.first_burst_length == 512);
  CHECK(c.iscsi.immediate_data == false);
  CHECK(c.iscsi.initial_r2t == true);
  CHECK(c.iscsi.max_outstanding_r2t == 16);
  CHECK(c.iscsi.default_time2wait == 0);
  CHECK(c.iscsi.default_time2retain == 3600);
  CHECK(c.iscsi.max_connections == 4);
  CHECK(c.iscsi.queue_depth == 4096);
  CHECK(c.iscsi.nop_in_interval == 5);
  CHECK(c.iscsi.nop_in_timeout == 10);
  CHECK(c.iscsi.login_timeout == 30);

  REQUIRE(c.targets.size() == 2);
  const Target& t = c.targets[0];
  CHECK(t.iqn == "iqn.2026-11.org.zuma:db");
  CHECK(t.alias == "Database disks");
  REQUIRE(t.acl.size() == 2);
  CHECK(t.acl[0].initiator == "iqn.1994-05.com.redhat:host1");
  CHECK(t.acl[1].initiator == "eui.02004567A425678D");
  CHECK(t.acl[0].networks.empty());
  CHECK(t.acl[0].luns.empty());
  CHECK(t.loc.str() == "full.yaml:27:5");
  REQUIRE(t.luns.size() == 2);
  const Lun& data = t.luns[0];
  CHECK(data.id == 0);
  CHECK(data.name == "data");
  CHECK(data.size == uint64_t{20} << 30);
  CHECK(data.block_size == 4096);
  CHECK(data.thin == true);
  CHECK(data.write_cache == false);
  CHECK(data.loc.str() == "full.yaml:31:9");
  REQUIRE(data.subunits.size() == 3);
  CHECK(data.subunits[0].backend == "file");
  CHECK(data.subunits[0].path == "/srv/zuma/data-a.img");
  CHECK(data.subunits[0].size == uint64_t{8} << 30);
  CHECK(data.subunits[0].loc.str() == "full.yaml:38:13");
  CHECK(data.subunits[1].path == "/srv/zuma/data-b.img");
  CHECK(data.subunits[1].size == uint64_t{8} << 30);  // the rest: 20 - 8 - 4
  CHECK(data.subunits[2].backend == "memory");
  CHECK(data.subunits[2].path.empty());
  CHECK(data.subunits[2].size == uint64_t{4} << 30);

  const Lun& logs = t.luns[1];
  CHECK(logs.id == 16383);
  CHECK(logs.block_size == 512);
  CHECK(logs.thin == false);
  CHECK(logs.write_cache == true);
  REQUIRE(logs.subunits.size() == 1);  // backend/path shorthand
  CHECK(logs.subunits[0].backend == "file");
  CHECK(logs.subunits[0].path == "./var/logs.img");
  CHECK(logs.subunits[0].size == uint64_t{4} << 30);

  CHECK(c.targets[1].iqn == "naa.52004567BA64678D");
  CHECK(c.targets[1].acl.empty());
  REQUIRE(c.targets[1].luns[0].subunits.size() == 1);
  CHECK(c.targets[1].luns[0].subunits[0].backend == "null");  // `null` unquoted is YAML null
}

TEST_CASE("defaults apply to everything left out") {
  const Config c = parse(with_lun("{id: 0, name: a, size: 1MiB, backend: memory}"), "t.yaml");
  CHECK(c.node.name == "zuma");
  CHECK(c.node.data_dir == "./var");
  CHECK(c.node.control_socket == "./var/zumad.sock");
  CHECK(c.node.reactors == 0);
  CHECK(c.node.log_level == "info");
  const Iscsi d;
  CHECK(c.iscsi.max_recv_data_segment_length == d.max_recv_data_segment_length);
  CHECK(c.iscsi.max_burst_length == d.max_burst_length);
  CHECK(c.iscsi.first_burst_length == d.first_burst_length);
  CHECK(c.iscsi.queue_depth == d.queue_depth);
  CHECK(c.portals[0].tpgt == 1);

  // The control socket follows data_dir; empty node/iscsi sections are allowed.
  CHECK(parse("node: {data_dir: /srv/z/}\niscsi:\n" +
                  with_lun("{id: 0, name: a, size: 1MiB, backend: memory}"),
              "t.yaml")
            .node.control_socket == "/srv/z/zumad.sock");
  CHECK(parse("node:\n" + with_lun("{id: 0, name: a, size: 1MiB, backend: memory}"), "t.yaml")
            .node.control_socket == "./var/zumad.sock");
  // "warning" is spdlog's other spelling of "warn".
  CHECK(parse("node: {log_level: warning}\n" +
                  with_lun("{id: 0, name: a, size: 1MiB, backend: memory}"),
              "t.yaml")
            .node.log_level == "warn");
}

TEST_CASE("the bundled default.yaml parses to what it documents") {
  const Config c = load(ZUMA_SOURCE_DIR "/config/default.yaml");
  CHECK(c.node.name == "zuma");
  CHECK(c.node.data_dir == "./var");
  CHECK(c.node.control_socket == "./var/zumad.sock");
  REQUIRE(c.portals.size() == 1);
  CHECK(c.portals[0].host == "127.0.0.1");
  CHECK(c.portals[0].port == 3260);
  REQUIRE(c.targets.size() == 1);
  CHECK(c.targets[0].iqn == "iqn.2026-11.org.zuma:default");
  CHECK(c.targets[0].acl.empty());
  REQUIRE(c.targets[0].luns.size() == 2);
  for (uint64_t i = 0; i < 2; ++i) {
    const Lun& lun = c.targets[0].luns[i];
    CHECK(lun.id == i);
    CHECK(lun.name == "disk" + std::to_string(i));
    CHECK(lun.size == uint64_t{1} << 30);
    CHECK(lun.block_size == 512);
    CHECK(lun.thin);
    REQUIRE(lun.subunits.size() == 1);
    CHECK(lun.subunits[0].backend == "file");
    CHECK(lun.subunits[0].path == "./var/disk" + std::to_string(i) + ".img");
    CHECK(lun.subunits[0].size == uint64_t{1} << 30);
  }
}

TEST_CASE("the full example in docs/CONFIG.md parses") {
  std::ifstream in(ZUMA_SOURCE_DIR "/docs/CONFIG.md");
  REQUIRE(in);
  const std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t section = doc.find("## Full example");
  REQUIRE(section != std::string::npos);
  const size_t begin = doc.find("```yaml\n", section);
  REQUIRE(begin != std::string::npos);
  const size_t end = doc.find("```", begin + 8);
  REQUIRE(end != std::string::npos);
  const Config c = parse(doc.substr(begin + 8, end - begin - 8), "CONFIG.md");
  CHECK(c.portals.size() == 2);
  CHECK(c.targets.size() == 2);
  CHECK(c.targets[0].luns[0].subunits[1].size == uint64_t{12} << 30);
}

TEST_CASE("the null backend may be written unquoted, as YAML null") {
  // YAML loads `null` and `~` as null, not as text; they still mean the null backend, even
  // after a UTF-8 byte order mark. An empty value does not.
  const std::string yaml =
      "\xef\xbb\xbfportals: [\"127.0.0.1:3260\"]\n"
      "targets:\n"
      "  - iqn: iqn.2026-11.org.zuma:t\n"
      "    luns:\n"
      "      - {id: 0, name: a, size: 1MiB, backend: null}\n"
      "      - {id: 1, name: b, size: 1MiB, backend: ~}\n"
      "      - {id: 2, name: c, size: 1MiB, backend: \"null\"}\n";
  const Config c = parse(yaml, "t.yaml");
  for (const Lun& lun : c.targets[0].luns) CHECK(lun.subunits[0].backend == "null");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, backend: }")) ==
        "t.yaml:5:38: targets[0].luns[0].backend: expected file, memory, null, iscsi or rbd");
}

TEST_CASE("error: file cannot be read") {
  CHECK_THROWS_WITH_AS(load("/nonexistent/zuma.yaml"),
                       "/nonexistent/zuma.yaml: cannot open: No such file or directory",
                       ConfigError);
  CHECK_THROWS_WITH_AS(load("/"), "/: cannot read: Is a directory", ConfigError);
}

TEST_CASE("error: load() reports the path it was given") {
  char path[] = "/tmp/zuma-config-test-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  const std::string text = "portals: [\"127.0.0.1:3260\"]\ntargets: []\n";
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  try {
    load(path);
    FAIL("no error");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) ==
          std::string(path) + ":2:10: targets: at least one target is needed");
    CHECK(e.where.file == path);
    CHECK(e.where.line == 2);
    CHECK(e.where.column == 10);
    CHECK(e.key == "targets");
  }
  unlink(path);
}

TEST_CASE("error: YAML syntax") {
  CHECK(error_of("portals: [ \"127.0.0.1:3260\"\ntargets: []\n") ==
        "t.yaml:2:1: invalid YAML: end of sequence flow not found");
  CHECK(error_of("node:\n  name: a\n\tdata_dir: b\n").starts_with("t.yaml:3:"));
  CHECK(error_of("a: b: c\n") == "t.yaml:1:5: invalid YAML: illegal map value");
  CHECK(error_of("node: " + std::string(5000, '[') + "\n")
            .ends_with(": invalid YAML: nested too deeply"));
}

TEST_CASE("error: document shape") {
  CHECK(error_of("") == "t.yaml:1:1: the file is empty: it needs at least portals and targets");
  CHECK(error_of("# only a comment\n") ==
        "t.yaml:1:1: the file is empty: it needs at least portals and targets");
  CHECK(
      error_of("hello\n") ==
      "t.yaml:1:1: expected a mapping with keys node, portals, iscsi, discovery, targets, groups, "
      "cluster");
  CHECK(error_of("node: {}\n---\nnode: {}\n") == "t.yaml:3:1: expected one YAML document, found 2");
  CHECK(error_of("node: {}\n") == "t.yaml:1:1: missing key 'portals'");
  CHECK(error_of("portals: [\"127.0.0.1:3260\"]\n") == "t.yaml:1:1: missing key 'targets'");
}

TEST_CASE("error: unknown keys, with a suggestion when one is close") {
  CHECK(error_of(with_lun("{id: 0, name: a, sise: 1MiB, backend: memory}")) ==
        "t.yaml:5:26: targets[0].luns[0].sise: unknown key 'sise'; did you mean 'size'?");
  CHECK(error_of(with_lun("{id: 0, nmae: a, size: 1MiB, backend: memory}")) ==
        "t.yaml:5:17: targets[0].luns[0].nmae: unknown key 'nmae'; did you mean 'name'?");
  CHECK(error_of(with_iscsi("{MaxBurstLength: 65536}")) ==
        "t.yaml:1:9: iscsi.MaxBurstLength: unknown key 'MaxBurstLength'; did you mean "
        "'max_burst_length'?");
  CHECK(error_of("nodes: {}\n") == "t.yaml:1:1: nodes: unknown key 'nodes'; did you mean 'node'?");
  CHECK(error_of("colour: blue\n") == "t.yaml:1:1: colour: unknown key 'colour'");
  CHECK(error_of(with_portals("[{address: \"127.0.0.1:3260\", tgpt: 2}]")) ==
        "t.yaml:1:39: portals[0].tgpt: unknown key 'tgpt'; did you mean 'tpgt'?");
}

TEST_CASE("error: a key given twice") {
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, size: 2MiB, backend: memory}")) ==
        "t.yaml:5:38: targets[0].luns[0].size: duplicate key 'size' (first at line 5, column 26)");
}

// ---- groups (issue 8) ----------------------------------------------------------------

namespace {

// Two LUs a (file a.img) and b (memory), node line first, then `groups` from line 8 on.
std::string with_groups(const std::string& groups, const std::string& node = "") {
  return "node: {data_dir: /tmp/zt" + node + "}\n"
         "portals: [\"127.0.0.1:3260\"]\n"
         "targets:\n"
         "  - iqn: iqn.2026-11.org.zuma:t\n"
         "    luns:\n"
         "      - {id: 0, name: a, size: 1MiB, backend: file, path: /tmp/zt/a.img}\n"
         "      - {id: 1, name: b, size: 2MiB, backend: memory}\n"
         "groups:\n" +
         groups;
}

constexpr const char* kListen = ", replication_listen: \"127.0.0.1:3270\"";

}  // namespace

TEST_CASE("cluster: a node of a cluster with a shared LU") {
  const Config c = parse(
      with_lun("{id: 0, name: a, size: 1MiB, backend: memory, shared: true}") +
          "cluster: { name: prod, etcd: [\"http://127.0.0.1:2379\", \"http://10.0.0.2:2379\"], "
          "port_group: 3, alua: standby, lease_ttl: 10s }\n",
      "t.yaml");
  REQUIRE(c.cluster);
  CHECK(c.cluster->name == "prod");
  CHECK(c.cluster->etcd.size() == 2);
  CHECK(c.cluster->port_group == 3);
  CHECK(c.cluster->alua == "standby");
  CHECK(c.cluster->lease_ttl == 10);
  CHECK(c.targets[0].luns[0].shared);
  // Written back by config save, and a change needs a restart.
  const Config again = parse(to_yaml(c), "t.yaml");
  REQUIRE(again.cluster);
  CHECK(again.cluster->port_group == 3);
  CHECK(again.targets[0].luns[0].shared);
  Config other = c;
  other.cluster->lease_ttl = 5;
  const ConfigDiff d = diff(c, other);
  CHECK(std::find(d.restart_needed.begin(), d.restart_needed.end(), "cluster") !=
        d.restart_needed.end());
}

TEST_CASE("cluster: errors name the key") {
  const std::string lun = with_lun("{id: 0, name: a, size: 1MiB, backend: memory}");
  CHECK(error_of(lun + "cluster: { name: c, etcd: [\"127.0.0.1:2379\"], port_group: 1 }\n") ==
        "t.yaml:6:28: cluster.etcd[0]: expected an etcd client URL like "
        "\"http://127.0.0.1:2379\", got '127.0.0.1:2379'");
  CHECK(error_of(lun + "cluster: { name: c, etcd: [\"http://h:1\"] }\n") ==
        "t.yaml:6:10: cluster: missing key 'port_group'");
  CHECK(error_of(lun + "cluster: { name: c, etcd: [\"http://h:1\"], port_group: 0 }\n")
            .find("cluster.port_group") != std::string::npos);
  CHECK(error_of(lun + "cluster: { name: c, etcd: [\"http://h:1\"], port_group: 1, alua: "
                       "offline }\n")
            .find("expected one of active_optimized, active_non_optimized, standby") !=
        std::string::npos);
  CHECK(error_of(lun + "cluster: { name: c, etcd: [\"http://h:1\"], port_group: 1, "
                       "lease_ttl: 1s }\n")
            .find("between 2s and 300s") != std::string::npos);
  // shared without a cluster, or with snapshots.
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, backend: memory, shared: true}")) ==
        "t.yaml:5:63: targets[0].luns[0].shared: a shared LU needs a `cluster:` section (etcd "
        "endpoints, port_group)");
}

TEST_CASE("groups: a primary group with two links") {
  const Config c = parse(with_groups("  - name: db\n"
                                     "    luns: [b, a]\n"
                                     "    log: {path: /tmp/zt/db.rlog, size: 64MiB}\n"
                                     "    links:\n"
                                     "      - {name: dr, peer: \"127.0.0.1:3270\", mode: async}\n"
                                     "      - {name: near, peer: \"127.0.0.1:3271\", mode: sync, "
                                     "sync_timeout_ms: 250}\n"),
                         "t.yaml");
  REQUIRE(c.groups.size() == 1);
  const Group& g = c.groups[0];
  CHECK(g.name == "db");
  CHECK_FALSE(g.secondary);
  CHECK(g.luns == std::vector<std::string>{"b", "a"});
  CHECK(g.log_path == "/tmp/zt/db.rlog");
  CHECK(g.log_size == 64u << 20);
  REQUIRE(g.links.size() == 2);
  CHECK(g.links[0].name == "dr");
  CHECK(g.links[0].peer == "127.0.0.1:3270");
  CHECK_FALSE(g.links[0].sync);
  CHECK(g.links[0].sync_timeout_ms == 5000);
  CHECK(g.links[1].sync);
  CHECK(g.links[1].sync_timeout_ms == 250);
  CHECK(g.loc.str() == "t.yaml:9:5");
  CHECK(g.links[0].fallbehind_ios == 0);  // no limits unless given
  CHECK(group_of(c, "a") == &g);
  CHECK(group_of(c, "x") == nullptr);
  // A group without links only journals its writes.
  CHECK(parse(with_groups("  - {name: db, luns: [a], log: {path: /tmp/zt/l, size: 16MiB}}\n"), "t")
            .groups[0]
            .links.empty());
}

TEST_CASE("groups: an async link's fall-behind limits and policy") {
  const Config c =
      parse(with_groups("  - name: db\n"
                        "    luns: [a]\n"
                        "    log: {path: /tmp/zt/db.rlog, size: 64MiB}\n"
                        "    links:\n"
                        "      - {name: dr, peer: \"127.0.0.1:3270\", mode: async,\n"
                        "         fallbehind: {ios: 10000, bytes: 256MiB, seconds: 30s},\n"
                        "         on_full: block, sync_timeout_ms: 700}\n"
                        "      - {name: far, peer: \"127.0.0.1:3271\", mode: async,\n"
                        "         fallbehind: {seconds: 2m}, resync_rate: 200MiB}\n"),
            "t.yaml");
  const auto& l = c.groups.at(0).links;
  REQUIRE(l.size() == 2);
  CHECK(l[0].fallbehind_ios == 10000);
  CHECK(l[0].fallbehind_bytes == 256u << 20);
  CHECK(l[0].fallbehind_seconds == 30);
  CHECK(l[0].on_full == "block");
  CHECK(l[0].sync_timeout_ms == 700);
  CHECK(l[1].fallbehind_ios == 0);
  CHECK(l[1].fallbehind_seconds == 120);
  CHECK(l[1].on_full == "sync");  // the default policy
  CHECK(l[0].resync_rate == 0);   // no limit unless given
  CHECK(l[1].resync_rate == 200u << 20);
  // Written back and read again: the same.
  const Config again = parse(to_yaml(c), "t2.yaml");
  const auto& m = again.groups.at(0).links;
  REQUIRE(m.size() == 2);
  CHECK(m[0].fallbehind_bytes == 256u << 20);
  CHECK(m[0].on_full == "block");
  CHECK(m[0].sync_timeout_ms == 700);
  CHECK(m[1].fallbehind_seconds == 120);
  CHECK(m[1].resync_rate == 200u << 20);
  CHECK(same_group(again.groups.at(0), c.groups.at(0)));
  Config slower = c;
  slower.groups[0].links[1].resync_rate = 100u << 20;
  CHECK_FALSE(same_group(slower.groups.at(0), c.groups.at(0)));
  // Only a link's resync_rate changed: set on the running link, no restart.
  const ConfigDiff d = diff(c, slower);
  CHECK(d.restart_needed.empty());
  REQUIRE(d.resync_rates_changed.size() == 1);
  CHECK(d.resync_rates_changed[0].group == "db");
  CHECK(d.resync_rates_changed[0].link == "far");
  CHECK(d.resync_rates_changed[0].rate == 100u << 20);
  CHECK_FALSE(d.empty());
  CHECK(d.summary() == "resync_rate of link db/far set to 104857600 bytes/s");
  slower.groups[0].links[1].resync_rate = 0;
  CHECK(diff(c, slower).summary() == "resync_rate of link db/far removed");
  // With any other change to the group, a restart as before.
  Config other = slower;
  other.groups[0].links[1].fallbehind_seconds = 60;
  const ConfigDiff e = diff(c, other);
  CHECK(e.resync_rates_changed.empty());
  REQUIRE(e.restart_needed.size() == 1);
  CHECK(e.restart_needed[0] == "groups");
}

TEST_CASE("groups: a secondary group") {
  const Config c = parse(with_groups("  - {name: db, role: secondary, luns: [a, b]}\n", kListen), "t");
  CHECK(c.node.replication_listen == "127.0.0.1:3270");
  REQUIRE(c.groups.size() == 1);
  CHECK(c.groups[0].secondary);
  CHECK(c.groups[0].log_path.empty());
  CHECK(c.groups[0].luns == std::vector<std::string>{"a", "b"});
}

TEST_CASE("groups: written back by to_yaml and read again the same") {
  for (const std::string& yaml :
       {with_groups("  - name: db\n"
                    "    luns: [b, a]\n"
                    "    log: {path: /tmp/zt/db.rlog, size: 64MiB}\n"
                    "    links: [{name: dr, peer: \"127.0.0.1:3270\", mode: sync, sync_timeout_ms: 300}]\n"),
        with_groups("  - {name: db, role: secondary, luns: [a]}\n  - {name: two, luns: [b], "
                    "log: {path: /tmp/zt/l, size: 16MiB}}\n",
                    kListen)}) {
    const Config c = parse(yaml, "t");
    const Config back = parse(to_yaml(c), "back");
    CHECK(back.node.replication_listen == c.node.replication_listen);
    REQUIRE(back.groups.size() == c.groups.size());
    for (size_t i = 0; i < c.groups.size(); ++i) CHECK(same_group(back.groups[i], c.groups[i]));
    CHECK(diff(c, back).empty());
  }
}

TEST_CASE("groups: errors") {
  const auto group = [](const std::string& g, const std::string& node = "") {
    return error_of(with_groups("  - " + g + "\n", node));
  };
  const std::string log = ", log: {path: /tmp/zt/l, size: 16MiB}";
  CHECK(group("{name: db, luns: [a], log: {path: /tmp/zt/l, size: 16MiB}, colour: red}") ==
        "t.yaml:9:64: groups[0].colour: unknown key 'colour'");
  CHECK(group("{name: db, lus: [a]" + log + "}") ==
        "t.yaml:9:16: groups[0].lus: unknown key 'lus'; did you mean 'luns'?");
  CHECK(group("{name: db, luns: [a, c]" + log + "}") ==
        "t.yaml:9:26: groups[0].luns[1]: 'c' is not a LU of any target");
  CHECK(group("{name: db, luns: []" + log + "}") ==
        "t.yaml:9:22: groups[0].luns: a group needs at least one LU");
  CHECK(group("{name: db, luns: [a, a]" + log + "}") ==
        "t.yaml:9:26: groups[0].luns[1]: LU 'a' is already in group 'db' (at line 9, column 23)");
  CHECK(error_of(with_groups("  - {name: db, luns: [a]" + log + "}\n  - {name: x, luns: [b, a], "
                             "log: {path: /tmp/zt/m, size: 16MiB}}\n")) ==
        "t.yaml:10:25: groups[1].luns[1]: LU 'a' is already in group 'db' (at line 9, column 23)");
  CHECK(error_of(with_groups("  - {name: db, luns: [a]" + log + "}\n  - {name: db, luns: [b], "
                             "log: {path: /tmp/zt/m, size: 16MiB}}\n")) ==
        "t.yaml:10:12: groups[1].name: duplicate group 'db' (first at line 9, column 12)");
  CHECK(group("{name: db, luns: [a]}") == "t.yaml:9:5: groups[0]: missing key 'log'");
  CHECK(group("{name: db, luns: [a], log: {path: /tmp/zt/l, size: 8MiB}}") ==
        "t.yaml:9:56: groups[0].log.size: expected a size from 16MiB to 1TiB (a log holds at least "
        "two of the largest writes, 8MiB), got 8388608 bytes (8MiB)");
  CHECK(group("{name: db, luns: [a], log: {path: /tmp/zt/a.img, size: 16MiB}}") ==
        "t.yaml:9:39: groups[0].log.path: file '/tmp/zt/a.img' is already used by LU 'a' (at line 6, "
        "column 59)");
  CHECK(error_of(with_groups("  - {name: db, luns: [a]" + log + "}\n  - {name: x, luns: [b], "
                             "log: {path: /tmp/zt/l, size: 16MiB}}\n")) ==
        "t.yaml:10:38: groups[1].log.path: file '/tmp/zt/l' is already used by group db (at line 9, "
        "column 39)");
  CHECK(group("{name: db, luns: [a]" + log + ", links: [{name: dr, peer: \"127.0.0.1\", mode: async}]}") ==
        "t.yaml:9:89: groups[0].links[0].peer: give the peer's port too, e.g. \"127.0.0.1:3270\"");
  CHECK(group("{name: db, luns: [a]" + log + ", links: [{name: dr, peer: \"db.example:1\", mode: async}]}") ==
        "t.yaml:9:89: groups[0].links[0].peer: invalid peer 'db.example:1': 'db.example' is not an "
        "IPv4 address (host names are not accepted, give an address)");
  CHECK(group("{name: db, luns: [a]" + log + ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: semi}]}") ==
        "t.yaml:9:110: groups[0].links[0].mode: expected sync or async");
  CHECK(group("{name: db, luns: [a]" + log + ", links: [{name: dr, peer: \"127.0.0.1:1\"}]}") ==
        "t.yaml:9:72: groups[0].links[0]: missing key 'mode'");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, sync_timeout_ms: 9}]}") ==
        "t.yaml:9:134: groups[0].links[0].sync_timeout_ms: sync_timeout_ms applies to mode: sync, "
        "or to "
        "an async link's fallbehind");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: sync}, {name: dr, peer: \"127.0.0.1:2\", "
              "mode: sync}]}") ==
        "t.yaml:9:124: groups[0].links[1].name: duplicate link 'dr' (first at line 9, column 79)");
  // Fall-behind limits: async links only, at least one limit, sync or block.
  CHECK(
      group("{name: db, luns: [a]" + log +
            ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: sync, fallbehind: {ios: 10}}]}") ==
      "t.yaml:9:128: groups[0].links[0].fallbehind: fallbehind applies to mode: async (a sync link "
      "never falls behind)");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, fallbehind: {}}]}") ==
        "t.yaml:9:129: groups[0].links[0].fallbehind: give at least one of ios, bytes, seconds");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, fallbehind: {ios: 0}}]}") ==
        "t.yaml:9:135: groups[0].links[0].fallbehind.ios: expected an integer 1..1099511627776");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, on_full: block}]}") ==
        "t.yaml:9:126: groups[0].links[0].on_full: on_full needs fallbehind limits on this link");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, fallbehind: {ios: 10}, "
              "on_full: bitmap}]}") == "OK");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, fallbehind: {ios: 10}, "
              "on_full: drop}]}") ==
        "t.yaml:9:149: groups[0].links[0].on_full: expected sync, block or bitmap");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, resync_rate: 512KiB}]}") ==
        "t.yaml:9:130: groups[0].links[0].resync_rate: expected at least 1MiB (bytes per second, "
        "e.g. resync_rate: 200MiB)");
  CHECK(group("{name: db, luns: [a]" + log +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, resync_rate: fast}]}") ==
        "t.yaml:9:130: groups[0].links[0].resync_rate: expected a size like 1GiB");
  // Secondary groups.
  CHECK(group("{name: db, role: secondary, luns: [a]}") ==
        "t.yaml:9:22: groups[0].role: a secondary group needs node.replication_listen (where its "
        "primary connects)");
  CHECK(group("{name: db, role: backup, luns: [a]}", kListen) ==
        "t.yaml:9:22: groups[0].role: expected primary or secondary");
  // A secondary's log and links serve it once promoted; links without a log are refused.
  CHECK(group("{name: db, role: secondary, luns: [a]" + log + "}", kListen) == "OK");
  CHECK(
      group("{name: db, role: secondary, luns: [a], links: []}", kListen) ==
      "t.yaml:9:51: groups[0].links: a secondary group's links are used once it is promoted, which "
      "needs a log");
  CHECK(error_of(with_groups("  - {name: db, role: secondary, luns: [a]}\n",
                             ", replication_listen: \"127.0.0.1\"")) ==
        "t.yaml:1:47: node.replication_listen: give the port too, e.g. \"127.0.0.1:3270\"");
  CHECK(error_of("groups: {}\n" + with_lun("{id: 0, name: a, size: 1MiB, backend: memory}")) ==
        "t.yaml:1:9: groups: expected a list of groups like {name: db, luns: [data], log: {...}}");
}

namespace {

// Files for the replication tls and secret keys, made with the openssl CLI: a CA, a
// certificate and its key, another key, a PSK; removed at the end.
struct TlsFiles {
  std::string dir;
  TlsFiles() {
    char t[] = "/tmp/zuma-config-tls-XXXXXX";
    REQUIRE(::mkdtemp(t));
    dir = t;
    const std::string req =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 ";
    REQUIRE(std::system((req + "-keyout " + f("ca.key") + " -out " + f("ca.pem") +
                         " -subj /CN=ca >/dev/null 2>&1")
                            .c_str()) == 0);
    REQUIRE(
        std::system((req + "-keyout " + f("a.key") + " -out " + f("a.pem") + " -subj /CN=a -CA " +
                     f("ca.pem") + " -CAkey " + f("ca.key") + " >/dev/null 2>&1")
                        .c_str()) == 0);
    for (const char* k : {"ca.key", "a.key"}) ::chmod(f(k).c_str(), 0600);
    write("psk", "0123456789abcdef0123\n", 0600);
    write("short", "0123456789\n", 0600);
    write("secret", "a-replication-secret\n", 0600);
    write("open", "a-replication-secret\n", 0644);
  }
  ~TlsFiles() { std::filesystem::remove_all(dir); }
  std::string f(const std::string& n) const { return dir + "/" + n; }
  void write(const std::string& n, const std::string& text, mode_t mode) {
    std::ofstream(f(n)) << text;
    ::chmod(f(n).c_str(), mode);
  }
  std::string certs(const std::string& key = "a.key") const {
    return "{cert: " + f("a.pem") + ", key: " + f(key) + ", ca: " + f("ca.pem") + "}";
  }
};

}  // namespace

TEST_CASE("groups: secrets and tls on links and the listener") {
  TlsFiles t;
  const std::string log = ", log: {path: /tmp/zt/l, size: 16MiB}";
  const Config c = parse(
      with_groups(
          "  - {name: db, luns: [a]" + log + ", secret_file: " + t.f("secret") +
              ", links: [{name: dr, peer: \"127.0.0.1:1\", mode: async, tls: " + t.certs() +
              "}, {name: dr2, peer: \"127.0.0.1:2\", mode: async, secret: \"another-secret-1\", "
              "tls: {psk_file: " +
              t.f("psk") + ", psk_identity: site-a}}]}\n",
          std::string(kListen) + ", replication_tls: {psk_file: " + t.f("psk") + "}"),
      "t");
  REQUIRE(c.node.replication_tls);
  CHECK(c.node.replication_tls->psk_file == t.f("psk"));
  CHECK(c.node.replication_tls->psk_identity == "zuma-replication");
  const Group& g = c.groups[0];
  CHECK(g.secret == "a-replication-secret");
  CHECK(g.secret_file == t.f("secret"));
  REQUIRE(g.links.size() == 2);
  CHECK(g.links[0].secret == g.secret);  // the group's, by default
  CHECK(g.links[0].secret_file == g.secret_file);
  REQUIRE(g.links[0].tls);
  CHECK(g.links[0].tls->cert == t.f("a.pem"));
  CHECK(g.links[1].secret == "another-secret-1");
  CHECK(g.links[1].secret_file.empty());
  REQUIRE(g.links[1].tls);
  CHECK(g.links[1].tls->psk_identity == "site-a");
  // Written back, read again the same; a changed tls needs a restart.
  const Config back = parse(to_yaml(c), "back");
  CHECK(diff(c, back).empty());
  Config other = c;
  other.node.replication_tls->psk_identity = "x";
  CHECK(diff(c, other).summary().find("node.replication_tls") != std::string::npos);
  other = c;
  other.groups[0].links[1].tls.reset();
  CHECK(!same_group(c.groups[0], other.groups[0]));
}

TEST_CASE("groups: secret and tls errors name the file, line and key") {
  TlsFiles t;
  const auto link = [&](const std::string& extra, const std::string& node = "") {
    return error_of(with_groups(
        "  - {name: db, luns: [a], log: {path: /tmp/zt/l, size: 16MiB}, links: [{name: dr, "
        "peer: \"127.0.0.1:1\", mode: async" +
            extra + "}]}\n",
        node));
  };
  auto has = [](const std::string& err, const std::string& want) {
    CHECK_MESSAGE(err.find(want) != std::string::npos, err);
  };
  has(link(", secret: short"),
      "t.yaml:9:125: groups[0].links[0].secret: a replication secret needs 12 to 255 bytes, this "
      "one has 5");
  has(link(", secret_file: " + t.f("open")),
      "groups[0].links[0].secret_file: '" + t.f("open") + "' is world-readable");
  has(link(", secret: \"long-enough-secret\", secret_file: " + t.f("secret")),
      "groups[0].links[0].secret_file: give either secret or secret_file, not both");
  has(link(", tls: {cert: " + t.f("a.pem") + ", ca: " + t.f("ca.pem") + "}"),
      "groups[0].links[0].tls: missing key 'key'");
  has(link(", tls: " + t.certs("ca.key")), "groups[0].links[0].tls.key: '" + t.f("ca.key") +
                                               "' is not the key of the certificate '" +
                                               t.f("a.pem") + "'");
  has(link(", tls: {cert: " + t.f("nope.pem") + ", key: " + t.f("a.key") +
           ", ca: " + t.f("ca.pem") + "}"),
      "groups[0].links[0].tls.cert: cannot read '" + t.f("nope.pem") +
          "': No such file or directory");
  has(link(", tls: {cert: " + t.f("a.pem") + ", key: " + t.f("a.key") + ", ca: " + t.f("secret") +
           "}"),
      "groups[0].links[0].tls.ca: '" + t.f("secret") + "' holds no PEM certificate");
  has(link(", tls: {psk_file: " + t.f("short") + "}"),
      "groups[0].links[0].tls.psk_file: '" + t.f("short") +
          "': a secret needs 16 to 255 bytes, this one has 10");
  has(link(", tls: {psk_file: " + t.f("psk") + ", cert: " + t.f("a.pem") + "}"),
      "groups[0].links[0].tls.cert: cert is for certificates; this tls uses psk_file");
  has(link(", tls: {}"), "groups[0].links[0].tls: give cert, key and ca (mutual TLS), or psk_file");
  has(error_of(with_groups("  - {name: db, luns: [a], log: {path: /tmp/zt/l, size: 16MiB}}\n",
                           ", replication_tls: {psk_file: " + t.f("psk") + "}")),
      "node.replication_tls: replication_tls needs node.replication_listen");
  has(error_of(with_groups("  - {name: db, role: secondary, luns: [a], secret: tiny}\n", kListen)),
      "groups[0].secret: a replication secret needs 12 to 255 bytes");
}

TEST_CASE("groups: a snapshot export cannot be replicated") {
  const std::string yaml =
      "node: {data_dir: /tmp/zt}\n"
      "portals: [\"127.0.0.1:3260\"]\n"
      "targets:\n"
      "  - iqn: iqn.2026-11.org.zuma:t\n"
      "    luns:\n"
      "      - {id: 0, name: a, size: 1MiB, backend: memory,\n"
      "         snapshots: {store: {data: /tmp/zt/s.data, meta: /tmp/zt/s.meta, size: 1MiB}}}\n"
      "      - {id: 1, name: s, size: 1MiB, source: {lu: a, snapshot: one}}\n"
      "groups: [{name: db, luns: [a, s], log: {path: /tmp/zt/l, size: 16MiB}}]\n";
  CHECK(error_of(yaml) ==
        "t.yaml:9:31: groups[0].luns[1]: LU 's' exports a snapshot or clone; only LUs with sub-units "
        "can be replicated");
}

// A target with `chap` set to the flow mapping `chap`.
static std::string with_chap(const std::string& chap) {
  return with_target("{iqn: iqn.2026-11.org.zuma:t, chap: " + chap +
                     ", luns: [{id: 0, name: a, size: 1MiB, backend: memory}]}");
}

TEST_CASE("chap: one-way, mutual, algorithms") {
  Config c = parse(with_chap("{user: alice, secret: alice-secret-1234}"), "t.yaml");
  REQUIRE(c.targets[0].chap);
  CHECK(c.targets[0].chap->user == "alice");
  CHECK(c.targets[0].chap->secret == "alice-secret-1234");
  CHECK(c.targets[0].chap->mutual_user.empty());
  CHECK(c.targets[0].chap->algorithms.empty());
  c = parse(with_chap("{user: a, secret: 123456789012, mutual_user: t, mutual_secret: "
                      "abcdefghijkl, algorithms: [sha-256, MD5]}"),
            "t.yaml");
  CHECK(c.targets[0].chap->mutual_user == "t");
  CHECK(c.targets[0].chap->mutual_secret == "abcdefghijkl");
  CHECK(c.targets[0].chap->algorithms == std::vector<std::string>{"SHA-256", "MD5"});
  c = parse("discovery: {chap: {user: d, secret: discovery-secret}}\n" +
                with_lun("{id: 0, name: a, size: 1MiB, backend: memory}"),
            "t.yaml");
  REQUIRE(c.discovery.chap);
  CHECK(c.discovery.chap->user == "d");
}

TEST_CASE("chap: errors") {
  CHECK(error_of(with_chap("{user: u}")) ==
        "t.yaml:3:41: targets[0].chap: missing key 'secret' (or 'secret_file')");
  CHECK(error_of(with_chap("{user: u, secret: short}")) ==
        "t.yaml:3:59: targets[0].chap.secret: a CHAP secret needs at least 12 bytes (RFC 7143 "
        "12.1.3), this one has 5");
  CHECK(error_of(with_chap("{user: u, secret: 123456789012, mutual_user: t, mutual_secret: "
                           "123456789012}")) ==
        "t.yaml:3:104: targets[0].chap.mutual_secret: mutual_secret must differ from secret");
  CHECK(error_of(with_chap("{user: u, secret: 123456789012, mutual_secret: abcdefghijkl}")) ==
        "t.yaml:3:88: targets[0].chap.mutual_secret: mutual_secret needs mutual_user");
  CHECK(error_of(with_chap("{user: u, secret: 123456789012, algorithms: [SHA-512]}")) ==
        "t.yaml:3:86: targets[0].chap.algorithms[0]: unknown CHAP algorithm 'SHA-512': expected "
        "MD5, SHA-1, SHA-256 or SHA3-256");
  CHECK(error_of(with_chap("{user: u, secret: 123456789012, secret_file: /x}")) ==
        "t.yaml:3:86: targets[0].chap.secret_file: give either secret or secret_file, not both");
}

TEST_CASE("chap: secret files must exist and not be world-readable") {
  char dir[] = "/tmp/zuma-config-test-XXXXXX";
  REQUIRE(mkdtemp(dir));
  const std::string path = std::string(dir) + "/secret";
  {
    std::ofstream f(path);
    f << "file-secret-123456\n";
  }
  REQUIRE(chmod(path.c_str(), 0600) == 0);
  Config c = parse(with_chap("{user: u, secret_file: " + path + "}"), "t.yaml");
  CHECK(c.targets[0].chap->secret == "file-secret-123456");  // trailing newline dropped
  REQUIRE(chmod(path.c_str(), 0644) == 0);
  CHECK(error_of(with_chap("{user: u, secret_file: " + path + "}")) ==
        "t.yaml:3:64: targets[0].chap.secret_file: '" + path +
            "' is world-readable; chmod o-r it (a CHAP secret)");
  CHECK(error_of(with_chap("{user: u, secret_file: " + std::string(dir) + "/nope}")) ==
        "t.yaml:3:64: targets[0].chap.secret_file: cannot read '" + std::string(dir) +
            "/nope': No such file or directory");
  unlink(path.c_str());
  rmdir(dir);
}

TEST_CASE("iscsi digests") {
  Config c = parse(with_iscsi("{header_digest: [CRC32C], data_digest: [none]}"), "t.yaml");
  CHECK(c.iscsi.header_digest_crc32c);
  CHECK_FALSE(c.iscsi.header_digest_none);
  CHECK_FALSE(c.iscsi.data_digest_crc32c);
  CHECK(c.iscsi.data_digest_none);
  c = parse(with_iscsi("{}"), "t.yaml");
  CHECK(c.iscsi.header_digest_crc32c);
  CHECK(c.iscsi.header_digest_none);
  CHECK(error_of(with_iscsi("{header_digest: [MD5]}")) ==
        "t.yaml:1:25: iscsi.header_digest[0]: unknown digest 'MD5': expected CRC32C or None");
  CHECK(error_of(with_iscsi("{data_digest: []}")) ==
        "t.yaml:1:22: iscsi.data_digest: at least one of CRC32C and None is needed");
}

TEST_CASE("physical_block_size") {
  auto lun = [](const std::string& extra) {
    return with_lun("{id: 0, name: a, size: 1MiB, backend: memory" + extra + "}");
  };
  CHECK(parse(lun(""), "t.yaml").targets[0].luns[0].physical_block_size == 0);
  CHECK(parse(lun(", physical_block_size: 4KiB"), "t.yaml").targets[0].luns[0].physical_block_size ==
        4096);
  CHECK(parse(lun(", block_size: 4096, physical_block_size: 4096"), "t.yaml")
            .targets[0]
            .luns[0]
            .physical_block_size == 4096);
  for (const char* bad : {"1536", "256", "3KiB"}) {
    CAPTURE(bad);
    const std::string e = error_of(lun(std::string(", physical_block_size: ") + bad));
    CHECK(e.find("luns[0].physical_block_size: expected block_size (512) times a power of two "
                 "up to 32768") != std::string::npos);
  }
  CHECK(error_of(lun(", block_size: 4096, physical_block_size: 2048"))
            .find("expected block_size (4096) times a power of two") != std::string::npos);
}

TEST_CASE("read_only") {
  auto lun = [](const std::string& extra) {
    return with_lun("{id: 0, name: a, size: 1MiB, backend: memory" + extra + "}");
  };
  CHECK_FALSE(parse(lun(""), "t.yaml").targets[0].luns[0].read_only);
  CHECK(parse(lun(", read_only: true"), "t.yaml").targets[0].luns[0].read_only);
  CHECK_FALSE(parse(lun(", read_only: false"), "t.yaml").targets[0].luns[0].read_only);
  CHECK(error_of(lun(", read_only: maybe")) ==
        "t.yaml:5:66: targets[0].luns[0].read_only: expected true or false");
  // A snapshot export is write protected whatever it says; a clone is writable unless told.
  const std::string head =
      "portals: [\"127.0.0.1:3260\"]\ntargets:\n  - iqn: iqn.2026-11.org.zuma:t\n    luns:\n"
      "      - { id: 0, name: d, size: 1MiB, backend: memory, snapshots: { store: { data: "
      "/tmp/zd, meta: /tmp/zm, size: 4MiB } } }\n";
  const Config c = parse(head +
                             "      - { id: 1, name: s, size: 1MiB, source: { lu: d, snapshot: a } }\n"
                             "      - { id: 2, name: c, size: 1MiB, source: { lu: d, clone: c } }\n"
                             "      - { id: 3, name: r, size: 1MiB, read_only: true, source: { lu: d, "
                             "clone: r } }\n",
                         "t.yaml");
  CHECK_FALSE(c.targets[0].luns[0].read_only);
  CHECK(c.targets[0].luns[1].read_only);
  CHECK_FALSE(c.targets[0].luns[2].read_only);
  CHECK(c.targets[0].luns[3].read_only);
  CHECK(error_of(head + "      - { id: 1, name: s, size: 1MiB, read_only: false, source: { lu: d, "
                        "snapshot: a } }\n") ==
        "t.yaml:6:50: targets[0].luns[1].read_only: a snapshot export is always read-only");
}

TEST_CASE("iscsi write_buffer_budget") {
  CHECK(parse(with_iscsi("{}"), "t.yaml").iscsi.write_buffer_budget == 32ull << 20);
  CHECK(parse(with_iscsi("{write_buffer_budget: 8MiB}"), "t.yaml").iscsi.write_buffer_budget ==
        8ull << 20);
  CHECK(parse(with_iscsi("{write_buffer_budget: 1048576}"), "t.yaml").iscsi.write_buffer_budget ==
        1ull << 20);
  CHECK(error_of(with_iscsi("{write_buffer_budget: 512KiB}")) ==
        "t.yaml:1:30: iscsi.write_buffer_budget: expected a size from 1MiB to 64GiB, got 524288 "
        "bytes");
  CHECK(error_of(with_iscsi("{write_buffer_budget: 65GiB}")) ==
        "t.yaml:1:30: iscsi.write_buffer_budget: expected a size from 1MiB to 64GiB, got "
        "69793218560 bytes");
  CHECK(error_of(with_iscsi("{write_buffer_budget: lots}")) ==
        "t.yaml:1:30: iscsi.write_buffer_budget: expected a size like 1GiB");
  // Below one burst every solicited WRITE would wait forever.
  CHECK(error_of(with_iscsi("{write_buffer_budget: 2MiB, max_burst_length: 4194304}")) ==
        "t.yaml:1:30: iscsi.write_buffer_budget: write_buffer_budget 2097152 is smaller than "
        "max_burst_length 4194304");
}

TEST_CASE("error: missing keys") {
  CHECK(error_of(with_target("{luns: []}")) == "t.yaml:3:5: targets[0]: missing key 'iqn'");
  CHECK(error_of(with_target("{iqn: iqn.2026-11.org.zuma:t}")) ==
        "t.yaml:3:5: targets[0]: missing key 'luns'");
  CHECK(error_of(with_lun("{name: a, size: 1MiB, backend: memory}")) ==
        "t.yaml:5:9: targets[0].luns[0]: missing key 'id'");
  CHECK(error_of(with_lun("{id: 0, size: 1MiB, backend: memory}")) ==
        "t.yaml:5:9: targets[0].luns[0]: missing key 'name'");
  CHECK(error_of(with_lun("{id: 0, name: a, backend: memory}")) ==
        "t.yaml:5:9: targets[0].luns[0]: missing key 'size'");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB}")) ==
        "t.yaml:5:9: targets[0].luns[0]: missing key 'subunits' (or backend and path for a single "
        "sub-unit)");
  CHECK(error_of(with_portals("[{tpgt: 2}]")) == "t.yaml:1:11: portals[0]: missing key 'address'");
}

TEST_CASE("error: wrong types") {
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1.5GiB, backend: memory}")) ==
        "t.yaml:5:32: targets[0].luns[0].size: expected a size like 1GiB");
  CHECK(error_of(with_lun("{id: 0, name: a, size: [1], backend: memory}")) ==
        "t.yaml:5:32: targets[0].luns[0].size: expected a size like 1GiB");
  // An empty value is blamed on its key.
  CHECK(error_of(with_lun("{id: 0, name: a, size: , backend: memory}")) ==
        "t.yaml:5:26: targets[0].luns[0].size: expected a size like 1GiB");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, thin: yes, backend: memory}")) ==
        "t.yaml:5:44: targets[0].luns[0].thin: expected true or false");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, write_cache: 1, backend: memory}")) ==
        "t.yaml:5:51: targets[0].luns[0].write_cache: expected true or false");
  CHECK(error_of(with_lun("{id: x, name: a, size: 1MiB, backend: memory}")) ==
        "t.yaml:5:14: targets[0].luns[0].id: expected an integer 0..16383");
  CHECK(error_of(with_lun("{id: -1, name: a, size: 1MiB, backend: memory}")) ==
        "t.yaml:5:14: targets[0].luns[0].id: expected an integer 0..16383");
  CHECK(error_of(with_lun("{id: 16384, name: a, size: 1MiB, backend: memory}")) ==
        "t.yaml:5:14: targets[0].luns[0].id: expected an integer 0..16383");
  CHECK(error_of(with_lun("{id: 99999999999999999999999, name: a, size: 1MiB, backend: memory}")) ==
        "t.yaml:5:14: targets[0].luns[0].id: expected an integer 0..16383");
  CHECK(error_of(with_target("{iqn: iqn.2026-11.org.zuma:t, alias: [x], luns: []}")) ==
        "t.yaml:3:42: targets[0].alias: expected a string");
  CHECK(error_of(with_target("{iqn: iqn.2026-11.org.zuma:t, luns: {id: 0}}")) ==
        "t.yaml:3:41: targets[0].luns: expected a list of LUNs");
  CHECK(error_of("portals: \"127.0.0.1:3260\"\n") ==
        "t.yaml:1:10: portals: expected a list of portals like \"127.0.0.1:3260\"");
  CHECK(error_of(with_lun("[id, 0]")) ==
        "t.yaml:5:9: targets[0].luns[0]: expected a mapping with keys id, name, size, block_size, "
        "physical_block_size, "
        "thin, write_cache, read_only, subunits, backend, path, layout, stripe_unit, snapshots, "
        "source, "
        "shared");
  CHECK(error_of("node: [a]\n") ==
        "t.yaml:1:7: node: expected a mapping with keys name, data_dir, control_socket, reactors, "
        "log_level, metrics, replication_listen, replication_tls");
  CHECK(error_of("{[a]: 1}\n") == "t.yaml:1:2: expected a key name");
}

TEST_CASE("error: node") {
  const std::string rest = with_lun("{id: 0, name: a, size: 1MiB, backend: memory}");
  CHECK(error_of("node: {reactors: 257}\n" + rest) ==
        "t.yaml:1:18: node.reactors: expected an integer 0..256");
  CHECK(error_of("node: {log_level: verbose}\n" + rest) ==
        "t.yaml:1:19: node.log_level: expected one of trace, debug, info, warn, error, critical, "
        "off");
  CHECK(
      error_of("node: {name: \"my node\"}\n" + rest) ==
      "t.yaml:1:14: node.name: 'my node' is not a valid name (use letters, digits, '_', '.', '-')");
  CHECK(error_of("node: {data_dir: \"\"}\n" + rest) ==
        "t.yaml:1:18: node.data_dir: expected a directory, got an empty string");
  const std::string dir(100, 'd');
  CHECK(error_of("node: {data_dir: " + dir + "}\n" + rest) ==
        "t.yaml:1:18: node.data_dir: the default control socket '" + dir +
            "/zumad.sock' would be longer than 107 bytes (a Unix socket path limit); set "
            "node.control_socket");
  CHECK(error_of("node: {data_dir: " + dir + ", control_socket: /run/z.sock}\n" + rest) == "OK");
  CHECK(error_of("node: {control_socket: " + std::string(108, 's') + "}\n" + rest) ==
        "t.yaml:1:24: node.control_socket: longer than 107 bytes, the limit of a Unix socket path");
}

TEST_CASE("error: portals") {
  CHECK(error_of(with_portals("[]")) == "t.yaml:1:10: portals: at least one portal is needed");
  CHECK(error_of(with_portals("[\"localhost:3260\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal 'localhost:3260': 'localhost' is not an IPv4 "
        "address (host names are not accepted, give an address)");
  CHECK(error_of(with_portals("[\"127.0.0.256:3260\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '127.0.0.256:3260': '127.0.0.256' is not an IPv4 "
        "address (host names are not accepted, give an address)");
  CHECK(error_of(with_portals("[\"::1:3260\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '::1:3260': write an IPv6 address in brackets, "
        "e.g. [::1]:3260");
  CHECK(error_of(with_portals("[\"[::g]:3260\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '[::g]:3260': '::g' is not an IPv6 address");
  CHECK(error_of(with_portals("[\"[::1:3260\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '[::1:3260': missing ']' after the IPv6 address");
  CHECK(error_of(with_portals("[\"127.0.0.1:0\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '127.0.0.1:0': the port must be 1..65535");
  CHECK(error_of(with_portals("[\"127.0.0.1:65536\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '127.0.0.1:65536': the port must be 1..65535");
  CHECK(error_of(with_portals("[\"127.0.0.1:\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '127.0.0.1:': the port must be 1..65535");
  CHECK(error_of(with_portals("[\"\"]")) ==
        "t.yaml:1:11: portals[0]: invalid portal '': expected HOST:PORT, e.g. 127.0.0.1:3260 or "
        "[::1]:3260");
  CHECK(error_of(with_portals("[[a]]")) ==
        "t.yaml:1:11: portals[0]: expected \"HOST:PORT\" or a mapping {address: \"HOST:PORT\", "
        "tpgt: N}");
  // Duplicates compare addresses, not spellings; 3260 is the default port.
  CHECK(error_of(with_portals("[\"127.0.0.1:3260\", \"127.0.0.1\"]")) ==
        "t.yaml:1:29: portals[1]: duplicate portal '127.0.0.1' (first at line 1, column 11)");
  CHECK(error_of(with_portals("[\"[::1]:3260\", {address: \"[0:0::1]:3260\", tpgt: 2}]")) ==
        "t.yaml:1:35: portals[1].address: duplicate portal '[0:0::1]:3260' (first at line 1, "
        "column 11)");
  CHECK(error_of(with_portals("[{address: \"127.0.0.1:3260\", tpgt: 0}]")) ==
        "t.yaml:1:45: portals[0].tpgt: expected an integer 1..65535");
}

TEST_CASE("error: iSCSI names (RFC 7143 4.2.7)") {
  const auto target = [](const std::string& iqn) {
    return error_of(with_target("{iqn: \"" + iqn +
                                "\", luns: [{id: 0, name: a, size: 1MiB, backend: memory}]}"));
  };
  const auto bad = [](const std::string& name, const std::string& why) {
    return "t.yaml:3:11: targets[0].iqn: '" + name + "' is not a valid iSCSI name: " + why;
  };
  CHECK(target("iqn.2026-11.org.zuma") == "OK");
  CHECK(target("iqn.2026-11.org.zuma:a.b:c-d") == "OK");
  CHECK(target("eui.02004567a425678d") == "OK");
  CHECK(target("naa.52004567BA64678D52004567BA64678D") == "OK");
  CHECK(target("iqn.2026-11.org.Zuma:t") ==
        bad("iqn.2026-11.org.Zuma:t", "iqn names must be lowercase"));
  CHECK(target("IQN.2026-11.org.zuma:t") ==
        bad("IQN.2026-11.org.zuma:t", "iqn names must be lowercase"));
  CHECK(target("iqn.2026-11.org.zuma:a_b") ==
        bad("iqn.2026-11.org.zuma:a_b", "character '_' is not allowed (only a-z 0-9 - . :)"));
  CHECK(target("iqn.2026-11.org.zuma:d\xc3\xa9") ==
        bad("iqn.2026-11.org.zuma:d\xc3\xa9", "non-ASCII characters are not accepted"));
  CHECK(target("iqn.26-11.org.zuma:t") ==
        bad("iqn.26-11.org.zuma:t",
            "expected iqn.YYYY-MM.reversed.domain[:name] (no YYYY-MM date after iqn.)"));
  CHECK(target("iqn.2026-13.org.zuma:t") ==
        bad("iqn.2026-13.org.zuma:t",
            "expected iqn.YYYY-MM.reversed.domain[:name] (month 13 is not 01..12)"));
  CHECK(target("iqn.2026-11.:t") ==
        bad("iqn.2026-11.:t", "expected iqn.YYYY-MM.reversed.domain[:name] (empty domain label)"));
  CHECK(target("iqn.2026-11.org..zuma") ==
        bad("iqn.2026-11.org..zuma",
            "expected iqn.YYYY-MM.reversed.domain[:name] (empty domain label)"));
  CHECK(target("iqn.2026-11.org.zuma:") == bad("iqn.2026-11.org.zuma:", "nothing after ':'"));
  CHECK(target("eui.0200") == bad("eui.0200", "eui. must be followed by 16 hex digits"));
  CHECK(target("eui.02004567a425678g") ==
        bad("eui.02004567a425678g", "eui. must be followed by 16 hex digits"));
  CHECK(target("naa.52004567BA64678D52") ==
        bad("naa.52004567BA64678D52", "naa. must be followed by 16 or 32 hex digits"));
  CHECK(target("EUI.02004567a425678d") ==
        bad("EUI.02004567a425678d", "the type must be written in lowercase (eui.)"));
  CHECK(target("zuma:t") == bad("zuma:t", "it must start with iqn., eui. or naa."));
  CHECK(target("") == bad("", "it is empty"));
  const std::string longest = "iqn.2026-11.org.zuma:" + std::string(223 - 21, 'x');
  CHECK(target(longest) == "OK");
  CHECK(target(longest + "x") == bad(longest + "x", "it is 224 bytes long, the limit is 223"));
}

TEST_CASE("error: targets") {
  CHECK(error_of("portals: [\"127.0.0.1:3260\"]\ntargets: []\n") ==
        "t.yaml:2:10: targets: at least one target is needed");
  CHECK(
      error_of(
          "portals: [\"127.0.0.1:3260\"]\n"
          "targets:\n"
          "  - {iqn: eui.02004567a425678d, luns: [{id: 0, name: a, size: 1MiB, backend: memory}]}\n"
          "  - {iqn: eui.02004567A425678D, luns: [{id: 0, name: b, size: 1MiB, backend: "
          "memory}]}\n") ==
      "t.yaml:4:11: targets[1].iqn: duplicate target 'eui.02004567A425678D' (first at line 3, "
      "column 11)");
  CHECK(error_of(with_target("{iqn: iqn.2026-11.org.zuma:t, luns: []}")) ==
        "t.yaml:3:41: targets[0].luns: a target needs at least one LUN");
  CHECK(error_of(with_target("{iqn: iqn.2026-11.org.zuma:t, alias: " + std::string(256, 'a') +
                             ", luns: []}")) ==
        "t.yaml:3:42: targets[0].alias: longer than 255 bytes");
  CHECK(error_of(with_target("{iqn: iqn.2026-11.org.zuma:t, alias: \"a\\tb\", luns: []}")) ==
        "t.yaml:3:42: targets[0].alias: control characters are not allowed");
}

// A target with one LU `a` (LUN 0) and `acl` as given (a flow sequence).
static std::string with_acl(const std::string& acl) {
  return with_target("{iqn: iqn.2026-11.org.zuma:t, luns: [{id: 0, name: a, size: 1MiB, "
                     "backend: memory}], acl: " + acl + "}");
}

TEST_CASE("acl: names, networks and LUN mapping") {
  Config c = parse(with_acl("[iqn.1994-05.com.redhat:h1, {initiator: iqn.1994-05.com.redhat:h2, "
                            "networks: [127.0.0.0/8, \"::1\"], luns: {5: a}}]"),
                   "t.yaml");
  const auto& acl = c.targets[0].acl;
  REQUIRE(acl.size() == 2);
  CHECK(acl[0].initiator == "iqn.1994-05.com.redhat:h1");
  CHECK(acl[1].initiator == "iqn.1994-05.com.redhat:h2");
  CHECK(acl[1].networks == std::vector<std::string>{"127.0.0.0/8", "::1"});
  REQUIRE(acl[1].luns.size() == 1);
  CHECK(acl[1].luns[0].first == 5);
  CHECK(acl[1].luns[0].second == "a");
  CHECK(parse_network("10.0.0.0/8") == std::make_pair(std::string("10.0.0.0"), 8u));
  CHECK(parse_network("fd00::/8") == std::make_pair(std::string("fd00::"), 8u));
  CHECK(parse_network("192.0.2.1") == std::make_pair(std::string("192.0.2.1"), 32u));
  CHECK_FALSE(parse_network("10.0.0.0/33"));
  CHECK_FALSE(parse_network("10.0.0/8"));
  CHECK_FALSE(parse_network("::1/129"));
  CHECK_FALSE(parse_network("10.0.0.0/"));
}

TEST_CASE("error: acl") {
  CHECK(error_of(with_acl("[iqn.1994-05.com.redhat:h1, host2]")) ==
        "t.yaml:3:123: targets[0].acl[1]: 'host2' is not a valid iSCSI name: it must start with "
        "iqn., eui. or naa.");
  CHECK(error_of(with_acl("[iqn.1994-05.com.redhat:h1, iqn.1994-05.com.redhat:h1]")) ==
        "t.yaml:3:123: targets[0].acl[1]: duplicate initiator 'iqn.1994-05.com.redhat:h1' (first "
        "at line 3, column 96)");
  CHECK(error_of(with_acl("")) ==
        "t.yaml:3:90: targets[0].acl: expected a list of initiator names (leave acl out to allow "
        "any initiator)");
  CHECK(error_of(with_acl("[{initiator: iqn.1994-05.com.redhat:h1, networks: [10.0.0.0/33]}]")) ==
        "t.yaml:3:146: targets[0].acl[0].networks[0]: '10.0.0.0/33' is not a network: expected "
        "ADDRESS/PREFIX, e.g. 192.0.2.0/24 or fd00::/8");
  CHECK(error_of(with_acl("[{initiator: iqn.1994-05.com.redhat:h1, luns: {0: nope}}]")) ==
        "t.yaml:3:145: targets[0].acl[0].luns.0: 'nope' is not an LU of target "
        "iqn.2026-11.org.zuma:t");
  CHECK(error_of(with_acl("[{initiator: iqn.1994-05.com.redhat:h1, luns: {0: a, 0: a}}]")) ==
        "t.yaml:3:148: targets[0].acl[0].luns.0: duplicate LUN 0 (first at line 3, column 142)");
  CHECK(error_of(with_acl("[{networks: [10.0.0.0/8]}]")) ==
        "t.yaml:3:96: targets[0].acl[0]: missing key 'initiator'");
}

TEST_CASE("error: LUN ids, names and block sizes") {
  CHECK(error_of("portals: [\"127.0.0.1:3260\"]\n"
                 "targets:\n"
                 "  - iqn: iqn.2026-11.org.zuma:t\n"
                 "    luns:\n"
                 "      - {id: 3, name: a, size: 1MiB, backend: memory}\n"
                 "      - {id: 3, name: b, size: 1MiB, backend: memory}\n") ==
        "t.yaml:6:14: targets[0].luns[1].id: duplicate LUN id 3 in this target (first at line 5, "
        "column 14)");
  // The same id in another target is fine; the same LU name anywhere is not.
  CHECK(error_of("portals: [\"127.0.0.1:3260\"]\n"
                 "targets:\n"
                 "  - {iqn: iqn.2026-11.org.zuma:a, luns: [{id: 0, name: d, size: 1MiB, backend: "
                 "memory}]}\n"
                 "  - {iqn: iqn.2026-11.org.zuma:b, luns: [{id: 0, name: d, size: 1MiB, backend: "
                 "memory}]}\n") ==
        "t.yaml:4:56: targets[1].luns[0].name: duplicate LU name 'd' (first at line 3, column 56)");
  CHECK(
      error_of(with_lun("{id: 0, name: \"a/b\", size: 1MiB, backend: memory}")) ==
      "t.yaml:5:23: targets[0].luns[0].name: 'a/b' is not a valid name (use letters, digits, '_', "
      "'.', '-')");
  CHECK(error_of(with_lun("{id: 0, name: .., size: 1MiB, backend: memory}")) ==
        "t.yaml:5:23: targets[0].luns[0].name: '..' is not a valid name (use letters, digits, '_', "
        "'.', '-')");
  CHECK(error_of(with_lun("{id: 0, name: \"\", size: 1MiB, backend: memory}")) ==
        "t.yaml:5:23: targets[0].luns[0].name: expected a name, got an empty string");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, block_size: 1024, backend: memory}")) ==
        "t.yaml:5:50: targets[0].luns[0].block_size: expected 512 or 4096");
}

TEST_CASE("error: LU sizes") {
  CHECK(error_of(with_lun("{id: 0, name: a, size: 0, backend: memory}")) ==
        "t.yaml:5:32: targets[0].luns[0].size: expected a size greater than 0");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1000, backend: memory}")) ==
        "t.yaml:5:32: targets[0].luns[0].size: 1000 bytes is not a multiple of block_size 512");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 2K, block_size: 4096, backend: memory}")) ==
        "t.yaml:5:32: targets[0].luns[0].size: 2048 bytes (2KiB) is not a multiple of block_size "
        "4096");
}

TEST_CASE("error: backends and the backend/path shorthand") {
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, backend: disk}")) ==
        "t.yaml:5:47: targets[0].luns[0].backend: expected file, memory, null, iscsi or rbd");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, backend: file}")) ==
        "t.yaml:5:9: targets[0].luns[0]: missing key 'path' (the file backend needs one)");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, backend: memory, path: x.img}")) ==
        "t.yaml:5:61: targets[0].luns[0].path: the memory backend takes no path");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, backend: file, path: \"\"}")) ==
        "t.yaml:5:59: targets[0].luns[0].path: expected a path, got an empty string");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, path: x.img}")) ==
        "t.yaml:5:44: targets[0].luns[0].path: path needs a backend (backend: file)");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, backend: memory, subunits: []}")) ==
        "t.yaml:5:47: targets[0].luns[0].backend: give either subunits or backend/path, not both");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, subunits: []}")) ==
        "t.yaml:5:48: targets[0].luns[0].subunits: a LUN needs at least one sub-unit");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, subunits: [{path: x.img}]}")) ==
        "t.yaml:5:49: targets[0].luns[0].subunits[0]: missing key 'backend'");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, subunits: [{backend: null, path: x}]}")) ==
        "t.yaml:5:71: targets[0].luns[0].subunits[0].path: the null backend takes no path");
}

TEST_CASE("error: a file used twice") {
  CHECK(error_of("portals: [\"127.0.0.1:3260\"]\n"
                 "targets:\n"
                 "  - iqn: iqn.2026-11.org.zuma:t\n"
                 "    luns:\n"
                 "      - {id: 0, name: a, size: 1MiB, backend: file, path: ./var/a.img}\n"
                 "      - {id: 1, name: b, size: 1MiB, subunits: [{backend: file, path: "
                 "var//a.img}]}\n") ==
        "t.yaml:6:71: targets[0].luns[1].subunits[0].path: file 'var//a.img' is already used by LU "
        "'a' (at line 5, column 59)");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 2MiB, subunits: [{backend: file, path: /x.img}, "
                          "{backend: file, path: /x.img}]}")) ==
        "t.yaml:5:102: targets[0].luns[0].subunits[1].path: file '/x.img' is already used by LU "
        "'a' (at line 5, column 71)");
}

TEST_CASE("error: sub-unit sizes") {
  CHECK(error_of(with_lun("{id: 0, name: a, size: 3MiB, subunits: [{backend: memory, size: 1MiB}, "
                          "{backend: memory, size: 1MiB}]}")) ==
        "t.yaml:5:48: targets[0].luns[0].subunits: sub-unit sizes add up to 2097152 bytes (2MiB) "
        "but the LU size is 3145728 bytes (3MiB)");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, subunits: [{backend: memory, size: 1MiB}, "
                          "{backend: memory}]}")) ==
        "t.yaml:5:80: targets[0].luns[0].subunits[1]: no room left for this sub-unit: the others "
        "already take 1048576 bytes (1MiB) of the LU's 1048576 bytes (1MiB)");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, subunits: [{backend: memory}, "
                          "{backend: memory}]}")) ==
        "t.yaml:5:68: targets[0].luns[0].subunits[1]: only one sub-unit may leave out size "
        "(targets[0].luns[0].subunits[0] already does)");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, subunits: [{backend: memory, size: 1000}, "
                          "{backend: memory}]}")) ==
        "t.yaml:5:73: targets[0].luns[0].subunits[0].size: 1000 bytes is not a multiple of "
        "block_size 512");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, subunits: [{backend: memory, size: 0}, "
                          "{backend: memory}]}")) ==
        "t.yaml:5:73: targets[0].luns[0].subunits[0].size: expected a size greater than 0 (leave "
        "size out to use the rest)");
  CHECK(error_of(with_lun(
            "{id: 0, name: a, size: 1MiB, subunits: [{backend: memory, size: 16777215TiB}, "
            "{backend: memory, size: 16777215TiB}]}")) ==
        "t.yaml:5:48: targets[0].luns[0].subunits: sub-unit sizes add up to more than 2^64 bytes "
        "but the LU size is 1048576 bytes (1MiB)");
}

TEST_CASE("error: iSCSI ranges (RFC 7143 13)") {
  struct Case {
    const char* key;
    const char* bad;
    const char* range;
  };
  const Case cases[] = {
      {"max_recv_data_segment_length", "511", "512..16777215"},
      {"max_recv_data_segment_length", "16777216", "512..16777215"},
      {"max_burst_length", "511", "512..16777215"},
      {"first_burst_length", "16777216", "512..16777215"},
      {"max_outstanding_r2t", "0", "1..65535"},
      {"default_time2wait", "3601", "0..3600"},
      {"default_time2retain", "3601", "0..3600"},
      {"max_connections", "0", "1..65535"},
      {"max_connections", "65536", "1..65535"},
      {"queue_depth", "0", "1..4096"},
      {"queue_depth", "4097", "1..4096"},
      {"nop_in_interval", "3601", "0..3600"},
      {"nop_in_timeout", "0", "1..3600"},
      {"login_timeout", "0", "1..3600"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.key);
    CAPTURE(c.bad);
    const std::string key = c.key;
    CHECK(error_of(with_iscsi("{" + key + ": " + c.bad + "}")) ==
          "t.yaml:1:" + std::to_string(11 + key.size()) + ": iscsi." + key +
              ": expected an integer " + c.range);
  }
  CHECK(error_of(with_iscsi("{immediate_data: no}")) ==
        "t.yaml:1:25: iscsi.immediate_data: expected true or false");
  CHECK(error_of(with_iscsi("{max_burst_length: 65536, first_burst_length: 131072}")) ==
        "t.yaml:1:54: iscsi.first_burst_length: first_burst_length 131072 is larger than "
        "max_burst_length 65536");
  // With first_burst_length left at its default, the lowered max_burst_length is to blame.
  CHECK(error_of(with_iscsi("{max_burst_length: 65536}")) ==
        "t.yaml:1:27: iscsi.max_burst_length: first_burst_length 262144 is larger than "
        "max_burst_length 65536");
}

TEST_CASE("ConfigError is one line whatever the input holds") {
  const std::string message = error_of("\"a\\nb\": 1\n");
  CHECK(message == "t.yaml:1:1: a\\nb: unknown key 'a\\nb'");
  CHECK(message.find('\n') == std::string::npos);

  const ConfigError e(Location{"f.yaml", 3, 7}, "node.name", "bad");
  CHECK(std::string(e.what()) == "f.yaml:3:7: node.name: bad");
  CHECK(e.where.str() == "f.yaml:3:7");
  CHECK(e.key == "node.name");
}

// ---- bookmark schedules of a group (docs/CONFIG.md "groups", bookmarks) -----------------

namespace {

// LU a with snapshots (and a snapshot schedule named `nightly`), LU b with or without; the
// group `db` of both from line 12 on, its `bookmarks` given.
std::string with_bookmarks(const std::string& bookmarks, bool b_snapshots = true,
                           const std::string& group_extra =
                               ", log: {path: /tmp/zt/db.rlog, size: "
                               "16MiB}") {
  return std::string(
             "node: {data_dir: /tmp/zt, replication_listen: \"127.0.0.1:3270\"}\n"
             "portals: [\"127.0.0.1:3260\"]\n"
             "targets:\n"
             "  - iqn: iqn.2026-11.org.zuma:t\n"
             "    luns:\n"
             "      - {id: 0, name: a, size: 1MiB, backend: file, path: /tmp/zt/a.img,\n"
             "         snapshots: {store: {data: /tmp/zt/a.s, meta: /tmp/zt/a.m, size: 1MiB},\n"
             "                     schedules: [{every: 1d, keep: 7, name: nightly}]}}\n"
             "      - {id: 1, name: b, size: 1MiB, backend: file, path: /tmp/zt/b.img") +
         (b_snapshots ? ",\n         snapshots: {store: {data: /tmp/zt/b.s, meta: /tmp/zt/b.m, "
                        "size: 1MiB}}}\n"
                      : "}\n") +
         "groups:\n"
         "  - {name: db, luns: [a, b]" +
         group_extra + ",\n     bookmarks: " + bookmarks + "}\n";
}

}  // namespace

TEST_CASE("groups: bookmark schedules") {
  const Config c = parse(
      with_bookmarks("[{every: 15m, keep: 24, name: quarter}, {every: 1d, keep: 7}, {every: 1s, "
                     "keep: 2, name: auto}]"),
      "t.yaml");
  const auto& b = c.groups.at(0).bookmarks;
  REQUIRE(b.size() == 3);
  CHECK(b[0].every == 900);
  CHECK(b[0].keep == 24);
  CHECK(b[0].name == "quarter");
  CHECK(b[1].every == 86400);
  CHECK(b[1].name == "bookmark-86400");  // the default prefix
  CHECK(b[2].every == 1);
  CHECK(b[2].name == "auto");
  CHECK(b[0].loc.str() == "t.yaml:13:18");
  // Written back and read again: the same.
  const Config again = parse(to_yaml(c), "t2.yaml");
  CHECK(same_group(again.groups.at(0), c.groups.at(0)));
  CHECK(again.groups.at(0).bookmarks.at(1).name == "bookmark-86400");
  // A change of the schedules needs a restart, as any change to groups.
  Config other = c;
  other.groups[0].bookmarks[0].keep = 25;
  CHECK_FALSE(same_group(other.groups[0], c.groups[0]));
  // A secondary with a log may have them (used while it is primary).
  CHECK(parse(with_bookmarks("[{every: 1h, keep: 3}]", true,
                             ", role: secondary, log: {path: /tmp/zt/db.rlog, size: 16MiB}"),
              "t")
            .groups.at(0)
            .bookmarks.size() == 1);
}

TEST_CASE("groups: bookmark schedule errors name the file, line and key") {
  CHECK(error_of(with_bookmarks("[{every: 15m}]")) ==
        "t.yaml:13:18: groups[0].bookmarks[0]: missing key 'keep'");
  CHECK(error_of(with_bookmarks("[{every: 15x, keep: 2}]")) ==
        "t.yaml:13:26: groups[0].bookmarks[0].every: expected a duration like 90s, 15m, 1h or 1d");
  CHECK(error_of(with_bookmarks("[{every: 0, keep: 2}]")) ==
        "t.yaml:13:26: groups[0].bookmarks[0].every: expected at least 1s");
  CHECK(error_of(with_bookmarks("[{every: 1h, keep: 0}]")) ==
        "t.yaml:13:36: groups[0].bookmarks[0].keep: expected an integer 1..100000");
  CHECK(error_of(with_bookmarks("[{every: 1h, keep: 2, when: now}]")) ==
        "t.yaml:13:39: groups[0].bookmarks[0].when: unknown key 'when'");
  CHECK(error_of(with_bookmarks("[{every: 1h, keep: 2}, {every: 1h, keep: 3}]")) ==
        "t.yaml:13:40: groups[0].bookmarks[1]: two bookmark schedules named 'bookmark-3600' (first "
        "at line 13, column 18); give each a name");
  CHECK(error_of(with_bookmarks("{every: 1h, keep: 2}")) ==
        "t.yaml:13:17: groups[0].bookmarks: expected a list of bookmarks like [{every: 15m, keep: "
        "24, name: quarter}]");
  CHECK(error_of(with_bookmarks("[{every: 1h, keep: 2}]", false)) ==
        "t.yaml:12:17: groups[0].bookmarks: LU 'b' of the group has no snapshots: a bookmark "
        "snapshots every LU of the group");
  CHECK(error_of(with_bookmarks("[{every: 1h, keep: 2, name: nightly}]")) ==
        "t.yaml:13:45: groups[0].bookmarks[0].name: LU 'a' has a snapshot schedule named 'nightly' "
        "too (at line 8, column 34): retention would delete the other's snapshots");
  CHECK(error_of(with_bookmarks("[{every: 1h, keep: 2}]", true, ", role: secondary")) ==
        "t.yaml:13:17: groups[0].bookmarks: bookmarks are taken while the group is primary, which "
        "needs a log");
}
