#include "scsi/alua.hh"

#include "scsi/cdb.hh"

namespace zuma::scsi {

bool alua_allows(uint8_t state, const uint8_t* cdb, Reason* why) {
  if (state == alua::kActiveOptimized || state == alua::kActiveNonOptimized) return true;
  const uint8_t opc = cdb[0];
  const uint8_t sa = cdb[1] & 0x1F;
  // Allowed in every state (SPC-5 5.16.2.4.4 to 5.16.2.4.6): INQUIRY, REPORT LUNS, REQUEST
  // SENSE, REPORT TARGET PORT GROUPS and the other MAINTENANCE IN reports, SET TARGET PORT
  // GROUPS, LOG and MODE SENSE/SELECT, RECEIVE/SEND DIAGNOSTIC, READ/WRITE BUFFER.
  switch (opc) {
    case 0x12:  // INQUIRY
    case 0xA0:  // REPORT LUNS
    case 0x03:  // REQUEST SENSE
    case 0xA3:  // MAINTENANCE IN
      return true;
    case 0xA4:  // MAINTENANCE OUT: SET TARGET PORT GROUPS
      if (sa == 0x0A) return true;
      break;
    case 0x4C:
    case 0x4D:  // LOG SELECT, LOG SENSE
    case 0x15:
    case 0x55:  // MODE SELECT (6)/(10)
    case 0x1A:
    case 0x5A:  // MODE SENSE (6)/(10)
    case 0x1C:
    case 0x1D:  // RECEIVE DIAGNOSTIC RESULTS, SEND DIAGNOSTIC
    case 0x3B:
    case 0x3C:  // WRITE BUFFER, READ BUFFER
      if (state != alua::kTransitioning) return true;
      break;
    case 0x5E:
    case 0x5F:  // PERSISTENT RESERVE IN/OUT: standby only
      if (state == alua::kStandby) return true;
      break;
    default:
      break;
  }
  switch (state) {
    case alua::kStandby:
      *why = Reason::kNotReadyPortStandby;
      break;
    case alua::kTransitioning:
      *why = Reason::kNotReadyAluaTransition;
      break;
    default:  // unavailable, offline
      *why = Reason::kNotReadyPortUnavailable;
      break;
  }
  return false;
}

}  // namespace zuma::scsi
