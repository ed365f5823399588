// One LU exported by two zumad nodes with their shared state in etcd (issue 9,
// docs/DISTRIBUTED.md): the same identity on both, ALUA target port groups per node,
// reservations taken through one node enforced at the other, PREEMPT through the other, a
// node killed while holding reservations (its lease expires, the other carries on), SET
// TARGET PORT GROUPS, etcd lost and back, and a three-member etcd losing a member.
// Real etcd processes (Debian etcd-server) on 127.0.0.1 free ports, in a temporary dir.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/control_client.hh"
#include "tests/integration/harness.hh"
#include "tests/integration/pr_nexus.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;
using namespace std::chrono_literals;

namespace {

// etcd members on loopback; each with its own data dir so a member can be restarted.
class Etcd {
 public:
  explicit Etcd(int members) {
    for (int i = 0; i < members; ++i) {
      client_.push_back(free_port());
      peer_.push_back(free_port());
    }
    for (int i = 0; i < members; ++i) {
      if (i) cluster_ += ",";
      cluster_ += "m" + std::to_string(i) + "=http://127.0.0.1:" + std::to_string(peer_[i]);
    }
    pids_.assign(static_cast<size_t>(members), -1);
    for (int i = 0; i < members; ++i) start(i);
    wait_healthy();
  }
  ~Etcd() {
    for (size_t i = 0; i < pids_.size(); ++i) kill(static_cast<int>(i));
  }
  Etcd(const Etcd&) = delete;
  Etcd& operator=(const Etcd&) = delete;

