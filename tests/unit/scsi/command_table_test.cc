#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "scsi/cdb.hh"
#include "scsi/command.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

Task task_with(std::initializer_list<uint8_t> cdb, uint16_t len = 16) {
  Task t;
  std::copy(cdb.begin(), cdb.end(), t.cdb.begin());
  t.cdb_len = len;
  return t;
}

TEST_CASE("the table is ordered and every entry is consistent") {
  const auto cmds = all_commands();
  REQUIRE(cmds.size() > 20);
  std::set<std::pair<int, int>> seen;
  for (const CommandInfo& c : cmds) {
    CAPTURE(c.name);
    CHECK(c.usage[0] == c.opcode);
    CHECK(static_cast<bool>(c.handler));
    // CONTROL (NACA, LINK, vendor bits unused): the last byte, or byte 1 of a variable length
    // CDB (SPC-5 variable length CDB format).
    CHECK(c.usage[c.variable_length() ? 1 : c.cdb_len - 1] == 0x00);
    // CDB length follows the group code (SPC-5 (operation code, service action)); 7Fh: 8 +
    // ADDITIONAL CDB LENGTH.
    const int group = c.opcode >> 5;
    const int want = c.opcode == 0x7F ? 8 + c.usage[7]
                     : group == 0     ? 6
                                      : (group <= 2 ? 10 : (group == 4 ? 16 : 12));
    CHECK(c.cdb_len == want);
    CHECK(seen.insert({c.opcode, c.has_sa ? c.sa : -1}).second);
    CHECK(find_command(c.opcode, c.sa) == &c);
  }
  CHECK(has_service_actions(op::kServiceActionIn16));
  CHECK(has_service_actions(op::kMaintenanceIn));
  CHECK_FALSE(has_service_actions(op::kRead10));
  CHECK(has_service_actions(op::kVariableLength));
  CHECK(find_command(op::kVariableLength, sa::kWriteSame32)->cdb_len == 32);
  CHECK(find_command(op::kVariableLength, 0x000E) == nullptr);
}

// A file of the repository (the build passes the source directory: __FILE__ may be
// relative, e.g. under ccache).
std::string repo_file(const std::string& rel) { return std::string(ZUMA_SOURCE_DIR) + "/" + rel; }

TEST_CASE("docs/COMPLIANCE.md lists every command of the table") {
  std::ifstream in(repo_file("docs/COMPLIANCE.md"));
  REQUIRE(in.good());
  struct Row {
    int opcode;
    int sa;  // -1: none
    int cdb_len;
  };
  std::map<std::string, Row> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;  // command rows start with a quoted name
    std::vector<std::string> cols;
    std::stringstream ss(line.substr(1));
    for (std::string c; std::getline(ss, c, '|');) {
      c.erase(0, c.find_first_not_of(' '));
      c.erase(c.find_last_not_of(' ') + 1);
      cols.push_back(c);
    }
    CAPTURE(line);
    REQUIRE(cols.size() >= 4);
    const std::string name = cols[0].substr(1, cols[0].size() - 2);
    const Row r{std::stoi(cols[1], nullptr, 16),
                cols[2].empty() ? -1 : std::stoi(cols[2], nullptr, 16), std::stoi(cols[3])};
    CHECK(rows.emplace(name, r).second);
  }
  const auto cmds = all_commands();
  CHECK(rows.size() == cmds.size());
  for (const CommandInfo& c : cmds) {
    CAPTURE(c.name);
    auto it = rows.find(c.name);
    REQUIRE(it != rows.end());
    CHECK(it->second.opcode == c.opcode);
    CHECK(it->second.sa == (c.has_sa ? int(c.sa) : -1));
    CHECK(it->second.cdb_len == c.cdb_len);
  }
}

