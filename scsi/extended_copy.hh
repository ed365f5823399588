// The copy manager of a LU: EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-5 third-party
// copy, the LID1 forms of SPC-4).
//
// Supported: identification CSCD descriptors (E4h) naming a LU by its NAA designator, and
// block device to block device segment descriptors (02h). A descriptor may only name a LU of
// the LunTable the EXTENDED COPY arrived through, i.e. one the sending I_T nexus can reach
// anyway: the copy manager never lets an initiator read or write a LU it could not address
// itself (the hole of LIO's CVE-2020-28374). Reservations of the copy targets are checked for
// the sending I_T nexus as if it had sent the reads (source) and writes (destination).
//
// The copy runs in the background of the EXTENDED COPY command, on the LUs' normal backend
// path, one chunk (kCopyChunkBytes) read then written at a time; the command completes when
// every segment has been copied. Copies with LIST ID USAGE 00b keep their results for
// RECEIVE COPY RESULTS (per I_T nexus and LU, the last 16).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zuma::scsi {

// Limits reported by RECEIVE COPY RESULTS (OPERATING PARAMETERS) and enforced.
inline constexpr uint16_t kMaxCscdDescriptors = 2;
inline constexpr uint16_t kMaxSegmentDescriptors = 8;
inline constexpr uint32_t kMaxDescriptorListLength = 1024;
inline constexpr uint16_t kMaxConcurrentCopies = 16;
inline constexpr uint32_t kCopyChunkBytes = 1u << 20;

// Writes the Third-party Copy VPD page (8Fh, SPC-5) and returns its length.
size_t build_third_party_copy_vpd(uint8_t* p);

}  // namespace zuma::scsi
