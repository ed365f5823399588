// Command outcomes and the sense data built from them (STYLE.md 2).
//
// Handlers never write sense bytes: they return a CmdResult naming a Reason plus the
// optional field pointer / INFORMATION value, and build_sense() turns it into sense data
// through one table (sense_code()).
#pragma once

#include <cstdint>
#include <span>

namespace zuma::scsi {

// Sense keys (SPC-5 sense key descriptions).
namespace sense_key {
inline constexpr uint8_t kNoSense = 0x0;
inline constexpr uint8_t kNotReady = 0x2;
inline constexpr uint8_t kMediumError = 0x3;
inline constexpr uint8_t kHardwareError = 0x4;
inline constexpr uint8_t kIllegalRequest = 0x5;
inline constexpr uint8_t kUnitAttention = 0x6;
inline constexpr uint8_t kDataProtect = 0x7;
inline constexpr uint8_t kCopyAborted = 0xA;
inline constexpr uint8_t kAbortedCommand = 0xB;
inline constexpr uint8_t kMiscompare = 0xE;
}  // namespace sense_key

// Why a command ended the way it did. The comment gives key / ASC / ASCQ.
enum class Reason : uint8_t {
  kGood,                          // GOOD status, no sense
  kPending,                       // not an outcome: the handler completes the task later
  kNoSense,                       // 0 / 00 / 00 (REQUEST SENSE data only)
  kBusy,                          // BUSY status, no sense (transient resource shortage)
  kInvalidOpcode,                 // ILLEGAL REQUEST / 20 / 00
  kInvalidFieldInCdb,             // ILLEGAL REQUEST / 24 / 00
  kInvalidFieldInParameterList,   // ILLEGAL REQUEST / 26 / 00
  kParameterListLengthError,      // ILLEGAL REQUEST / 1A / 00
  kLbaOutOfRange,                 // ILLEGAL REQUEST / 21 / 00
  kLuNotSupported,                // ILLEGAL REQUEST / 25 / 00
  kInvalidFieldInCommandIu,       // ILLEGAL REQUEST / 0E / 03
  kSavingParametersNotSupported,  // ILLEGAL REQUEST / 39 / 00
  kMediumNotPresent,              // NOT READY / 3A / 00
  kUnrecoveredReadError,          // MEDIUM ERROR / 11 / 00
  kWriteError,                    // MEDIUM ERROR / 0C / 00
  kInternalTargetFailure,         // HARDWARE ERROR / 44 / 00
  kWriteProtected,                // DATA PROTECT / 27 / 00
  kSpaceAllocationFailed,         // DATA PROTECT / 27 / 07
  kMiscompareDuringVerify,        // MISCOMPARE / 1D / 00
  // Transport failures of a command (RFC 7143 "SCSI Response": ASC/ASCQ for iSCSI errors; target/
  // reports them through build_sense):
  kProtocolServiceCrcError,    // ABORTED COMMAND / 47 / 05 (data digest error)
  kDataPhaseError,             // ABORTED COMMAND / 4B / 00 (bad Data-Out sequence)
  kSnackRejected,              // ABORTED COMMAND / 11 / 13
  kUnexpectedUnsolicitedData,  // ABORTED COMMAND / 0C / 0C
  kIncorrectAmountOfData,      // ABORTED COMMAND / 0C / 0D
  kUaPowerOnOccurred,          // UNIT ATTENTION / 29 / 01
  kUaBusDeviceResetOccurred,   // UNIT ATTENTION / 29 / 03 (logical unit reset)
  kUaItNexusLossOccurred,      // UNIT ATTENTION / 29 / 07
  kUaModeParametersChanged,    // UNIT ATTENTION / 2A / 01
  kUaCapacityDataChanged,      // UNIT ATTENTION / 2A / 09
  kUaInquiryDataChanged,       // UNIT ATTENTION / 3F / 03
  kUaReportedLunsDataChanged,  // UNIT ATTENTION / 3F / 0E
  // Reservations, task management, ALUA, EXTENDED COPY (SPC-5):
  kReservationConflict,                // RESERVATION CONFLICT status, no sense
  kTaskAborted,                        // TASK ABORTED status, no sense
  kInvalidReleaseOfPr,                 // ILLEGAL REQUEST / 26 / 04
  kInsufficientRegistrationResources,  // ILLEGAL REQUEST / 55 / 04
  kUaReservationsPreempted,            // UNIT ATTENTION / 2A / 03
  kUaReservationsReleased,             // UNIT ATTENTION / 2A / 04
  kUaRegistrationsPreempted,           // UNIT ATTENTION / 2A / 05
  kTooManyTargetDescriptors,           // ILLEGAL REQUEST / 26 / 06
  kUnsupportedTargetDescriptorType,    // ILLEGAL REQUEST / 26 / 07
  kTooManySegmentDescriptors,          // ILLEGAL REQUEST / 26 / 08
  kUnsupportedSegmentDescriptorType,   // ILLEGAL REQUEST / 26 / 09
  kOperationInProgress,                // ILLEGAL REQUEST / 00 / 16
  kCopyTargetNotReachable,             // COPY ABORTED / 0D / 02
  kCopyAbortedReadError,               // COPY ABORTED / 11 / 00 (source read failed)
  kCopyAbortedWriteError,              // COPY ABORTED / 0C / 00 (destination write failed)
  // Tasks another I_T nexus aborted while TAS=0 (SAM-5 aborting commands):
  kUaCommandsClearedByAnotherInitiator,  // UNIT ATTENTION / 2F / 00
  kNotReadyBecomingReady,                // NOT READY / 04 / 01 (a remote sub-unit is reconnecting)
  kUaMediumMayHaveChanged,  // UNIT ATTENTION / 28 / 00 (a snapshot rollback replaced the data)
  // ALUA (SPC-5 asymmetric logical unit access; issue 9: a LU exported by several nodes):
  kNotReadyAluaTransition,    // NOT READY / 04 / 0A (asymmetric access state transition)
  kNotReadyPortStandby,       // NOT READY / 04 / 0B (target port in standby state)
  kNotReadyPortUnavailable,   // NOT READY / 04 / 0C (target port in unavailable state)
  kUaAsymmetricStateChanged,  // UNIT ATTENTION / 2A / 06
  kCount,
};

struct SenseCode {
  uint8_t status;  // SAM status
  uint8_t key;
  uint8_t asc;
  uint8_t ascq;
};

// The one reason -> status / sense key / ASC / ASCQ table.
SenseCode sense_code(Reason r);

// True for the unit attention reasons.
bool is_unit_attention(Reason r);

// A handler's outcome.
struct CmdResult {
  Reason reason = Reason::kGood;
  // Sense-key specific field pointer (SPC-5 field pointer sense key specific data): byte `field` of
  // the CDB (C/D=1) or of the parameter list (C/D=0); `bit` >= 0 sets BPV and the bit pointer.
  bool has_field = false;
  bool field_in_cdb = true;
  int8_t bit = -1;
  uint16_t field = 0;
  // INFORMATION field (SPC-5 Information sense data descriptor): LBA of a medium error, miscompare
  // offset, ...
  bool has_info = false;
  uint64_t info = 0;