  void start(int i) {
    const std::string name = "m" + std::to_string(i);
    const std::string c = "http://127.0.0.1:" + std::to_string(client_[size_t(i)]);
    const std::string p = "http://127.0.0.1:" + std::to_string(peer_[size_t(i)]);
    const std::string log = dir_.file(name + ".log");
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      const std::string data = dir_.file(name + ".data");
      execlp("etcd", "etcd", "--name", name.c_str(), "--data-dir", data.c_str(),
             "--listen-client-urls", c.c_str(), "--advertise-client-urls", c.c_str(),
             "--listen-peer-urls", p.c_str(), "--initial-advertise-peer-urls", p.c_str(),
             "--initial-cluster", cluster_.c_str(), "--initial-cluster-state", "new",
             "--heartbeat-interval", "50", "--election-timeout", "500", nullptr);
      _exit(127);
    }
    pids_[size_t(i)] = pid;
  }
  void kill(int i) {
    pid_t& pid = pids_[size_t(i)];
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
  void wait_healthy() {
    for (int tries = 0; tries < 200; ++tries) {
      for (size_t i = 0; i < client_.size(); ++i) {
        if (pids_[i] <= 0) continue;
        try {
          if (http_get(client_[i], "/health").find("\"true\"") != std::string::npos) return;
        } catch (...) {
        }
      }
      std::this_thread::sleep_for(50ms);
    }
    FAIL("etcd did not become healthy: " << read_file(dir_.file("m0.log")).substr(0, 4000));
  }
  // `etcd: [...]` of the cluster section.
  std::string endpoints() const {
    std::string s;
    for (uint16_t p : client_)
      s += (s.empty() ? "" : ", ") + std::string("\"http://127.0.0.1:") + std::to_string(p) + "\"";
    return "[" + s + "]";
  }

 private:
  TempDir dir_;
  std::vector<uint16_t> client_, peer_;
  std::vector<pid_t> pids_;
  std::string cluster_;
};

constexpr uint64_t kKeyA = 0xA1A2A3A4A5A6A7A8ull;
constexpr uint64_t kKeyB = 0xB1B2B3B4B5B6B7B8ull;
const std::string kInitA = "iqn.2026-11.org.zuma:it-host-a";
const std::string kInitB = "iqn.2026-11.org.zuma:it-host-b";

// A node's config: its portal in its own portal group (TPGT = port group), the shared LU on
// a file both nodes open (a shared disk, as RBD or a SAN LUN would be).
std::string node_config(const std::string& name, int port_group, const Etcd& etcd,
                        const std::string& image, int lease_ttl = 3) {
  return "node: { name: " + name + ", data_dir: @DIR@/var, reactors: 2, log_level: info }\n" +
         "portals: [ { address: \"127.0.0.1:@PORT0@\", tpgt: " + std::to_string(port_group) +
         " } ]\n" + "cluster: { name: itc, etcd: " + etcd.endpoints() +
         ", port_group: " + std::to_string(port_group) +
         ", lease_ttl: " + std::to_string(lease_ttl) + "s }\n" +
         "targets:\n"
         "  - iqn: iqn.2026-11.org.zuma:test\n"
         "    luns:\n"
         "      - { id: 0, name: data, size: 16MiB, block_size: 512, shared: true, subunits: [ "
         "{backend: file, path: " +
         image + "} ] }\n";
}

// A nexus with the ALUA helpers of these tests.
struct ClusterNexus : zuma::test::Nexus {
  using zuma::test::Nexus::Nexus;
  // (port group, state) of each group REPORT TARGET PORT GROUPS lists.
  std::vector<std::pair<int, int>> groups() {
    Task t = raw({0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0}, SCSI_XFER_READ, 1024);
    // A group's state may change under the caller (2Ah/06h): read them again.
    for (int i = 0; i < 3 && t && t->status == SCSI_STATUS_CHECK_CONDITION &&
                    t->sense.key == SCSI_SENSE_UNIT_ATTENTION;
         ++i)
      t = raw({0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0}, SCSI_XFER_READ, 1024);
    REQUIRE_MESSAGE(is_good(t.get()), describe(ctx, t.get()));
    std::vector<std::pair<int, int>> out;
    const uint8_t* d = t->datain.data;
    const size_t len = 4 + (size_t(d[0]) << 24 | size_t(d[1]) << 16 | size_t(d[2]) << 8 | d[3]);
    for (size_t n = 4; n + 8 <= len && n + 8 <= size_t(t->datain.size);) {
      out.emplace_back(d[n + 2] << 8 | d[n + 3], d[n] & 0x0F);
      n += 8 + 4 * size_t(d[n + 7]);
    }
    return out;
  }
  Task set_group(int pg, int state) {
    std::vector<uint8_t> p = {0, 0, 0, 0, uint8_t(state), 0, uint8_t(pg >> 8), uint8_t(pg)};
    return raw({0xA4, 0x0A, 0, 0, 0, 0, 0, 0, 0, uint8_t(p.size()), 0, 0}, SCSI_XFER_WRITE,
               int(p.size()), p);
  }
  std::vector<uint8_t> vpd(int page) {
    Task t(iscsi_inquiry_sync(ctx, 0, 1, page, 255));
    REQUIRE_MESSAGE(is_good(t.get()), describe(ctx, t.get()));
    return std::vector<uint8_t>(t->datain.data, t->datain.data + t->datain.size);
  }
};

bool sense(const Task& t, int key, int asc, int ascq) {
  return t && t->status == SCSI_STATUS_CHECK_CONDITION && t->sense.key == key &&
         t->sense.ascq == (asc << 8 | ascq);
}

// Waits (10 s at most) until `z`'s `cluster status` shows `n` live nodes: a node learns of
// the others through its etcd watch, a moment after they joined.
void wait_live(Zumad& z, size_t n) {
  size_t live = 0;
  for (int i = 0; i < 200 && live != n; ++i) {
    const zuma::admin::Json status = call(z, "cluster status", zuma::admin::Json::object());
    live = 0;
    for (const auto& row : status["rows"]) live += row[2] == "yes";
    if (live != n) std::this_thread::sleep_for(50ms);
  }
  REQUIRE_MESSAGE(live == n, "cluster status shows " << live << " live nodes, not " << n << "\n"
                                                     << z.log_tail(3000));
}

struct TwoNodes {
  Etcd& etcd;
  TempDir shared;
  Zumad a, b;
  TwoNodes(Etcd& e, int lease_ttl = 3)
      : etcd(e),
        a(node_config("node-a", 1, e, shared.file("data.img"), lease_ttl)),
        b(node_config("node-b", 2, e, shared.file("data.img"), lease_ttl)) {
    a.start();
    b.start();
    // Both know both before a test asks one about the other (REPORT or SET TARGET PORT
    // GROUPS through node A right after node B joined found no group 2 once, under load).
    wait_live(a, 2);
    wait_live(b, 2);
  }
};

}  // namespace

