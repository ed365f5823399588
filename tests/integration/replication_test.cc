// Replication between two zumads (issue 8): a primary with a consistency group of two LUs
// and a site link to a secondary zumad on 127.0.0.1. Writes through libiscsi on the
// primary reach the secondary's LUs in the group's order; once the link has settled (seen
// on both metrics endpoints) the secondary's image files equal the primary's byte for
// byte. The secondary's LUs are read-only to initiators (DATA PROTECT 27h/00h). With a
// sync link, every write the primary acknowledged is on the secondary even when the
// primary is SIGKILLed right after it; the restarted primary replays its log and the two
// sites end up equal again.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;

namespace {

constexpr uint32_t kBs = 512;
constexpr uint64_t kDataBlocks = 4 * 1024 * 1024 / kBs;  // LU "data": 4 MiB, LUN 0
constexpr uint64_t kLogsBlocks = 2 * 1024 * 1024 / kBs;  // LU "logs": 2 MiB, LUN 1
constexpr const char* kIqn = "iqn.2026-11.org.zuma:db";

// Both sites: the same two LUs; ports: 0 iSCSI, 1 metrics (2 replication, secondary only).
std::string site_config(const std::string& node_extra, const std::string& groups) {
  return "node: { name: @NAME@, data_dir: @DIR@/var, reactors: 2, log_level: info,\n"
         "        metrics: \"127.0.0.1:@PORT1@\"" + node_extra + " }\n"
         "portals: [ \"127.0.0.1:@PORT0@\" ]\n"
         "targets:\n"
         "  - iqn: " + std::string(kIqn) + "\n"
         "    luns:\n"
         "      - { id: 0, name: data, size: 4MiB, backend: file, path: @DIR@/data.img }\n"
         "      - { id: 1, name: logs, size: 2MiB, backend: file, path: @DIR@/logs.img }\n"
         "groups:\n" + groups;
}

std::string secondary_config() {
  return replace_all(site_config(", replication_listen: \"127.0.0.1:@PORT2@\"",
                                 "  - { name: db, role: secondary, luns: [ data, logs ] }\n"),
                     "@NAME@", "site-b");
}

std::string primary_config(uint16_t peer_port, const std::string& mode) {
  const std::string timeout = mode == "sync" ? ", sync_timeout_ms: 20000" : "";
  return replace_all(
      site_config("", "  - name: db\n"
                      "    luns: [ data, logs ]\n"
                      "    log: { path: @DIR@/db.rlog, size: 16MiB }\n"
                      "    links:\n"
                      "      - { name: dr, peer: \"127.0.0.1:" + std::to_string(peer_port) +
                          "\", mode: " + mode + timeout + " }\n"),
      "@NAME@", "site-a");
}

// A one-GET HTTP client for the metrics endpoints.
std::string http_get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  std::string resp;
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size())) {
    char buf[65536];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) break;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      resp.append(buf, size_t(n));
    }
  }
  ::close(fd);
  return resp;
}

// The value of sample `series` ("NAME{LABELS}") on a metrics page, or -1 if absent.
double sample(const std::string& page, const std::string& series) {
  const size_t at = page.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(page.substr(at + series.size() + 2));
}

struct LinkView {
  double next = -1, acked = -1, connected = -1, degraded = -1, applied = -1;
};

LinkView look(Zumad& primary, Zumad& secondary) {
  const std::string p = http_get(primary.port(1), "/metrics");
  const std::string s = http_get(secondary.port(1), "/metrics");
  LinkView v;
  v.next = sample(p, "zuma_replication_log_next_seq{group=\"db\"}");
  v.acked = sample(p, "zuma_replication_link_acked_seq{group=\"db\",link=\"dr\"}");
  v.connected = sample(p, "zuma_replication_link_connected{group=\"db\",link=\"dr\"}");
  v.degraded = sample(p, "zuma_replication_link_degraded{group=\"db\",link=\"dr\"}");
  v.applied = sample(s, "zuma_replication_replica_applied_seq{group=\"db\"}");
  return v;
}

