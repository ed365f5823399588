// Which commands each ALUA access state lets through (SPC-5 5.16.2.4).
#include "scsi/alua.hh"

#include <doctest/doctest.h>

namespace zuma::scsi {
namespace {

bool allows(uint8_t state, std::initializer_list<uint8_t> cdb, Reason* why = nullptr) {
  uint8_t c[16] = {};
  size_t i = 0;
  for (uint8_t b : cdb) c[i++] = b;
  Reason r = Reason::kGood;
  const bool ok = alua_allows(state, c, &r);
  if (why) *why = r;
  return ok;
}

TEST_CASE("active states serve everything") {
  CHECK(allows(alua::kActiveOptimized, {0x28}));
  CHECK(allows(alua::kActiveNonOptimized, {0x2A}));
}

TEST_CASE("standby: reports, mode and PR commands; media access is NOT READY 04h/0Bh") {
  Reason why;
  CHECK(allows(alua::kStandby, {0x12}));        // INQUIRY
  CHECK(allows(alua::kStandby, {0xA0}));        // REPORT LUNS
  CHECK(allows(alua::kStandby, {0xA3, 0x0A}));  // REPORT TARGET PORT GROUPS
  CHECK(allows(alua::kStandby, {0xA4, 0x0A}));  // SET TARGET PORT GROUPS
  CHECK(allows(alua::kStandby, {0x5E}));        // PERSISTENT RESERVE IN
  CHECK(allows(alua::kStandby, {0x1A}));        // MODE SENSE (6)
  CHECK_FALSE(allows(alua::kStandby, {0x28}, &why));
  CHECK(why == Reason::kNotReadyPortStandby);
  CHECK_FALSE(allows(alua::kStandby, {0x00}, &why));        // TEST UNIT READY
  CHECK_FALSE(allows(alua::kStandby, {0xA4, 0x06}, &why));  // another MAINTENANCE OUT
}

TEST_CASE("unavailable and offline: no PR commands; transitioning: reports only") {
  Reason why;
  CHECK_FALSE(allows(alua::kUnavailable, {0x5F}, &why));
  CHECK(why == Reason::kNotReadyPortUnavailable);
  CHECK(allows(alua::kUnavailable, {0x4D}));  // LOG SENSE
  CHECK_FALSE(allows(alua::kOffline, {0x2A}, &why));
  CHECK(why == Reason::kNotReadyPortUnavailable);
  CHECK(allows(alua::kTransitioning, {0x12}));
  CHECK_FALSE(allows(alua::kTransitioning, {0x1A}, &why));
  CHECK(why == Reason::kNotReadyAluaTransition);
  const SenseCode s = sense_code(Reason::kNotReadyPortUnavailable);
  CHECK(s.key == 0x2);
  CHECK(s.asc == 0x04);
  CHECK(s.ascq == 0x0C);
}

}  // namespace
}  // namespace zuma::scsi