TEST_CASE("two nodes: one identity, ALUA groups, reservations enforced across nodes") {
  Etcd etcd(1);
  TwoNodes n(etcd);
  ClusterNexus a(n.a.portal(), kInitA, 0x1111);
  ClusterNexus b(n.b.portal(), kInitB, 0x2222);

  // One LU: the same NAA designator (VPD 83h) and serial (VPD 80h) through both nodes.
  const auto id_a = a.vpd(0x83), id_b = b.vpd(0x83);
  REQUIRE(id_a.size() > 24);
  CHECK(std::vector<uint8_t>(id_a.begin() + 4, id_a.begin() + 24) ==
        std::vector<uint8_t>(id_b.begin() + 4, id_b.begin() + 24));
  CHECK(a.vpd(0x80) == b.vpd(0x80));
  // Explicit and implicit ALUA; two groups, both active/optimized.
  Task inq(iscsi_inquiry_sync(a.ctx, 0, 0, 0, 96));
  REQUIRE(is_good(inq.get()));
  CHECK((inq->datain.data[5] & 0x30) == 0x30);
  CHECK(a.groups() == std::vector<std::pair<int, int>>{{1, 0}, {2, 0}});
  CHECK(b.groups() == std::vector<std::pair<int, int>>{{1, 0}, {2, 0}});

  // Data written through one node reads back through the other.
  REQUIRE(is_good(a.write1(0x11).get()));
  Task r = b.read1();
  REQUIRE(is_good(r.get()));
  CHECK(r->datain.data[0] == 0x11);

  // Registrations through both nodes; A reserves WRITE EXCLUSIVE through node A.
  REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, 0, kKeyA).get()));
  REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, 0, kKeyB).get()));
  CHECK(b.keys() == std::vector<uint64_t>{kKeyA, kKeyB});
  REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                          SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, kKeyA, 0)
                      .get()));
  // Enforced at node B at once (the reservation was applied there before A's GOOD).
  CHECK(conflict(b.write1()));
  CHECK(is_good(b.read1().get()));
  CHECK(is_good(a.write1().get()));

  // B preempts A through node B: A's registration goes, A learns it through a unit
  // attention at node A (REGISTRATIONS PREEMPTED 2Ah/05h), and then conflicts.
  REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_PREEMPT,
                          SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, kKeyB, kKeyA)
                      .get()));
  CHECK(sense(a.write1(), SCSI_SENSE_UNIT_ATTENTION, 0x2A, 0x05));
  CHECK(conflict(a.write1()));
  CHECK(is_good(b.write1().get()));
  CHECK(a.keys() == std::vector<uint64_t>{kKeyB});

  // SPC-2 RESERVE (6) through node B blocks node A's nexus; RELEASE frees it.
  // B unregisters (as the holder of a WRITE EXCLUSIVE reservation, that releases it).
  REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, kKeyB, 0).get()));
  CHECK(a.keys().empty());
  b.clear_uas();
  a.clear_uas();
  Task r6(iscsi_reserve6_sync(b.ctx, 0));
  REQUIRE_MESSAGE(is_good(r6.get()), describe(b.ctx, r6.get()));
  CHECK(conflict(a.write1()));
  Task rel(iscsi_release6_sync(b.ctx, 0));
  REQUIRE(is_good(rel.get()));
  CHECK(is_good(a.write1().get()));

  CHECK(n.a.stop() == 0);
  CHECK(n.b.stop() == 0);
}

