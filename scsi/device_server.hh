// The device server's entry points for the transport (target/) and for zumad.
#pragma once

#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <string>

#include "scsi/task.hh"
#include "storage/backend.hh"

namespace zuma::scsi {

class LogicalUnit;

struct LuParams {
  std::string name;             // the LU's name in the config
  std::string uuid;             // stable identity (RFC 4122 text); NAA-6 and serial derive from it
  uint32_t block_size = 512;    // 512 or 4096
  uint64_t num_blocks = 0;      // capacity / block_size
  bool thin = false;            // thin provisioned (UNMAP supported, LBPME)
  bool write_cache = true;      // WCE in the caching mode page
  std::string vendor = "ZUMA";  // INQUIRY T10 vendor identification (8 chars max)
  std::string product = "ZUMA DISK";  // 16 chars max
  std::string revision = "0001";      // 4 chars
};

// Creates a LU on `backend` (which must hold num_blocks * block_size bytes). One LU object
// may appear in several LunTables (targets) and is used from several reactor threads.
std::shared_ptr<LogicalUnit> make_logical_unit(LuParams params,
                                               std::unique_ptr<storage::Backend> backend);

// A target's LUN -> LU map, as one I_T nexus sees it. Immutable once a session uses it
// (a live change builds a new table and swaps the shared_ptr).
struct LunTable {
  std::map<uint64_t, std::shared_ptr<LogicalUnit>> luns;
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

// LOGICAL UNIT RESET (SAM-5 7.11.5): the transport has already drained or aborted the
// LU's tasks; this clears LU state a reset clears and establishes the reset unit attention
// (29h/03h) for every I_T nexus the LU knows, `from` included (SAM-5, logical unit reset).
void reset_logical_unit(LogicalUnit& lu, const Nexus& from);

// The I_T nexus is gone (session closed): drop per-nexus state it holds in the LU.
void nexus_lost(LogicalUnit& lu, const Nexus& nexus);

}  // namespace zuma::scsi
