// INQUIRY, REQUEST SENSE, TEST UNIT READY, MODE SENSE/SELECT, REPORT LUNS and REPORT
// SUPPORTED OPERATION CODES, run through execute() on a LU over a fake backend.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "scsi/cdb.hh"
#include "scsi/command.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::Bytes;
using test::Fixture;
using test::slice;

void append(Bytes& b, std::string_view s) {
  b.insert(b.end(), s.begin(), s.end());
}

Bytes standard_inquiry(uint8_t peripheral = 0x00) {
  // Byte 5 of a LU: TPGS 01b (implicit ALUA), 3PC (EXTENDED COPY).
  const uint8_t b5 = peripheral == 0x00 ? 0x18 : 0x00;
  Bytes b = {peripheral, 0x00, 0x06, 0x12, 91, b5, 0x00, 0x02};
  append(b, "ZUMA    ");
  append(b, "ZUMA DISK       ");
  append(b, "0001");
  b.resize(58, 0);
  b.insert(b.end(), {0x00, 0xA0, 0x04, 0x60, 0x04, 0xC0});
  b.resize(96, 0);
  return b;
}

TEST_CASE("INQUIRY standard data") {
  Fixture f;
  auto t = f.run({op::kInquiry, 0, 0, 0x01, 0x04, 0}, DataDir::kIn, 260);
  REQUIRE(t->good());
  CHECK(t->data_in() == standard_inquiry());
  CHECK(t->task.transfer_len == 96);
}

TEST_CASE("INQUIRY allocation length truncates, zero transfers nothing") {
  Fixture f;
  auto t = f.run({op::kInquiry, 0, 0, 0, 36, 0}, DataDir::kIn, 36);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 36);
  CHECK(t->data_in() == test::slice(standard_inquiry(), 0, 36));

  t = f.run({op::kInquiry, 0, 0, 0, 5, 0}, DataDir::kIn, 255);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 5);
  CHECK(t->task.data_in_len == 5);

  t = f.run({op::kInquiry, 0, 0, 0, 0, 0}, DataDir::kIn, 0);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 0);
  CHECK(t->task.data_in_len == 0);

  // 16-bit allocation length (SPC-3 and later): 511 and 512 give the same data.
  auto a = f.run({op::kInquiry, 0, 0, 0x01, 0xFF, 0}, DataDir::kIn, 511);
  auto b = f.run({op::kInquiry, 0, 0, 0x02, 0x00, 0}, DataDir::kIn, 512);
  CHECK(a->data_in() == b->data_in());

  // Expected length below the allocation length: the transport reports the overflow.
  t = f.run({op::kInquiry, 0, 0, 0, 96, 0}, DataDir::kIn, 40);
  CHECK(t->task.transfer_len == 96);
  CHECK(t->task.data_in_len == 40);
}

TEST_CASE("INQUIRY invalid fields") {
  Fixture f;
  auto t = f.run({op::kInquiry, 0, 0x80, 0, 255, 0});  // EVPD=0 with a page code
  CHECK_INVALID_CDB(t, 2, 7);
  t = f.run({op::kInquiry, 0x02, 0, 0, 255, 0});  // CMDDT
  CHECK_INVALID_CDB(t, 1, 1);
  t = f.run({op::kInquiry, 0x01, 0x99, 0, 255, 0});  // unknown VPD page
  CHECK_INVALID_CDB(t, 2, 7);
  t = f.run({op::kInquiry, 0x01, 0xB2, 0, 255, 0});  // provisioning page of a thick LU
  CHECK_INVALID_CDB(t, 2, 7);
  t = f.run({op::kInquiry, 0, 0, 0, 255, 0x04});  // NACA
  CHECK_INVALID_CDB(t, 5, 2);
}

