// CRC32C digests of iSCSI PDUs (RFC 7143 11.1, 13.1; RFC 3385), computed with ISA-L.
#pragma once

#include <isa-l/crc.h>

#include <cstddef>
#include <cstdint>

namespace zuma::target {

inline constexpr uint32_t kCrc32cInit = 0xffffffff;

// Chains `len` bytes into a running CRC32C state (start with kCrc32cInit).
inline uint32_t crc32c_update(uint32_t state, const uint8_t* p, size_t len) {
  return len ? crc32_iscsi(const_cast<uint8_t*>(p), int(len), state) : state;
}
// The digest value of a finished state.
inline uint32_t crc32c_final(uint32_t state) { return ~state; }

// Digests travel least significant byte first (RFC 7143 11.1, as every initiator does).
inline void store_digest(uint8_t* p, uint32_t crc) {
  p[0] = uint8_t(crc);
  p[1] = uint8_t(crc >> 8);
  p[2] = uint8_t(crc >> 16);
  p[3] = uint8_t(crc >> 24);
}
inline uint32_t load_digest(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace zuma::target