TEST_CASE("SET TARGET PORT GROUPS: node B to standby and back, from node A") {
  Etcd etcd(1);
  TwoNodes n(etcd);
  ClusterNexus a(n.a.portal(), kInitA, 0x1111);
  ClusterNexus b(n.b.portal(), kInitB, 0x2222);
  REQUIRE_MESSAGE(is_good(a.set_group(2, 2).get()), "SET TARGET PORT GROUPS");
  // Node A's own nexus gets 2Ah/06h as well (DISTRIBUTED.md "ALUA": the watch reports
  // every change to every nexus, the sender's included).
  CHECK(sense(a.read1(), SCSI_SENSE_UNIT_ATTENTION, 0x2A, 0x06));
  CHECK(a.groups() == std::vector<std::pair<int, int>>{{1, 0}, {2, 2}});
  // Node B reports the change (2Ah/06h), then refuses media access in standby (04h/0Bh);
  // INQUIRY and REPORT TARGET PORT GROUPS still work there.
  CHECK(sense(b.read1(), SCSI_SENSE_UNIT_ATTENTION, 0x2A, 0x06));
  CHECK(sense(b.read1(), SCSI_SENSE_NOT_READY, 0x04, 0x0B));
  CHECK(b.groups() == std::vector<std::pair<int, int>>{{1, 0}, {2, 2}});
  // An invalid group is refused with the field pointed at.
  CHECK(sense(a.set_group(9, 0), SCSI_SENSE_ILLEGAL_REQUEST, 0x26, 0x00));
  REQUIRE(is_good(a.set_group(2, 0).get()));
  a.clear_uas();
  b.clear_uas();
  CHECK(is_good(b.read1().get()));
  // The override outlives a restart of node B.
  a.clear_uas();
  REQUIRE(is_good(a.set_group(2, 1).get()));
  CHECK(n.b.stop() == 0);
  n.b.start();
  ClusterNexus b2(n.b.portal(), kInitB, 0x2223);
  CHECK(b2.groups() == std::vector<std::pair<int, int>>{{1, 0}, {2, 1}});
  CHECK(is_good(b2.read1().get()));  // active/non-optimized serves
}

TEST_CASE("a node killed while holding reservations: its lease expires, the other carries on") {
  Etcd etcd(1);
  TwoNodes n(etcd, 2);
  ClusterNexus b(n.b.portal(), kInitB, 0x2222);
  {
    ClusterNexus a(n.a.portal(), kInitA, 0x1111);
    REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, 0, kKeyA).get()));
    REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, 0, kKeyB).get()));
    REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                            SCSI_PERSISTENT_RESERVE_TYPE_EXCLUSIVE_ACCESS, kKeyA, 0)
                        .get()));
    CHECK(conflict(b.read1()));
    n.a.signal(SIGKILL);
    CHECK(n.a.wait_exit(5s).has_value());
    a.ctx = (iscsi_destroy_context(a.ctx), nullptr);
  }
  // Node A's group goes offline once its lease has expired.
  bool offline = false;
  for (int i = 0; i < 100 && !offline; ++i) {
    b.clear_uas();
    offline = b.groups() == std::vector<std::pair<int, int>>{{1, 0xE}, {2, 0}};
    if (!offline) std::this_thread::sleep_for(100ms);
  }
  CHECK(offline);
  // zumactl cluster status on node B: node A not live, offline; node B itself live.
  {
    const zuma::admin::Json status = call(n.b, "cluster status", zuma::admin::Json::object());
    const auto& rows = status["rows"];
    REQUIRE(rows.size() == 2);
    CHECK(rows[0][0] == 1);
    CHECK(rows[0][2] == "no");
    CHECK(rows[0][3] == "offline");
    CHECK(rows[1][1] == "node-b (this node)");
    CHECK(rows[1][2] == "yes");
    CHECK(rows[1][3] == "active_optimized");
  }
  // The persistent reservation outlives its node (SPC-5: it belongs to the I_T nexus);
  // node B's initiator preempts it, without waiting for the dead node.
  b.clear_uas();
  CHECK(conflict(b.read1()));
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_PREEMPT_AND_ABORT,
                          SCSI_PERSISTENT_RESERVE_TYPE_EXCLUSIVE_ACCESS, kKeyB, kKeyA)
                      .get()));
  MESSAGE("PREEMPT AND ABORT with node A dead took "
          << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
  CHECK(is_good(b.read1().get()));
  CHECK(b.keys() == std::vector<uint64_t>{kKeyB});

  // Node A comes back: it joins with the state as it is now.
  n.a.start();
  ClusterNexus a(n.a.portal(), kInitA, 0x1111);
  CHECK(a.keys() == std::vector<uint64_t>{kKeyB});
  CHECK(conflict(a.read1()));
}