TEST_CASE("VPD: supported pages, thick and thin") {
  Fixture f;
  auto t = f.run({op::kInquiry, 1, 0x00, 0, 255, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x00, 0x00, 0x00, 0x07, 0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1});

  LuParams p = test::default_params();
  p.thin = true;
  Fixture thin(p);
  t = thin.run({op::kInquiry, 1, 0x00, 0, 255, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() ==
        Bytes{0x00, 0x00, 0x00, 0x08, 0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1, 0xB2});
  t = thin.run({op::kInquiry, 1, 0xB2, 0, 255, 0});
  REQUIRE(t->good());
  // SBC: LBPU, LBPWS, LBPWS10, LBPRZ 001b; thin (block_limits_test.cc has the details).
  CHECK(t->data_in() == Bytes{0x00, 0xB2, 0x00, 0x04, 0x00, 0xE4, 0x02, 0x00});
}

TEST_CASE("VPD: unit serial number") {
  Fixture f;
  auto t = f.run({op::kInquiry, 1, 0x80, 0, 255, 0});
  REQUIRE(t->good());
  Bytes want = {0x00, 0x80, 0x00, 32};
  append(want, "123456789ABC4DEF8123456789ABCDEF");
  CHECK(t->data_in() == want);
}

TEST_CASE("VPD: device identification") {
  Fixture f;
  auto t = f.run({op::kInquiry, 1, 0x83, 0, 255, 0});
  REQUIRE(t->good());
  Bytes want = {0x00, 0x83, 0x00, 148};
  // NAA 6, binary, LU
  want.insert(want.end(), {0x01, 0x03, 0x00, 0x10});
  want.insert(want.end(), f.lu->naa().begin(), f.lu->naa().end());
  // T10 vendor id, ASCII, LU
  want.insert(want.end(), {0x02, 0x01, 0x00, 0x28});
  append(want, "ZUMA    123456789ABC4DEF8123456789ABCDEF");
  // relative target port 1, target port group 1
  want.insert(want.end(), {0x01, 0x14, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01});
  want.insert(want.end(), {0x01, 0x15, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01});
  // SCSI name string of the target port: 32 chars + NUL, padded to 36
  want.insert(want.end(), {0x03, 0x18, 0x00, 0x24});
  append(want, "iqn.2026-11.org.zuma:db,t,0x0001");
  want.insert(want.end(), {0, 0, 0, 0});
  // SCSI name string of the target device: 23 chars + NUL = 24
  want.insert(want.end(), {0x03, 0x28, 0x00, 0x18});
  append(want, "iqn.2026-11.org.zuma:db");
  want.push_back(0);
  CHECK(t->data_in() == want);
  CHECK(t->data_in().size() == 152);

  // Another port of the same target: same LU designators, its own port designators.
  Nexus n2 = f.nexus;
  n2.relative_port_id = 2;
  n2.target_port_group = 3;
  auto t2 = f.run({op::kInquiry, 1, 0x83, 0, 255, 0}, DataDir::kIn, 4096, {}, 0, &n2);
  REQUIRE(t2->good());
  CHECK(test::slice(t2->data_in(), 0, 68) == test::slice(want, 0, 68));
  CHECK(t2->data_in()[68 + 7] == 2);
  CHECK(t2->data_in()[76 + 7] == 3);
}

TEST_CASE("VPD: block limits advertise what READ/WRITE enforce") {
  Fixture f;
  auto t = f.run({op::kInquiry, 1, 0xB0, 0, 255, 0});
  REQUIRE(t->good());
  Bytes want(64, 0);
  want[1] = 0xB0;
  want[3] = 0x3C;
  want[7] = 0x08;   // optimal granularity: 8 blocks = 4 KiB
  want[10] = 0x40;  // maximum transfer length 0x4000 blocks = 8 MiB
  want[14] = 0x08;  // optimal transfer length 0x800 blocks = 1 MiB
  // SBC limits (block_limits_test.cc has the details): COMPARE AND WRITE 255 blocks, WRITE
  // SAME 0xFFFF blocks, atomic 0x800 blocks aligned to and in units of 8.
  want[5] = 0xFF;
  want[42] = 0xFF;
  want[43] = 0xFF;
  want[46] = 0x08;
  want[51] = 0x08;
  want[55] = 0x08;
  CHECK(t->data_in() == want);

  Fixture f4k(test::default_params(256, 4096));
  t = f4k.run({op::kInquiry, 1, 0xB0, 0, 255, 0});
  REQUIRE(t->good());
  want[7] = 0x01;
  want[10] = 0x08;  // 0x800 blocks of 4 KiB
  want[14] = 0x01;  // 0x100
  want[46] = 0x01;  // atomic 0x100 blocks, no alignment or granularity
  want[51] = 0x00;
  want[55] = 0x00;
  CHECK(t->data_in() == want);
}

TEST_CASE("VPD: block device characteristics") {
  Fixture f;
  auto t = f.run({op::kInquiry, 1, 0xB1, 0, 255, 0});
  REQUIRE(t->good());
  Bytes want(64, 0);
  want[1] = 0xB1;
  want[3] = 0x3C;
  want[5] = 0x01;  // non-rotating
  CHECK(t->data_in() == want);
}

TEST_CASE("a LUN with no LU: INQUIRY, REQUEST SENSE and REPORT LUNS work, others do not") {
  Fixture f;
  auto t = f.run({op::kInquiry, 0, 0, 0, 255, 0}, DataDir::kIn, 255, {}, 9);
  REQUIRE(t->good());
  CHECK(t->data_in() == standard_inquiry(0x7F));

  t = f.run({op::kInquiry, 1, 0, 0, 255, 0}, DataDir::kIn, 255, {}, 9);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x7F, 0x00, 0x00, 0x01, 0x00});
  t = f.run({op::kInquiry, 1, 0x83, 0, 255, 0}, DataDir::kIn, 255, {}, 9);
  CHECK_INVALID_CDB(t, 2, 7);

  t = f.run({op::kRequestSense, 0, 0, 0, 252, 0}, DataDir::kIn, 252, {}, 9);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x25, 0x00, 0, 0, 0, 0});

  t = f.run({op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, DataDir::kIn, 4096, {}, 9);
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});

  t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 9);
  CHECK_SENSE(t, 0x5, 0x25, 0x00);
  t = f.run({op::kRead10, 0, 0, 0, 0, 0, 0, 0, 1, 0}, DataDir::kIn, 512, {}, 9);
  CHECK_SENSE(t, 0x5, 0x25, 0x00);
  t = f.run({0x7F, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 9);  // not even a valid opcode
  CHECK_SENSE(t, 0x5, 0x25, 0x00);
}

