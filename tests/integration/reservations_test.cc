// Persistent reservations, unit attentions and ALUA against a real zumad: APTPL state that
// survives a restart (and state without APTPL that does not), registrations per I_T nexus
// across two portal groups, REPORT TARGET PORT GROUPS, POWER ON OCCURRED after login, and
// what the reset task management functions do to reservations and unit attentions.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/integration/harness.hh"
#include "tests/integration/pr_nexus.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;

namespace {

// Two portals in two portal groups (TPGT 1 and 2), one LU.
const char* kConfig =
    "node: { name: it, data_dir: @DIR@/var, reactors: 2, log_level: info }\n"
    "portals: [ \"127.0.0.1:@PORT0@\", { address: \"127.0.0.1:@PORT1@\", tpgt: 2 } ]\n"
    "targets:\n"
    "  - iqn: iqn.2026-11.org.zuma:test\n"
    "    luns:\n"
    "      - { id: 0, name: data, size: 16MiB, block_size: 512, subunits: [ {backend: file, "
    "path: @DIR@/data.img} ] }\n";

constexpr uint64_t kKeyA = 0xA1A2A3A4A5A6A7A8ull;
constexpr uint64_t kKeyB = 0xB1B2B3B4B5B6B7B8ull;

const std::string kInitA = "iqn.2026-11.org.zuma:it-host-a";
const std::string kInitB = "iqn.2026-11.org.zuma:it-host-b";

}  // namespace

TEST_CASE("APTPL: registrations and the reservation survive a restart") {
  Zumad z(kConfig, 2);
  z.start();
  {
    Nexus a(z.portal(0), kInitA, 0x1234);
    Nexus b(z.portal(0), kInitB, 0x5678);
    REQUIRE(
        is_good(a.prout(SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, kKeyA, true)
                    .get()));
    REQUIRE(
        is_good(b.prout(SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, kKeyB, true)
                    .get()));
    REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                            SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, kKeyA, 0)
                        .get()));
    CHECK(std::filesystem::exists(z.file("var/lu/data.pr")));
  }
  CHECK(z.stop() == 0);
  z.start();
  {
    // The same I_T nexuses (initiator name, ISID, portal group) as before the restart.
    Nexus a(z.portal(0), kInitA, 0x1234);
    Nexus b(z.portal(0), kInitB, 0x5678);
    auto keys = a.keys();
    CHECK(keys == std::vector<uint64_t>{kKeyA, kKeyB});
    auto [reserved, key, type] = a.reservation();
    CHECK(reserved);
    CHECK(key == kKeyA);
    CHECK(type == SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE);
    // Enforced: the holder writes, the other registrant may not.
    CHECK(is_good(a.write1().get()));
    CHECK(conflict(b.write1()));
    // REGISTER with APTPL=0: from now on nothing persists.
    REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_REGISTER, 0, kKeyB, kKeyB, false).get()));
    CHECK_FALSE(std::filesystem::exists(z.file("var/lu/data.pr")));
  }
  CHECK(z.stop() == 0);
  z.start();
  Nexus a(z.portal(0), kInitA, 0x1234);
  CHECK(a.keys().empty());
  CHECK_FALSE(std::get<0>(a.reservation()));
  CHECK(is_good(a.write1().get()));
}

TEST_CASE("without APTPL nothing survives a restart") {
  Zumad z(kConfig, 2);
  z.start();
  {
    Nexus a(z.portal(0), kInitA, 0x1234);
    REQUIRE(is_good(
        a.prout(SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, kKeyA).get()));
    REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                            SCSI_PERSISTENT_RESERVE_TYPE_EXCLUSIVE_ACCESS, kKeyA, 0)
                        .get()));
    CHECK_FALSE(std::filesystem::exists(z.file("var/lu/data.pr")));
  }
  CHECK(z.stop() == 0);
  z.start();
  Nexus a(z.portal(0), kInitA, 0x1234);
  CHECK(a.keys().empty());
  CHECK_FALSE(std::get<0>(a.reservation()));
}

TEST_CASE("registrations belong to the I_T nexus: portal group, ISID, ALL_TG_PT") {
  Zumad z(kConfig, 2);
  z.start();
  Nexus a1(z.portal(0), kInitA, 0x1111);  // portal group 1
  Nexus a2(z.portal(1), kInitA, 0x1111);  // same initiator port, portal group 2
  Nexus b(z.portal(0), kInitB, 0x2222);
  REQUIRE(is_good(
      a1.prout(SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, kKeyA).get()));
  REQUIRE(is_good(a1.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                           SCSI_PERSISTENT_RESERVE_TYPE_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, kKeyA, 0)
                      .get()));
  // The other portal group is another I_T nexus: not registered, so no access.
  CHECK(conflict(a2.write1()));
  CHECK(conflict(b.write1()));
  // A registration with ALL_TG_PT covers every target port.
  REQUIRE(is_good(a1.prout(SCSI_PERSISTENT_RESERVE_CLEAR, 0, kKeyA, 0).get()));
  CHECK(is_good(a2.tur().get()));  // a2 was not registered: no RESERVATIONS PREEMPTED for it
  REQUIRE(is_good(
      a1.prout(SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, kKeyA, false, true)
          .get()));
  REQUIRE(is_good(a1.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                           SCSI_PERSISTENT_RESERVE_TYPE_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, kKeyA, 0)
                      .get()));
  CHECK(is_good(a2.write1().get()));
  CHECK(conflict(b.write1()));
  // PREEMPT from the other portal group's nexus (registered through ALL_TG_PT) by b:
  // b registers and preempts; a1 and a2 learn REGISTRATIONS PREEMPTED.
  REQUIRE(is_good(
      b.prout(SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, kKeyB).get()));
  REQUIRE(is_good(b.prout(SCSI_PERSISTENT_RESERVE_PREEMPT,
                          SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, kKeyB, kKeyA)
                      .get()));
  for (Nexus* n : {&a1, &a2}) {
    Task t = n->tur();
    CHECK(is_sense(t.get(), SCSI_SENSE_UNIT_ATTENTION, 0x2A05));
  }
  CHECK(conflict(a2.write1()));
  CHECK(is_good(b.write1().get()));
}

