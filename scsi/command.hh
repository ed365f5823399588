// The command table (STYLE.md 1) and what every handler sees.
//
// One entry per supported operation code, or per service action for the opcodes that
// have them (SERVICE ACTION IN (16), MAINTENANCE IN). Each entry gives the handler, the
// CDB length, the data direction, flags, and the CDB usage data of REPORT SUPPORTED
// OPERATION CODES (SPC-5 REPORT SUPPORTED OPERATION CODES, CDB USAGE DATA), which doubles as the
// mask of the bits we accept: a bit set outside it ends the command with INVALID FIELD IN CDB and a
// field pointer before the handler runs. The CONTROL byte's mask is 00h: NACA=1 is rejected because
// we do not implement ACA (SAM-5 (ACA)), LINK and the vendor bits are not used.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "scsi/sense.hh"
#include "scsi/task.hh"

namespace zuma::scsi {

class LogicalUnit;
struct LunTable;
struct CommandInfo;

// What a handler gets. Valid only during the handler call; a handler that completes
// later keeps the Task and LogicalUnit pointers (both outlive the command).
struct Cmd {
  Task& task;
  LogicalUnit* lu;  // nullptr when the LUN does not exist (only kAnyLun commands)
  const LunTable& table;
  const CommandInfo& info;

  const uint8_t* cdb() const { return task.cdb.data(); }
  uint64_t nexus_id() const { return task.nexus ? task.nexus->id : 0; }
};

// Returns the outcome, or CmdResult::pending() when it will complete the task itself
// (through finish()), possibly before returning. After returning pending the handler's
// caller never touches the task again.
using Handler = CmdResult (*)(Cmd& cmd);

namespace cmd_flag {
// Served even when the LUN does not exist (SAM-5 (incorrect logical unit selection): INQUIRY,
// REQUEST SENSE, REPORT LUNS).
inline constexpr uint16_t kAnyLun = 1 << 0;
// Neither reports nor clears a pending unit attention (SAM-5 (unit attention condition)).
inline constexpr uint16_t kNoUnitAttention = 1 << 1;
// Reads or writes the medium.
inline constexpr uint16_t kMediumAccess = 1 << 2;
// Reservations (persistent_reservation.hh). A command with neither kPrAllowed nor kPrRead is
// a "write" for the SPC-5/SBC-4 tables of commands allowed in the presence of persistent
// reservations: it conflicts with a WRITE EXCLUSIVE or EXCLUSIVE ACCESS reservation held by
// another I_T nexus, and with a registrants-only/all-registrants one when the sender is not
// registered.
// Allowed through every persistent reservation (INQUIRY, REPORT LUNS, TEST UNIT READY, READ
// CAPACITY, LOG SENSE, PERSISTENT RESERVE IN/OUT (which check for themselves), ...).
inline constexpr uint16_t kPrAllowed = 1 << 3;
// A "read": conflicts only with the EXCLUSIVE ACCESS types (READ, VERIFY, PRE-FETCH, GET LBA
// STATUS, READ DEFECT DATA, ...).
inline constexpr uint16_t kPrRead = 1 << 4;
// Allowed while another I_T nexus holds a RESERVE (6)/(10) reservation (SPC-2: INQUIRY,
// REQUEST SENSE, REPORT LUNS, RELEASE); every other command conflicts.
inline constexpr uint16_t kSpc2Allowed = 1 << 5;
// Only on a thin provisioned LU (SBC-4 logical block provisioning management: UNMAP); a
// fully provisioned one answers INVALID COMMAND OPERATION CODE, as for an unknown opcode, and
// REPORT SUPPORTED OPERATION CODES leaves it out.
inline constexpr uint16_t kThinOnly = 1 << 6;
// Left out of REPORT SUPPORTED OPERATION CODES' list of all commands (REPORTING OPTIONS 000b),
// still reported as supported when asked for by operation code and service action. For CDBs
// longer than 16 bytes: libiscsi (1.19 and its master branch) keeps at most 16 bytes of CDB
// USAGE DATA and fails ReportSupportedOpcodes.OneCommand for every listed command whose usage
// data is longer (docs/COMPLIANCE.md).
inline constexpr uint16_t kNotListed = 1 << 7;
// Writes or deallocates blocks (WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE, ...): on a
// write-protected LU (LuParams::read_only) it ends with DATA PROTECT, WRITE PROTECTED
// (27h/00h) before the handler runs (SBC-4 write protection).
inline constexpr uint16_t kWritesMedium = 1 << 8;
// Only on a LU with an ALUA view (alua.hh: several nodes export it): SET TARGET PORT GROUPS.
inline constexpr uint16_t kAluaOnly = 1 << 9;
}  // namespace cmd_flag

// Longest CDB in the table: WRITE SAME (32), a variable length CDB.
inline constexpr size_t kMaxCdbLen = 32;

struct CommandInfo {
  const char* name;
  uint8_t opcode;
  bool has_sa;
  uint16_t sa;
  uint8_t cdb_len;
  DataDir dir;
  uint16_t flags;
  Handler handler;
  // CDB USAGE DATA: byte 0 is the opcode, the service action field holds the service
  // action, every other bit set to one is a bit the device server uses.
  std::array<uint8_t, kMaxCdbLen> usage;

  // Variable length CDB: the service action is in bytes 8-9, CONTROL in byte 1.
  constexpr bool variable_length() const { return opcode == 0x7F; }
};

// The CDB USAGE DATA the LU reports (REPORT SUPPORTED OPERATION CODES): the table's, less
// the bits that LU cannot honour (WRITE SAME's UNMAP on a fully provisioned LU). `lu` may be
// nullptr (no LU: the table's).
std::array<uint8_t, kMaxCdbLen> usage_for(const CommandInfo& info, const LogicalUnit* lu);
// True when the LU has the command (kThinOnly ones only on thin LUs).
bool supported_on(const CommandInfo& info, const LogicalUnit* lu);

// All entries, ordered by opcode then service action.
std::span<const CommandInfo> all_commands();
// True when `opcode` is one of ours that has service actions.
bool has_service_actions(uint8_t opcode);
// The entry for (opcode, service action); `sa` is ignored for opcodes without them.
const CommandInfo* find_command(uint8_t opcode, uint16_t sa);

// Finds the entry for the CDB (whose first two bytes must be valid), or the error:
// INVALID COMMAND OPERATION CODE, or INVALID FIELD IN CDB at the service action field.
const CommandInfo* lookup_command(const Task& task, CmdResult* error);

// Checks the CDB against the entry: the transport's CDB must be long enough, and no bit
// outside the usage mask may be set (SPC-5 field pointer sense key specific data field pointer to
// the first such byte, bit pointer to its most significant offending bit).
CmdResult check_cdb(const CommandInfo& info, const Task& task);

// --- helpers for handlers ---

// Makes task.data `len` zeroed bytes and returns it, for parameter data.
uint8_t* data_in_buffer(Task& task, size_t len);
// Records a Data-In response of `avail` bytes truncated to the ALLOCATION LENGTH `alloc`
// (SPC-5 (allocation length)): transfer_len = min(avail, alloc), data_in_len = min(transfer_len,
// expected_len), and no Data-In when the task carries no Data-In direction.
void set_data_in(Task& task, size_t avail, size_t alloc);
// Completes the task with `r`: status, sense data (descriptor format when
// `descriptor_sense`), no Data-In on error; then calls on_complete.
void finish(Task& task, const CmdResult& r, bool descriptor_sense);

}  // namespace zuma::scsi
