#include "scsi/mode_pages.hh"

#include <doctest/doctest.h>

#include <vector>

namespace zuma::scsi {
namespace {

using Bytes = std::vector<uint8_t>;

const BlockGeometry kGeo{2048, 512};
const ModeParams kCur{true, false};
const ModeParams kDef{true, false};

Bytes caching(bool wce) {
  Bytes p(20, 0);
  p[0] = 0x08;
  p[1] = 0x12;
  p[2] = wce ? 0x04 : 0x00;
  return p;
}
// TST 001b (one task set per I_T nexus), QUEUE ALGORITHM MODIFIER 1, BUSY TIMEOUT FFFFh.
Bytes control(bool d_sense, bool tas = false) {
  return {0x0A, 0x0A, static_cast<uint8_t>(0x20 | (d_sense ? 0x04 : 0x00)),
          0x10, 0,    static_cast<uint8_t>(tas ? 0x40 : 0x00),
          0,    0,    0xFF,
          0xFF, 0,    0};
}
const Bytes kIec = {0x1C, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0};

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes sense(const ModeSenseArgs& a, const ModeParams& cur = kCur, CmdResult* err = nullptr,
            BlockGeometry geo = kGeo) {
  uint8_t buf[kMaxModeSenseLen];
  size_t n = 0;
  const CmdResult r = build_mode_sense(a, cur, kDef, geo, buf, &n);
  if (err) *err = r;
  if (!r.ok()) return {};
  return Bytes(buf, buf + n);
}

TEST_CASE("MODE SENSE(6) all pages, current values, short block descriptor") {
  ModeSenseArgs a;
  a.page = 0x3F;
  const Bytes want = cat({{55, 0, 0x10, 8},
                          {0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00},
                          caching(true),
                          control(false),
                          kIec});
  CHECK(sense(a) == want);
  a.subpage = 0xFF;  // all pages and subpages: the same, we have no subpages
  CHECK(sense(a) == want);
}

TEST_CASE("MODE SENSE(6) one page, DBD") {
  ModeSenseArgs a;
  a.page = 0x0A;
  a.dbd = true;
  CHECK(sense(a, {false, true}) == cat({{15, 0, 0x10, 0}, control(true)}));
  a.page = 0x08;
  CHECK(sense(a, {false, false}) == cat({{23, 0, 0x10, 0}, caching(false)}));
}

TEST_CASE("MODE SENSE(6)/(10) of a write-protected LU: WP=1 beside DPOFUA (SBC-4 6.5.1)") {
  ModeSenseArgs a;
  a.page = 0x0A;
  a.dbd = true;
  a.write_protected = true;
  CHECK(sense(a, {false, true}) == cat({{15, 0, 0x90, 0}, control(true)}));
  a.ten = true;
  CHECK(sense(a, {false, true}) == cat({{0, 18, 0, 0x90, 0, 0, 0, 0}, control(true)}));
  a.pc = PageControl::kChangeable;  // the header is the same whatever PC says
  const Bytes changeable = sense(a);
  REQUIRE(changeable.size() >= 8);
  CHECK(Bytes(changeable.begin(), changeable.begin() + 8) == Bytes{0, 18, 0, 0x90, 0, 0, 0, 0});
}

TEST_CASE("MODE SENSE(10) long LBA block descriptor") {
  ModeSenseArgs a;
  a.ten = true;
  a.llbaa = true;
  a.page = 0x1C;
  const Bytes want = cat({{0, 34, 0, 0x10, 0x01, 0, 0, 16},
                          {0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x00},
                          kIec});
  CHECK(sense(a, kCur, nullptr, {0x100000000ull, 4096}) == want);
}

TEST_CASE("MODE SENSE(10) short descriptor caps the block count") {
  ModeSenseArgs a;
  a.ten = true;
  a.page = 0x1C;
  const Bytes want =
      cat({{0, 26, 0, 0x10, 0, 0, 0, 8}, {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0x00}, kIec});
  CHECK(sense(a, kCur, nullptr, {0x100000000ull, 4096}) == want);
}

TEST_CASE("changeable and default values") {
  ModeSenseArgs a;
  a.page = 0x3F;
  a.dbd = true;
  a.pc = PageControl::kChangeable;
  Bytes ch_caching(20, 0);
  ch_caching[0] = 0x08;
  ch_caching[1] = 0x12;
  ch_caching[2] = 0x04;
  const Bytes ch_control = {0x0A, 0x0A, 0x04, 0, 0, 0x40, 0, 0, 0, 0, 0, 0};  // D_SENSE, TAS
  const Bytes ch_iec = {0x1C, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  CHECK(sense(a) == cat({{47, 0, 0x10, 0}, ch_caching, ch_control, ch_iec}));

  a.pc = PageControl::kDefault;
  CHECK(sense(a, {false, true}) == cat({{47, 0, 0x10, 0}, caching(true), control(false), kIec}));
}

TEST_CASE("MODE SENSE errors") {
  CmdResult err;
  ModeSenseArgs a;
  a.page = 0x3F;
  a.pc = PageControl::kSaved;
  sense(a, kCur, &err);
  CHECK(err.reason == Reason::kSavingParametersNotSupported);

  a.pc = PageControl::kCurrent;
  a.page = 0x19;
  sense(a, kCur, &err);
  CHECK(err.reason == Reason::kInvalidFieldInCdb);
  CHECK(err.field == 2);
  CHECK(err.bit == 5);

  a.page = 0x0A;
  a.subpage = 0x01;
  sense(a, kCur, &err);
  CHECK(err.reason == Reason::kInvalidFieldInCdb);
  CHECK(err.field == 3);
  CHECK(err.bit == 7);
}

CmdResult select(const Bytes& list, bool ten, ModeParams* next, ModeParams cur = kCur) {
  return parse_mode_select(list, ten, kGeo, cur, next);
}

TEST_CASE("MODE SELECT accepts the current values and applies changeable bits") {
  ModeParams next;
  CHECK(select({}, false, &next).ok());
  CHECK(next == kCur);

  // What MODE SENSE returned, sent back (mode data length and device-specific ignored).
  const Bytes back = cat({{55, 0, 0x10, 8},
                          {0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00},
                          caching(true),
                          control(false),
                          kIec});
  CHECK(select(back, false, &next).ok());
  CHECK(next == kCur);

  CHECK(select(cat({{0, 0, 0, 0}, caching(false), control(true)}), false, &next).ok());
  CHECK(next == ModeParams{false, true});

  // MODE SELECT(10), block count 0 = unchanged, PS bit ignored.
  Bytes c = control(true);
  c[0] |= 0x80;
  CHECK(
      select(cat({{0, 0, 0, 0, 0, 0, 0, 8}, {0, 0, 0, 0, 0, 0, 0x02, 0x00}, c}), true, &next).ok());
  CHECK(next == ModeParams{true, true});
}

TEST_CASE("MODE SELECT rejects unchangeable fields with the parameter byte and bit") {
  ModeParams next;
  Bytes c = control(false);
  c[3] = 0x00;  // QUEUE ALGORITHM MODIFIER is not changeable
  CmdResult r = select(cat({{0, 0, 0, 0}, c}), false, &next);
  CHECK(r.reason == Reason::kInvalidFieldInParameterList);
  CHECK_FALSE(r.field_in_cdb);
  CHECK(r.field == 4 + 3);
  CHECK(r.bit == 4);
  CHECK(next == kCur);  // nothing applied

  Bytes ca = caching(true);
  ca[2] |= 0x01;  // RCD
  r = select(cat({{0, 0, 0, 0}, control(true), ca}), false, &next);
  CHECK(r.field == 4 + 12 + 2);
  CHECK(r.bit == 0);
  CHECK(next == kCur);

  // Unknown page, subpage format, wrong page length.
  r = select({0, 0, 0, 0, 0x19, 0x02, 0, 0}, false, &next);
  CHECK(r.field == 4);
  CHECK(r.bit == 5);
  r = select({0, 0, 0, 0, 0x4A, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false, &next);
  CHECK(r.field == 4);
  CHECK(r.bit == 6);
  r = select({0, 0, 0, 0, 0x0A, 0x08, 0, 0x10, 0, 0, 0, 0, 0, 0}, false, &next);
  CHECK(r.field == 5);

  // Medium type, block descriptor length, geometry changes.
  r = select({0, 1, 0, 0}, false, &next);
  CHECK(r.field == 1);
  r = select({0, 0, 0, 4, 0, 0, 0, 0}, false, &next);
  CHECK(r.field == 3);
  r = select({0, 0, 0, 8, 0, 0, 0x10, 0x00, 0, 0, 0x02, 0x00}, false, &next);
  CHECK(r.reason == Reason::kInvalidFieldInParameterList);
  CHECK(r.field == 4);
  r = select({0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0x00}, false, &next);
  CHECK(r.field == 9);
}

TEST_CASE("MODE SELECT changes TAS") {
  ModeParams next;
  CHECK(select(cat({{0, 0, 0, 0}, control(false, true)}), false, &next).ok());
  CHECK(next == ModeParams{true, false, true});
  // TST is not changeable: 000b (one task set for all I_T nexuses) is refused.
  Bytes c = control(false);
  c[2] = 0x00;
  const CmdResult r = select(cat({{0, 0, 0, 0}, c}), false, &next);
  CHECK(r.reason == Reason::kInvalidFieldInParameterList);
  CHECK(r.field == 4 + 2);
  CHECK(r.bit == 5);
}

TEST_CASE("saved values: PS set, PC=11b reports them") {
  const ModeParams saved{false, true, true};
  uint8_t buf[kMaxModeSenseLen];
  size_t n = 0;
  ModeSenseArgs a;
  a.page = 0x0A;
  a.dbd = true;
  a.pc = PageControl::kSaved;
  REQUIRE(build_mode_sense(a, kCur, kDef, kGeo, buf, &n, &saved).ok());
  Bytes want = cat({{15, 0, 0x10, 0}, control(true, true)});
  want[4] |= 0x80;  // PS
  CHECK(Bytes(buf, buf + n) == want);
  a.pc = PageControl::kCurrent;
  REQUIRE(build_mode_sense(a, kCur, kDef, kGeo, buf, &n, &saved).ok());
  want = cat({{15, 0, 0x10, 0}, control(false)});
  want[4] |= 0x80;
  CHECK(Bytes(buf, buf + n) == want);
}

TEST_CASE("saved values file format") {
  const ModeParams v{false, true, true};
  const std::string text = format_saved_mode_params(v);
  CHECK(text == "zuma-mode-pages 1\nwce 0\nd_sense 1\ntas 1\n");
  CHECK(parse_saved_mode_params(text) == v);
  CHECK_FALSE(parse_saved_mode_params("zuma-mode-pages 2\nwce 0\nd_sense 1\ntas 1\n"));
  CHECK_FALSE(parse_saved_mode_params("zuma-mode-pages 1\nwce 0\nd_sense 1\n"));
  CHECK_FALSE(parse_saved_mode_params("zuma-mode-pages 1\nwce 2\nd_sense 1\ntas 1\n"));
  CHECK_FALSE(parse_saved_mode_params("zuma-mode-pages 1\nwce 0\nd_sense 1\ntas 1\nqerr 1\n"));
  CHECK_FALSE(parse_saved_mode_params(""));
}

TEST_CASE("MODE SELECT truncated lists") {
  ModeParams next;
  CHECK(select({0, 0, 0}, false, &next).reason == Reason::kParameterListLengthError);
  CHECK(select({0, 0, 0, 8, 0, 0}, false, &next).reason == Reason::kParameterListLengthError);
  CHECK(select({0, 0, 0, 0, 0x0A}, false, &next).reason == Reason::kParameterListLengthError);
  CHECK(select({0, 0, 0, 0, 0x0A, 0x0A, 0, 0x10}, false, &next).reason ==
        Reason::kParameterListLengthError);
}

}  // namespace
}  // namespace zuma::scsi
