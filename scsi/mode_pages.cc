#include "scsi/mode_pages.hh"

#include <algorithm>
#include <bit>
#include <cstring>
#include <sstream>

#include "scsi/cdb.hh"

namespace zuma::scsi {
namespace {

constexpr uint8_t kPages[] = {mode_page::kCaching, mode_page::kControl,
                              mode_page::kInformationalExceptions};

// Device-specific parameter of the mode parameter header (SBC-4 6.5.1): WP (bit 7) set on a
// write-protected LU; DPOFUA=1 (we accept DPO and FUA in READ/WRITE/VERIFY).
constexpr uint8_t kWp = 0x80;
constexpr uint8_t kDpoFua = 0x10;

void encode_values(uint8_t code, const ModeParams& v, uint8_t* p) {
  switch (code) {
    case mode_page::kCaching:      // SBC-4 Caching mode page
      p[2] = v.wce ? 0x04 : 0x00;  // WCE; RCD=0 (read cache enabled)
      break;
    case mode_page::kControl:  // SPC-5 Control mode page
      // TST 001b: one task set per I_T nexus (task_set.hh).
      p[2] = static_cast<uint8_t>(0x20 | (v.d_sense ? 0x04 : 0x00));
      p[3] = 0x10;  // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering; QERR 0
      p[5] = v.tas ? 0x40 : 0x00;
      put_be16(p + 8, 0xFFFF);  // BUSY TIMEOUT PERIOD: unlimited
      break;
    case mode_page::kInformationalExceptions:  // SPC-5 Informational Exceptions Control mode page
      p[2] = 0x08;  // DEXCPT: we report no informational exceptions; MRIE 0
      break;
  }
}

void encode_changeable(uint8_t code, uint8_t* p) {
  switch (code) {
    case mode_page::kCaching:
      p[2] = 0x04;  // WCE
      break;
    case mode_page::kControl:
      p[2] = 0x04;  // D_SENSE
      p[5] = 0x40;  // TAS
      break;
  }
}

int top_bit(uint8_t v) {
  return 7 - std::countl_zero(v);
}

}  // namespace

size_t mode_page_size(uint8_t code) {
  switch (code) {
    case mode_page::kCaching:
      return 20;
    case mode_page::kControl:
    case mode_page::kInformationalExceptions:
      return 12;
  }
  return 0;
}

void encode_mode_page(uint8_t code, PageControl pc, const ModeParams& current,
                      const ModeParams& defaults, uint8_t* out, const ModeParams* saved) {
  const size_t n = mode_page_size(code);
  std::memset(out, 0, n);
  out[0] = static_cast<uint8_t>(code | (saved ? 0x80 : 0x00));  // PS; SPF=0
  out[1] = static_cast<uint8_t>(n - 2);
  switch (pc) {
    case PageControl::kChangeable:
      encode_changeable(code, out);
      break;
    case PageControl::kDefault:
      encode_values(code, defaults, out);
      break;
    case PageControl::kSaved:
      encode_values(code, saved ? *saved : current, out);
      break;
    default:
      encode_values(code, current, out);
      break;
  }
}

CmdResult build_mode_sense(const ModeSenseArgs& a, const ModeParams& current,
                           const ModeParams& defaults, const BlockGeometry& geo, uint8_t* out,
                           size_t* len, const ModeParams* saved) {
  // SPC-5 (page control, saved values): without saved values, PC=11b is refused.
  if (a.pc == PageControl::kSaved && !saved) return Reason::kSavingParametersNotSupported;
  const size_t hdr = a.ten ? 8 : 4;
  size_t n = hdr;
  std::memset(out, 0, kMaxModeSenseLen);

  // Block descriptor (SBC-4 (mode parameter block descriptors)): short unless MODE SENSE (10) with
  // LLBAA.
  if (!a.dbd) {
    uint8_t* bd = out + n;
    if (a.ten && a.llbaa) {
      if (a.pc != PageControl::kChangeable) {
        put_be64(bd, geo.num_blocks);
        put_be32(bd + 12, geo.block_size);
      }
      n += 16;
    } else {
      if (a.pc != PageControl::kChangeable) {
        put_be32(bd, static_cast<uint32_t>(std::min<uint64_t>(geo.num_blocks, 0xFFFFFFFFu)));
        bd[5] = static_cast<uint8_t>(geo.block_size >> 16);
        bd[6] = static_cast<uint8_t>(geo.block_size >> 8);
        bd[7] = static_cast<uint8_t>(geo.block_size);
      }
      n += 8;
    }
  }
  const size_t bd_len = n - hdr;

  // Subpage 00h selects the page itself, FFh the page and all its subpages (we have no
  // subpages, so both give the same pages). SPC-5 (MODE SENSE page and subpage codes).
  if (a.subpage != 0x00 && a.subpage != 0xFF) return CmdResult::invalid_cdb(3, 7);
  if (a.page == mode_page::kAllPages) {
    for (uint8_t code : kPages) {
      encode_mode_page(code, a.pc, current, defaults, out + n, saved);
      n += mode_page_size(code);
    }
  } else if (mode_page_size(a.page) != 0) {
    encode_mode_page(a.page, a.pc, current, defaults, out + n, saved);
    n += mode_page_size(a.page);
  } else {
    return CmdResult::invalid_cdb(2, 5);
  }

  const uint8_t device_specific = a.write_protected ? kWp | kDpoFua : kDpoFua;
  if (a.ten) {
    put_be16(out, static_cast<uint16_t>(n - 2));  // MODE DATA LENGTH excludes itself
    out[3] = device_specific;
    out[4] = (a.llbaa && !a.dbd) ? 0x01 : 0x00;  // LONGLBA
    put_be16(out + 6, static_cast<uint16_t>(bd_len));
  } else {
    out[0] = static_cast<uint8_t>(n - 1);
    out[2] = device_specific;
    out[3] = static_cast<uint8_t>(bd_len);
  }
  *len = n;
  return CmdResult::good();
}

CmdResult parse_mode_select(std::span<const uint8_t> list, bool ten, const BlockGeometry& geo,
                            const ModeParams& current, ModeParams* next) {
  *next = current;
  if (list.empty()) return CmdResult::good();  // SPC-5 MODE SELECT: nothing to change
  const size_t hdr = ten ? 8 : 4;
  if (list.size() < hdr) return Reason::kParameterListLengthError;
  const uint8_t* p = list.data();

  // Mode parameter header (SPC-5 (mode parameter header)). MODE DATA LENGTH is reserved in MODE
  // SELECT and ignored; SBC-4 (mode parameter header, device-specific parameter) makes WP and
  // DPOFUA of the device-specific parameter meaningless here, so that byte is ignored too (Linux
  // sends back what MODE SENSE returned).
  size_t medium = ten ? 2 : 1;
  if (p[medium] != 0) return CmdResult::invalid_param(static_cast<uint16_t>(medium));
  bool longlba = false;
  size_t bd_len;
  if (ten) {
    if (p[4] & 0xFE) return CmdResult::invalid_param(4, top_bit(p[4] & 0xFE));
    if (p[5] != 0) return CmdResult::invalid_param(5, top_bit(p[5]));
    longlba = p[4] & 0x01;
    bd_len = get_be16(p + 6);
  } else {
    bd_len = p[3];
  }
  const uint16_t bd_len_field = ten ? 6 : 3;
  if (bd_len != 0 && bd_len != (longlba ? 16u : 8u)) return CmdResult::invalid_param(bd_len_field);
  if (hdr + bd_len > list.size()) return Reason::kParameterListLengthError;

  // Block descriptor: the geometry cannot change (no FORMAT UNIT).
  if (bd_len != 0) {
    const uint8_t* bd = p + hdr;
    const auto at = [&](size_t i) { return static_cast<uint16_t>(hdr + i); };
    if (longlba) {
      const uint64_t blocks = get_be64(bd);
      if (blocks != 0 && blocks != geo.num_blocks) return CmdResult::invalid_param(at(0), 7);
      for (size_t i = 8; i < 12; ++i) {
        if (bd[i] != 0) return CmdResult::invalid_param(at(i), top_bit(bd[i]));
      }
      if (get_be32(bd + 12) != geo.block_size) return CmdResult::invalid_param(at(12), 7);
    } else {
      const uint32_t blocks = get_be32(bd);
      const uint32_t cur = static_cast<uint32_t>(std::min<uint64_t>(geo.num_blocks, 0xFFFFFFFFu));
      if (blocks != 0 && blocks != cur) return CmdResult::invalid_param(at(0), 7);
      if (bd[4] != 0) return CmdResult::invalid_param(at(4), top_bit(bd[4]));
      if (get_be24(bd + 5) != geo.block_size) return CmdResult::invalid_param(at(5), 7);
    }
  }

  // Pages: every byte outside the changeable mask must equal the current value.
  size_t off = hdr + bd_len;
  ModeParams v = current;
  while (off < list.size()) {
    if (off + 2 > list.size()) return Reason::kParameterListLengthError;
    const uint8_t code = p[off] & 0x3F;
    // PS (bit 7) is reserved in MODE SELECT and ignored; SPF: we have no subpages.
    if (p[off] & 0x40) return CmdResult::invalid_param(static_cast<uint16_t>(off), 6);
    const size_t size = mode_page_size(code);
    if (size == 0) return CmdResult::invalid_param(static_cast<uint16_t>(off), 5);
    if (p[off + 1] != size - 2) return CmdResult::invalid_param(static_cast<uint16_t>(off + 1), 7);
    if (off + size > list.size()) return Reason::kParameterListLengthError;
    uint8_t cur[32], mask[32];
    encode_mode_page(code, PageControl::kCurrent, v, v, cur);
    encode_mode_page(code, PageControl::kChangeable, v, v, mask);
    for (size_t i = 2; i < size; ++i) {
      const uint8_t bad = (p[off + i] ^ cur[i]) & ~mask[i];
      if (bad) return CmdResult::invalid_param(static_cast<uint16_t>(off + i), top_bit(bad));
    }
    if (code == mode_page::kCaching) v.wce = p[off + 2] & 0x04;
    if (code == mode_page::kControl) {
      v.d_sense = p[off + 2] & 0x04;
      v.tas = p[off + 5] & 0x40;
    }
    off += size;
  }
  *next = v;
  return CmdResult::good();
}

std::string format_saved_mode_params(const ModeParams& v) {
  std::ostringstream o;
  o << "zuma-mode-pages 1\nwce " << int(v.wce) << "\nd_sense " << int(v.d_sense) << "\ntas "
    << int(v.tas) << "\n";
  return o.str();
}

std::optional<ModeParams> parse_saved_mode_params(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::string magic;
  int version = 0;
  if (!(in >> magic >> version) || magic != "zuma-mode-pages" || version != 1) return std::nullopt;
  ModeParams v;
  bool seen[3] = {};
  std::string name;
  int value = 0;
  while (in >> name >> value) {
    if (value != 0 && value != 1) return std::nullopt;
    if (name == "wce") {
      v.wce = value;
      seen[0] = true;
    } else if (name == "d_sense") {
      v.d_sense = value;
      seen[1] = true;
    } else if (name == "tas") {
      v.tas = value;
      seen[2] = true;
    } else {
      return std::nullopt;
    }
  }
  if (!in.eof() || !seen[0] || !seen[1] || !seen[2]) return std::nullopt;
  return v;
}

}  // namespace zuma::scsi
