// config.cc: LU layouts (concat / striped), iscsi sub-units and mirrors (issue 9;
// docs/DISTRIBUTED.md, docs/CONFIG.md). Errors name file:line:column and the key.
#include <doctest/doctest.h>

#include <string>

#include "config/config.hh"

using namespace zuma::config;

namespace {

std::string error_of(const std::string& yaml) {
  try {
    parse(yaml, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// One target with one LU whose mapping starts at line 5, column 9.
std::string with_lun(const std::string& lun) {
  return "portals: [\"127.0.0.1:3260\"]\n"
         "targets:\n"
         "  - iqn: iqn.2026-11.org.zuma:t\n"
         "    luns:\n"
         "      - " +
         lun + "\n";
}

const Lun& only_lun(const Config& c) {
  return c.targets.at(0).luns.at(0);
}

}  // namespace

TEST_CASE("striped layout: sizes are filled in as an equal share of the LU rounded to a stripe") {
  const Config c =
      parse(with_lun("{id: 0, name: a, size: 100KiB, layout: striped, stripe_unit: 8KiB, "
                     "subunits: [ {backend: memory}, {backend: memory}, {backend: memory} ] }"),
            "t.yaml");
  const Lun& l = only_lun(c);
  CHECK(l.layout == "striped");
  CHECK(l.stripe_unit == 8192);
  // 100 KiB over 3 x 8 KiB stripes: 5 stripes (120 KiB), 40 KiB per sub-unit.
  for (const SubUnit& s : l.subunits) CHECK(s.size == 40 * 1024);
  // Written out and read back, it is the same LU.
  const Config again = parse(to_yaml(c), "again.yaml");
  CHECK(same_lun(only_lun(again), l));

  const Config d = parse(with_lun("{id: 0, name: a, size: 1MiB, layout: striped, "
                                  "subunits: [ {backend: memory}, {backend: memory} ] }"),
                         "t.yaml");
  CHECK(only_lun(d).stripe_unit == 64 * 1024);  // the default
  CHECK(only_lun(d).subunits[0].size == 512 * 1024);
  CHECK(
      only_lun(parse(with_lun("{id: 0, name: a, size: 1MiB, backend: memory}"), "t.yaml")).layout ==
      "concat");
}

TEST_CASE("striped layout: bad values name the file, line, column and key") {
  CHECK(error_of(with_lun(
            "{id: 0, name: a, size: 1MiB, layout: raid5, subunits: [ {backend: memory} ] }")) ==
        "t.yaml:5:46: targets[0].luns[0].layout: expected concat or striped");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, layout: striped, stripe_unit: 12KiB, "
                          "subunits: [ {backend: memory} ] }")) ==
        "t.yaml:5:68: targets[0].luns[0].stripe_unit: 12288 bytes (12KiB) is not a power of two");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, block_size: 4096, layout: striped, "
                          "stripe_unit: 2KiB, subunits: [ {backend: memory} ] }")) ==
        "t.yaml:5:86: targets[0].luns[0].stripe_unit: 2048 bytes (2KiB) is not a multiple of "
        "block_size 4096");
  CHECK(error_of(with_lun(
            "{id: 0, name: a, size: 1MiB, stripe_unit: 4KiB, subunits: [ {backend: memory} ] }")) ==
        "t.yaml:5:51: targets[0].luns[0].stripe_unit: stripe_unit needs layout: striped");
  CHECK(error_of(with_lun(
            "{id: 0, name: a, size: 96KiB, layout: striped, stripe_unit: 16KiB, "
            "subunits: [ {backend: memory, size: 32KiB}, {backend: memory, size: 64KiB} ] }")) ==
        "t.yaml:5:112: targets[0].luns[0].subunits[0].size: striped sub-units are all 49152 bytes "
        "(48KiB) (the LU's 98304 bytes (96KiB) rounded up to a full stripe of 2 x 16384 bytes "
        "(16KiB), divided by 2), not 32768 bytes (32KiB)");
  CHECK(error_of(with_lun("{id: 0, name: a, size: 1MiB, layout: striped, backend: memory}")) ==
        "t.yaml:5:46: targets[0].luns[0].layout: a striped layout needs a list of subunits");
}

