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
  t.add(
      {.name = "group demote",
       .summary = "this primary stops taking writes, waits for its links, becomes secondary",
       .details = "Planned switchover, step 1 (docs/REPLICATION.md runbook). The group's LUs\n"
                  "become write protected; demote waits (--wait seconds, default 30) until every\n"
                  "link's peer has every record, so promoting the peer loses nothing. A link that\n"
                  "cannot catch up makes it refuse, unless --force.",
       .options =
           {{"group", ArgType::kString, "a group name", true, true, "groups", {}},
            {"force", ArgType::kFlag, "even if a link's peer lacks records", false, false, "", {}},
            {"wait",
             ArgType::kInt,
             "seconds to wait for the links (default 30)",
             false,
             false,
             "",
             {}}},
       .example = "group demote db"});
  t.add({.name = "group promote",
         .summary = "this secondary becomes primary of a new generation",
         .details =
             "Switchover step 2, or failover when the primary is lost. Refused while the\n"
             "primary is connected (demote it first) or while this side is inconsistent (an\n"
             "unfinished resync), unless --force. The LUs become writable; the group's links\n"
             "start shipping to the old primary, which resyncs only what differs.",
         .options = {{"group", ArgType::kString, "a group name", true, true, "groups", {}},
                     {"force",
                      ArgType::kFlag,
                      "cut a connected primary off / promote an inconsistent image",
                      false,
                      false,
                      "",
                      {}}},
         .example = "group promote db"});
  t.add({.name = "group bookmark",
         .summary = "a consistent point: snapshot every LU of the group here and at each secondary",
         .details = "Writes to all of the group's LUs wait for a moment; a bookmark record goes\n"
                    "into the log between the writes before and after; every LU is snapshotted\n"
                    "as NAME; writes go on. Each secondary snapshots its LUs as NAME when it\n"
                    "applies the record, so the remote snapshots are the same point. Every LU of\n"
                    "the group needs `snapshots:` (on each side that should keep them).",
         .options = {{"group", ArgType::kString, "a group name", true, true, "groups", {}},
                     {"name", ArgType::kString, "the snapshots' name", true, true, "", {}}},
         .example = "group bookmark db before-upgrade"});
  t.add(
      {.name = "group verify",
       .summary = "compare every region of the group's LUs with the peers, while writes go on",
       .details =
           "Online verify (docs/REPLICATION.md \"Online verify\"): region by region (1 MiB), the\n"
           "primary hashes the region (XXH3-128) at a point of the group's write order and puts\n"
           "a verify marker there in the log; each peer hashes the region when it applies the\n"
           "marker. Runs in the background: `group status GROUP` shows the progress and the\n"
           "mismatching regions (LU, offset, length). Only LINK's peer with a link name.\n"
           "Cancelled if a link drops. --repair: the mismatching regions are then resent to\n"
           "the peer as a resync.",
       .options =
           {{"group", ArgType::kString, "a group name", true, true, "groups", {}},
            {"link", ArgType::kString, "only this link's peer", false, true, "", {}},
            {"repair", ArgType::kFlag, "resend the regions that differ", false, false, "", {}}},
       .example = "group verify db dr --repair"});
  t.add({.name = "group discard",
         .summary = "resolve a split brain: this side's changes since the divergence go",
         .details =
             "On the side whose writes are to be thrown away after a split brain (both sides\n"
             "took writes as primary). A primary is demoted at once; when the other side's\n"
             "link connects, only the ranges this side changed since the two diverged are\n"
             "copied from it, then its records follow.",
         .options = {{"group", ArgType::kString, "a group name", true, true, "groups", {}}},
         .example = "group discard db"});
}
#pragma GCC diagnostic pop

}  // namespace zuma::replication