TEST_CASE("lookup: unknown opcode, unknown service action") {
  CmdResult err;
  Task t = task_with({0x7E});
  CHECK(lookup_command(t, &err) == nullptr);
  CHECK(err.reason == Reason::kInvalidOpcode);
  CHECK_FALSE(err.has_field);

  // Variable length CDB: the service action is bytes 8-9 (SPC-5).
  t = task_with({op::kVariableLength, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0E}, 32);
  CHECK(lookup_command(t, &err) == nullptr);
  CHECK(err.reason == Reason::kInvalidFieldInCdb);
  CHECK(err.field == 8);
  CHECK(err.bit == 7);
  t = task_with({op::kVariableLength, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0D}, 32);
  REQUIRE(lookup_command(t, &err) != nullptr);
  CHECK(std::string(lookup_command(t, &err)->name) == "WRITE SAME(32)");

  t = task_with({0x5C});  // READ BUFFER CAPACITY (SPC-5): not ours
  CHECK(lookup_command(t, &err) == nullptr);
  CHECK(err.reason == Reason::kInvalidOpcode);

  t = task_with({op::kServiceActionIn16, 0x11});  // SA 11h: not READ CAPACITY (16)
  CHECK(lookup_command(t, &err) == nullptr);
  CHECK(err.reason == Reason::kInvalidFieldInCdb);
  CHECK(err.field == 1);
  CHECK(err.bit == 4);

  t = task_with({op::kServiceActionIn16, 0x10});
  const CommandInfo* c = lookup_command(t, &err);
  REQUIRE(c != nullptr);
  CHECK(std::string(c->name) == "READ CAPACITY(16)");
}

TEST_CASE("check_cdb: reserved bits give the byte and the top offending bit") {
  const CommandInfo& read10 = *find_command(op::kRead10, 0);
  CHECK(check_cdb(read10, task_with({op::kRead10, 0x18, 1, 2, 3, 4, 0x3F, 0, 1, 0})).ok());

  // RARC (byte 1 bit 2) is not accepted.
  CmdResult r = check_cdb(read10, task_with({op::kRead10, 0x04, 0, 0, 0, 0, 0, 0, 1, 0}));
  CHECK(r.reason == Reason::kInvalidFieldInCdb);
  CHECK(r.field_in_cdb);
  CHECK(r.field == 1);
  CHECK(r.bit == 2);

  // Byte 6 bits 7:6 reserved.
  r = check_cdb(read10, task_with({op::kRead10, 0, 0, 0, 0, 0, 0xC1, 0, 1, 0}));
  CHECK(r.field == 6);
  CHECK(r.bit == 7);

  // NACA in the CONTROL byte: no ACA support (SAM-5 (ACA)).
  r = check_cdb(read10, task_with({op::kRead10, 0, 0, 0, 0, 0, 0, 0, 1, 0x04}));
  CHECK(r.field == 9);
  CHECK(r.bit == 2);

  // LINK.
  r = check_cdb(read10, task_with({op::kRead10, 0, 0, 0, 0, 0, 0, 0, 1, 0x01}));
  CHECK(r.field == 9);
  CHECK(r.bit == 0);

  // INQUIRY CMDDT (obsolete).
  const CommandInfo& inq = *find_command(op::kInquiry, 0);
  r = check_cdb(inq, task_with({op::kInquiry, 0x02, 0, 0, 36, 0}));
  CHECK(r.field == 1);
  CHECK(r.bit == 1);
}

TEST_CASE("check_cdb: service action bits are part of the opcode, bits 7:5 reserved") {
  const CommandInfo& rc16 = *find_command(op::kServiceActionIn16, sa::kReadCapacity16);
  CHECK(check_cdb(rc16, task_with({op::kServiceActionIn16, 0x10})).ok());
  const CmdResult r = check_cdb(rc16, task_with({op::kServiceActionIn16, 0x30}));
  CHECK(r.field == 1);
  CHECK(r.bit == 5);
}

