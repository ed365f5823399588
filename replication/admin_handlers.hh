// zumad's handlers for the replication verbs (replication/commands.hh) over the node's
// NodeReplication. Results are {"columns", "rows"} tables (zumactl prints them aligned);
// errors are admin::CommandError with one-line messages.
#pragma once

#include "admin/command_table.hh"
#include "replication/node_replication.hh"

namespace zuma::replication {

// Installs the handlers in `table` (which must hold register_replication_commands()'
// verbs). `node` must outlive the table's use (zumad stops the control socket first).
void bind_replication_handlers(admin::CommandTable& table, NodeReplication& node);

}  // namespace zuma::replication
