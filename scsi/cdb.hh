// Operation codes and big-endian field access for CDBs and parameter data.
// SCSI fields are big-endian (SPC-5 (byte order)), whatever the host byte order.
#pragma once

#include <cstdint>

namespace zuma::scsi {

namespace op {
inline constexpr uint8_t kTestUnitReady = 0x00;
inline constexpr uint8_t kRequestSense = 0x03;
inline constexpr uint8_t kRead6 = 0x08;
inline constexpr uint8_t kWrite6 = 0x0A;
inline constexpr uint8_t kInquiry = 0x12;
inline constexpr uint8_t kModeSelect6 = 0x15;
inline constexpr uint8_t kModeSense6 = 0x1A;
inline constexpr uint8_t kStartStopUnit = 0x1B;
inline constexpr uint8_t kReadCapacity10 = 0x25;
inline constexpr uint8_t kRead10 = 0x28;
inline constexpr uint8_t kWrite10 = 0x2A;
inline constexpr uint8_t kVerify10 = 0x2F;
inline constexpr uint8_t kSynchronizeCache10 = 0x35;
inline constexpr uint8_t kModeSelect10 = 0x55;
inline constexpr uint8_t kModeSense10 = 0x5A;
inline constexpr uint8_t kPersistentReserveIn = 0x5E;
inline constexpr uint8_t kRead16 = 0x88;
inline constexpr uint8_t kWrite16 = 0x8A;
inline constexpr uint8_t kVerify16 = 0x8F;
inline constexpr uint8_t kSynchronizeCache16 = 0x91;
inline constexpr uint8_t kServiceActionIn16 = 0x9E;
inline constexpr uint8_t kReportLuns = 0xA0;
inline constexpr uint8_t kMaintenanceIn = 0xA3;
inline constexpr uint8_t kMaintenanceOut = 0xA4;
inline constexpr uint8_t kRead12 = 0xA8;
inline constexpr uint8_t kWrite12 = 0xAA;
inline constexpr uint8_t kVerify12 = 0xAF;
}  // namespace op

// Service actions (in CDB byte 1, bits 4:0).
namespace sa {
inline constexpr uint16_t kReadCapacity16 = 0x10;                 // SERVICE ACTION IN (16)
inline constexpr uint16_t kReportSupportedOperationCodes = 0x0C;  // MAINTENANCE IN
}  // namespace sa

// SBC commands of the thin provisioning / COMPARE AND WRITE / atomic write set, and LOG
// SENSE (block_limits.hh, sbc_op.hh). A block of their own, so the SPC and SBC halves of
// the command set stay apart.
namespace op {
inline constexpr uint8_t kWriteAndVerify10 = 0x2E;
inline constexpr uint8_t kPreFetch10 = 0x34;
inline constexpr uint8_t kReadDefectData10 = 0x37;
inline constexpr uint8_t kWriteSame10 = 0x41;
inline constexpr uint8_t kUnmap = 0x42;
inline constexpr uint8_t kLogSense = 0x4D;
inline constexpr uint8_t kCompareAndWrite = 0x89;
inline constexpr uint8_t kOrWrite16 = 0x8B;
inline constexpr uint8_t kWriteAndVerify16 = 0x8E;
inline constexpr uint8_t kPreFetch16 = 0x90;
inline constexpr uint8_t kWriteSame16 = 0x93;
inline constexpr uint8_t kWriteAtomic16 = 0x9C;
inline constexpr uint8_t kWriteAndVerify12 = 0xAE;
inline constexpr uint8_t kReadDefectData12 = 0xB7;
}  // namespace op
namespace sa {
inline constexpr uint16_t kGetLbaStatus = 0x12;  // SERVICE ACTION IN (16)
}  // namespace sa

// Variable length CDBs (SPC-5 variable length CDB format): byte 1 is CONTROL, byte 7 the
// ADDITIONAL CDB LENGTH (n - 7), bytes 8-9 the SERVICE ACTION.
namespace op {
inline constexpr uint8_t kVariableLength = 0x7F;
}  // namespace op
namespace sa {
inline constexpr uint16_t kWriteSame32 = 0x000D;  // SBC-4 WRITE SAME (32)
}  // namespace sa

// SPC reservations, ALUA, task management, third-party copy (spc_commands.cc,
// persistent_reservation.hh, extended_copy.cc).
namespace op {
inline constexpr uint8_t kReserve6 = 0x16;
inline constexpr uint8_t kRelease6 = 0x17;
inline constexpr uint8_t kReserve10 = 0x56;
inline constexpr uint8_t kRelease10 = 0x57;
inline constexpr uint8_t kPersistentReserveOut = 0x5F;
inline constexpr uint8_t kExtendedCopy = 0x83;        // THIRD-PARTY COPY OUT
inline constexpr uint8_t kReceiveCopyResults = 0x84;  // THIRD-PARTY COPY IN
}  // namespace op
namespace sa {
inline constexpr uint16_t kReportTargetPortGroups = 0x0A;    // MAINTENANCE IN
inline constexpr uint16_t kSetTargetPortGroups = 0x0A;       // MAINTENANCE OUT
inline constexpr uint16_t kReportSupportedTmfs = 0x0D;       // MAINTENANCE IN
inline constexpr uint16_t kExtendedCopyLid1 = 0x00;          // THIRD-PARTY COPY OUT
inline constexpr uint16_t kCopyStatusLid1 = 0x00;            // THIRD-PARTY COPY IN
inline constexpr uint16_t kReceiveDataLid1 = 0x01;           // THIRD-PARTY COPY IN
inline constexpr uint16_t kOperatingParameters = 0x03;       // THIRD-PARTY COPY IN
inline constexpr uint16_t kFailedSegmentDetailsLid1 = 0x04;  // THIRD-PARTY COPY IN
}  // namespace sa

inline constexpr uint16_t get_be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
inline constexpr uint32_t get_be24(const uint8_t* p) {
  return uint32_t{p[0]} << 16 | uint32_t{p[1]} << 8 | p[2];
}
inline constexpr uint32_t get_be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline constexpr uint64_t get_be64(const uint8_t* p) {
  return uint64_t{get_be32(p)} << 32 | get_be32(p + 4);
}

inline constexpr void put_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline constexpr void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
inline constexpr void put_be64(uint8_t* p, uint64_t v) {
  put_be32(p, static_cast<uint32_t>(v >> 32));
  put_be32(p + 4, static_cast<uint32_t>(v));
}

}  // namespace zuma::scsi