TEST_CASE("TEST UNIT READY") {
  Fixture f;
  auto t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0);
  CHECK(t->good());
  CHECK(t->task.transfer_len == 0);
  t = f.run({op::kTestUnitReady, 0, 0, 1, 0, 0}, DataDir::kNone, 0);
  CHECK_INVALID_CDB(t, 3, 0);
}

TEST_CASE("REQUEST SENSE: no sense, fixed and descriptor") {
  Fixture f;
  auto t = f.run({op::kRequestSense, 0, 0, 0, 252, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  t = f.run({op::kRequestSense, 1, 0, 0, 252, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x72, 0, 0, 0, 0, 0, 0, 0});
  t = f.run({op::kRequestSense, 0, 0, 0, 8, 0});
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 8);
  t = f.run({op::kRequestSense, 2, 0, 0, 252, 0});
  CHECK_INVALID_CDB(t, 1, 1);
}

TEST_CASE("REPORT LUNS: peripheral and flat addressing, select report, allocation length") {
  Fixture f;
  f.table.luns[5] = f.lu;
  f.table.luns[300] = f.lu;
  f.table.luns[16383] = f.lu;
  f.table.luns[16384] = f.lu;                         // not addressable: left out
  const Bytes all = {0,    0,    0, 32, 0, 0, 0, 0,   //
                     0x00, 0x00, 0, 0,  0, 0, 0, 0,   // LUN 0
                     0x00, 0x05, 0, 0,  0, 0, 0, 0,   // LUN 5
                     0x41, 0x2C, 0, 0,  0, 0, 0, 0,   // LUN 300, flat
                     0x7F, 0xFF, 0, 0,  0, 0, 0, 0};  // LUN 16383, flat
  for (uint8_t select : {0x00, 0x02, 0x11}) {
    CAPTURE(int(select));
    auto t = f.run({op::kReportLuns, 0, select, 0, 0, 0, 0, 0, 0x10, 0, 0, 0});
    REQUIRE(t->good());
    CHECK(t->data_in() == all);
  }
  for (uint8_t select : {0x01, 0x10, 0x12}) {
    CAPTURE(int(select));
    auto t = f.run({op::kReportLuns, 0, select, 0, 0, 0, 0, 0, 0x10, 0, 0, 0});
    REQUIRE(t->good());
    CHECK(t->data_in() == Bytes{0, 0, 0, 0, 0, 0, 0, 0});
  }
  auto t = f.run({op::kReportLuns, 0, 0x03, 0, 0, 0, 0, 0, 0x10, 0, 0, 0});
  CHECK_INVALID_CDB(t, 2, 7);
  t = f.run({op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0});
  CHECK_INVALID_CDB(t, 6, 7);
  // Truncated to 16 bytes: the list length still says 32.
  t = f.run({op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes(all.begin(), all.begin() + 16));
  CHECK(t->task.transfer_len == 16);
}

TEST_CASE("MODE SENSE(6)/(10) of a write-protected LU: WP=1 (SBC-4 6.5.1)") {
  LuParams p = test::default_params();
  p.read_only = true;
  Fixture f(p);
  auto t = f.run({op::kModeSense6, 0x08, 0x3F, 0, 255, 0});
  REQUIRE(t->good());
  CHECK(test::slice(t->data_in(), 0, 4) == Bytes{47, 0, 0x90, 0});
  t = f.run({op::kModeSense10, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0});
  REQUIRE(t->good());
  CHECK(test::slice(t->data_in(), 0, 8) == Bytes{0, 26, 0, 0x90, 0, 0, 0, 0});
  // MODE SELECT still works on it (SPC-5: it changes no block), sending WP back as read.
  Bytes sel = test::slice(t->data_in(), 0, 28);
  sel[0] = sel[1] = 0;
  t = f.run({op::kModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 28, 0}, DataDir::kOut, 28, sel);
  CHECK(t->good());
}

TEST_CASE("MODE SENSE(6)/(10) through execute") {
  Fixture f;
  auto t = f.run({op::kModeSense6, 0, 0x3F, 0, 255, 0});
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 56);
  CHECK(test::slice(t->data_in(), 0, 12) ==
        Bytes{55, 0, 0x10, 8, 0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00});

  t = f.run({op::kModeSense6, 0, 0x3F, 0, 4, 0});  // allocation length 4: no residual
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 4);
  CHECK(t->task.data_in_len == 4);

  t = f.run({op::kModeSense10, 0x08, 0x0A, 0, 0, 0, 0, 0, 255, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() ==
        Bytes{0, 18, 0, 0x10, 0, 0, 0, 0, 0x0A, 0x0A, 0x20, 0x10, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0});

  t = f.run({op::kModeSense6, 0, 0xFF, 0, 255, 0});  // saved values
  CHECK_SENSE(t, 0x5, 0x39, 0x00);
  t = f.run({op::kModeSense6, 0, 0x00, 0, 255, 0});
  CHECK_INVALID_CDB(t, 2, 5);
  t = f.run({op::kModeSense6, 0x10, 0x3F, 0, 255, 0});  // LLBAA is not in MODE SENSE(6)
  CHECK_INVALID_CDB(t, 1, 4);
}

TEST_CASE("MODE SELECT changes D_SENSE and WCE, others get MODE PARAMETERS CHANGED") {
  Fixture f;
  // Both nexuses known to the LU.
  REQUIRE(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0)->good());
  REQUIRE(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other)->good());

  const Bytes list = {0,    0,    0, 0, 0x0A, 0x0A, 0x24, 0x10, 0, 0x40, 0, 0,
                      0xFF, 0xFF, 0, 0, 0x08, 0x12, 0x00, 0,    0, 0,    0, 0,
                      0,    0,    0, 0, 0,    0,    0,    0,    0, 0,    0, 0};
  auto t = f.run({op::kModeSelect6, 0x10, 0, 0, static_cast<uint8_t>(list.size()), 0},
                 DataDir::kOut, static_cast<uint32_t>(list.size()), list);
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == list.size());
  CHECK(f.lu->descriptor_sense());
  CHECK_FALSE(f.lu->write_cache());

  // Errors now come in descriptor format.
  t = f.run({op::kInquiry, 0, 0x80, 0, 255, 0});
  CHECK(t->task.status == status::kCheckCondition);
  CHECK(t->sense() ==
        Bytes{0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xCF, 0x00, 0x02, 0});

  // The other nexus: MODE PARAMETERS CHANGED once, in descriptor format.
  t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other);
  CHECK(t->sense() == Bytes{0x72, 0x06, 0x2A, 0x01, 0, 0, 0, 0});
  CHECK(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other)->good());
  // The nexus that changed them: none.
  CHECK(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0)->good());
}

