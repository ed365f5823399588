// Mode parameters of a direct-access LU (SPC-5 (mode parameters), SBC-4 (mode parameters)): the
// pages we implement, MODE SENSE data building and MODE SELECT parameter list checking. Pure
// functions; the logical unit keeps the current values and serialises changes.
//
// Pages: 08h Caching, 0Ah Control, 1Ch Informational Exceptions Control, none with
// subpages. Changeable: WCE (Caching), D_SENSE and TAS (Control). Saved values exist when
// the LU has somewhere to keep them (PS=1, PC=11b, MODE SELECT SP=1).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "scsi/sense.hh"

namespace zuma::scsi {

namespace mode_page {
inline constexpr uint8_t kCaching = 0x08;
inline constexpr uint8_t kControl = 0x0A;
inline constexpr uint8_t kInformationalExceptions = 0x1C;
inline constexpr uint8_t kAllPages = 0x3F;
}  // namespace mode_page

// The values MODE SELECT may change.
struct ModeParams {
  bool wce = true;       // Caching: write cache enabled
  bool d_sense = false;  // Control: descriptor format sense data
  bool tas = false;      // Control: TASK ABORTED status for tasks aborted by another I_T nexus
  bool operator==(const ModeParams&) const = default;
};

enum class PageControl : uint8_t { kCurrent = 0, kChangeable = 1, kDefault = 2, kSaved = 3 };

struct BlockGeometry {
  uint64_t num_blocks = 0;
  uint32_t block_size = 512;
};

// Size of page `code` including its 2-byte header; 0 when we do not implement it.
size_t mode_page_size(uint8_t code);

// Writes page `code` (mode_page_size(code) bytes) with the values `pc` selects. `saved`:
// the saved values, nullptr when pages cannot be saved (PS=0; PC=11b gives the current ones).
void encode_mode_page(uint8_t code, PageControl pc, const ModeParams& current,
                      const ModeParams& defaults, uint8_t* out, const ModeParams* saved = nullptr);

struct ModeSenseArgs {
  bool ten = false;    // MODE SENSE (10)
  bool dbd = false;    // disable block descriptors
  bool llbaa = false;  // long LBA block descriptor accepted (MODE SENSE (10) only)
  PageControl pc = PageControl::kCurrent;
  uint8_t page = 0;
  uint8_t subpage = 0;
  // The LU's, not the CDB's: WP of the device-specific parameter (SBC-4 6.5.1).
  bool write_protected = false;
};

// Largest MODE SENSE data we build: 8-byte header, a 16-byte block descriptor, all pages.
inline constexpr size_t kMaxModeSenseLen = 8 + 16 + 20 + 12 + 12;

// Builds MODE SENSE parameter data (SPC-5 (mode parameter list)) into `out` (kMaxModeSenseLen
// bytes) and sets *len. Errors name the CDB field (page code, subpage code, PC); PC=11b
// without `saved` is SAVING PARAMETERS NOT SUPPORTED.
CmdResult build_mode_sense(const ModeSenseArgs& args, const ModeParams& current,
                           const ModeParams& defaults, const BlockGeometry& geo, uint8_t* out,
                           size_t* len, const ModeParams* saved = nullptr);

// Checks a MODE SELECT parameter list against the current values and returns the values
// it asks for in *next. Fields that are not changeable must be sent unchanged; the block
// descriptor may only restate the current geometry (number of blocks 0 = unchanged).
// Errors: PARAMETER LIST LENGTH ERROR for a truncated list, INVALID FIELD IN PARAMETER
// LIST with the byte (and bit) of the first bad field.
CmdResult parse_mode_select(std::span<const uint8_t> list, bool ten, const BlockGeometry& geo,
                            const ModeParams& current, ModeParams* next);

// The saved-values file of a LU ("<state dir>/<name>.mode"): text, "zuma-mode-pages 1" then
// "wce N", "d_sense N", "tas N". parse returns std::nullopt for anything else.
std::string format_saved_mode_params(const ModeParams& v);
std::optional<ModeParams> parse_saved_mode_params(std::string_view text);

}  // namespace zuma::scsi
