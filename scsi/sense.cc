#include "scsi/sense.hh"

#include <array>
#include <cstring>

#include "scsi/cdb.hh"
#include "scsi/task.hh"

namespace zuma::scsi {
namespace {

constexpr SenseCode kCheck(uint8_t key, uint8_t asc, uint8_t ascq) {
  return {status::kCheckCondition, key, asc, ascq};
}

using namespace sense_key;

// Indexed by Reason (checked below). ASC/ASCQ values from SPC-5 Annex D.
struct Entry {
  Reason reason;
  SenseCode code;
};
constexpr Entry kTable[] = {
    {Reason::kGood, {status::kGood, kNoSense, 0x00, 0x00}},
    {Reason::kPending, {status::kGood, kNoSense, 0x00, 0x00}},
    {Reason::kNoSense, {status::kGood, kNoSense, 0x00, 0x00}},
    {Reason::kBusy, {status::kBusy, kNoSense, 0x00, 0x00}},
    {Reason::kInvalidOpcode, kCheck(kIllegalRequest, 0x20, 0x00)},
    {Reason::kInvalidFieldInCdb, kCheck(kIllegalRequest, 0x24, 0x00)},
    {Reason::kInvalidFieldInParameterList, kCheck(kIllegalRequest, 0x26, 0x00)},
    {Reason::kParameterListLengthError, kCheck(kIllegalRequest, 0x1A, 0x00)},
    {Reason::kLbaOutOfRange, kCheck(kIllegalRequest, 0x21, 0x00)},
    {Reason::kLuNotSupported, kCheck(kIllegalRequest, 0x25, 0x00)},
    {Reason::kInvalidFieldInCommandIu, kCheck(kIllegalRequest, 0x0E, 0x03)},
    {Reason::kSavingParametersNotSupported, kCheck(kIllegalRequest, 0x39, 0x00)},
    {Reason::kMediumNotPresent, kCheck(kNotReady, 0x3A, 0x00)},
    {Reason::kUnrecoveredReadError, kCheck(kMediumError, 0x11, 0x00)},
    {Reason::kWriteError, kCheck(kMediumError, 0x0C, 0x00)},
    {Reason::kInternalTargetFailure, kCheck(kHardwareError, 0x44, 0x00)},
    {Reason::kWriteProtected, kCheck(kDataProtect, 0x27, 0x00)},
    {Reason::kSpaceAllocationFailed, kCheck(kDataProtect, 0x27, 0x07)},
    {Reason::kMiscompareDuringVerify, kCheck(kMiscompare, 0x1D, 0x00)},
    {Reason::kProtocolServiceCrcError, kCheck(kAbortedCommand, 0x47, 0x05)},
    {Reason::kDataPhaseError, kCheck(kAbortedCommand, 0x4B, 0x00)},
    {Reason::kSnackRejected, kCheck(kAbortedCommand, 0x11, 0x13)},
    {Reason::kUnexpectedUnsolicitedData, kCheck(kAbortedCommand, 0x0C, 0x0C)},
    {Reason::kIncorrectAmountOfData, kCheck(kAbortedCommand, 0x0C, 0x0D)},
    {Reason::kUaPowerOnOccurred, kCheck(kUnitAttention, 0x29, 0x01)},
    {Reason::kUaBusDeviceResetOccurred, kCheck(kUnitAttention, 0x29, 0x03)},
    {Reason::kUaItNexusLossOccurred, kCheck(kUnitAttention, 0x29, 0x07)},
    {Reason::kUaModeParametersChanged, kCheck(kUnitAttention, 0x2A, 0x01)},
    {Reason::kUaCapacityDataChanged, kCheck(kUnitAttention, 0x2A, 0x09)},
    {Reason::kUaInquiryDataChanged, kCheck(kUnitAttention, 0x3F, 0x03)},
    {Reason::kUaReportedLunsDataChanged, kCheck(kUnitAttention, 0x3F, 0x0E)},
    {Reason::kReservationConflict, {status::kReservationConflict, kNoSense, 0x00, 0x00}},
    {Reason::kTaskAborted, {status::kTaskAborted, kNoSense, 0x00, 0x00}},
    {Reason::kInvalidReleaseOfPr, kCheck(kIllegalRequest, 0x26, 0x04)},
    {Reason::kInsufficientRegistrationResources, kCheck(kIllegalRequest, 0x55, 0x04)},
    {Reason::kUaReservationsPreempted, kCheck(kUnitAttention, 0x2A, 0x03)},
    {Reason::kUaReservationsReleased, kCheck(kUnitAttention, 0x2A, 0x04)},
    {Reason::kUaRegistrationsPreempted, kCheck(kUnitAttention, 0x2A, 0x05)},
    {Reason::kTooManyTargetDescriptors, kCheck(kIllegalRequest, 0x26, 0x06)},
    {Reason::kUnsupportedTargetDescriptorType, kCheck(kIllegalRequest, 0x26, 0x07)},
    {Reason::kTooManySegmentDescriptors, kCheck(kIllegalRequest, 0x26, 0x08)},
    {Reason::kUnsupportedSegmentDescriptorType, kCheck(kIllegalRequest, 0x26, 0x09)},
    {Reason::kOperationInProgress, kCheck(kIllegalRequest, 0x00, 0x16)},
    {Reason::kCopyTargetNotReachable, kCheck(kCopyAborted, 0x0D, 0x02)},
    {Reason::kCopyAbortedReadError, kCheck(kCopyAborted, 0x11, 0x00)},
    {Reason::kCopyAbortedWriteError, kCheck(kCopyAborted, 0x0C, 0x00)},
    {Reason::kUaCommandsClearedByAnotherInitiator, kCheck(kUnitAttention, 0x2F, 0x00)},
    // SPC-5 D.2: LOGICAL UNIT IS IN PROCESS OF BECOMING READY. True while a sub-unit's
    // session is re-established, and initiators retry it after a delay (Linux sd does).
    {Reason::kNotReadyBecomingReady, kCheck(kNotReady, 0x04, 0x01)},
    // SPC-5 D.2: NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED (snapshot rollback).
    {Reason::kUaMediumMayHaveChanged, kCheck(kUnitAttention, 0x28, 0x00)},
    // SPC-5 D.2: LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION / TARGET
    // PORT IN STANDBY STATE / TARGET PORT IN UNAVAILABLE STATE; ASYMMETRIC ACCESS STATE
    // CHANGED.
    {Reason::kNotReadyAluaTransition, kCheck(kNotReady, 0x04, 0x0A)},
    {Reason::kNotReadyPortStandby, kCheck(kNotReady, 0x04, 0x0B)},
    {Reason::kNotReadyPortUnavailable, kCheck(kNotReady, 0x04, 0x0C)},
    {Reason::kUaAsymmetricStateChanged, kCheck(kUnitAttention, 0x2A, 0x06)},
};
static_assert(std::size(kTable) == static_cast<size_t>(Reason::kCount));

constexpr bool table_in_order() {
  for (size_t i = 0; i < std::size(kTable); ++i) {
    if (kTable[i].reason != static_cast<Reason>(i)) return false;
  }
  return true;
}
static_assert(table_in_order());

// Sense-key specific bytes for a field pointer (SPC-5 field pointer sense key specific data).
void put_sks(const CmdResult& r, uint8_t* p) {
  p[0] = 0x80;  // SKSV
  if (r.field_in_cdb) p[0] |= 0x40;
  if (r.bit >= 0) p[0] |= 0x08 | (r.bit & 0x07);
  put_be16(p + 1, r.field);
}

}  // namespace

SenseCode sense_code(Reason r) {
  return kTable[static_cast<size_t>(r)].code;
}

bool is_unit_attention(Reason r) {
  return sense_code(r).key == sense_key::kUnitAttention;
}

uint8_t build_sense(const CmdResult& r, bool descriptor, std::span<uint8_t> out) {
  const SenseCode c = sense_code(r.reason);
  std::memset(out.data(), 0, kMaxSenseLen);
  uint8_t* s = out.data();
  if (!descriptor) {
    s[0] = 0x70;  // current error, fixed format
    if (r.has_info && r.info <= 0xFFFFFFFFu) {
      s[0] |= 0x80;  // VALID
      put_be32(s + 3, static_cast<uint32_t>(r.info));
    }
    s[2] = c.key;
    s[7] = kFixedSenseLen - 8;  // additional sense length
    s[12] = c.asc;
    s[13] = c.ascq;
    if (r.has_field) put_sks(r, s + 15);
    return kFixedSenseLen;
  }
  s[0] = 0x72;  // current error, descriptor format
  s[1] = c.key;
  s[2] = c.asc;
  s[3] = c.ascq;
  uint8_t len = 8;
  if (r.has_info) {
    // Information sense data descriptor (SPC-5 Information sense data descriptor).
    uint8_t* d = s + len;
    d[0] = 0x00;
    d[1] = 0x0A;
    d[2] = 0x80;  // VALID
    put_be64(d + 4, r.info);
    len += 12;
  }
  if (r.has_field) {
    // Sense key specific sense data descriptor (SPC-5 Sense key specific sense data descriptor).
    uint8_t* d = s + len;
    d[0] = 0x02;
    d[1] = 0x06;
    put_sks(r, d + 4);
    len += 8;
  }
  s[7] = static_cast<uint8_t>(len - 8);
  return len;
}

}  // namespace zuma::scsi