TEST_CASE("MODE SELECT errors") {
  Fixture f;
  Bytes list = {0, 0, 0, 0, 0x0A, 0x0A, 0x20, 0x00, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0};
  auto sel6 = [&](uint8_t b1, const Bytes& l, uint32_t sent) {
    Bytes out(l.begin(), l.begin() + std::min<size_t>(sent, l.size()));
    auto cdb = Bytes{op::kModeSelect6, b1, 0, 0, static_cast<uint8_t>(l.size()), 0};
    return test::run_cdb(f, cdb, DataDir::kOut, sent, out);
  };
  auto t = sel6(0x10, list, 16);  // QAM changed 1 -> 0
  CHECK_SENSE(t, 0x5, 0x26, 0x00);
  CHECK(t->task.sense[15] == 0x8C);  // SKSV, C/D=0, BPV, bit 4
  CHECK(t->task.sense[17] == 7);
  t = sel6(0x11, list, 16);  // SP without a state directory: nowhere to save
  CHECK_INVALID_CDB(t, 1, 0);
  t = sel6(0x00, list, 16);  // PF=0
  CHECK_INVALID_CDB(t, 1, 4);
  list[7] = 0x10;
  t = sel6(0x10, list, 8);  // the initiator sent less than the parameter list length
  CHECK_SENSE(t, 0x5, 0x0E, 0x03);
  CHECK(t->task.transfer_len == 16);
  CHECK_FALSE(f.lu->descriptor_sense());
  // Parameter list length 0: nothing to do.
  t = test::run_cdb(f, {op::kModeSelect6, 0x00, 0, 0, 0, 0}, DataDir::kNone, 0);
  CHECK(t->good());
  // MODE SELECT(10) with a truncated page.
  const Bytes l10 = {0, 0, 0, 0, 0, 0, 0, 0, 0x0A, 0x0A, 0x00, 0x10};
  t = test::run_cdb(f, {op::kModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 12, 0}, DataDir::kOut, 12, l10);
  CHECK_SENSE(t, 0x5, 0x1A, 0x00);
}

