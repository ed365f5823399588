#include "scsi/block_limits.hh"

#include "scsi/cdb.hh"
#include "scsi/logical_unit.hh"

namespace zuma::scsi {

size_t build_block_limits_vpd(const LogicalUnit& lu, uint8_t* p) {
  // SBC-4 Block Limits VPD page.
  const uint32_t bs = lu.block_size();
  put_be16(p + 2, 0x3C);
  p[4] = 0x00;  // WSNZ=0: WRITE SAME with NUMBER OF BLOCKS 0 writes to the last LBA
  p[5] = kMaxCompareAndWriteBlocks;
  // OPTIMAL TRANSFER LENGTH GRANULARITY: at least a physical block.
  put_be16(p + 6, static_cast<uint16_t>(std::max<uint32_t>(1u << lu.params().lbppb_exponent,
                                                            kOptimalGranularityBytes / bs)));
  put_be32(p + 8, lu.max_transfer_blocks());
  put_be32(p + 12, kOptimalTransferBytes / bs);
  // MAXIMUM PREFETCH LENGTH 0: no limit (PRE-FETCH transfers nothing).
  if (lu.params().thin) {
    put_be32(p + 20, max_unmap_blocks(bs));
    put_be32(p + 24, kMaxUnmapDescriptors);
    // OPTIMAL UNMAP GRANULARITY: the file system block, or a physical block when larger;
    // UGAVALID=1, UNMAP GRANULARITY ALIGNMENT 0 (LOWEST ALIGNED LBA is 0 too).
    put_be32(p + 28, std::max<uint32_t>(unmap_granularity_blocks(bs),
                                        1u << lu.params().lbppb_exponent));
    put_be32(p + 32, 0x80000000u);
  }
  // Unmap fields 0 on a fully provisioned LU: it has no UNMAP (LBPU=0).
  put_be64(p + 36, max_write_same_blocks(bs));
  put_be32(p + 44, max_atomic_blocks(bs));
  put_be32(p + 48, atomic_unit_blocks(bs));  // ATOMIC ALIGNMENT
  put_be32(p + 52, atomic_unit_blocks(bs));  // ATOMIC TRANSFER LENGTH GRANULARITY
  // MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY and MAXIMUM ATOMIC BOUNDARY SIZE 0:
  // no atomic boundaries (WRITE ATOMIC with a non-zero ATOMIC BOUNDARY is refused).
  return 64;
}

size_t build_lbp_vpd(const LogicalUnit&, uint8_t* p) {
  // SBC-4 Logical Block Provisioning VPD page. THRESHOLD EXPONENT 0: no provisioning
  // thresholds. LBPU, LBPWS, LBPWS10: UNMAP and WRITE SAME (16/10) with UNMAP=1 deallocate.
  // LBPRZ 001b: deallocated blocks read as zeros (a punched hole, a freed memory chunk, or
  // zeros we wrote ourselves where the backend cannot deallocate). ANC_SUP=0: no anchored
  // state (ANCHOR=1 is refused). PROVISIONING TYPE 010b: thin.
  put_be16(p + 2, 0x0004);
  p[5] = 0x80 | 0x40 | 0x20 | (0x01 << 2);
  p[6] = 0x02;
  return 8;
}

}  // namespace zuma::scsi
