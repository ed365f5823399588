// The device server's entry points for the transport (target/) and for zumad.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "scsi/task.hh"
#include "storage/backend.hh"

namespace zuma::scsi {

class LogicalUnit;

struct LuParams {
  std::string name;             // the LU's name in the config
  std::string uuid;             // stable identity (RFC 4122 text); NAA-6 and serial derive from it
  uint32_t block_size = 512;    // 512 or 4096
  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (SBC-4 READ CAPACITY (16)): a physical block
  // of block_size << exponent bytes, the unit initiators should align I/O to.
  uint8_t lbppb_exponent = 0;
  uint64_t num_blocks = 0;      // capacity / block_size
  bool thin = false;            // thin provisioned (UNMAP supported, LBPME)
  bool write_cache = true;      // WCE in the caching mode page
  // Write protected (SBC-4 write protection): MODE SENSE reports WP=1, and every command
  // that would change the medium (cmd_flag::kWritesMedium; EXTENDED COPY into the LU) ends
  // with DATA PROTECT, WRITE PROTECTED (27h/00h) before it runs.
  bool read_only = false;
  // Exported by several nodes (issue 9): COMPARE AND WRITE also locks its range in the
  // backend against the other nodes (storage::Backend::lock_for_update).
  bool shared = false;
  std::string vendor = "ZUMA";  // INQUIRY T10 vendor identification (8 chars max)
  std::string product = "ZUMA DISK";  // 16 chars max
  std::string revision = "0001";      // 4 chars
  // Directory for the LU's state files: "<state_dir>/<name>.pr" (persistent reservations
  // while APTPL is set) and "<state_dir>/<name>.mode" (saved mode pages). Empty: nothing
  // is saved, and APTPL and MODE SELECT with SP=1 are refused. zumad passes
  // "<data_dir>/lu", where the UUID files live.
  std::string state_dir;
  // Every I_T nexus's first command to the LU reports POWER ON OCCURRED (29h/01h, SAM-5
  // unit attention condition; initiators expect it after login: libiscsi and Linux clear it
  // with TEST UNIT READY). zumad sets it; off by default for embedders and unit tests.
  bool power_on_unit_attention = false;
};

// Creates a LU on `backend` (which must hold num_blocks * block_size bytes). One LU object
// may appear in several LunTables (targets) and is used from several reactor threads.
std::shared_ptr<LogicalUnit> make_logical_unit(LuParams params,
                                               std::unique_ptr<storage::Backend> backend);

// A target's LUN -> LU map, as one I_T nexus sees it. Immutable once a session uses it
// (a live change builds a new table and swaps the shared_ptr).
struct LunTable {
  std::map<uint64_t, std::shared_ptr<LogicalUnit>> luns;
  // The target's port groups (SPC-5 REPORT TARGET PORT GROUPS, implicit ALUA): one per
  // portal group tag, with the one target port of that tag (iSCSI: a target port is the
  // target name plus a TPGT; its relative port id is the TPGT). Empty: the nexus's own port
  // only. Also the ports REGISTER AND MOVE may name.
  struct PortGroup {
    uint16_t id = 1;
    std::vector<uint16_t> relative_port_ids;
  };
  std::vector<PortGroup> port_groups;
};

// Executes a task against the table: REPORT LUNS and commands to LUNs that do not exist
// are answered here (SPC-5 4.6.14 / SAM-5 5.11), the rest is dispatched to the LU.
void execute(const LunTable& table, Task& task);

// Makes every completed write of the LU durable (called at shutdown).
// Returns 0 or -errno. Synchronous.
int flush_logical_unit(LogicalUnit& lu);

// Reads the LU's UUID from `<data_dir>/lu/<name>.uuid`, creating the directory and a new
// random UUID (written atomically: temp file, fsync, rename) when missing.
// Error: a one-line message.
std::expected<std::string, std::string> load_or_create_lu_uuid(const std::string& data_dir,
                                                                const std::string& name);

}  // namespace zuma::scsi

namespace zuma::scsi {

// LOGICAL UNIT RESET (SAM-5 logical unit reset; also what TARGET WARM/COLD RESET do to each
// LU): aborts every task of every I_T nexus on the LU (as abort_task_set with `only` ==
// nullptr), clears the LU state a reset clears (RESERVE (6)/(10)) and establishes the reset
// unit attention (29h/03h) for every I_T nexus the LU knows, `from` included. `done`
// (optional) runs once every aborted task has completed: on the thread completing the last
// one, or inline when there were none. The transport sends its TMF response from `done`
// (RFC 7143 11.5.1: after the affected tasks have ended).
void reset_logical_unit(LogicalUnit& lu, const Nexus& from, std::function<void()> done = nullptr);

// The I_T nexus is gone (session closed): drop per-nexus state it holds in the LU (unit
// attentions, its task set, a RESERVE (6)/(10) reservation it held). Persistent
// reservation registrations stay: they belong to the I_T nexus name, not to the session.
// When the nexus had used the LU, the next session with the same initiator and target
// port names gets I_T NEXUS LOSS OCCURRED (29h/07h) instead of POWER ON OCCURRED.
void nexus_lost(LogicalUnit& lu, const Nexus& nexus);

// Task management (SAM-5) on the device server's task sets (task_set.hh). Every task of the
// LU sent by `only` (ABORT TASK SET, CLEAR TASK SET: with TST=001b both concern the
// sender's own task set), or by every I_T nexus (`only` == nullptr: LOGICAL UNIT RESET), is
// aborted: it completes with task.aborted set (task.hh). `done` (optional) runs once all of
// them have completed, on the thread completing the last one, or at once (inline) when
// there were none. `from`: the nexus asking (TAS decides what the others' tasks report).
void abort_task_set(LogicalUnit& lu, const Nexus* only, const Nexus& from,
                    std::function<void()> done = nullptr);
// ABORT TASK: aborts `task` if it is still in the device server (true), so that it
// completes without running when it has not started yet. Call on the task's own thread.
bool abort_task(Task& task);

// The LUN inventory changed (a live reconfiguration added or removed LUs of a target):
// every I_T nexus that uses one of the table's LUs gets REPORTED LUNS DATA HAS CHANGED
// (SPC-5, 3Fh/0Eh).
void reported_luns_changed(const LunTable& table);

}  // namespace zuma::scsi