TEST_CASE("iscsi sub-units: url, initiator, chap, timeout") {
  const Config c = parse(with_lun("{id: 0, name: a, size: 1MiB, subunits: [ {backend: iscsi, "
                                  "url: \"iscsi://127.0.0.1:3261/iqn.2026-11.org.zuma:r/0\", "
                                  "initiator: iqn.2026-11.org.zuma:me, timeout: 3, "
                                  "chap: {user: u, secret: \"0123456789abcdef\"} } ] }"),
                         "t.yaml");
  const SubUnit& s = only_lun(c).subunits.at(0);
  CHECK(s.backend == "iscsi");
  CHECK(s.url == "iscsi://127.0.0.1:3261/iqn.2026-11.org.zuma:r/0");
  CHECK(s.initiator == "iqn.2026-11.org.zuma:me");
  CHECK(s.timeout == 3);
  REQUIRE(s.chap.size() == 1);
  CHECK(s.chap[0].user == "u");
  CHECK(s.size == 1 << 20);
  const Config again = parse(to_yaml(c), "again.yaml");
  CHECK(same_lun(only_lun(again), only_lun(c)));

  const auto sub = [](const std::string& body) {
    return with_lun("{id: 0, name: a, size: 1MiB, subunits: [ " + body + " ] }");
  };
  CHECK(error_of(sub("{backend: iscsi}")) ==
        "t.yaml:5:50: targets[0].luns[0].subunits[0]: missing key 'url' "
        "(iscsi://HOST[:PORT]/TARGET-IQN/LUN)");
  CHECK(
      error_of(sub("{backend: iscsi, url: \"http://x/iqn.2026-11.org.zuma:r/0\"}")) ==
      "t.yaml:5:72: targets[0].luns[0].subunits[0].url: 'http://x/iqn.2026-11.org.zuma:r/0' is not "
      "an iSCSI URL: expected iscsi://HOST[:PORT]/TARGET-IQN/LUN");
  CHECK(error_of(sub("{backend: iscsi, url: \"iscsi://u%p@h/iqn.2026-11.org.zuma:r/0\"}")) ==
        "t.yaml:5:72: targets[0].luns[0].subunits[0].url: 'iscsi://u%p@h/iqn.2026-11.org.zuma:r/0' "
        "is not an iSCSI URL: credentials do not go in the URL; give them under chap");
  CHECK(
      error_of(sub("{backend: iscsi, url: \"iscsi://h:99999/iqn.2026-11.org.zuma:r/0\"}")) ==
      "t.yaml:5:72: targets[0].luns[0].subunits[0].url: 'iscsi://h:99999/iqn.2026-11.org.zuma:r/0' "
      "is not an iSCSI URL: the port must be 1..65535");
  CHECK(error_of(sub("{backend: iscsi, url: \"iscsi://h/iqn.2026-11.org.zuma:r/x\"}")) ==
        "t.yaml:5:72: targets[0].luns[0].subunits[0].url: 'iscsi://h/iqn.2026-11.org.zuma:r/x' is "
        "not "
        "an iSCSI URL: the LUN must be 0..16383");
  CHECK(error_of(sub("{backend: memory, url: \"iscsi://h/iqn.2026-11.org.zuma:r/0\"}")) ==
        "t.yaml:5:73: targets[0].luns[0].subunits[0].url: the memory backend takes no url (only "
        "backend iscsi does)");
  CHECK(
      error_of(sub("{backend: iscsi, url: \"iscsi://h/iqn.2026-11.org.zuma:r/0\", timeout: 0}")) ==
      "t.yaml:5:119: targets[0].luns[0].subunits[0].timeout: expected an integer 1..3600");
}

TEST_CASE("mirrors: exactly two members, each a backend") {
  const Config c = parse(
      with_lun("{id: 0, name: a, size: 1MiB, subunits: [ {mirror: [ {backend: memory}, "
               "{backend: iscsi, url: \"iscsi://127.0.0.1/iqn.2026-11.org.zuma:r/1\"} ] } ] }"),
      "t.yaml");
  const SubUnit& s = only_lun(c).subunits.at(0);
  CHECK(s.backend == "mirror");
  REQUIRE(s.mirror.size() == 2);
  CHECK(s.mirror[0].backend == "memory");
  CHECK(s.mirror[1].url == "iscsi://127.0.0.1/iqn.2026-11.org.zuma:r/1");
  const Config again = parse(to_yaml(c), "again.yaml");
  CHECK(same_lun(only_lun(again), only_lun(c)));

  const auto sub = [](const std::string& body) {
    return with_lun("{id: 0, name: a, size: 1MiB, subunits: [ " + body + " ] }");
  };
  CHECK(
      error_of(sub("{mirror: [ {backend: memory} ]}")) ==
      "t.yaml:5:59: targets[0].luns[0].subunits[0].mirror: a mirror has exactly two members, this "
      "one has 1");
  CHECK(error_of(sub("{mirror: [ {backend: memory}, {backend: null} ]}")) ==
        "t.yaml:5:81: targets[0].luns[0].subunits[0].mirror[1].backend: a null backend cannot "
        "mirror data");
  CHECK(error_of(sub("{backend: file, mirror: [ {backend: memory}, {backend: memory} ]}")) ==
        "t.yaml:5:60: targets[0].luns[0].subunits[0].backend: give either backend or mirror, not "
        "both");
  CHECK(error_of(sub("{backend: mirror}")) ==
        "t.yaml:5:60: targets[0].luns[0].subunits[0].backend: a mirror is written mirror: [member, "
        "member]");
}