TEST_CASE("REPORT TARGET PORT GROUPS lists both portal groups, INQUIRY says implicit ALUA") {
  Zumad z(kConfig, 2);
  z.start();
  for (size_t portal = 0; portal < 2; ++portal) {
    CAPTURE(portal);
    Nexus n(z.portal(portal), kInitA, 0x3333 + static_cast<uint32_t>(portal));
    unsigned char cdb[12] = {0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0};
    scsi_task* raw = scsi_create_task(12, cdb, SCSI_XFER_READ, 256);
    REQUIRE(raw);
    Task t(iscsi_scsi_command_sync(n.ctx, 0, raw, nullptr));
    REQUIRE_MESSAGE(is_good(t.get()), describe(n.ctx, t.get()));
    const std::vector<uint8_t> d(t->datain.data, t->datain.data + t->datain.size);
    const std::vector<uint8_t> want = {0, 0, 0,    24,   0x80, 0x01, 0, 1, 0, 0, 0, 1, 0, 0,
                                       0, 1, 0x80, 0x01, 0,    2,    0, 0, 0, 1, 0, 0, 0, 2};
    CHECK(d == want);
    Task inq(iscsi_inquiry_sync(n.ctx, 0, 0, 0, 96));
    REQUIRE(is_good(inq.get()));
    CHECK((inq->datain.data[5] & 0x30) == 0x10);  // TPGS 01b
  }
}

TEST_CASE("a new session's first command reports POWER ON OCCURRED") {
  Zumad z(kConfig, 2);
  z.start();
  Nexus n(z.portal(0), kInitA, 0x4444, false);
  Task t = n.tur();
  CHECK(is_sense(t.get(), SCSI_SENSE_UNIT_ATTENTION, 0x2901));
  CHECK(is_good(n.tur().get()));
}

TEST_CASE(
    "LOGICAL UNIT RESET and TARGET WARM RESET: 29h/03h everywhere, RESERVE (6) released, "
    "persistent reservations kept") {
  Zumad z(kConfig, 2);
  z.start();
  Nexus a(z.portal(0), kInitA, 0x5555);
  Nexus b(z.portal(1), kInitB, 0x6666);
  REQUIRE(is_good(
      a.prout(SCSI_PERSISTENT_RESERVE_REGISTER_AND_IGNORE_EXISTING_KEY, 0, 0, kKeyA).get()));
  REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_RESERVE,
                          SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, kKeyA, 0)
                      .get()));
  REQUIRE(iscsi_task_mgmt_lun_reset_sync(a.ctx, 0) == 0);
  // SAM-5: the reset unit attention for every I_T nexus, the sender's included.
  for (Nexus* n : {&a, &b}) {
    Task t = n->tur();
    CHECK(is_sense(t.get(), SCSI_SENSE_UNIT_ATTENTION, 0x2903));
    CHECK(is_good(n->tur().get()));
  }
  // SPC-5: a persistent reservation survives a reset.
  auto [reserved, key, type] = a.reservation();
  CHECK(reserved);
  CHECK(key == kKeyA);
  CHECK(conflict(b.write1()));
  REQUIRE(is_good(a.prout(SCSI_PERSISTENT_RESERVE_CLEAR, 0, kKeyA, 0).get()));
  CHECK(is_good(b.tur().get()));  // b was not registered: no RESERVATIONS PREEMPTED
  // SPC-2: a RESERVE (6) reservation does not survive one.
  REQUIRE(is_good(Task(iscsi_reserve6_sync(a.ctx, 0)).get()));
  CHECK(conflict(Task(iscsi_reserve6_sync(b.ctx, 0))));
  REQUIRE(iscsi_task_mgmt_target_warm_reset_sync(b.ctx) == 0);
  for (Nexus* n : {&a, &b}) CHECK(is_sense(n->tur().get(), SCSI_SENSE_UNIT_ATTENTION, 0x2903));
  CHECK(is_good(Task(iscsi_reserve6_sync(b.ctx, 0)).get()));
  CHECK(is_good(Task(iscsi_release6_sync(b.ctx, 0)).get()));
  // Nothing outstanding: ABORT TASK SET completes at once.
  CHECK(iscsi_task_mgmt_abort_task_set_sync(a.ctx, 0) == 0);
  CHECK(is_good(a.tur().get()));
}