// Polls (20 s at most) until `ok` holds for what both metrics endpoints show.
template <class Pred>
LinkView wait_for(Zumad& primary, Zumad& secondary, const char* what, Pred ok) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  LinkView v;
  while (std::chrono::steady_clock::now() < deadline) {
    v = look(primary, secondary);
    if (ok(v)) return v;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("link did not get to: " << what << " (next " << v.next << ", acked " << v.acked
                               << ", connected " << v.connected << ", degraded " << v.degraded
                               << ", secondary applied " << v.applied << ")");
  return v;
}

// Every record of the log is acknowledged by the link and applied on the secondary.
LinkView wait_settled(Zumad& primary, Zumad& secondary) {
  return wait_for(primary, secondary, "settled", [](const LinkView& v) {
    return v.next > 1 && v.acked == v.next - 1 && v.applied == v.acked;
  });
}

// What the test wrote: the pattern seed of every block of each LU (0: never written).
struct Model {
  std::vector<uint64_t> data = std::vector<uint64_t>(kDataBlocks, 0);
  std::vector<uint64_t> logs = std::vector<uint64_t>(kLogsBlocks, 0);
  std::vector<uint64_t>& lun(int l) { return l == 0 ? data : logs; }
};

// `count` writes of 1..64 blocks at random places of both LUs (overlapping ones too, so
// order matters), each checked GOOD; the seeds go into `m`.
void write_some(Session& s, Model& m, std::mt19937_64& rng, int count, uint64_t& seed) {
  for (int i = 0; i < count; ++i) {
    const int lun = int(rng() % 2);
    auto& image = m.lun(lun);
    const uint64_t blocks = 1 + rng() % 64;
    const uint64_t lba = rng() % (image.size() - blocks + 1);
    const auto data = make_pattern(blocks, kBs, lba, ++seed);
    Task w = s.write16(lun, lba, data, kBs);
    REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
    for (uint64_t b = lba; b < lba + blocks; ++b) image[b] = seed;
  }
}

// `img` (a LU image file) holds what `image` says, block by block (zeros where unwritten).
void check_image(const std::string& img, const std::vector<uint64_t>& image) {
  const std::string bytes = read_file(img);
  REQUIRE(bytes.size() == image.size() * kBs);
  const std::vector<uint8_t> zero(kBs, 0);
  for (uint64_t b = 0; b < image.size(); ++b) {
    std::span<const uint8_t> block(reinterpret_cast<const uint8_t*>(bytes.data()) + b * kBs, kBs);
    if (image[b] == 0) {
      REQUIRE_MESSAGE(std::equal(block.begin(), block.end(), zero.begin()), img << ": block " << b
                                                                                << " is not zero");
      continue;
    }
    const std::string bad = check_pattern(block, kBs, b, image[b]);
    REQUIRE_MESSAGE(bad.empty(), img << ": " << bad);
  }
}

void check_same_files(Zumad& primary, Zumad& secondary) {
  for (const char* name : {"data.img", "logs.img"}) {
    const std::string a = read_file(primary.file(name)), b = read_file(secondary.file(name));
    REQUIRE(a.size() == b.size());
    CHECK_MESSAGE(a == b, std::string(name) << " differs between the primary and the secondary");
  }
}

// The secondary's LUs are write protected (SBC-4 4.11: DATA PROTECT, WRITE PROTECTED).
void check_read_only(Zumad& secondary) {
  Session s(secondary.portal(), kIqn);
  for (int lun : {0, 1}) {
    const auto data = make_pattern(1, kBs, 0, 99);
    Task w = s.write16(lun, 0, data, kBs);
    CHECK_MESSAGE(is_sense(w.get(), 0x07, 0x2700), describe(s.ctx(), w.get()));
  }
}

}  // namespace

