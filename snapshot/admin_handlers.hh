// zumad's handlers for the snapshot verbs (snapshot/commands.hh) over a Registry.
// Results are JSON objects/arrays (zumactl prints them as tables); errors are thrown as
// admin::CommandError with one-line messages.
#pragma once

#include "admin/command_table.hh"
#include "snapshot/registry.hh"

namespace zuma::snapshot {

// Installs the handlers in `table` (which must hold register_snapshot_commands()' verbs).
void bind_snapshot_handlers(admin::CommandTable& table, Registry& registry);

}  // namespace zuma::snapshot
