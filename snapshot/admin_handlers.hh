// zumad's handlers for the snapshot verbs (snapshot/commands.hh) over a Registry.
// Results are JSON objects/arrays (zumactl prints them as tables); errors are thrown as
// admin::CommandError with one-line messages.
#pragma once

#include "admin/command_table.hh"
#include "snapshot/registry.hh"

namespace zuma::snapshot {

// Installs the handlers in `table` (which must hold register_snapshot_commands()' verbs).
void bind_snapshot_handlers(admin::CommandTable& table, Registry& registry);

// Prometheus text (format 0.0.4) for every store of the registry, per LU: capacity, space
// and metadata in use, snapshot and clone counts, and zuma_snapshot_fill_warning (1 while
// the fill level is at or above the store's warn_fill, the level zumad also logs).
std::string snapshot_metrics_text(Registry& registry);

// Completion names (zumactl's TAB): the snapshots of LU `lu` and of its clones (names, and
// the ids of unnamed ones), or its clones' names. Empty for an unknown LU.
std::vector<std::string> snapshot_names(Registry& registry, const std::string& lu);
std::vector<std::string> clone_names(Registry& registry, const std::string& lu);

}  // namespace zuma::snapshot
