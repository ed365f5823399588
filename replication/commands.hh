// The replication verbs of the admin command table (issue 8; docs/ADMIN.md). Header-only so
// that admin::standard_table() (zumad and zumactl) can declare them without linking the
// replication library; zumad installs the handlers (replication/admin_handlers.hh).
#pragma once

#include "admin/command_table.hh"

namespace zuma::replication {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
inline void register_replication_commands(admin::CommandTable& t) {
  using admin::ArgType;
  t.add({.name = "group list",
         .summary = "consistency groups: role, LUs, log fill, sequence numbers",
         .details = "A primary group's log: next sequence number, oldest record kept, bytes in\n"
                    "use of its capacity. A secondary group: the highest sequence applied and\n"
                    "whether its primary is connected.",
         .example = "group list"});
  t.add({.name = "group status",
         .summary = "a group's site links: state, mode, acknowledged sequence, lag",
         .details = "Per link: connecting, connected, disconnected or needs_resync; sync or\n"
                    "async (a sync link that is not holding writes is 'degraded'); the highest\n"
                    "sequence the peer has durably; the lag in records, bytes and seconds (age of\n"
                    "the oldest record it lacks); reconnects and the last error.",
         .options = {{"group", ArgType::kString, "a group name", true, true, "groups", {}}},
         .example = "group status db"});
}
#pragma GCC diagnostic pop

}  // namespace zuma::replication
