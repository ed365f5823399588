// iSCSI PDU layout (RFC 7143 11): the 48-byte Basic Header Segment, opcodes, and typed
// accessors. The codec works in place on the received bytes (no decode copies); target
// PDUs are built into a 48-byte header by the encode helpers.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>

namespace zuma::target {

inline constexpr size_t kBhsLen = 48;
inline constexpr uint32_t kReservedTag = 0xffffffff;  // RFC 7143 11.2.1.8

// Opcodes (RFC 7143 11.2.1.2). Initiator opcodes:
enum class Op : uint8_t {
  kNopOut = 0x00,
  kScsiCommand = 0x01,
  kTaskMgmtRequest = 0x02,
  kLoginRequest = 0x03,
  kTextRequest = 0x04,
  kDataOut = 0x05,
  kLogoutRequest = 0x06,
  kSnackRequest = 0x10,
  // Target opcodes:
  kNopIn = 0x20,
  kScsiResponse = 0x21,
  kTaskMgmtResponse = 0x22,
  kLoginResponse = 0x23,
  kTextResponse = 0x24,
  kDataIn = 0x25,
  kLogoutResponse = 0x26,
  kR2t = 0x31,
  kAsyncMessage = 0x32,
  kReject = 0x3f,
};

// Reject reasons (RFC 7143 11.17.1).
enum class RejectReason : uint8_t {
  kDataDigestError = 0x02,
  kSnackReject = 0x03,
  kProtocolError = 0x04,
  kCommandNotSupported = 0x05,
  kImmediateCommandReject = 0x06,
  kTaskInProgress = 0x07,
  kInvalidDataAck = 0x08,
  kInvalidPduField = 0x09,
  kLongOperationReject = 0x0a,
  kWaitingForLogout = 0x0c,
};

// Login status class/detail (RFC 7143 11.13.5), as (class << 8) | detail.
enum class LoginStatus : uint16_t {
  kSuccess = 0x0000,
  kTargetMovedTemporarily = 0x0101,
  kInitiatorError = 0x0200,
  kAuthenticationFailure = 0x0201,
  kAuthorizationFailure = 0x0202,
  kNotFound = 0x0203,
  kTargetRemoved = 0x0204,
  kUnsupportedVersion = 0x0205,
  kTooManyConnections = 0x0206,
  kMissingParameter = 0x0207,
  kCantIncludeInSession = 0x0208,
  kSessionTypeNotSupported = 0x0209,
  kSessionDoesNotExist = 0x020a,
  kInvalidDuringLogin = 0x020b,
  kTargetError = 0x0300,
  kServiceUnavailable = 0x0301,
  kOutOfResources = 0x0302,
};

// Task management functions and responses (RFC 7143 11.5.1, 11.6.1).
enum class TmfFunction : uint8_t {
  kAbortTask = 1,
  kAbortTaskSet = 2,
  kClearAca = 3,
  kClearTaskSet = 4,
  kLogicalUnitReset = 5,
  kTargetWarmReset = 6,
  kTargetColdReset = 7,
  kTaskReassign = 8,
};
enum class TmfResponse : uint8_t {
  kFunctionComplete = 0,
  kTaskDoesNotExist = 1,
  kLunDoesNotExist = 2,
  kTaskStillAllegiant = 3,
  kReassignmentNotSupported = 4,
  kNotSupported = 5,
  kAuthorizationFailed = 6,
  kRejected = 255,
};

inline uint16_t load_be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t load_be24(const uint8_t* p) { return uint32_t(p[0]) << 16 | p[1] << 8 | p[2]; }
inline uint32_t load_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t load_be64(const uint8_t* p) {
  return uint64_t(load_be32(p)) << 32 | load_be32(p + 4);
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void store_be24(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 16);
  p[1] = uint8_t(v >> 8);
  p[2] = uint8_t(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}
inline void store_be64(uint8_t* p, uint64_t v) {
  store_be32(p, uint32_t(v >> 32));
  store_be32(p + 4, uint32_t(v));
}

// Serial number arithmetic for CmdSN/StatSN (RFC 1982, RFC 7143 4.2.2.1 uses it).
inline bool sn_lt(uint32_t a, uint32_t b) { return a != b && int32_t(a - b) < 0; }
inline bool sn_le(uint32_t a, uint32_t b) { return a == b || int32_t(a - b) < 0; }

// A view over a received (or to-be-sent) BHS. Field offsets per RFC 7143 11.
class Bhs {
 public:
  explicit Bhs(uint8_t* p) : p_(p) {}
  uint8_t* raw() const { return p_; }

  Op opcode() const { return Op(p_[0] & 0x3f); }
  bool immediate() const { return p_[0] & 0x40; }
  bool final_bit() const { return p_[1] & 0x80; }
  uint8_t flags() const { return p_[1]; }
  uint8_t total_ahs_len() const { return p_[4]; }  // in 4-byte words
  uint32_t data_segment_len() const { return load_be24(p_ + 5); }
  uint64_t lun_field() const { return load_be64(p_ + 8); }
  uint32_t itt() const { return load_be32(p_ + 16); }
  // Bytes 20..47 depend on the opcode:
  uint32_t word(size_t off) const { return load_be32(p_ + off); }

  // SCSI Command (11.3)
  uint32_t edtl() const { return load_be32(p_ + 20); }
  uint32_t cmd_sn() const { return load_be32(p_ + 24); }
  uint32_t exp_stat_sn() const { return load_be32(p_ + 28); }
  const uint8_t* cdb() const { return p_ + 32; }
  // Data-Out (11.7)
  uint32_t ttt() const { return load_be32(p_ + 20); }
  uint32_t data_sn() const { return load_be32(p_ + 36); }
  uint32_t buffer_offset() const { return load_be32(p_ + 40); }

  void set_opcode(Op op, bool immediate = false) {
    p_[0] = uint8_t(op) | (immediate ? 0x40 : 0);
  }
  void set_flags(uint8_t f) { p_[1] = f; }
  void set_data_segment_len(uint32_t n) { store_be24(p_ + 5, n); }
  void set_lun_field(uint64_t v) { store_be64(p_ + 8, v); }
  void set_itt(uint32_t v) { store_be32(p_ + 16, v); }
  void set_word(size_t off, uint32_t v) { store_be32(p_ + off, v); }

 private:
  uint8_t* p_;
};

// SAM-5 4.7.7 LUN field -> flat LUN number; ~0 for formats Zuma does not address.
inline uint64_t decode_lun(uint64_t field) {
  const uint8_t b0 = uint8_t(field >> 56), b1 = uint8_t(field >> 48);
  if ((field & 0x0000ffffffffffffull) != 0) return ~0ull;  // second..fourth levels
  switch (b0 >> 6) {
    case 0:  // peripheral device addressing; bus identifier must be 0
      return (b0 & 0x3f) == 0 ? b1 : ~0ull;
    case 1:  // flat space addressing
      return uint64_t(b0 & 0x3f) << 8 | b1;
    default:
      return ~0ull;
  }
}

// Flat LUN number -> SAM-5 LUN field (peripheral below 256, flat space above).
inline uint64_t encode_lun(uint64_t lun) {
  if (lun < 256) return lun << 48;
  return (uint64_t(0x40 | ((lun >> 8) & 0x3f)) << 56) | (uint64_t(lun & 0xff) << 48);
}

// Bytes of padding after a data segment of `len` bytes (RFC 7143 11.1: 4-byte aligned).
inline uint32_t pad_len(uint32_t len) { return (4 - (len & 3)) & 3; }

}  // namespace zuma::target