TEST_CASE("etcd lost: the nodes fence themselves (unavailable), and serve again when it is back") {
  auto etcd = std::make_unique<Etcd>(1);
  TwoNodes n(*etcd, 2);
  ClusterNexus a(n.a.portal(), kInitA, 0x1111);
  REQUIRE(is_good(a.write1().get()));
  etcd->kill(0);
  bool fenced = false;
  for (int i = 0; i < 100 && !fenced; ++i) {
    Task t = a.read1();
    fenced = sense(t, SCSI_SENSE_NOT_READY, 0x04, 0x0C) ||
             (t && t->sense.key == SCSI_SENSE_UNIT_ATTENTION);  // 2Ah/06h first
    if (!fenced) std::this_thread::sleep_for(100ms);
  }
  CHECK(fenced);
  a.clear_uas();
  CHECK(sense(a.read1(), SCSI_SENSE_NOT_READY, 0x04, 0x0C));
  etcd->start(0);
  etcd->wait_healthy();
  bool back = false;
  for (int i = 0; i < 150 && !back; ++i) {
    a.clear_uas();
    back = is_good(a.read1().get());
    if (!back) std::this_thread::sleep_for(100ms);
  }
  CHECK(back);
}

TEST_CASE("three etcd members: one dies, reservations still cross the nodes") {
  Etcd etcd(3);
  TwoNodes n(etcd);
  ClusterNexus a(n.a.portal(), kInitA, 0x1111);
  ClusterNexus b(n.b.portal(), kInitB, 0x2222);
  REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, 0, kKeyA).get()));
  etcd.kill(0);  // the first endpoint of both nodes
  REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, 0, kKeyB).get()));
  REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                          SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, kKeyA, 0)
                      .get()));
  CHECK(conflict(b.write1()));
  CHECK(a.keys() == std::vector<uint64_t>{kKeyA, kKeyB});
  CHECK(b.groups() == std::vector<std::pair<int, int>>{{1, 0}, {2, 0}});
}

TEST_CASE("RESERVE (6) through one node ends with its nexus: logout, then the other node's") {
  Etcd etcd(1);
  TwoNodes n(etcd);
  ClusterNexus b(n.b.portal(), kInitB, 0x2222);
  {
    ClusterNexus a(n.a.portal(), kInitA, 0x1111);
    REQUIRE(is_good(Task(iscsi_reserve6_sync(a.ctx, 0)).get()));
    CHECK(conflict(Task(iscsi_reserve6_sync(b.ctx, 0))));
  }  // logout
  // The release is part of the logout (libiscsi's Reserve6.Logout reserves through the
  // other node right after its logout response).
  Task r(iscsi_reserve6_sync(b.ctx, 0));
  CHECK_MESSAGE(is_good(r.get()), describe(b.ctx, r.get()));
  REQUIRE(is_good(Task(iscsi_release6_sync(b.ctx, 0)).get()));
}

TEST_CASE("a node with a taken port group, or another LU size, refuses to start") {
  Etcd etcd(1);
  TwoNodes n(etcd);
  Zumad dup(node_config("node-c", 1, etcd, n.shared.file("data.img")));
  try {
    dup.start();
    FAIL("a second node with port_group 1 started");
  } catch (const std::runtime_error&) {
  }
  CHECK(dup.log().find("port_group 1 is already taken by the live node 'node-a'") !=
        std::string::npos);
  std::string cfg = node_config("node-d", 4, etcd, n.shared.file("other.img"));
  cfg = replace_all(cfg, "size: 16MiB", "size: 32MiB");
  Zumad bigger(cfg);
  try {
    bigger.start();
    FAIL("a node with another size for the shared LU started");
  } catch (const std::runtime_error&) {
  }
  CHECK_MESSAGE(bigger.log().find("the cluster has it with 16777216 bytes") != std::string::npos,
                bigger.log_tail(2000));
}
