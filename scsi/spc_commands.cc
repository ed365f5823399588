// SPC-5 commands: TEST UNIT READY, REQUEST SENSE, INQUIRY and its VPD pages, MODE
// SENSE/SELECT, REPORT LUNS, REPORT SUPPORTED OPERATION CODES, RESERVE/RELEASE (6)/(10),
// PERSISTENT RESERVE IN/OUT (persistent_reservation.hh), REPORT TARGET PORT GROUPS (implicit
// ALUA), REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "scsi/block_limits.hh"
#include "scsi/cdb.hh"
#include "scsi/extended_copy.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"

namespace zuma::scsi {
namespace {

// Peripheral qualifier / device type byte: 000b direct access block device, or 011b /
// 1Fh when no LU is attached at this LUN (SPC-5 standard INQUIRY data, SAM-5 (incorrect logical
// unit selection)).
constexpr uint8_t kPeripheralDisk = 0x00;
constexpr uint8_t kPeripheralNoLu = 0x7F;

// Version descriptors (SPC-5 standard INQUIRY data): SAM-5, SPC-4, SBC-3 (no version claimed).
// SBC-3 rather than SBC-4: conformance tools key SBC-3 features (block limits page
// length 3Ch, READ CAPACITY (16)) on it, and SBC-4 is a superset of what they test.
constexpr uint16_t kVersionDescriptors[] = {0x00A0, 0x0460, 0x04C0};

namespace vpd {
constexpr uint8_t kSupportedPages = 0x00;
constexpr uint8_t kUnitSerialNumber = 0x80;
constexpr uint8_t kDeviceIdentification = 0x83;
constexpr uint8_t kExtendedInquiry = 0x86;
constexpr uint8_t kThirdPartyCopy = 0x8F;
constexpr uint8_t kBlockLimits = 0xB0;
constexpr uint8_t kBlockDeviceCharacteristics = 0xB1;
constexpr uint8_t kLogicalBlockProvisioning = 0xB2;
}  // namespace vpd

// Parameter data buffers: large enough for every response of this file but REPORT LUNS
// and REPORT SUPPORTED OPERATION CODES, which size theirs.
constexpr size_t kInquiryBufLen = 2048;

// Copies `s` into a fixed-width ASCII field, space padded; characters outside 20h..7Eh
// become spaces (SPC-5 (ASCII data fields)).
void put_ascii(uint8_t* p, size_t width, std::string_view s) {
  std::memset(p, ' ', width);
  for (size_t i = 0; i < width && i < s.size(); ++i) {
    const char ch = s[i];
    p[i] = (ch >= 0x20 && ch <= 0x7E) ? static_cast<uint8_t>(ch) : ' ';
  }
}

size_t standard_inquiry(const LogicalUnit* lu, uint8_t* p) {
  static const LuParams kNoLuParams;
  const LuParams& lp = lu ? lu->params() : kNoLuParams;
  p[0] = lu ? kPeripheralDisk : kPeripheralNoLu;
  p[1] = 0x00;  // RMB=0: not removable
  p[2] = 0x06;  // VERSION: SPC-4
  p[3] = 0x12;  // HISUP=1, RESPONSE DATA FORMAT=2
  // TPGS 01b: implicit asymmetric access (every port group active/optimized, REPORT TARGET
  // PORT GROUPS); 3PC: EXTENDED COPY; SCCS, ACC, PROTECT 0.
  // With a cluster's ALUA view, TPGS 11b: explicit as well (SET TARGET PORT GROUPS).
  p[5] = lu ? (lu->alua() ? 0x30 : 0x10) | 0x08 : 0x00;
  p[6] = 0x00;
  p[7] = 0x02;  // CMDQUE
  put_ascii(p + 8, 8, lp.vendor);
  put_ascii(p + 16, 16, lp.product);
  put_ascii(p + 32, 4, lp.revision);
  for (size_t i = 0; i < std::size(kVersionDescriptors); ++i) {
    put_be16(p + 58 + 2 * i, kVersionDescriptors[i]);
  }
  constexpr size_t kLen = 96;
  p[4] = kLen - 5;  // ADDITIONAL LENGTH
  return kLen;
}

// Appends a designation descriptor (SPC-5 Device Identification VPD page); returns its size.
size_t put_designator(uint8_t* p, uint8_t code_set, uint8_t association, uint8_t type,
                      const uint8_t* id, size_t id_len) {
  p[0] = code_set;  // PROTOCOL IDENTIFIER 0 (PIV=0: not transport specific)
  p[1] = static_cast<uint8_t>(association << 4 | type);
  p[2] = 0;
  p[3] = static_cast<uint8_t>(id_len);
  std::memcpy(p + 4, id, id_len);
  return 4 + id_len;
}

// SCSI name string designator (SPC-5): UTF-8, null terminated, padded with nulls to a
// multiple of 4, at most 256 bytes.
size_t put_name_designator(uint8_t* p, uint8_t association, std::string_view name) {
  uint8_t buf[256] = {};
  const size_t n = std::min<size_t>(name.size(), 255);
  std::memcpy(buf, name.data(), n);
  const size_t len = std::min<size_t>((n + 1 + 3) / 4 * 4, 256);
  return put_designator(p, 0x3, association, 0x8, buf, len);
}

constexpr uint8_t kAssocLu = 0x0;
constexpr uint8_t kAssocTargetPort = 0x1;
constexpr uint8_t kAssocTargetDevice = 0x2;

size_t device_identification(const LogicalUnit& lu, const Nexus* nexus, uint8_t* p) {
  size_t n = 4;
  // NAA IEEE Registered Extended (type 3), binary.
  n += put_designator(p + n, 0x1, kAssocLu, 0x3, lu.naa().data(), lu.naa().size());
  // T10 vendor ID based (type 1), ASCII: vendor, then the unit serial number.
  uint8_t t10[8 + 32];
  put_ascii(t10, 8, lu.params().vendor);
  put_ascii(t10 + 8, 32, lu.serial());
  n += put_designator(p + n, 0x2, kAssocLu, 0x1, t10, sizeof(t10));
  if (nexus) {
    // Relative target port (type 4) and target port group (type 5) designators (SPC-5).
    uint8_t id[4] = {};
    put_be16(id + 2, nexus->relative_port_id);
    n += put_designator(p + n, 0x1, kAssocTargetPort, 0x4, id, 4);
    put_be16(id + 2, nexus->target_port_group);
    n += put_designator(p + n, 0x1, kAssocTargetPort, 0x5, id, 4);
    if (!nexus->target_port.empty()) {
      n += put_name_designator(p + n, kAssocTargetPort, nexus->target_port);
    }
    if (!nexus->target_name.empty()) {
      n += put_name_designator(p + n, kAssocTargetDevice, nexus->target_name);
    }
  }
  put_be16(p + 2, static_cast<uint16_t>(n - 4));
  return n;
}

size_t block_limits(const LogicalUnit& lu, uint8_t* p) {
  return build_block_limits_vpd(lu, p);  // SBC: block_limits.cc
}

size_t block_device_characteristics(uint8_t* p) {
  // SBC-4 Block Device Characteristics VPD page: MEDIUM ROTATION RATE 0001h, non-rotating medium.
  put_be16(p + 2, 0x3C);
  put_be16(p + 4, 0x0001);
  return 64;
}

size_t logical_block_provisioning(const LogicalUnit& lu, uint8_t* p) {
  return build_lbp_vpd(lu, p);  // SBC: block_limits.cc (thin LUs only)
}

size_t extended_inquiry(uint8_t* p) {
  // SPC-5 Extended INQUIRY Data VPD page. No protection information (SPT, GRD_CHK, APP_CHK,
  // REF_CHK 0); HEADSUP, ORDSUP, SIMPSUP: every task attribute but ACA (task_set.hh); V_SUP: a
  // volatile write cache (WCE); LUICLR: a unit attention is cleared for the I_T nexus it is
  // reported to only; MAXIMUM SUPPORTED SENSE DATA LENGTH: what build_sense() writes at most.
  put_be16(p + 2, 0x3C);
  p[5] = 0x04 | 0x02 | 0x01;
  p[6] = 0x01;
  p[7] = 0x01;
  p[13] = kMaxSenseLen;
  return 64;
}

// Supported VPD pages, ascending (SPC-5 Supported VPD Pages page).
size_t supported_pages(const LogicalUnit& lu, uint8_t* p) {
  size_t n = 4;
  for (uint8_t page : {vpd::kSupportedPages, vpd::kUnitSerialNumber, vpd::kDeviceIdentification,
                       vpd::kExtendedInquiry, vpd::kThirdPartyCopy, vpd::kBlockLimits,
                       vpd::kBlockDeviceCharacteristics}) {
    p[n++] = page;
  }
  if (lu.params().thin) p[n++] = vpd::kLogicalBlockProvisioning;
  put_be16(p + 2, static_cast<uint16_t>(n - 4));
  return n;
}

CmdResult vpd_page(const LogicalUnit* lu, const Nexus* nexus, uint8_t page, uint8_t* p,
                   size_t* len) {
  p[1] = page;
  if (!lu) {
    // No LU here: only the list of supported pages, which lists itself.
    if (page != vpd::kSupportedPages) return CmdResult::invalid_cdb(2, 7);
    p[0] = kPeripheralNoLu;
    p[3] = 1;
    *len = 5;
    return CmdResult::good();
  }
  p[0] = kPeripheralDisk;
  switch (page) {
    case vpd::kSupportedPages:
      *len = supported_pages(*lu, p);
      break;
    case vpd::kUnitSerialNumber: {  // SPC-5 Unit Serial Number VPD page
      const std::string& s = lu->serial();
      p[3] = static_cast<uint8_t>(s.size());
      std::memcpy(p + 4, s.data(), s.size());
      *len = 4 + s.size();
      break;
    }
    case vpd::kDeviceIdentification:
      *len = device_identification(*lu, nexus, p);
      break;
    case vpd::kExtendedInquiry:
      *len = extended_inquiry(p);
      break;
    case vpd::kThirdPartyCopy:
      *len = build_third_party_copy_vpd(p);
      break;
    case vpd::kBlockLimits:
      *len = block_limits(*lu, p);
      break;
    case vpd::kBlockDeviceCharacteristics:
      *len = block_device_characteristics(p);
      break;
    case vpd::kLogicalBlockProvisioning:
      if (!lu->params().thin) return CmdResult::invalid_cdb(2, 7);
      *len = logical_block_provisioning(*lu, p);
      break;
    default:
      return CmdResult::invalid_cdb(2, 7);
  }
  return CmdResult::good();
}

}  // namespace

CmdResult handle_test_unit_ready(Cmd&) {
  // SBC-4 TEST UNIT READY: the medium is always ready (no removable medium, no spin-up).
  return CmdResult::good();
}

CmdResult handle_request_sense(Cmd& c) {
  // SPC-5 REQUEST SENSE. iSCSI returns sense with the status (autosense), so the only sense data
  // held for REQUEST SENSE is a pending unit attention, which this reports and clears.
  const bool desc = c.cdb()[1] & 0x01;
  const uint8_t alloc = c.cdb()[4];
  CmdResult s = Reason::kNoSense;
  if (!c.lu) {
    // SAM-5 (incorrect logical unit selection): reported as parameter data, status GOOD.
    s = Reason::kLuNotSupported;
  } else if (auto ua = c.lu->unit_attentions().take(c.nexus_id())) {
    s = *ua;
  }
  uint8_t* p = data_in_buffer(c.task, kMaxSenseLen);
  const size_t n = build_sense(s, desc, std::span<uint8_t>(p, kMaxSenseLen));
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

CmdResult handle_inquiry(Cmd& c) {
  // SPC-5 INQUIRY.
  const uint8_t* cdb = c.cdb();
  const bool evpd = cdb[1] & 0x01;
  const uint8_t page = cdb[2];
  const uint16_t alloc = get_be16(cdb + 3);
  if (!evpd && page != 0) return CmdResult::invalid_cdb(2, 7);
  uint8_t* p = data_in_buffer(c.task, kInquiryBufLen);
  size_t n = 0;
  if (!evpd) {
    n = standard_inquiry(c.lu, p);
  } else {
    const CmdResult r = vpd_page(c.lu, c.task.nexus, page, p, &n);
    if (!r.ok()) return r;
  }
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

CmdResult handle_reserve(Cmd& c) {
  // SPC-2 RESERVE (6)/(10), with SPC-5's compatible reservation handling (CRH=1).
  static const Nexus kNone;
  return c.lu->reservations().reserve(c.task.nexus ? *c.task.nexus : kNone);
}

CmdResult handle_release(Cmd& c) {
  // SPC-2 RELEASE (6)/(10).
  static const Nexus kNone;
  return c.lu->reservations().release(c.task.nexus ? *c.task.nexus : kNone);
}

CmdResult handle_persistent_reserve_in(Cmd& c) {
  // SPC-5 PERSISTENT RESERVE IN.
  static const Nexus kNone;
  const uint8_t sa = c.cdb()[1] & 0x1F;
  const uint16_t alloc = get_be16(c.cdb() + 7);
  std::vector<uint8_t> out;
  const CmdResult r =
      c.lu->reservations().persistent_reserve_in(c.task.nexus ? *c.task.nexus : kNone, sa, &out);
  if (!r.ok()) return r;
  std::memcpy(data_in_buffer(c.task, out.size()), out.data(), out.size());
  set_data_in(c.task, out.size(), alloc);
  return CmdResult::good();
}

CmdResult handle_persistent_reserve_out(Cmd& c) {
  // SPC-5 PERSISTENT RESERVE OUT.
  static const Nexus kNone;
  const Nexus& n = c.task.nexus ? *c.task.nexus : kNone;
  const uint32_t len = get_be32(c.cdb() + 5);
  c.task.transfer_len = len;
  if (c.task.data.size() < len) return Reason::kInvalidFieldInCommandIu;
  std::vector<uint16_t> ports;
  for (const auto& g : c.table.port_groups)
    ports.insert(ports.end(), g.relative_port_ids.begin(), g.relative_port_ids.end());
  if (ports.empty()) ports.push_back(n.relative_port_id);
  std::vector<uint64_t> abort;
  LogicalUnit* lu = c.lu;
  const CmdResult r = lu->reservations().persistent_reserve_out(
      n, c.cdb(), std::span<const uint8_t>(c.task.data.data(), len), ports, &abort);
  if (!r.ok() || abort.empty()) return r;
  // PREEMPT AND ABORT: the tasks of the preempted I_T nexuses are aborted (SPC-5 PREEMPT AND
  // ABORT, as by ABORT TASK SET), and the command completes once they have all ended. The
  // last of them may end on another thread: completing there needs Nexus::post; without it
  // the command completes at once (the aborted tasks still end without effect on their
  // initiators, but may reach the medium after this GOOD).
  Task* task = &c.task;
  const Nexus* np = task->nexus;
  if (!np || !np->post) {
    for (uint64_t id : abort) {
      if (auto set = lu->nexuses().find(id)) abort_tasks_of(*lu, *set, n.id, nullptr);
    }
    return CmdResult::good();
  }
  auto waiter = std::make_shared<AbortWaiter>([task, lu, np] {
    np->post([task, lu] { finish(*task, CmdResult::good(), lu->descriptor_sense()); });
  });
  for (uint64_t id : abort) {
    if (auto set = lu->nexuses().find(id)) abort_tasks_of(*lu, *set, n.id, waiter);
  }
  waiter->release();
  return CmdResult::pending();
}

CmdResult handle_report_target_port_groups(Cmd& c) {
  // SPC-5 REPORT TARGET PORT GROUPS. Without an ALUA view (one node): implicit ALUA, every
  // target port group active/optimized (all portals reach the same LU at the same cost).
  // With one (a LU that several nodes export): each node's group in its own state.
  const uint8_t* cdb = c.cdb();
  const uint8_t format = cdb[1] >> 5;
  const uint32_t alloc = get_be32(cdb + 6);
  if (format > 1) return CmdResult::invalid_cdb(1, 7);
  std::vector<AluaGroup> groups;
  if (c.lu && c.lu->alua()) {
    groups = c.lu->alua()->groups();
  } else {
    for (const auto& g : c.table.port_groups)
      groups.push_back({g.id, alua::kActiveOptimized, true, g.relative_port_ids});
    const Nexus* nx = c.task.nexus;
    if (nx && std::none_of(groups.begin(), groups.end(),
                           [&](const AluaGroup& g) { return g.id == nx->target_port_group; })) {
      // The transport names another group than the portal groups (a cluster node reports its
      // node's group in VPD 83h for every LU): one group with all the ports, as VPD 83h says.
      AluaGroup g{nx->target_port_group, alua::kActiveOptimized, true, {}};
      for (const auto& pg : groups)
        g.relative_port_ids.insert(g.relative_port_ids.end(), pg.relative_port_ids.begin(),
                                   pg.relative_port_ids.end());
      if (g.relative_port_ids.empty()) g.relative_port_ids.push_back(nx->relative_port_id);
      groups = {g};
    }
  }
  const bool explicit_alua = c.lu && c.lu->alua();
  size_t size = format == 1 ? 8 : 4;
  for (const auto& g : groups) size += 8 + 4 * g.relative_port_ids.size();
  uint8_t* p = data_in_buffer(c.task, size);
  size_t n = 4;
  if (format == 1) {
    p[4] = 0x10;  // FORMAT TYPE 001b; IMPLICIT TRANSITION TIME 0
    n = 8;
  }
  for (const auto& g : groups) {
    p[n] = static_cast<uint8_t>((g.preferred ? 0x80 : 0x00) | g.state);  // PREF, state
    // Supported states: AO_SUP only (implicit); with the view AO, AN, S, U and O as well
    // (T_SUP 0: a node changes state at once).
    p[n + 1] = explicit_alua ? 0x40 | 0x08 | 0x04 | 0x02 | 0x01 : 0x01;
    put_be16(p + n + 2, g.id);
    p[n + 5] = 0x00;  // STATUS CODE: no status available
    p[n + 7] = static_cast<uint8_t>(g.relative_port_ids.size());
    n += 8;
    for (uint16_t rel : g.relative_port_ids) {
      put_be16(p + n + 2, rel);
      n += 4;
    }
  }
  put_be32(p, static_cast<uint32_t>(n - 4));
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

CmdResult handle_set_target_port_groups(Cmd& c) {
  // SPC-5 SET TARGET PORT GROUPS (explicit ALUA): bytes 6-9 PARAMETER LIST LENGTH; the
  // list: 4 reserved bytes, then 4-byte descriptors (byte 0 bits 3:0 the state, bytes 2-3
  // the target port group). States 0h-3h may be asked for.
  AluaView* view = c.lu ? c.lu->alua() : nullptr;
  if (!view) return Reason::kInvalidOpcode;  // implicit ALUA only
  const uint32_t len = get_be32(c.cdb() + 6);
  c.task.transfer_len = len;
  if (len == 0) return CmdResult::good();
  if (c.task.data.size() < len) return Reason::kInvalidFieldInCommandIu;
  if (len < 4 || (len - 4) % 4 != 0) return Reason::kParameterListLengthError;
  const uint8_t* p = c.task.data.data();
  const std::vector<AluaGroup> groups = view->groups();
  std::vector<std::pair<uint16_t, uint8_t>> want;
  for (uint32_t off = 4; off < len; off += 4) {
    const uint8_t state = p[off] & 0x0F;
    const uint16_t id = get_be16(p + off + 2);
    if (state > alua::kUnavailable) return CmdResult::invalid_param(static_cast<uint16_t>(off), 3);
    if (std::none_of(groups.begin(), groups.end(), [&](const AluaGroup& g) { return g.id == id; }))
      return CmdResult::invalid_param(static_cast<uint16_t>(off + 2));
    want.emplace_back(id, state);
  }
  return view->set_states(want);
}

CmdResult handle_report_supported_tmfs(Cmd& c) {
  // SPC-5 REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS: what iSCSI carries and the transport
  // implements (RFC 7143 11.5.1): ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT
  // RESET, TARGET RESET (warm/cold); not CLEAR ACA, QUERY TASK, QUERY TASK SET, QUERY
  // ASYNCHRONOUS EVENT, I_T NEXUS RESET.
  const uint8_t* cdb = c.cdb();
  const bool repd = cdb[2] & 0x80;
  const uint32_t alloc = get_be32(cdb + 6);
  if (alloc < 4) return CmdResult::invalid_cdb(6, 7);
  const size_t n = repd ? 16 : 4;
  uint8_t* p = data_in_buffer(c.task, n);
  p[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;  // ATS, ATSS, CTSS, LURS, TRS
  if (repd) p[3] = 0x0C;                    // ADDITIONAL DATA LENGTH
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

CmdResult handle_mode_sense(Cmd& c) {
  // SPC-5 MODE SENSE (6/10).
  const uint8_t* cdb = c.cdb();
  ModeSenseArgs a;
  a.ten = cdb[0] == op::kModeSense10;
  a.dbd = cdb[1] & 0x08;
  a.llbaa = a.ten && (cdb[1] & 0x10);
  a.pc = static_cast<PageControl>(cdb[2] >> 6);
  a.page = cdb[2] & 0x3F;
  a.subpage = cdb[3];
  a.write_protected = c.lu->write_protected();
  const size_t alloc = a.ten ? get_be16(cdb + 7) : cdb[4];
  uint8_t buf[kMaxModeSenseLen];
  size_t n = 0;
  ModeParams saved;
  bool savable = false;
  {
    std::lock_guard lock(c.lu->mode_mutex());
    if (const ModeParams* s = c.lu->saved_mode_params()) {
      saved = *s;
      savable = true;
    }
  }
  const CmdResult r = build_mode_sense(a, c.lu->mode_params(), c.lu->default_mode_params(),
                                       c.lu->geometry(), buf, &n, savable ? &saved : nullptr);
  if (!r.ok()) return r;
  std::memcpy(data_in_buffer(c.task, n), buf, n);
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

CmdResult handle_mode_select(Cmd& c) {
  // SPC-5 MODE SELECT (6/10).
  const uint8_t* cdb = c.cdb();
  const bool ten = cdb[0] == op::kModeSelect10;
  const uint32_t len = ten ? get_be16(cdb + 7) : cdb[4];
  c.task.transfer_len = len;
  const bool sp = cdb[1] & 0x01;
  std::lock_guard lock(c.lu->mode_mutex());
  // SP: save the pages too; only when the LU has somewhere to keep them.
  if (sp && !c.lu->saved_mode_params()) return CmdResult::invalid_cdb(1, 0);
  if (len != 0 && !(cdb[1] & 0x10)) return CmdResult::invalid_cdb(1, 4);  // PF=0: vendor format
  if (c.task.data.size() < len) return Reason::kInvalidFieldInCommandIu;
  ModeParams next;
  const CmdResult r = parse_mode_select(std::span<const uint8_t>(c.task.data.data(), len), ten,
                                        c.lu->geometry(), c.lu->mode_params(), &next);
  if (!r.ok()) return r;
  // Saved first: when that fails, nothing has changed.
  if (sp && c.lu->save_mode_params(next) != 0) return Reason::kInternalTargetFailure;
  c.lu->set_mode_params(next, c.nexus_id());
  return CmdResult::good();
}

CmdResult handle_report_luns(Cmd& c) {
  // SPC-5 REPORT LUNS.
  const uint8_t* cdb = c.cdb();
  const uint8_t select = cdb[2];
  const uint32_t alloc = get_be32(cdb + 6);
  if (alloc < 16) return CmdResult::invalid_cdb(6, 7);
  bool report = false;
  switch (select) {
    case 0x00:  // all LUs but well-known ones (we have none)
    case 0x02:  // all LUs
    case 0x11:  // administrative LUs and all that are not subsidiary: all of ours
      report = true;
      break;
    case 0x01:  // well-known LUs only
    case 0x10:  // administrative LUs only
    case 0x12:  // the addressed administrative LU and its subsidiaries: not one of ours
      break;
    default:
      return CmdResult::invalid_cdb(2, 7);
  }
  size_t count = 0;
  if (report) {
    for (const auto& [lun, lu] : c.table.luns) count += (lu && lun <= 0x3FFF) ? 1 : 0;
  }
  uint8_t* p = data_in_buffer(c.task, 8 + 8 * count);
  size_t n = 8;
  if (report) {
    for (const auto& [lun, lu] : c.table.luns) {
      if (!lu || lun > 0x3FFF) continue;  // not addressable in the flat space
      // SAM-5 (LUN addressing methods): peripheral device addressing (00b) below 256, else flat
      // (01b).
      if (lun < 256) {
        p[n + 1] = static_cast<uint8_t>(lun);
      } else {
        p[n] = static_cast<uint8_t>(0x40 | (lun >> 8));
        p[n + 1] = static_cast<uint8_t>(lun);
      }
      n += 8;
    }
  }
  put_be32(p, static_cast<uint32_t>(n - 8));
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

namespace {

// Command timeouts descriptor (SPC-5 REPORT SUPPORTED OPERATION CODES): nominal time not specified,
// 60 s recommended.
constexpr size_t kTimeoutsLen = 12;
void put_timeouts(uint8_t* p) {
  put_be16(p, 0x0A);
  put_be32(p + 8, 60);
}

}  // namespace

CmdResult handle_report_supported_opcodes(Cmd& c) {
  // SPC-5 REPORT SUPPORTED OPERATION CODES, generated from the command table as this LU has
  // it: no UNMAP on a fully provisioned LU, nor WRITE SAME's UNMAP bit (usage_for()). The
  // list of all commands leaves out kNotListed entries (WRITE SAME (32): command.hh).
  using cmd_flag::kNotListed;
  const uint8_t* cdb = c.cdb();
  const bool rctd = cdb[2] & 0x80;
  const uint8_t options = cdb[2] & 0x07;
  const uint8_t req_op = cdb[3];
  const uint16_t req_sa = get_be16(cdb + 4);
  const uint32_t alloc = get_be32(cdb + 6);
  const auto cmds = all_commands();

  if (options == 0) {
    const size_t each = 8 + (rctd ? kTimeoutsLen : 0);
    uint8_t* p = data_in_buffer(c.task, 4 + each * cmds.size());
    size_t n = 4;
    for (const CommandInfo& ci : cmds) {
      if (!supported_on(ci, c.lu) || (ci.flags & kNotListed)) continue;
      p[n] = ci.opcode;
      if (ci.has_sa) put_be16(p + n + 2, ci.sa);
      p[n + 5] = static_cast<uint8_t>((rctd ? 0x02 : 0x00) | (ci.has_sa ? 0x01 : 0x00));
      put_be16(p + n + 6, ci.cdb_len);
      if (rctd) put_timeouts(p + n + 8);
      n += each;
    }
    put_be32(p, static_cast<uint32_t>(n - 4));
    set_data_in(c.task, n, alloc);
    return CmdResult::good();
  }

  const bool known = find_command(req_op, 0) != nullptr || has_service_actions(req_op);
  const CommandInfo* ci = nullptr;
  switch (options) {
    case 1:  // by operation code; invalid for one with service actions
      if (has_service_actions(req_op)) return CmdResult::invalid_cdb(2, 2);
      ci = find_command(req_op, 0);
      break;
    case 2:  // by operation code and service action; invalid for one without
      if (known && !has_service_actions(req_op)) return CmdResult::invalid_cdb(2, 2);
      ci = known ? find_command(req_op, req_sa) : nullptr;
      break;
    case 3:  // SPC-5: service action only when the operation code has them
      ci = find_command(req_op, req_sa);
      if (ci && !ci->has_sa && req_sa != 0) ci = nullptr;
      break;
    default:
      return CmdResult::invalid_cdb(2, 2);
  }
  if (ci && !supported_on(*ci, c.lu)) ci = nullptr;
  uint8_t* p = data_in_buffer(c.task, 4 + kMaxCdbLen + kTimeoutsLen);
  size_t n = 4;
  if (!ci) {
    p[1] = 0x01;  // SUPPORT 001b: not supported
  } else {
    p[1] = static_cast<uint8_t>((rctd ? 0x80 : 0x00) | 0x03);  // CTDP, SUPPORT 011b
    put_be16(p + 2, ci->cdb_len);
    const auto usage = usage_for(*ci, c.lu);
    std::memcpy(p + 4, usage.data(), ci->cdb_len);
    n += ci->cdb_len;
    if (rctd) {
      put_timeouts(p + n);
      n += kTimeoutsLen;
    }
  }
  set_data_in(c.task, n, alloc);
  return CmdResult::good();
}

}  // namespace zuma::scsi