TEST_CASE("REPORT SUPPORTED OPERATION CODES: all commands") {
  Fixture f;
  auto t =
      f.run({op::kMaintenanceIn, 0x0C, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0}, DataDir::kIn, 65535);
  REQUIRE(t->good());
  const auto all = all_commands();
  // A fully provisioned LU of one node: every entry but UNMAP and WRITE SAME (32)
  // (kNotListed: answered by a one-command query only) and SET TARGET PORT GROUPS (a LU
  // that several nodes export only).
  const size_t ncmds = all.size() - 3;
  const Bytes d = t->data_in();
  REQUIRE(d.size() == 4 + 8 * ncmds);
  CHECK(get_be32(d.data()) == 8 * ncmds);
  // READ(10): opcode, SA 0, SERVACTV 0, CDB length 10.
  bool saw_read10 = false, saw_rc16 = false;
  for (size_t i = 4; i < d.size(); i += 8) {
    CHECK(d[i] != op::kUnmap);
    CHECK(d[i] != op::kVariableLength);
    if (d[i] == op::kRead10) {
      saw_read10 = true;
      CHECK(test::slice(d, i, i + 8) == Bytes{0x28, 0, 0, 0, 0, 0x00, 0, 10});
    }
    if (d[i] == op::kServiceActionIn16 && d[i + 3] == 0x10) {  // (SA 12h: GET LBA STATUS)
      saw_rc16 = true;
      CHECK(test::slice(d, i, i + 8) == Bytes{0x9E, 0, 0, 0x10, 0, 0x01, 0, 16});
    }
  }
  CHECK(saw_read10);
  CHECK(saw_rc16);

  // A thin LU has UNMAP too.
  LuParams tp = test::default_params();
  tp.thin = true;
  Fixture thin(tp);
  t = thin.run({op::kMaintenanceIn, 0x0C, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0}, DataDir::kIn, 65535);
  REQUIRE(t->good());
  REQUIRE(t->data_in().size() == 4 + 8 * (all.size() - 2));  // not SET TARGET PORT GROUPS
  bool saw_unmap = false;
  for (size_t i = 4; i < t->data_in().size(); i += 8) {
    if (t->data_in()[i] == op::kUnmap) {
      saw_unmap = true;
      CHECK(test::slice(t->data_in(), i, i + 8) == Bytes{0x42, 0, 0, 0, 0, 0x00, 0, 10});
    }
  }
  CHECK(saw_unmap);

  // RCTD: every descriptor carries a 12-byte timeouts descriptor and CTDP.
  t = f.run({op::kMaintenanceIn, 0x0C, 0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0}, DataDir::kIn, 65535);
  REQUIRE(t->good());
  REQUIRE(t->data_in().size() == 4 + 20 * ncmds);
  CHECK(t->data_in()[4 + 5] == 0x02);
  CHECK(test::slice(t->data_in(), 12, 24) == Bytes{0, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60});
}

