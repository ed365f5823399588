// SPC-5 LOG SENSE with the pages a block LU reports: Supported Log Pages (00h), Supported
// Log Pages and Subpages (00h/FFh) and, on a thin LU, Logical Block Provisioning (0Ch,
// SBC-4).
//
// Logical Block Provisioning parameters (binary format list parameters, never reset):
//   0001h Available LBA Mapping Resource Count: blocks the backend could still allocate
//         (Backend::space_usage; for a file, the file system's free space, so SCOPE 10b:
//         shared with whatever else lives there);
//   0002h Used LBA Mapping Resource Count: blocks the LU holds storage for (SCOPE 01b:
//         dedicated to the LU).
// The counts are in threshold sets of 2^THRESHOLD EXPONENT blocks; the Logical Block
// Provisioning VPD page says 0 (no thresholds), so a set is one block, and a count that
// does not fit 32 bits is reported as FFFFFFFFh.
//
// No parameter is saveable (SP=1 is refused by the table's CDB mask; DS=1 in the pages) and
// none has thresholds or defaults of its own: every PAGE CONTROL value returns the current
// values.
#include <algorithm>
#include <cstring>

#include "scsi/cdb.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"
#include "scsi/sbc_op.hh"

namespace zuma::scsi {
namespace {

constexpr uint8_t kSupportedPages = 0x00;
constexpr uint8_t kLogicalBlockProvisioning = 0x0C;
constexpr uint8_t kAllSubpages = 0xFF;

// One Logical Block Provisioning parameter (SBC-4 table: code, control byte 03h (binary
// format list), length 08h, RESOURCE COUNT, SCOPE).
size_t put_resource_count(uint8_t* p, uint16_t code, uint64_t blocks, uint8_t scope) {
  put_be16(p, code);
  p[2] = 0x03;  // DU=0, TSD=0, ETC=0, TMC=00b, FORMAT AND LINKING 11b
  p[3] = 0x08;
  put_be32(p + 4, static_cast<uint32_t>(std::min<uint64_t>(blocks, 0xFFFFFFFFu)));
  p[8] = scope;
  return 12;
}

}  // namespace

CmdResult handle_log_sense(Cmd& c) {
  // SPC-5 LOG SENSE.
  LogicalUnit& lu = *c.lu;
  const uint8_t* cdb = c.cdb();
  const uint8_t page = cdb[2] & 0x3F;
  const uint8_t subpage = cdb[3];
  const uint16_t pointer = get_be16(cdb + 5);
  const uint16_t alloc = get_be16(cdb + 7);
  const bool thin = lu.params().thin;
  uint8_t buf[64] = {};
  size_t n = 4;
  if (page == kSupportedPages && (subpage == 0x00 || subpage == kAllSubpages)) {
    // SPC-5 Supported Log Pages / Supported Log Pages and Subpages: no parameters, so a
    // PARAMETER POINTER other than 0 points past them.
    if (pointer != 0) return CmdResult::invalid_cdb(5, 7);
    if (subpage == 0x00) {
      buf[n++] = kSupportedPages;
      if (thin) buf[n++] = kLogicalBlockProvisioning;
    } else {
      buf[0] = 0x40;  // SPF
      for (const uint8_t pair : {uint8_t{0x00}, uint8_t{0xFF}}) {
        buf[n++] = kSupportedPages;
        buf[n++] = pair;
      }
      if (thin) {
        buf[n++] = kLogicalBlockProvisioning;
        buf[n++] = 0x00;
      }
    }
    buf[1] = subpage;
  } else if (page == kLogicalBlockProvisioning && subpage == 0x00 && thin) {
    // SPC-5 LOG SENSE: parameters with codes from PARAMETER POINTER on; a pointer past the
    // last code is an invalid field.
    if (pointer > 0x0002) return CmdResult::invalid_cdb(5, 7);
    storage::SpaceUsage u;
    if (const int r = lu.backend().space_usage(&u); r < 0) {
      return sbc::io_error(sbc::IoKind::kRead, r, 0);
    }
    const uint32_t bs = lu.block_size();
    buf[0] = 0x80 | kLogicalBlockProvisioning;  // DS: not saveable
    if (pointer <= 0x0001) {
      n += put_resource_count(buf + n, 0x0001, u.available_bytes / bs,
                              u.available_shared ? 0x02 : 0x01);
    }
    n += put_resource_count(buf + n, 0x0002, (u.allocated_bytes + bs - 1) / bs, 0x01);
  } else if (page == kSupportedPages || (page == kLogicalBlockProvisioning && thin)) {
    return CmdResult::invalid_cdb(3, 7);  // a subpage we do not have
  } else {
    return CmdResult::invalid_cdb(2, 5);  // PAGE CODE
  }
  if (buf[0] == 0) buf[0] = page;
  put_be16(buf + 2, static_cast<uint16_t>(n - 4));
  std::memcpy(data_in_buffer(c.task, n), buf, n);
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

}  // namespace zuma::scsi