  constexpr CmdResult() = default;
  constexpr CmdResult(Reason r) : reason(r) {}  // NOLINT: implicit on purpose

  static constexpr CmdResult good() { return CmdResult(Reason::kGood); }
  static constexpr CmdResult pending() { return CmdResult(Reason::kPending); }
  // INVALID FIELD IN CDB pointing at `byte` (and `bit`, the field's most significant bit).
  static constexpr CmdResult invalid_cdb(uint16_t byte, int bit = -1) {
    CmdResult r(Reason::kInvalidFieldInCdb);
    r.has_field = true;
    r.field = byte;
    r.bit = static_cast<int8_t>(bit);
    return r;
  }
  // INVALID FIELD IN PARAMETER LIST pointing at `byte` of the parameter list.
  static constexpr CmdResult invalid_param(uint16_t byte, int bit = -1) {
    CmdResult r(Reason::kInvalidFieldInParameterList);
    r.has_field = true;
    r.field_in_cdb = false;
    r.field = byte;
    r.bit = static_cast<int8_t>(bit);
    return r;
  }
  static constexpr CmdResult with_info(Reason reason, uint64_t info) {
    CmdResult r(reason);
    r.has_info = true;
    r.info = info;
    return r;
  }

  bool ok() const { return reason == Reason::kGood; }
};

// Sense data lengths this module produces.
inline constexpr uint8_t kFixedSenseLen = 18;
inline constexpr uint8_t kMaxSenseLen = 8 + 12 + 8;  // descriptor: header + info + SKS

// Writes the sense data of `r` into `out` (at least kMaxSenseLen bytes): fixed format
// (response code 70h, SPC-5 fixed format sense data) or, when `descriptor`, descriptor format (72h,
// SPC-5 descriptor format sense data). Returns the number of bytes written. The INFORMATION field of fixed format holds 4
// bytes; a larger value is reported with VALID=0 (SPC-5 fixed format sense data).
uint8_t build_sense(const CmdResult& r, bool descriptor, std::span<uint8_t> out);

}  // namespace zuma::scsi