TEST_CASE("REPORT SUPPORTED OPERATION CODES: one command") {
  Fixture f;
  // READ(10) by opcode: usage data shows DPO/FUA.
  auto t = f.run({op::kMaintenanceIn, 0x0C, 0x01, op::kRead10, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() ==
        Bytes{0, 0x03, 0, 10, 0x28, 0xFA, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00});
  // READ CAPACITY(16) needs option 2; its usage data holds the service action.
  t = f.run({op::kMaintenanceIn, 0x0C, 0x01, op::kServiceActionIn16, 0, 0x10, 0, 0, 0x01, 0, 0, 0});
  CHECK_INVALID_CDB(t, 2, 2);
  t = f.run({op::kMaintenanceIn, 0x0C, 0x02, op::kServiceActionIn16, 0, 0x10, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0,    0x03, 0,    16,   0x9E, 0x10, 0xFF, 0xFF, 0xFF, 0xFF,
                              0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00});
  t = f.run({op::kMaintenanceIn, 0x0C, 0x02, op::kRead10, 0, 0, 0, 0, 0x01, 0, 0, 0});
  CHECK_INVALID_CDB(t, 2, 2);
  // Not supported: SUPPORT 001b.
  t = f.run({op::kMaintenanceIn, 0x0C, 0x01, 0xC0, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x01, 0, 0});
  // UNMAP: not on a fully provisioned LU.
  t = f.run({op::kMaintenanceIn, 0x0C, 0x01, op::kUnmap, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x01, 0, 0});
  // WRITE SAME (32): a variable length CDB, 32 bytes of usage data; no UNMAP bit here.
  t = f.run({op::kMaintenanceIn, 0x0C, 0x02, op::kVariableLength, 0x00, 0x0D, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  const Bytes ws32_usage = {0x7F, 0,    0,    0,    0,    0,    0x1F, 0x18, 0x00, 0x0D, 0xE1,
                            0,    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  Bytes want = {0, 0x03, 0, 32};
  want.insert(want.end(), ws32_usage.begin(), ws32_usage.end());
  CHECK(t->data_in() == want);
  t = f.run({op::kMaintenanceIn, 0x0C, 0x01, op::kVariableLength, 0, 0, 0, 0, 0x01, 0, 0, 0});
  CHECK_INVALID_CDB(t, 2, 2);  // has service actions: option 2
  t = f.run({op::kMaintenanceIn, 0x0C, 0x02, op::kVariableLength, 0x00, 0x0E, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x01, 0, 0});
  // WRITE SAME (16): UNMAP only on a thin LU; never ANCHOR (ANC_SUP=0).
  t = f.run({op::kMaintenanceIn, 0x0C, 0x01, op::kWriteSame16, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in()[5] == 0xE1);
  LuParams tp = test::default_params();
  tp.thin = true;
  Fixture thin(tp);
  t = thin.run({op::kMaintenanceIn, 0x0C, 0x01, op::kWriteSame16, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in()[5] == 0xE9);
  t = thin.run(
      {op::kMaintenanceIn, 0x0C, 0x82, op::kVariableLength, 0x00, 0x0D, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  REQUIRE(t->data_in().size() == 4 + 32 + 12);
  CHECK(t->data_in()[1] == 0x83);  // CTDP
  CHECK(t->data_in()[4 + 10] == 0xE9);
  CHECK(test::slice(t->data_in(), 36, 48) == Bytes{0, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60});
  t = f.run({op::kMaintenanceIn, 0x0C, 0x02, op::kServiceActionIn16, 0, 0x11, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0, 0x01, 0, 0});
  // Option 3 and RCTD.
  t = f.run({op::kMaintenanceIn, 0x0C, 0x83, op::kTestUnitReady, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() ==
        Bytes{0, 0x83, 0, 6, 0x00, 0, 0, 0, 0, 0x00, 0, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60});
  // Reserved reporting options.
  t = f.run({op::kMaintenanceIn, 0x0C, 0x04, 0, 0, 0, 0, 0, 0x01, 0, 0, 0});
  CHECK_INVALID_CDB(t, 2, 2);
  // Unknown MAINTENANCE IN service action.
  t = f.run({op::kMaintenanceIn, 0x0B, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0});
  CHECK_INVALID_CDB(t, 1, 4);
}

TEST_CASE("REPORT TARGET PORT GROUPS") {
  Fixture f;
  // Two portal groups, tags 1 and 2 (zumad: one group per portal group tag).
  f.table.port_groups = {{1, {1}}, {2, {2}}};
  auto t = f.run({op::kMaintenanceIn, 0x0A, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0,    0,    0, 24,              // RETURN DATA LENGTH
                              0x80, 0x01, 0, 1,  0, 0, 0, 1,  // PREF, active/optimized, AO_SUP
                              0,    0,    0, 1,               // relative port 1
                              0x80, 0x01, 0, 2,  0, 0, 0, 1,  // group 2
                              0,    0,    0, 2});
  // Extended header (PARAMETER DATA FORMAT 001b).
  t = f.run({op::kMaintenanceIn, 0x2A, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0});
  REQUIRE(t->good());
  CHECK(slice(t->data_in(), 0, 8) == Bytes{0, 0, 0, 28, 0x10, 0, 0, 0});
  CHECK(t->data_in().size() == 32);
  // Allocation length: truncated, RETURN DATA LENGTH unchanged.
  t = f.run({op::kMaintenanceIn, 0x0A, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0});
  CHECK(t->data_in() == Bytes{0, 0, 0, 24, 0x80, 0x01});
  CHECK(t->task.transfer_len == 6);
  // Reserved formats.
  t = f.run({op::kMaintenanceIn, 0x4A, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0});
  CHECK_INVALID_CDB(t, 1, 7);
  // No port groups given: the nexus's own.
  f.table.port_groups.clear();
  t = f.run({op::kMaintenanceIn, 0x0A, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0});
  CHECK(t->data_in() == Bytes{0, 0, 0, 12, 0x80, 0x01, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1});
  // A cluster node names its node's group (7) for every LU (VPD 83h): a LU of this node
  // alone reports that one group with all the portal groups' ports.
  f.table.port_groups = {{1, {1}}, {2, {2}}};
  Nexus n7 = f.nexus;
  n7.id = 9;
  n7.target_port_group = 7;
  t = f.run({op::kMaintenanceIn, 0x0A, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0}, DataDir::kIn, 4096, {},
            0, &n7);
  CHECK(t->data_in() == Bytes{0, 0, 0, 16, 0x80, 0x01, 0, 7, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2});
}

TEST_CASE("REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS") {
  Fixture f;
  auto t = f.run({op::kMaintenanceIn, 0x0D, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0xDA, 0x00, 0x00, 0x00});  // ATS ATSS CTSS LURS TRS
  t = f.run({op::kMaintenanceIn, 0x0D, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0});  // REPD
  REQUIRE(t->good());
  Bytes want(16, 0);
  want[0] = 0xDA;
  want[3] = 0x0C;
  CHECK(t->data_in() == want);
  t = f.run({op::kMaintenanceIn, 0x0D, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0});
  CHECK_INVALID_CDB(t, 6, 7);
}

TEST_CASE("VPD: Extended INQUIRY Data") {
  Fixture f;
  auto t = f.run({op::kInquiry, 1, 0x86, 0, 255, 0});
  REQUIRE(t->good());
  Bytes want(64, 0);
  want[1] = 0x86;
  want[3] = 0x3C;
  want[5] = 0x07;  // HEADSUP, ORDSUP, SIMPSUP
  want[6] = 0x01;  // V_SUP
  want[7] = 0x01;  // LUICLR
  want[13] = 28;   // MAXIMUM SUPPORTED SENSE DATA LENGTH
  CHECK(t->data_in() == want);
}

struct StateDir {
  std::string path;
  StateDir() {
    char tmpl[] = "/tmp/zuma-spc-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~StateDir() { std::filesystem::remove_all(path); }
};

TEST_CASE("MODE SELECT with SP saves the pages; a new start uses them") {
  StateDir dir;
  LuParams p = test::default_params();
  p.state_dir = dir.path;
  // Control page with D_SENSE and TAS, as MODE SENSE returns it (PS set: ignored).
  const Bytes list = {0, 0, 0, 0, 0x8A, 0x0A, 0x24, 0x10, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0};
  {
    Fixture f(p);
    // Savable pages: PS=1, and PC=11b reports the saved (so far default) values.
    auto t = f.run({op::kModeSense6, 0x08, 0xCA, 0, 255, 0});
    REQUIRE(t->good());
    CHECK(t->data_in() ==
          Bytes{15, 0, 0x10, 0, 0x8A, 0x0A, 0x20, 0x10, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0});
    t = test::run_cdb(f, {op::kModeSelect6, 0x11, 0, 0, 16, 0}, DataDir::kOut, 16, list);
    REQUIRE(t->good());
    CHECK(f.lu->mode_params() == ModeParams{true, true, true});
    CHECK(std::filesystem::exists(dir.path + "/lu0.mode"));
    // Without SP: current values change, saved ones do not.
    Bytes plain = list;
    plain[6] = 0x20;
    plain[9] = 0x00;
    t = test::run_cdb(f, {op::kModeSelect6, 0x10, 0, 0, 16, 0}, DataDir::kOut, 16, plain);
    REQUIRE(t->good());
    t = f.run({op::kModeSense6, 0x08, 0xCA, 0, 255, 0});
    REQUIRE(t->good());
    CHECK(t->data_in()[6] == 0x24);
    CHECK(t->data_in()[9] == 0x40);
  }
  Fixture again(p);
  CHECK(again.lu->mode_params() == ModeParams{true, true, true});
  CHECK(again.lu->descriptor_sense());
}

TEST_CASE("a corrupt saved mode pages file stops the LU from starting") {
  StateDir dir;
  LuParams p = test::default_params();
  p.state_dir = dir.path;
  {
    std::FILE* fp = std::fopen((dir.path + "/lu0.mode").c_str(), "w");
    std::fputs("zuma-mode-pages 1\nwce 7\n", fp);
    std::fclose(fp);
  }
  CHECK_THROWS_AS(make_logical_unit(p, std::make_unique<test::FakeBackend>(2048 * 512)),
                  std::invalid_argument);
}

}  // namespace
}  // namespace zuma::scsi