TEST_CASE("check_cdb: WRITE SAME (32), a variable length CDB") {
  const CommandInfo& ws32 = *find_command(op::kVariableLength, sa::kWriteSame32);
  Task t = task_with({op::kVariableLength, 0, 0, 0, 0, 0, 0x1F, 0x18, 0x00, 0x0D, 0xE9}, 32);
  CHECK(check_cdb(ws32, t).ok());
  // ADDITIONAL CDB LENGTH other than 18h.
  t.cdb[7] = 0x10;
  CmdResult r = check_cdb(ws32, t);
  CHECK(r.field == 7);
  CHECK(r.bit == 7);
  t.cdb[7] = 0x18;
  // CONTROL is byte 1: NACA.
  t.cdb[1] = 0x04;
  r = check_cdb(ws32, t);
  CHECK(r.field == 1);
  CHECK(r.bit == 2);
  t.cdb[1] = 0;
  // ANCHOR (ANC_SUP=0), reserved bits 2:1 of byte 10, reserved byte 11.
  t.cdb[10] = 0x10;
  r = check_cdb(ws32, t);
  CHECK(r.field == 10);
  CHECK(r.bit == 4);
  t.cdb[10] = 0x02;
  CHECK(check_cdb(ws32, t).bit == 1);
  t.cdb[10] = 0;
  t.cdb[11] = 0x80;
  CHECK(check_cdb(ws32, t).field == 11);
  // Only the 16 bytes of a BHS: too short.
  t.cdb[11] = 0;
  t.cdb_len = 16;
  CHECK(check_cdb(ws32, t).field == 0);
}

TEST_CASE("check_cdb: a CDB shorter than the opcode needs") {
  const CommandInfo& read16 = *find_command(op::kRead16, 0);
  const CmdResult r = check_cdb(read16, task_with({op::kRead16}, 12));
  CHECK(r.reason == Reason::kInvalidFieldInCdb);
  CHECK(r.field == 0);
}

TEST_CASE("set_data_in truncates to the allocation length and the expected length") {
  Task t;
  t.dir = DataDir::kIn;
  t.expected_len = 100;
  set_data_in(t, 96, 255);
  CHECK(t.transfer_len == 96);
  CHECK(t.data_in_len == 96);
  set_data_in(t, 96, 36);
  CHECK(t.transfer_len == 36);
  CHECK(t.data_in_len == 36);
  set_data_in(t, 96, 0);
  CHECK(t.transfer_len == 0);
  CHECK(t.data_in_len == 0);
  t.expected_len = 10;
  set_data_in(t, 96, 255);
  CHECK(t.transfer_len == 96);  // the transport reports an overflow of 86
  CHECK(t.data_in_len == 10);
  t.dir = DataDir::kOut;  // no Data-In on a command without the R bit
  set_data_in(t, 96, 255);
  CHECK(t.transfer_len == 96);
  CHECK(t.data_in_len == 0);
}

TEST_CASE("finish builds status and sense and completes once") {
  test::TestTask tt;
  tt.task.data_in_len = 50;
  finish(tt.task, CmdResult::invalid_cdb(4, 1), false);
  CHECK(tt.completions == 1);
  CHECK(tt.task.status == status::kCheckCondition);
  CHECK(tt.task.data_in_len == 0);
  CHECK(tt.task.sense_len == 18);
  CHECK(tt.task.sense[15] == 0xC9);

  test::TestTask good;
  good.task.data_in_len = 8;
  finish(good.task, CmdResult::good(), true);
  CHECK(good.completions == 1);
  CHECK(good.task.status == status::kGood);
  CHECK(good.task.sense_len == 0);
  CHECK(good.task.data_in_len == 8);

  test::TestTask busy;
  finish(busy.task, Reason::kBusy, false);
  CHECK(busy.task.status == status::kBusy);
  CHECK(busy.task.sense_len == 0);
}

}  // namespace
}  // namespace zuma::scsi
