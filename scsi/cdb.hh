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
inline constexpr uint8_t kRead12 = 0xA8;
inline constexpr uint8_t kWrite12 = 0xAA;
inline constexpr uint8_t kVerify12 = 0xAF;
}  // namespace op

// Service actions (in CDB byte 1, bits 4:0).
namespace sa {
inline constexpr uint16_t kReadCapacity16 = 0x10;                 // SERVICE ACTION IN (16)
inline constexpr uint16_t kReportSupportedOperationCodes = 0x0C;  // MAINTENANCE IN
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
