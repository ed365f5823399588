#include "scsi/sense.hh"

#include <doctest/doctest.h>

#include <array>
#include <vector>

#include "scsi/task.hh"

namespace zuma::scsi {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes build(const CmdResult& r, bool desc) {
  std::array<uint8_t, kMaxSenseLen> buf;
  buf.fill(0xEE);
  const uint8_t n = build_sense(r, desc, buf);
  return Bytes(buf.begin(), buf.begin() + n);
}

TEST_CASE("the reason table maps to status, key, ASC, ASCQ") {
  struct Row {
    Reason r;
    uint8_t status, key, asc, ascq;
  };
  const Row rows[] = {
      {Reason::kGood, status::kGood, 0, 0, 0},
      {Reason::kBusy, status::kBusy, 0, 0, 0},
      {Reason::kInvalidOpcode, status::kCheckCondition, 0x5, 0x20, 0x00},
      {Reason::kInvalidFieldInCdb, status::kCheckCondition, 0x5, 0x24, 0x00},
      {Reason::kInvalidFieldInParameterList, status::kCheckCondition, 0x5, 0x26, 0x00},
      {Reason::kParameterListLengthError, status::kCheckCondition, 0x5, 0x1A, 0x00},
      {Reason::kLbaOutOfRange, status::kCheckCondition, 0x5, 0x21, 0x00},
      {Reason::kLuNotSupported, status::kCheckCondition, 0x5, 0x25, 0x00},
      {Reason::kInvalidFieldInCommandIu, status::kCheckCondition, 0x5, 0x0E, 0x03},
      {Reason::kSavingParametersNotSupported, status::kCheckCondition, 0x5, 0x39, 0x00},
      {Reason::kMediumNotPresent, status::kCheckCondition, 0x2, 0x3A, 0x00},
      {Reason::kUnrecoveredReadError, status::kCheckCondition, 0x3, 0x11, 0x00},
      {Reason::kWriteError, status::kCheckCondition, 0x3, 0x0C, 0x00},
      {Reason::kInternalTargetFailure, status::kCheckCondition, 0x4, 0x44, 0x00},
      {Reason::kWriteProtected, status::kCheckCondition, 0x7, 0x27, 0x00},
      {Reason::kSpaceAllocationFailed, status::kCheckCondition, 0x7, 0x27, 0x07},
      {Reason::kMiscompareDuringVerify, status::kCheckCondition, 0xE, 0x1D, 0x00},
      {Reason::kProtocolServiceCrcError, status::kCheckCondition, 0xB, 0x47, 0x05},
      {Reason::kDataPhaseError, status::kCheckCondition, 0xB, 0x4B, 0x00},
      {Reason::kSnackRejected, status::kCheckCondition, 0xB, 0x11, 0x13},
      {Reason::kUnexpectedUnsolicitedData, status::kCheckCondition, 0xB, 0x0C, 0x0C},
      {Reason::kIncorrectAmountOfData, status::kCheckCondition, 0xB, 0x0C, 0x0D},
      {Reason::kUaPowerOnOccurred, status::kCheckCondition, 0x6, 0x29, 0x01},
      {Reason::kUaItNexusLossOccurred, status::kCheckCondition, 0x6, 0x29, 0x07},
      {Reason::kUaBusDeviceResetOccurred, status::kCheckCondition, 0x6, 0x29, 0x03},
      {Reason::kUaModeParametersChanged, status::kCheckCondition, 0x6, 0x2A, 0x01},
      {Reason::kUaCapacityDataChanged, status::kCheckCondition, 0x6, 0x2A, 0x09},
      {Reason::kUaInquiryDataChanged, status::kCheckCondition, 0x6, 0x3F, 0x03},
      {Reason::kUaReportedLunsDataChanged, status::kCheckCondition, 0x6, 0x3F, 0x0E},
  };
  for (const Row& row : rows) {
    CAPTURE(static_cast<int>(row.r));
    const SenseCode c = sense_code(row.r);
    CHECK(c.status == row.status);
    CHECK(c.key == row.key);
    CHECK(c.asc == row.asc);
    CHECK(c.ascq == row.ascq);
    CHECK(is_unit_attention(row.r) == (row.key == 0x6));
  }
}

TEST_CASE("fixed format: LBA out of range, no extras") {
  const Bytes want = {0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0};
  CHECK(build(Reason::kLbaOutOfRange, false) == want);
}

TEST_CASE("fixed format: field pointer into the CDB with a bit pointer") {
  // SKSV=1, C/D=1, BPV=1, bit 5; field byte 0x0102.
  const Bytes want = {0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCD, 0x01, 0x02};
  CHECK(build(CmdResult::invalid_cdb(0x102, 5), false) == want);
}

TEST_CASE("fixed format: field pointer without bit pointer, into the parameter list") {
  const Bytes want = {0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0x00, 0, 0x80, 0x00, 0x07};
  CHECK(build(CmdResult::invalid_param(7), false) == want);
}

TEST_CASE("fixed format: INFORMATION with VALID, and VALID=0 when it does not fit") {
  const Bytes want = {0xF0, 0, 0x03, 0x12, 0x34, 0x56, 0x78, 10, 0,
                      0,    0, 0,    0x11, 0x00, 0,    0,    0,  0};
  CHECK(build(CmdResult::with_info(Reason::kUnrecoveredReadError, 0x12345678), false) == want);
  const Bytes big =
      build(CmdResult::with_info(Reason::kUnrecoveredReadError, 0x100000000ull), false);
  CHECK(big[0] == 0x70);
  CHECK(big[3] == 0);
  CHECK(big[6] == 0);
}

TEST_CASE("descriptor format: header only") {
  const Bytes want = {0x72, 0x06, 0x29, 0x03, 0, 0, 0, 0};
  CHECK(build(Reason::kUaBusDeviceResetOccurred, true) == want);
}

TEST_CASE("descriptor format: information and sense-key specific descriptors") {
  CmdResult r = CmdResult::invalid_cdb(2, 7);
  r.has_info = true;
  r.info = 0x0102030405060708ull;
  const Bytes want = {0x72, 0x05, 0x24, 0x00, 0, 0, 0, 20,
                      // information descriptor
                      0x00, 0x0A, 0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8,
                      // sense key specific descriptor
                      0x02, 0x06, 0, 0, 0xCF, 0x00, 0x02, 0};
  CHECK(build(r, true) == want);
}

TEST_CASE("descriptor format: miscompare offset") {
  const Bytes want = {0x72, 0x0E, 0x1D, 0x00, 0, 0, 0, 12, 0x00, 0x0A,
                      0x80, 0,    0,    0,    0, 0, 0, 0,  0x01, 0x23};
  CHECK(build(CmdResult::with_info(Reason::kMiscompareDuringVerify, 0x123), true) == want);
}

TEST_CASE("NO SENSE data") {
  const Bytes fixed = {0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  CHECK(build(Reason::kNoSense, false) == fixed);
  const Bytes desc = {0x72, 0, 0, 0, 0, 0, 0, 0};
  CHECK(build(Reason::kNoSense, true) == desc);
}

}  // namespace
}  // namespace zuma::scsi
