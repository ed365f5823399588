#include <algorithm>
#include <bit>
#include <cstring>

#include "scsi/cdb.hh"
#include "scsi/command.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"
#include "scsi/task_set.hh"

namespace zuma::scsi {
namespace {

using namespace cmd_flag;
constexpr uint16_t kNoSa = 0;
constexpr uint16_t kSpcAny = kAnyLun | kNoUnitAttention | kPrAllowed | kSpc2Allowed;
constexpr uint16_t kRead = kMediumAccess | kPrRead;  // READ, VERIFY: "reads" for reservations
// Writes the medium: refused on a write-protected LU (kWritesMedium).
constexpr uint16_t kWrite = kMediumAccess | kWritesMedium;

// READ/WRITE byte 1: RDPROTECT/WRPROTECT (7:5, checked by the handler), DPO, FUA and the
// obsolete FUA_NV bit 1; not RARC (rebuild assist) nor bit 0 (obsolete / DLD2).
constexpr uint8_t kRwFlags = 0xFA;
// VERIFY byte 1: VRPROTECT (7:5), DPO, BYTCHK (2:1).
constexpr uint8_t kVerifyFlags = 0xF6;
// GROUP NUMBER (SBC-4 (protection information)); accepted, no groups are defined.
constexpr uint8_t kGroup = 0x3F;
constexpr uint8_t kFF = 0xFF;
// SBC (thin provisioning, COMPARE AND WRITE, atomic/verified writes; sbc_op.hh):
// WRITE AND VERIFY byte 1: WRPROTECT (7:5), DPO, BYTCHK (2:1); no FUA (always durable).
constexpr uint8_t kWriteVerifyFlags = 0xF6;
// WRITE ATOMIC (16) byte 1: WRPROTECT, DPO, FUA.
constexpr uint8_t kAtomicFlags = 0xF8;
// WRITE SAME byte 1: WRPROTECT, UNMAP (checked by the handler); (16): and NDOB. Not ANCHOR:
// ANC_SUP=0 (VPD B2h), so ANCHOR=1 is an invalid field whatever UNMAP says (SBC-4 WRITE SAME,
// ANCHOR/UNMAP table).
constexpr uint8_t kWriteSameFlags = 0xE8;
constexpr uint8_t kSbcRead = kMediumAccess | kPrRead;  // a "read" for reservations

// Sorted by opcode, then service action (checked below).
// clang-format off
constexpr CommandInfo kCommands[] = {
    {"TEST UNIT READY", op::kTestUnitReady, false, kNoSa, 6, DataDir::kNone, kPrAllowed,
     handle_test_unit_ready, {op::kTestUnitReady, 0, 0, 0, 0, 0}},
    {"REQUEST SENSE", op::kRequestSense, false, kNoSa, 6, DataDir::kIn, kSpcAny,
     handle_request_sense, {op::kRequestSense, 0x01, 0, 0, kFF, 0}},
    {"READ(6)", op::kRead6, false, kNoSa, 6, DataDir::kIn, kRead, handle_read,
     {op::kRead6, 0x1F, kFF, kFF, kFF, 0}},
    {"WRITE(6)", op::kWrite6, false, kNoSa, 6, DataDir::kOut, kWrite, handle_write,
     {op::kWrite6, 0x1F, kFF, kFF, kFF, 0}},
    {"INQUIRY", op::kInquiry, false, kNoSa, 6, DataDir::kIn, kSpcAny, handle_inquiry,
     // CMDDT (byte 1 bit 1) is obsolete: setting it is an invalid field (SPC-5 INQUIRY).
     {op::kInquiry, 0x01, kFF, kFF, kFF, 0}},
    {"MODE SELECT(6)", op::kModeSelect6, false, kNoSa, 6, DataDir::kOut, 0, handle_mode_select,
     {op::kModeSelect6, 0x11, 0, 0, kFF, 0}},
    // RESERVE/RELEASE (6) (SPC-2): byte 1 (3RDPTY, extents) and the reservation
    // identification are obsolete; only zeros are accepted. The handlers apply the
    // reservation rules themselves (kPrAllowed).
    {"RESERVE(6)", op::kReserve6, false, kNoSa, 6, DataDir::kNone, kPrAllowed, handle_reserve,
     {op::kReserve6, 0, 0, 0, 0, 0}},
    {"RELEASE(6)", op::kRelease6, false, kNoSa, 6, DataDir::kNone, kPrAllowed | kSpc2Allowed,
     handle_release, {op::kRelease6, 0, 0, 0, 0, 0}},
    {"MODE SENSE(6)", op::kModeSense6, false, kNoSa, 6, DataDir::kIn, 0, handle_mode_sense,
     {op::kModeSense6, 0x08, kFF, kFF, kFF, 0}},
    {"START STOP UNIT", op::kStartStopUnit, false, kNoSa, 6, DataDir::kNone, 0,
     handle_start_stop_unit, {op::kStartStopUnit, 0x01, 0, 0x0F, 0xF7, 0}},
    {"READ CAPACITY(10)", op::kReadCapacity10, false, kNoSa, 10, DataDir::kIn,
     kMediumAccess | kPrAllowed,
     handle_read_capacity10, {op::kReadCapacity10, 0, kFF, kFF, kFF, kFF, 0, 0, 0x01, 0}},
    {"READ(10)", op::kRead10, false, kNoSa, 10, DataDir::kIn, kRead, handle_read,
     {op::kRead10, kRwFlags, kFF, kFF, kFF, kFF, kGroup, kFF, kFF, 0}},
    {"WRITE(10)", op::kWrite10, false, kNoSa, 10, DataDir::kOut, kWrite, handle_write,
     {op::kWrite10, kRwFlags, kFF, kFF, kFF, kFF, kGroup, kFF, kFF, 0}},
    {"WRITE AND VERIFY(10)", op::kWriteAndVerify10, false, kNoSa, 10, DataDir::kOut,
     kWrite, handle_write_and_verify,
     {op::kWriteAndVerify10, kWriteVerifyFlags, kFF, kFF, kFF, kFF, kGroup, kFF, kFF, 0}},
    {"VERIFY(10)", op::kVerify10, false, kNoSa, 10, DataDir::kOut, kRead, handle_verify,
     {op::kVerify10, kVerifyFlags, kFF, kFF, kFF, kFF, kGroup, kFF, kFF, 0}},
    {"PRE-FETCH(10)", op::kPreFetch10, false, kNoSa, 10, DataDir::kNone, kSbcRead,
     handle_prefetch,
     // byte 1: IMMED
     {op::kPreFetch10, 0x02, kFF, kFF, kFF, kFF, kGroup, kFF, kFF, 0}},
    {"SYNCHRONIZE CACHE(10)", op::kSynchronizeCache10, false, kNoSa, 10, DataDir::kNone,
     kMediumAccess, handle_synchronize_cache,
     // byte 1: SYNC_NV (obsolete, ignored), IMMED
     {op::kSynchronizeCache10, 0x06, kFF, kFF, kFF, kFF, kGroup, kFF, kFF, 0}},
    {"READ DEFECT DATA(10)", op::kReadDefectData10, false, kNoSa, 10, DataDir::kIn, kSbcRead,
     handle_read_defect_data,
     // byte 2: REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT
     {op::kReadDefectData10, 0, 0x1F, 0, 0, 0, 0, kFF, kFF, 0}},
    {"WRITE SAME(10)", op::kWriteSame10, false, kNoSa, 10, DataDir::kOut, kWrite,
     handle_write_same,
     {op::kWriteSame10, kWriteSameFlags, kFF, kFF, kFF, kFF, kGroup, kFF, kFF, 0}},
    {"UNMAP", op::kUnmap, false, kNoSa, 10, DataDir::kOut, kWrite | kThinOnly,
     handle_unmap,
     // byte 1: not ANCHOR (ANC_SUP=0)
     {op::kUnmap, 0, 0, 0, 0, 0, kGroup, kFF, kFF, 0}},
    {"LOG SENSE", op::kLogSense, false, kNoSa, 10, DataDir::kIn, kPrAllowed, handle_log_sense,
     // byte 1: SP and PPC not used (no saveable parameters); byte 2: PC, PAGE CODE
     {op::kLogSense, 0, kFF, kFF, 0, kFF, kFF, kFF, kFF, 0}},
    {"MODE SELECT(10)", op::kModeSelect10, false, kNoSa, 10, DataDir::kOut, 0,
     handle_mode_select, {op::kModeSelect10, 0x11, 0, 0, 0, 0, 0, kFF, kFF, 0}},
    // RESERVE/RELEASE (10) (SPC-2): 3RDPTY and LONGID (third-party reservations) refused.
    {"RESERVE(10)", op::kReserve10, false, kNoSa, 10, DataDir::kNone, kPrAllowed, handle_reserve,
     {op::kReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {"RELEASE(10)", op::kRelease10, false, kNoSa, 10, DataDir::kNone, kPrAllowed | kSpc2Allowed,
     handle_release, {op::kRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {"MODE SENSE(10)", op::kModeSense10, false, kNoSa, 10, DataDir::kIn, 0, handle_mode_sense,
     {op::kModeSense10, 0x18, kFF, kFF, 0, 0, 0, kFF, kFF, 0}},
    // PERSISTENT RESERVE IN (SPC-5): bytes 7-8 ALLOCATION LENGTH.
    {"PERSISTENT RESERVE IN (READ KEYS)", op::kPersistentReserveIn, true, 0x00, 10, DataDir::kIn,
     kPrAllowed, handle_persistent_reserve_in,
     {op::kPersistentReserveIn, 0x00, 0, 0, 0, 0, 0, kFF, kFF, 0}},
    {"PERSISTENT RESERVE IN (READ RESERVATION)", op::kPersistentReserveIn, true, 0x01, 10,
     DataDir::kIn, kPrAllowed, handle_persistent_reserve_in,
     {op::kPersistentReserveIn, 0x01, 0, 0, 0, 0, 0, kFF, kFF, 0}},
    {"PERSISTENT RESERVE IN (REPORT CAPABILITIES)", op::kPersistentReserveIn, true, 0x02, 10,
     DataDir::kIn, kPrAllowed, handle_persistent_reserve_in,
     {op::kPersistentReserveIn, 0x02, 0, 0, 0, 0, 0, kFF, kFF, 0}},
    {"PERSISTENT RESERVE IN (READ FULL STATUS)", op::kPersistentReserveIn, true, 0x03, 10,
     DataDir::kIn, kPrAllowed, handle_persistent_reserve_in,
     {op::kPersistentReserveIn, 0x03, 0, 0, 0, 0, 0, kFF, kFF, 0}},
    // PERSISTENT RESERVE OUT (SPC-5): byte 2 SCOPE and TYPE, bytes 5-8 PARAMETER LIST LENGTH.
    {"PERSISTENT RESERVE OUT (REGISTER)", op::kPersistentReserveOut, true, 0x00, 10,
     DataDir::kOut, kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x00, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    {"PERSISTENT RESERVE OUT (RESERVE)", op::kPersistentReserveOut, true, 0x01, 10, DataDir::kOut,
     kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x01, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    {"PERSISTENT RESERVE OUT (RELEASE)", op::kPersistentReserveOut, true, 0x02, 10, DataDir::kOut,
     kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x02, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    {"PERSISTENT RESERVE OUT (CLEAR)", op::kPersistentReserveOut, true, 0x03, 10, DataDir::kOut,
     kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x03, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    {"PERSISTENT RESERVE OUT (PREEMPT)", op::kPersistentReserveOut, true, 0x04, 10, DataDir::kOut,
     kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x04, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    {"PERSISTENT RESERVE OUT (PREEMPT AND ABORT)", op::kPersistentReserveOut, true, 0x05, 10,
     DataDir::kOut, kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x05, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    {"PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)", op::kPersistentReserveOut, true,
     0x06, 10, DataDir::kOut, kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x06, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    {"PERSISTENT RESERVE OUT (REGISTER AND MOVE)", op::kPersistentReserveOut, true, 0x07, 10,
     DataDir::kOut, kPrAllowed, handle_persistent_reserve_out,
     {op::kPersistentReserveOut, 0x07, kFF, 0, 0, kFF, kFF, kFF, kFF, 0}},
    // EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-5 third-party copy; extended_copy.hh):
    // bytes 10-13 PARAMETER LIST LENGTH / ALLOCATION LENGTH, byte 2 the LIST IDENTIFIER.
    // WRITE SAME (32) (SBC-4): byte 1 CONTROL, 6 GROUP NUMBER, 7 ADDITIONAL CDB LENGTH (18h),
    // 8-9 SERVICE ACTION, 10 WRPROTECT/UNMAP/NDOB (as (16)), 12-19 LBA, 20-27 the protection
    // information tags (unused: WRPROTECT must be 0), 28-31 NUMBER OF LOGICAL BLOCKS.
    {"WRITE SAME(32)", op::kVariableLength, true, sa::kWriteSame32, 32, DataDir::kOut,
     kWrite | kNotListed, handle_write_same,
     {op::kVariableLength, 0, 0, 0, 0, 0, 0x1F, 0x18, 0x00, 0x0D, kWriteSameFlags | 0x01, 0, kFF,
      kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kFF}},
    {"EXTENDED COPY(LID1)", op::kExtendedCopy, true, sa::kExtendedCopyLid1, 16, DataDir::kOut, 0,
     handle_extended_copy,
     {op::kExtendedCopy, sa::kExtendedCopyLid1, 0, 0, 0, 0, 0, 0, 0, 0, kFF, kFF, kFF, kFF, 0,
      0}},
    {"RECEIVE COPY RESULTS (COPY STATUS)", op::kReceiveCopyResults, true, sa::kCopyStatusLid1, 16,
     DataDir::kIn, 0, handle_receive_copy_results,
     {op::kReceiveCopyResults, sa::kCopyStatusLid1, kFF, 0, 0, 0, 0, 0, 0, 0, kFF, kFF, kFF, kFF,
      0, 0}},
    {"RECEIVE COPY RESULTS (OPERATING PARAMETERS)", op::kReceiveCopyResults, true,
     sa::kOperatingParameters, 16, DataDir::kIn, 0, handle_receive_copy_results,
     {op::kReceiveCopyResults, sa::kOperatingParameters, 0, 0, 0, 0, 0, 0, 0, 0, kFF, kFF, kFF,
      kFF, 0, 0}},
    {"READ(16)", op::kRead16, false, kNoSa, 16, DataDir::kIn, kRead, handle_read,
     {op::kRead16, kRwFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup,
      0}},
    {"COMPARE AND WRITE", op::kCompareAndWrite, false, kNoSa, 16, DataDir::kOut, kWrite,
     handle_compare_and_write,
     {op::kCompareAndWrite, kRwFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, 0, 0, 0, kFF,
      kGroup, 0}},
    {"WRITE(16)", op::kWrite16, false, kNoSa, 16, DataDir::kOut, kWrite, handle_write,
     {op::kWrite16, kRwFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup,
      0}},
    {"ORWRITE(16)", op::kOrWrite16, false, kNoSa, 16, DataDir::kOut, kWrite,
     handle_orwrite,
     {op::kOrWrite16, kRwFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup,
      0}},
    {"WRITE AND VERIFY(16)", op::kWriteAndVerify16, false, kNoSa, 16, DataDir::kOut,
     kWrite, handle_write_and_verify,
     {op::kWriteAndVerify16, kWriteVerifyFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kFF, kFF, kGroup, 0}},
    {"VERIFY(16)", op::kVerify16, false, kNoSa, 16, DataDir::kOut, kRead, handle_verify,
     {op::kVerify16, kVerifyFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kGroup, 0}},
    {"PRE-FETCH(16)", op::kPreFetch16, false, kNoSa, 16, DataDir::kNone, kSbcRead,
     handle_prefetch,
     {op::kPreFetch16, 0x02, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup,
      0}},
    {"SYNCHRONIZE CACHE(16)", op::kSynchronizeCache16, false, kNoSa, 16, DataDir::kNone,
     kMediumAccess, handle_synchronize_cache,
     {op::kSynchronizeCache16, 0x06, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kGroup, 0}},
    {"WRITE SAME(16)", op::kWriteSame16, false, kNoSa, 16, DataDir::kOut, kWrite,
     handle_write_same,
     {op::kWriteSame16, kWriteSameFlags | 0x01, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kFF, kFF, kGroup, 0}},
    {"WRITE ATOMIC(16)", op::kWriteAtomic16, false, kNoSa, 16, DataDir::kOut, kWrite,
     handle_write_atomic,
     // bytes 10-11: ATOMIC BOUNDARY (0 only), 12-13: TRANSFER LENGTH
     {op::kWriteAtomic16, kAtomicFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kGroup, 0}},
    {"READ CAPACITY(16)", op::kServiceActionIn16, true, sa::kReadCapacity16, 16, DataDir::kIn,
     kMediumAccess | kPrAllowed, handle_read_capacity16,
     {op::kServiceActionIn16, sa::kReadCapacity16, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kFF, kFF, kFF, 0x01, 0}},
    {"GET LBA STATUS", op::kServiceActionIn16, true, sa::kGetLbaStatus, 16, DataDir::kIn,
     kSbcRead, handle_get_lba_status,
     {op::kServiceActionIn16, sa::kGetLbaStatus, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF,
      kFF, kFF, 0, 0}},
    {"REPORT LUNS", op::kReportLuns, false, kNoSa, 12, DataDir::kIn, kSpcAny, handle_report_luns,
     {op::kReportLuns, 0, kFF, 0, 0, 0, kFF, kFF, kFF, kFF, 0, 0}},
    // REPORT TARGET PORT GROUPS (SPC-5): byte 1 PARAMETER DATA FORMAT (7:5), bytes 6-9
    // ALLOCATION LENGTH.
    {"REPORT TARGET PORT GROUPS", op::kMaintenanceIn, true, sa::kReportTargetPortGroups, 12,
     DataDir::kIn, kPrAllowed, handle_report_target_port_groups,
     {op::kMaintenanceIn, 0xE0 | sa::kReportTargetPortGroups, 0, 0, 0, 0, kFF, kFF, kFF, kFF, 0,
      0}},
    {"REPORT SUPPORTED OPERATION CODES", op::kMaintenanceIn, true,
     sa::kReportSupportedOperationCodes, 12, DataDir::kIn, kPrAllowed,
     handle_report_supported_opcodes,
     // byte 2: RCTD, REPORTING OPTIONS
     {op::kMaintenanceIn, sa::kReportSupportedOperationCodes, 0x87, kFF, kFF, kFF, kFF, kFF, kFF,
      kFF, 0, 0}},
    // REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-5): byte 2 REPD, bytes 6-9 ALLOCATION
    // LENGTH.
    {"REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", op::kMaintenanceIn, true,
     sa::kReportSupportedTmfs, 12, DataDir::kIn, kPrAllowed, handle_report_supported_tmfs,
     {op::kMaintenanceIn, sa::kReportSupportedTmfs, 0x80, 0, 0, 0, kFF, kFF, kFF, kFF, 0, 0}},
    // SET TARGET PORT GROUPS (SPC-5): bytes 6-9 PARAMETER LIST LENGTH. Only LUs with an
    // ALUA view (several nodes) support it; the others answer INVALID COMMAND OPERATION CODE.
    {"SET TARGET PORT GROUPS", op::kMaintenanceOut, true, sa::kSetTargetPortGroups, 12,
     DataDir::kOut, kAluaOnly, handle_set_target_port_groups,
     {op::kMaintenanceOut, sa::kSetTargetPortGroups, 0, 0, 0, 0, kFF, kFF, kFF, kFF, 0, 0}},
    {"READ(12)", op::kRead12, false, kNoSa, 12, DataDir::kIn, kRead, handle_read,
     {op::kRead12, kRwFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup, 0}},
    {"WRITE(12)", op::kWrite12, false, kNoSa, 12, DataDir::kOut, kWrite, handle_write,
     {op::kWrite12, kRwFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup, 0}},
    {"WRITE AND VERIFY(12)", op::kWriteAndVerify12, false, kNoSa, 12, DataDir::kOut,
     kWrite, handle_write_and_verify,
     {op::kWriteAndVerify12, kWriteVerifyFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup, 0}},
    {"VERIFY(12)", op::kVerify12, false, kNoSa, 12, DataDir::kOut, kRead, handle_verify,
     {op::kVerify12, kVerifyFlags, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kGroup, 0}},
    {"READ DEFECT DATA(12)", op::kReadDefectData12, false, kNoSa, 12, DataDir::kIn, kSbcRead,
     handle_read_defect_data,
     // byte 1: REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT; 2-5: ADDRESS DESCRIPTOR INDEX
     {op::kReadDefectData12, 0x1F, kFF, kFF, kFF, kFF, kFF, kFF, kFF, kFF, 0, 0}},
};
// clang-format on

constexpr size_t kNumCommands = std::size(kCommands);
static_assert(kNumCommands < 256);

constexpr bool sorted_and_consistent() {
  for (size_t i = 0; i < kNumCommands; ++i) {
    const CommandInfo& c = kCommands[i];
    if (c.usage[0] != c.opcode) return false;
    if (c.variable_length()) {
      // SPC-5 variable length CDB: CONTROL in byte 1, ADDITIONAL CDB LENGTH, 16-bit SA.
      if (!c.has_sa || c.usage[1] != 0 || c.usage[7] != c.cdb_len - 8) return false;
      if (get_be16(&c.usage[8]) != c.sa) return false;
    } else {
      if (c.has_sa && (c.usage[1] & 0x1F) != (c.sa & 0x1F)) return false;
      if (c.cdb_len > 16 || c.usage[c.cdb_len - 1] != 0) return false;  // CONTROL mask 00h
    }
    // kWritesMedium marks exactly the medium-access commands that carry data to write.
    const bool writes =
        c.dir == DataDir::kOut && (c.flags & kMediumAccess) && !(c.flags & kPrRead);
    if (writes != ((c.flags & kWritesMedium) != 0)) return false;
    if (i == 0) continue;
    const CommandInfo& p = kCommands[i - 1];
    if (p.opcode > c.opcode) return false;
    if (p.opcode == c.opcode && (!p.has_sa || !c.has_sa || p.sa >= c.sa)) return false;
  }
  return true;
}
static_assert(sorted_and_consistent());

// The 256-entry dispatch index: where each opcode's entries start, and how many.
struct Slot {
  uint8_t first = 0;
  uint8_t count = 0;
};

constexpr std::array<Slot, 256> build_index() {
  std::array<Slot, 256> idx{};
  for (size_t i = 0; i < kNumCommands; ++i) {
    Slot& s = idx[kCommands[i].opcode];
    if (s.count == 0) s.first = static_cast<uint8_t>(i);
    ++s.count;
  }
  return idx;
}
constexpr std::array<Slot, 256> kIndex = build_index();

int top_bit(uint8_t v) {
  return 7 - std::countl_zero(v);
}

}  // namespace

std::span<const CommandInfo> all_commands() {
  return kCommands;
}

bool has_service_actions(uint8_t opcode) {
  const Slot& s = kIndex[opcode];
  return s.count != 0 && kCommands[s.first].has_sa;
}

const CommandInfo* find_command(uint8_t opcode, uint16_t sa) {
  const Slot& s = kIndex[opcode];
  for (size_t i = s.first; i < size_t{s.first} + s.count; ++i) {
    if (!kCommands[i].has_sa || kCommands[i].sa == sa) return &kCommands[i];
  }
  return nullptr;
}

const CommandInfo* lookup_command(const Task& task, CmdResult* error) {
  const uint8_t opcode = task.cdb[0];
  if (kIndex[opcode].count == 0) {
    *error = Reason::kInvalidOpcode;
    return nullptr;
  }
  if (opcode == op::kVariableLength) {
    // SPC-5 variable length CDB: the SERVICE ACTION is bytes 8-9.
    const CommandInfo* c =
        task.cdb_len >= 10 ? find_command(opcode, get_be16(&task.cdb[8])) : nullptr;
    if (!c) *error = CmdResult::invalid_cdb(8, 7);
    return c;
  }
  const CommandInfo* c = find_command(opcode, task.cdb[1] & 0x1F);
  // SPC-5 (operation code, service action): an unsupported service action is an invalid field (the
  // SERVICE ACTION field: byte 1, bits 4:0).
  if (!c) *error = CmdResult::invalid_cdb(1, 4);
  return c;
}

CmdResult check_cdb(const CommandInfo& info, const Task& task) {
  if (task.cdb_len < info.cdb_len) {
    // The transport delivered fewer CDB bytes than the operation code needs.
    return CmdResult::invalid_cdb(0, 7);
  }
  if (info.variable_length() && task.cdb[7] != info.cdb_len - 8) {
    return CmdResult::invalid_cdb(7, 7);  // ADDITIONAL CDB LENGTH
  }
  for (size_t i = 1; i < info.cdb_len; ++i) {
    uint8_t mask = info.usage[i];
    if (i == 1 && info.has_sa && !info.variable_length()) mask |= 0x1F;  // matched by lookup
    const uint8_t bad = task.cdb[i] & ~mask;
    if (bad) return CmdResult::invalid_cdb(static_cast<uint16_t>(i), top_bit(bad));
  }
  return CmdResult::good();
}

std::array<uint8_t, kMaxCdbLen> usage_for(const CommandInfo& info, const LogicalUnit* lu) {
  std::array<uint8_t, kMaxCdbLen> u = info.usage;
  if (lu && !lu->params().thin) {
    // WRITE SAME's UNMAP bit: logical block provisioning management only (SBC-4 WRITE SAME).
    if (info.opcode == op::kWriteSame10 || info.opcode == op::kWriteSame16) u[1] &= ~0x08;
    if (info.variable_length() && info.sa == sa::kWriteSame32) u[10] &= ~0x08;
  }
  return u;
}

bool supported_on(const CommandInfo& info, const LogicalUnit* lu) {
  if ((info.flags & kAluaOnly) && !(lu && lu->alua())) return false;
  return !(info.flags & kThinOnly) || (lu && lu->params().thin);
}

uint8_t* data_in_buffer(Task& task, size_t len) {
  task.data.resize(len);
  task.data.zero();
  return task.data.data();
}

void set_data_in(Task& task, size_t avail, size_t alloc) {
  const size_t n = std::min(avail, alloc);
  task.transfer_len = static_cast<uint32_t>(n);
  const bool data_in = task.dir == DataDir::kIn || task.dir == DataDir::kBidi;
  task.data_in_len = data_in ? static_cast<uint32_t>(std::min<size_t>(n, task.expected_len)) : 0;
}

void finish(Task& task, const CmdResult& r, bool descriptor_sense) {
  const SenseCode code = sense_code(r.reason);
  task.status = code.status;
  if (code.status == status::kCheckCondition) {
    task.data_in_len = 0;
    task.sense_len = build_sense(r, descriptor_sense, task.sense);
  } else {
    // No Data-In with RESERVATION CONFLICT, BUSY, TASK ABORTED.
    if (code.status != status::kGood) task.data_in_len = 0;
    task.sense_len = 0;
  }
  // A task in a task set leaves it (and lets waiting tasks start) around its on_complete.
  if (task.task_set.set) {
    complete_in_task_set(task);
    return;
  }
  task.on_complete(task);
}

}  // namespace zuma::scsi
