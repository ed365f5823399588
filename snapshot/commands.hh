// The snapshot verbs of the admin command table (issue 7; docs/ADMIN.md). Header-only so
// that admin::standard_table() (zumad and zumactl) can declare them without linking the
// snapshot store; zumad installs the handlers (snapshot/admin_handlers.hh).
#pragma once

#include "admin/command_table.hh"

namespace zuma::snapshot {

// Designated initializers leave the rest of each Command / Option at its default.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
inline void register_snapshot_commands(admin::CommandTable& t) {
  using admin::ArgType;
  auto lu = [] {
    return admin::Option{"lu", ArgType::kString, "a LU with snapshots", true, true, "luns", {}};
  };
  // TAB completes the names of the LU's snapshots (or clones) from zumad.
  auto snap = [](const char* name, const char* help, bool required = true,
                 const char* source = "snapshots") {
    return admin::Option{name, ArgType::kString, help, required, true, source, {}};
  };
  t.add({.name = "snapshot create",
         .summary = "take a snapshot of a LU (writes are quiesced for a moment)",
         .details = "O(1) metadata work: in-flight writes finish, new ones wait, the data is\n"
                    "flushed and the snapshot committed; then writes resume. With --clone, a\n"
                    "snapshot of that writable clone (it can be cloned, rolled back, diffed).",
         .options = {lu(), {"name", ArgType::kString, "a unique name (default: none, use the id)"},
                     {"clone", ArgType::kString, "snapshot this clone of the LU instead (name or id)"}},
         .example = "snapshot create data --name before-upgrade"});
  t.add({.name = "snapshot list",
         .summary = "snapshots of a LU and of its clones ('of'): id, name, time, space",
         .options = {lu(), {"fast", ArgType::kFlag, "skip the space figures (they read every chunk's mapping)"}},
         .example = "snapshot list data"});
  t.add({.name = "snapshot delete",
         .summary = "delete a snapshot; its space is reclaimed in the background",
         .options = {lu(), snap("snapshot", "name or id")},
         .example = "snapshot delete data before-upgrade"});
  t.add({.name = "snapshot rollback",
         .summary = "make the LU (or the clone a snapshot is of) hold what the snapshot holds",
         .details = "I/O of the LU and its clones waits while the changed chunks are copied;\n"
                    "commands in flight finish first. Every initiator of the LU then gets\n"
                    "UNIT ATTENTION 28h/00h (medium may have changed) on its next command.",
         .options = {lu(), snap("snapshot", "name or id")},
         .example = "snapshot rollback data before-upgrade"});
  t.add({.name = "snapshot clone",
         .summary = "create a writable clone of a snapshot (export it with a LUN source)",
         .options = {lu(), snap("snapshot", "name or id"),
                     {"name", ArgType::kString, "the clone's name", true, false, "", {}}},
         .example = "snapshot clone data nightly --name test-copy"});
  t.add({.name = "snapshot delete-clone",
         .summary = "delete a clone that no LU exports",
         .options = {lu(), snap("clone", "the clone's name", true, "clones")},
         .example = "snapshot delete-clone data test-copy"});
  t.add({.name = "snapshot diff",
         .summary = "byte extents changed between two snapshots, or since one",
         .options = {lu(), snap("from", "the older snapshot"),
                     snap("to", "the newer snapshot (default: the LU, or the clone, now)", false)},
         .example = "snapshot diff data nightly-1 nightly-2"});
  t.add({.name = "snapshot status",
         .summary = "the store's fill level, metadata use and counts",
         .options = {lu()},
         .example = "snapshot status data"});
}
#pragma GCC diagnostic pop

}  // namespace zuma::snapshot
