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

TEST_CASE("rbd sub-units: pool, image, user, keyring, ceph_conf, mon_host, timeout") {
  const Config c =
      parse(with_lun("{id: 0, name: a, size: 2MiB, layout: striped, subunits: [ "
                     "{backend: rbd, pool: rbd, image: a0, user: zuma, keyring: /k/zuma.keyring, "
                     "ceph_conf: /c/ceph.conf, timeout: 4}, "
                     "{backend: rbd, pool: rbd, image: a1, mon_host: \"[v2:127.0.0.1:3300]\"} ] }"),
            "t.yaml");
  const SubUnit& s = only_lun(c).subunits.at(0);
  CHECK(s.backend == "rbd");
  CHECK(s.pool == "rbd");
  CHECK(s.image == "a0");
  CHECK(s.user == "zuma");
  CHECK(s.keyring == "/k/zuma.keyring");
  CHECK(s.ceph_conf == "/c/ceph.conf");
  CHECK(s.mon_host.empty());
  CHECK(s.timeout == 4);
  CHECK(s.size == 1 << 20);
  const SubUnit& t = only_lun(c).subunits.at(1);
  CHECK(t.image == "a1");
  CHECK(t.user.empty());  // librados' default: client.admin
  CHECK(t.mon_host == "[v2:127.0.0.1:3300]");
  CHECK(t.timeout == 10);
  // Written out and read back, it is the same LU; a changed image is a different one.
  const Config again = parse(to_yaml(c), "again.yaml");
  CHECK(same_lun(only_lun(again), only_lun(c)));
  Lun other = only_lun(c);
  other.subunits[1].image = "b1";
  CHECK_FALSE(same_lun(other, only_lun(c)));

  const auto sub = [](const std::string& body) {
    return with_lun("{id: 0, name: a, size: 1MiB, subunits: [ " + body + " ] }");
  };
  CHECK(error_of(sub("{backend: rbd, image: a}")) ==
        "t.yaml:5:50: targets[0].luns[0].subunits[0]: missing key 'pool' (the rbd backend needs "
        "pool and image)");
  CHECK(error_of(sub("{backend: rbd, pool: rbd}")) ==
        "t.yaml:5:50: targets[0].luns[0].subunits[0]: missing key 'image' (the rbd backend needs "
        "pool and image)");
  CHECK(error_of(sub("{backend: rbd, pool: rbd, image: \"a@snap\"}")) ==
        "t.yaml:5:83: targets[0].luns[0].subunits[0].image: expected a Ceph image name (no '/', "
        "'@' or blanks)");
  CHECK(error_of(sub("{backend: rbd, pool: rbd, image: a, path: /x}")) ==
        "t.yaml:5:92: targets[0].luns[0].subunits[0].path: the rbd backend takes pool and image, "
        "not path");
  CHECK(error_of(sub("{backend: file, path: /tmp/x.img, pool: rbd}")) ==
        "t.yaml:5:90: targets[0].luns[0].subunits[0].pool: the file backend takes no pool (only "
        "backend rbd does)");
  CHECK(error_of(sub("{backend: memory, timeout: 3}")) ==
        "t.yaml:5:77: targets[0].luns[0].subunits[0].timeout: the memory backend takes no timeout "
        "(only backends iscsi and rbd do)");
  CHECK(
      error_of(sub("{backend: rbd, pool: rbd, image: a, keyring: \"\"}")) ==
      "t.yaml:5:95: targets[0].luns[0].subunits[0].keyring: expected a path, got an empty string");
  // One image, two sub-units: refused, naming the first user.
  CHECK(error_of(with_lun("{id: 0, name: a, size: 2MiB, subunits: [ "
                          "{backend: rbd, pool: p, image: i, size: 1MiB}, "
                          "{backend: rbd, pool: p, image: i} ] }")) ==
        "t.yaml:5:128: targets[0].luns[0].subunits[1].image: image p/i is already used by LU 'a' "
        "(at line 5, column 81)");
  // The same name in another cluster is another image.
  CHECK_NOTHROW(parse(with_lun("{id: 0, name: a, size: 2MiB, subunits: [ "
                               "{backend: rbd, pool: p, image: i, size: 1MiB}, "
                               "{backend: rbd, pool: p, image: i, ceph_conf: /other.conf} ] }"),
                      "t.yaml"));
  // A mirror member may be an RBD image.
  const Config m = parse(with_lun("{id: 0, name: a, size: 1MiB, subunits: [ {mirror: [ "
                                  "{backend: rbd, pool: p, image: m0}, {backend: file, "
                                  "path: /tmp/zuma-m1.img} ] } ] }"),
                         "t.yaml");
  CHECK(only_lun(m).subunits.at(0).mirror.at(0).image == "m0");
}