TEST_CASE("async link: a group of two LUs reaches the secondary byte for byte, across restarts") {
  Zumad secondary(secondary_config(), 3);
  Zumad primary(primary_config(secondary.port(2), "async"), 2);
  secondary.start();
  primary.start();
  Model m;
  std::mt19937_64 rng(8);
  uint64_t seed = 0;
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 150, seed);
    Task f = s.sync_cache(0);
    REQUIRE(is_good(f.get()));
    write_some(s, m, rng, 50, seed);
  }
  const LinkView v = wait_settled(primary, secondary);
  CHECK(v.next >= 201);  // at least one record per write
  check_read_only(secondary);
  CHECK(primary.stop() == 0);
  CHECK(secondary.stop() == 0);
  check_image(primary.file("data.img"), m.data);
  check_image(primary.file("logs.img"), m.logs);
  check_same_files(primary, secondary);

  // Both restart: the link resumes where it was, nothing is sent twice or lost.
  secondary.start();
  primary.start();
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 100, seed);
  }
  wait_settled(primary, secondary);
  CHECK(primary.stop() == 0);
  CHECK(secondary.stop() == 0);
  check_image(secondary.file("data.img"), m.data);
  check_image(secondary.file("logs.img"), m.logs);
  check_same_files(primary, secondary);
  CHECK(primary.log().find("group db: log") != std::string::npos);
}

TEST_CASE("sync link: an acknowledged write is on the secondary when the primary is SIGKILLed") {
  Zumad secondary(secondary_config(), 3);
  Zumad primary(primary_config(secondary.port(2), "sync"), 2);
  secondary.start();
  primary.start();
  Model m;
  std::mt19937_64 rng(88);
  uint64_t seed = 0;
  // A sync link holds writes once it is in step with the log.
  wait_for(primary, secondary, "connected and holding writes",
           [](const LinkView& v) { return v.connected == 1 && v.degraded == 0; });
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 120, seed);
    // The last write was acknowledged: the primary dies now, without any shutdown.
    primary.signal(SIGKILL);
    REQUIRE(primary.wait_exit(std::chrono::seconds(10)) == -SIGKILL);
  }
  // Every acknowledged write, the last one included, is on the secondary already (an ACK
  // means applied and durable there), as its initiators read it and in its image files.
  {
    Session s(secondary.portal(), kIqn);
    for (int lun : {0, 1}) {
      const auto& image = m.lun(lun);
      Task r = s.read16(lun, 0, uint32_t(image.size() * kBs), kBs);
      REQUIRE_MESSAGE(is_good(r.get()), describe(s.ctx(), r.get()));
      REQUIRE(r->datain.size == int(image.size() * kBs));
      for (uint64_t b = 0; b < image.size(); ++b) {
        if (image[b] == 0) continue;
        const std::string bad =
            check_pattern(std::span<const uint8_t>(r->datain.data + b * kBs, kBs), kBs, b, image[b]);
        REQUIRE_MESSAGE(bad.empty(), "LUN " << lun << " on the secondary: " << bad);
      }
    }
  }
  check_read_only(secondary);
  CHECK(secondary.stop() == 0);
  check_image(secondary.file("data.img"), m.data);
  check_image(secondary.file("logs.img"), m.logs);

  // The primary restarts (crash replay of its log), the link resumes, more sync writes.
  secondary.start();
  primary.start();
  wait_for(primary, secondary, "connected and holding writes again",
           [](const LinkView& v) { return v.connected == 1 && v.degraded == 0; });
  {
    Session s(primary.portal(), kIqn);
    write_some(s, m, rng, 40, seed);
  }
  wait_settled(primary, secondary);
  CHECK(primary.stop() == 0);
  CHECK(secondary.stop() == 0);
  check_image(primary.file("data.img"), m.data);
  check_image(primary.file("logs.img"), m.logs);
  check_same_files(primary, secondary);
}
