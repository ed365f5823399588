// config/writer.cc: to_yaml (read back by parse() to the same Config), leading_comments.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <string>

#include "config/config.hh"

using namespace zuma::config;

namespace {

const char* kFull = R"(# site A
# second comment line

node: { name: site-a, data_dir: /tmp/zuma-w, log_level: debug, metrics: "9460" }
portals: [ "127.0.0.1:3260", { address: "[::1]:3261", tpgt: 2 } ]
iscsi: { queue_depth: 64, immediate_data: false, header_digest: [CRC32C], write_buffer_budget: 48MiB }
discovery: { chap: { user: disc, secret: "discovery-secret-1" } }
targets:
  - iqn: iqn.2026-11.org.zuma:a
    alias: "A \"quoted\" alias"
    chap: { user: u1, secret: "0123456789abcdef", mutual_user: tgt, mutual_secret: "fedcba9876543210",
            algorithms: [SHA-256, MD5] }
    acl:
      - iqn.1994-05.com.redhat:h1
      - { initiator: "iqn.1994-05.com.redhat:h2", networks: [ "10.0.0.0/8" ], luns: { 5: d1 } }
    luns:
      - { id: 0, name: d0, size: 1MiB, backend: memory, thin: true, physical_block_size: 4KiB }
      - { id: 1, name: d1, size: 2MiB, block_size: 4096, write_cache: false, read_only: true,
          subunits: [ { backend: file, path: /tmp/zuma-w/a.img, size: 1MiB }, { backend: null } ] }
)";

}  // namespace

TEST_CASE("to_yaml: parse reads back the same configuration") {
  const Config a = parse(kFull, "t.yaml");
  const std::string text = to_yaml(a);
  const Config b = parse(text, "w.yaml");
  CHECK(diff(a, b).empty());
  CHECK(to_yaml(b) == text);  // a fixed point
  CHECK(b.node.metrics == "127.0.0.1:9460");
  CHECK(b.node.log_level == "debug");
  REQUIRE(b.targets.size() == 1);
  CHECK(b.targets[0].alias == "A \"quoted\" alias");
  CHECK(b.targets[0].chap->algorithms == std::vector<std::string>{"SHA-256", "MD5"});
  CHECK(b.targets[0].acl[1].luns == std::vector<std::pair<uint64_t, std::string>>{{5, "d1"}});
  CHECK(b.targets[0].luns[1].subunits[1].size == 1048576);
  CHECK(b.portals[1].host == "::1");
  CHECK(b.portals[1].tpgt == 2);
  CHECK(!b.iscsi.header_digest_none);
  CHECK(b.iscsi.queue_depth == 64);
  CHECK(b.iscsi.write_buffer_budget == 48ull << 20);
  CHECK(b.targets[0].luns[0].physical_block_size == 4096);
  CHECK(!b.targets[0].luns[0].read_only);
  CHECK(b.targets[0].luns[1].read_only);
  CHECK(b.discovery.chap->user == "disc");
}

TEST_CASE("to_yaml: secrets read from files stay in their files") {
  const std::string path = "/tmp/zuma-writer-test-secret";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f);
    std::fputs("file-secret-0123\n", f);
    std::fclose(f);
    REQUIRE(::chmod(path.c_str(), 0600) == 0);  // a secret file may not be world-readable
  }
  const Config a = parse(
      "portals: [\"127.0.0.1:3260\"]\n"
      "targets:\n"
      "  - iqn: iqn.2026-11.org.zuma:a\n"
      "    chap: { user: u, secret_file: " + path + " }\n"
      "    luns: [ { id: 0, name: d0, size: 1MiB, backend: memory } ]\n",
      "t.yaml");
  const std::string text = to_yaml(a);
  CHECK(text.find("file-secret-0123") == std::string::npos);
  CHECK(text.find("secret_file: \"" + path + "\"") != std::string::npos);
  CHECK(parse(text, "w.yaml").targets[0].chap->secret == "file-secret-0123");
  std::remove(path.c_str());
}

TEST_CASE("to_yaml: the header comes first; leading_comments takes the top comment block") {
  CHECK(leading_comments("# a\n\n# b\nnode: {}\n# not this\n") == "# a\n\n# b\n");
  CHECK(leading_comments("node: {}\n") == "");
  const Config a = parse(kFull, "t.yaml");
  const std::string text = to_yaml(a, leading_comments(kFull));
  CHECK(text.starts_with("# site A\n# second comment line\n\nnode:\n"));
}

TEST_CASE("portal_address brackets IPv6 hosts") {
  Portal p;
  p.host = "::1";
  p.port = 3260;
  CHECK(portal_address(p) == "[::1]:3260");
  p.host = "127.0.0.1";
  CHECK(portal_address(p) == "127.0.0.1:3260");
}
