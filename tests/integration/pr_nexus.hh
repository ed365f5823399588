// An I_T nexus for the reservation tests (integration.reservations, integration.cluster):
// a libiscsi session with a chosen initiator name and ISID, logged in to the test target
// (LUN 0), with the persistent reservation, ALUA and raw CDB helpers those tests use.
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

namespace zuma::test {

struct Nexus {
  iscsi_context* ctx = nullptr;

  // Unit attentions are consumed after login unless `clear` is false.
  Nexus(const std::string& portal, const std::string& initiator, uint32_t isid, bool clear = true) {
    ctx = iscsi_create_context(initiator.c_str());
    REQUIRE(ctx);
    iscsi_set_isid_random(ctx, isid, 0);
    iscsi_set_targetname(ctx, kTestIqn);
    iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
    iscsi_set_noautoreconnect(ctx, 1);
    iscsi_set_timeout(ctx, 30);
    // iscsi_connect + login without a LUN: libiscsi then sends no TEST UNIT READY.
    REQUIRE_MESSAGE(iscsi_full_connect_sync(ctx, portal.c_str(), -1) == 0, iscsi_get_error(ctx));
    if (clear) clear_uas();
  }
  ~Nexus() {
    if (!ctx) return;
    if (iscsi_is_logged_in(ctx)) iscsi_logout_sync(ctx);
    iscsi_destroy_context(ctx);
  }
  Nexus(const Nexus&) = delete;
  Nexus& operator=(const Nexus&) = delete;

  void clear_uas() {
    for (int i = 0; i < 10; ++i) {
      Task t(iscsi_testunitready_sync(ctx, 0));
      if (!t || t->status != SCSI_STATUS_CHECK_CONDITION ||
          t->sense.key != SCSI_SENSE_UNIT_ATTENTION)
        break;
    }
  }
  Task prout(int sa, int type, uint64_t key, uint64_t sark, bool aptpl = false,
             bool all_tg_pt = false) {
    scsi_persistent_reserve_out_basic p{};
    p.reservation_key = key;
    p.service_action_reservation_key = sark;
    p.aptpl = aptpl;
    p.all_tg_pt = all_tg_pt;
    return Task(iscsi_persistent_reserve_out_sync(ctx, 0, sa, 0, type, &p));
  }
  std::vector<uint64_t> keys() {
    Task t(iscsi_persistent_reserve_in_sync(ctx, 0, SCSI_PERSISTENT_RESERVE_READ_KEYS, 4096));
    REQUIRE_MESSAGE(is_good(t.get()), describe(ctx, t.get()));
    auto* rk = static_cast<scsi_persistent_reserve_in_read_keys*>(scsi_datain_unmarshall(t.get()));
    REQUIRE(rk);
    return std::vector<uint64_t>(rk->keys, rk->keys + rk->num_keys);
  }
  // (reserved, key, type)
  std::tuple<bool, uint64_t, int> reservation() {
    Task t(
        iscsi_persistent_reserve_in_sync(ctx, 0, SCSI_PERSISTENT_RESERVE_READ_RESERVATION, 4096));
    REQUIRE_MESSAGE(is_good(t.get()), describe(ctx, t.get()));
    auto* rr =
        static_cast<scsi_persistent_reserve_in_read_reservation*>(scsi_datain_unmarshall(t.get()));
    REQUIRE(rr);
    return {rr->reserved != 0, rr->reservation_key, rr->pr_type};
  }
  Task write1(uint8_t fill = 0x5A) {
    std::vector<uint8_t> b(512, fill);
    return Task(iscsi_write16_sync(ctx, 0, 8, b.data(), 512, 512, 0, 0, 0, 0, 0));
  }
  Task read1() { return Task(iscsi_read16_sync(ctx, 0, 8, 512, 512, 0, 0, 0, 0, 0)); }
  Task tur() { return Task(iscsi_testunitready_sync(ctx, 0)); }
  Task raw(std::vector<uint8_t> cdb, int dir, int xfer, std::vector<uint8_t> out = {}) {
    scsi_task* t = scsi_create_task(static_cast<int>(cdb.size()), cdb.data(), dir, xfer);
    REQUIRE(t);
    iscsi_data d{static_cast<size_t>(out.size()), out.data()};
    return Task(iscsi_scsi_command_sync(ctx, 0, t, out.empty() ? nullptr : &d));
  }
};

inline bool conflict(const Task& t) {
  return t && t->status == SCSI_STATUS_RESERVATION_CONFLICT;
}

}  // namespace zuma::test
