// SBC limits we advertise and enforce, and the two VPD pages that carry them: Block Limits
// (B0h) and Logical Block Provisioning (B2h). spc_commands.cc serves the pages through
// these builders; the SBC handlers check the same constants.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace zuma::scsi {

class LogicalUnit;

// MAXIMUM COMPARE AND WRITE LENGTH (one byte in the page and in the CDB): every length the
// CDB can express. The compare buffer is allocated per command; the range is held
// exclusive across the read and the write.
inline constexpr uint32_t kMaxCompareAndWriteBlocks = 255;

// UNMAP: at most this many bytes per command (one fallocate(PUNCH_HOLE) per descriptor on
// a file) and this many block descriptors.
inline constexpr uint64_t kMaxUnmapBytes = 512ull << 20;
inline constexpr uint32_t kMaxUnmapDescriptors = 256;
// Deallocation happens in file system blocks: ranges aligned to 4 KiB free space, others
// only zero the partial blocks. OPTIMAL UNMAP GRANULARITY, alignment 0 (UGAVALID=1).
inline constexpr uint32_t kUnmapGranularityBytes = 4096;

// MAXIMUM WRITE SAME LENGTH: FFFFh blocks (as LIO), so one WRITE SAME stays short: zeros go
// to the backend as one write-zeroes (or discard) request, other patterns through a bounded
// buffer, chunk after chunk (at most 256 MiB at 4 KiB blocks). Also what libiscsi's
// WriteSame16.Unmap needs: with a larger limit it prepares its 65536-block WRITE SAME with a
// 65536-block WRITE, beyond our MAXIMUM TRANSFER LENGTH.
inline constexpr uint32_t kMaxWriteSameBlocks = 0xFFFF;
inline constexpr uint32_t kWriteSameChunkBytes = 1u << 20;

// WRITE ATOMIC (16): at most 1 MiB, starting on and made of whole 4 KiB units (the file
// system block). Atomic with respect to every other command that writes those blocks (the
// range lock); with respect to power loss only as far as the backend writes 4 KiB units
// atomically (documented limitation).
inline constexpr uint32_t kMaxAtomicBytes = 1u << 20;
inline constexpr uint32_t kAtomicUnitBytes = 4096;

// In logical blocks, for a LU of `block_size` bytes per block.
inline uint32_t max_unmap_blocks(uint32_t block_size) {
  // libiscsi (Inquiry.BlockLimits) calls a MAXIMUM UNMAP LBA COUNT above 2^20 insane.
  return static_cast<uint32_t>(std::min<uint64_t>(kMaxUnmapBytes / block_size, 1u << 20));
}
inline uint32_t unmap_granularity_blocks(uint32_t block_size) {
  return std::max<uint32_t>(1, kUnmapGranularityBytes / block_size);
}
inline uint64_t max_write_same_blocks(uint32_t) {
  return kMaxWriteSameBlocks;
}
inline uint32_t max_atomic_blocks(uint32_t block_size) {
  return kMaxAtomicBytes / block_size;
}
// ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY; 0 (no requirement) when a
// logical block is already a whole unit.
inline uint32_t atomic_unit_blocks(uint32_t block_size) {
  return block_size >= kAtomicUnitBytes ? 0 : kAtomicUnitBytes / block_size;
}

// Block Limits VPD page (SBC-4), 64 bytes into `p` (zeroed by the caller); returns 64.
size_t build_block_limits_vpd(const LogicalUnit& lu, uint8_t* p);
// Logical Block Provisioning VPD page (SBC-4), 8 bytes into `p` (zeroed); returns 8. Only
// for a thin LU (LBPME=1); the page is not supported on others.
size_t build_lbp_vpd(const LogicalUnit& lu, uint8_t* p);

}  // namespace zuma::scsi
