// The verbs of zumad's control socket (docs/ADMIN.md describes each with an example).
#include "replication/commands.hh"
#include "admin/command_table.hh"
#include "snapshot/commands.hh"  // header-only verb declarations (issue 7)

// Commands and options are written with designated initializers; what they leave out
// keeps its default on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace zuma::admin {

namespace {

Option target_arg(bool required = true) {
  return {"target", ArgType::kString, "the target's iSCSI name", required, true, "targets"};
}

}  // namespace

void register_core_commands(CommandTable& t) {
  t.add(
      {.name = "help",
       .summary = "list the commands, or describe one",
       .options = {{"verb", ArgType::kString, "a command or its first word", false, true, "verbs"}},
       .example = "help add lun",
       .local = true});
  t.add({.name = "quit", .summary = "leave the shell (also: exit, Ctrl-D)", .local = true});
  t.add({.name = "complete",
         .summary = "names for completion",
         .options = {{"source",
                      ArgType::kString,
                      "targets, luns, sessions, portals, initiators, log_levels, "
                      "snapshots:LU or clones:LU",
                      true,
                      true,
                      "",
                      {}}},
         .hidden = true});

  // --- show ---
  t.add({.name = "show node",
         .summary = "this node: name, version, uptime, socket, counts",
         .example = "show node"});
  t.add({.name = "show portals",
         .summary = "the addresses zumad listens on",
         .example = "show portals"});
  t.add({.name = "show targets",
         .summary = "targets with their LUN count, ACL, CHAP and sessions",
         .example = "show targets"});
  t.add({.name = "show luns",
         .summary = "logical units: target, LUN, size, backend, sessions using them",
         .options = {target_arg(false)},
         .example = "show luns iqn.2026-11.org.zuma:db"});
  t.add({.name = "show sessions",
         .summary = "logged-in sessions: initiator, target, portal, queue depth, commands",
         .options = {target_arg(false)},
         .example = "show sessions"});
  t.add({.name = "show connections",
         .summary = "connections with their negotiated parameters (RFC 7143 13)",
         .options = {{"session", ArgType::kInt, "only this session id", false, true, "sessions"}},
         .example = "show connections 3"});
  t.add({.name = "show stats",
         .summary = "per-LU commands, IOPS, bytes and latency",
         .details = "IOPS and bandwidth are averaged over the interval since the previous\n"
                    "`show stats` on the same connection (or since zumad started).",
         .options = {{"lun", ArgType::kString, "only this LU (by name)", false, true, "luns"}},
         .example = "show stats"});
  t.add({.name = "show config",
         .summary = "the running configuration as YAML",
         .example = "show config"});

  // --- targets ---
  t.add({.name = "add target",
         .summary = "create a target with its first LU (no ACL: any initiator may log in)",
         .details = "A target always has at least one LU (as in the configuration file), so\n"
                    "the first one is created with it; add more with `add lun`.",
         .options = {{"target", ArgType::kString, "the new target's iSCSI name", true, true},
                     {"alias", ArgType::kString, "TargetAlias sent at login"},
                     {"name", ArgType::kString, "the first LU's name", true},
                     {"size", ArgType::kSize, "its capacity, e.g. 1GiB", true},
                     {"id", ArgType::kInt, "its LUN (default 0)"},
                     {"backend",
                      ArgType::kString,
                      "where the blocks live (default file)",
                      false,
                      false,
                      "",
                      {"file", "memory", "null"}},
                     {"path", ArgType::kString, "file or block device (file backend)"},
                     {"block-size", ArgType::kInt, "512 (default) or 4096"},
                     {"thin", ArgType::kFlag, "thin provisioned"}},
         .example = "add target iqn.2026-11.org.zuma:db --name db0 --size 10GiB "
                    "--path /srv/zuma/db0.img --thin"});
  t.add({.name = "remove target",
         .summary = "delete a target; refused while sessions use it unless --force",
         .options = {target_arg(), {"force", ArgType::kFlag, "close its sessions"}},
         .example = "remove target iqn.2026-11.org.zuma:db --force"});

  // --- LUs ---
  t.add({.name = "add lun",
         .summary = "create a logical unit and present it under a target",
         .details = "The LU is opened (a missing file is created sparse) and appears in REPORT\n"
                    "LUNS of every session of the target, which get REPORTED LUNS DATA HAS\n"
                    "CHANGED (SPC-5, 3Fh/0Eh).",
         .options = {target_arg(),
                     {"id", ArgType::kInt, "LUN number, 0..16383", true},
                     {"name", ArgType::kString, "unique LU name", true},
                     {"size", ArgType::kSize, "capacity, e.g. 1GiB", true},
                     {"backend",
                      ArgType::kString,
                      "where the blocks live (default file)",
                      false,
                      false,
                      "",
                      {"file", "memory", "null"}},
                     {"path", ArgType::kString, "file or block device (file backend)"},
                     {"block-size", ArgType::kInt, "512 (default) or 4096"},
                     {"thin", ArgType::kFlag, "thin provisioned (UNMAP, LBPME)"}},
         .example = "add lun iqn.2026-11.org.zuma:db --id 2 --name scratch --size 1GiB "
                    "--path /srv/zuma/scratch.img --thin"});
  t.add({.name = "remove lun",
         .summary = "stop presenting a LU; refused while a session uses it unless --force",
         .options = {{"name", ArgType::kString, "the LU's name", true, true, "luns"},
                     {"force", ArgType::kFlag, "remove it even from sessions using it"}},
         .example = "remove lun scratch"});

  t.add({.name = "resize lun",
         .summary = "change a LU's capacity online; shrinking needs --shrink",
         .details = "Initiators keep running: every I_T nexus of the LU gets CAPACITY DATA HAS\n"
                    "CHANGED (SBC-4, 2Ah/09h) and READ CAPACITY reports the new size. File\n"
                    "backends grow their file (allocated now unless the LU is thin), memory\n"
                    "and null backends always can; concatenated, striped, remote iSCSI and\n"
                    "snapshot-layered LUs refuse. Shrinking loses the data beyond the new end\n"
                    "and is refused while a reservation is held on the LU. `config save`\n"
                    "writes the new size.",
         .options = {{"name", ArgType::kString, "the LU's name", true, true, "luns"},
                     {"size", ArgType::kSize, "the new capacity, a multiple of the block size",
                      true, true},
                     {"shrink", ArgType::kFlag, "allow a smaller size (data beyond it is lost)"}},
         .example = "resize lun data 30GiB"});

  t.add({.name = "copy lun",
         .summary = "copy a LU's data into another LU, in the background, with progress",
         .details = "The destination must have the source's block size and at least its\n"
                    "capacity; its data is replaced (the rest of it, beyond the source's\n"
                    "size, stays). The source stays online: for a consistent image of a LU\n"
                    "being written, copy an export of a snapshot of it. zumactl shows a\n"
                    "progress bar with rate and ETA; Ctrl-C or --background leaves the job\n"
                    "running (show jobs, watch job, cancel job).",
         .options = {{"source", ArgType::kString, "the LU to copy", true, true, "luns"},
                     {"destination", ArgType::kString, "the LU to write", true, true, "luns"},
                     {"force", ArgType::kFlag, "even if sessions use the destination"},
                     {"rate", ArgType::kSize, "at most this many bytes per second (default: as "
                                              "fast as the backends go)"},
                     {"background", ArgType::kFlag, "return at once, leave the job running"}},
         .example = "copy lun data-nightly scratch"});
  t.add({.name = "show jobs",
         .summary = "background jobs (copy lun): state, progress, rate",
         .example = "show jobs"});
  t.add({.name = "show job",
         .summary = "one job: state, bytes done of the total, seconds, rate, error",
         .options = {{"job", ArgType::kInt, "the job's id (show jobs)", true, true}},
         .example = "show job 3"});
  t.add({.name = "watch job",
         .summary = "show a job's progress bar until it ends (Ctrl-C leaves it running)",
         .options = {{"job", ArgType::kInt, "the job's id (show jobs)", true, true}},
         .example = "watch job 3"});
  t.add({.name = "cancel job",
         .summary = "stop a running job (what it copied so far stays)",
         .options = {{"job", ArgType::kInt, "the job's id (show jobs)", true, true}},
         .example = "cancel job 3"});

  // --- portals ---
  t.add({.name = "add portal",
         .summary = "listen on one more address",
         .options = {{"address", ArgType::kString, "\"IPv4:PORT\" or \"[IPv6]:PORT\"", true, true},
                     {"tpgt", ArgType::kInt, "target portal group tag (default 1)"}},
         .example = "add portal 127.0.0.1:3261"});
  t.add({.name = "remove portal",
         .summary = "stop listening on an address (sessions through it stay)",
         .options = {{"address", ArgType::kString, "as `show portals` lists it", true, true,
                      "portals"}},
         .example = "remove portal 127.0.0.1:3261"});

  // --- ACL and CHAP ---
  t.add({.name = "add acl",
         .summary = "allow an initiator to log in to a target",
         .details = "A target without ACL entries admits every initiator; the first entry\n"
                    "restricts it to the listed ones (sessions of others are closed).",
         .options = {target_arg(),
                     {"initiator", ArgType::kString, "the initiator's iSCSI name", true, true,
                      "initiators"},
                     {"networks", ArgType::kList, "source addresses allowed, ADDR/PREFIX,..."}},
         .example = "add acl iqn.2026-11.org.zuma:db iqn.1994-05.com.redhat:host1"});
  t.add({.name = "remove acl",
         .summary = "remove an initiator from a target's ACL (its sessions are closed)",
         .options = {target_arg(),
                     {"initiator", ArgType::kString, "the initiator's iSCSI name", true, true,
                      "initiators"}},
         .example = "remove acl iqn.2026-11.org.zuma:db iqn.1994-05.com.redhat:host1"});
  t.add({.name = "set chap",
         .summary = "require CHAP for new logins to a target (RFC 7143 12.1.3)",
         .options = {target_arg(),
                     {"user", ArgType::kString, "the name the initiator sends (CHAP_N)", true},
                     {"secret", ArgType::kString, "the initiator's secret, 12 to 255 bytes", true},
                     {"mutual-user", ArgType::kString, "mutual CHAP: the target's name"},
                     {"mutual-secret", ArgType::kString, "mutual CHAP: the target's secret"}},
         .example = "set chap iqn.2026-11.org.zuma:db --user host1 --secret 0123456789abcdef"});
  t.add({.name = "remove chap",
         .summary = "stop requiring CHAP for new logins to a target",
         .options = {target_arg()},
         .example = "remove chap iqn.2026-11.org.zuma:db"});

  // --- configuration, logging, sessions ---
  t.add({.name = "config reload",
         .summary = "apply the configuration file's changes without a restart",
         .details = "Reads the file zumad was started with, validates it and applies the\n"
                    "difference: new targets, LUs, portals, ACL and CHAP changes, log level.\n"
                    "Sessions of targets the change does not touch are not disturbed. Changes\n"
                    "to node.* (except log_level), iscsi.* and discovery.* need a restart and\n"
                    "are refused. Removing a LU a session uses needs --force.",
         .options = {{"force", ArgType::kFlag, "also remove LUs and targets sessions use"}},
         .example = "config reload"});
  t.add({.name = "config save",
         .summary = "write the running configuration back to the file",
         .details = "Writes atomically (temporary file, fsync, rename). The comment block at\n"
                    "the top of the file is kept; other comments are lost when the file\n"
                    "changes. Secrets read from files stay in their files (secret_file).",
         .options = {{"file", ArgType::kString, "another file to write (default: the one loaded)"}},
         .example = "config save"});
  t.add({.name = "log level",
         .summary = "show or set the log level",
         .options = {{"level",
                      ArgType::kString,
                      "the new level",
                      false,
                      true,
                      "log_levels",
                      {"trace", "debug", "info", "warn", "error", "critical", "off"}}},
         .example = "log level debug"});
  t.add({.name = "cluster status",
         .summary = "the nodes exporting shared LUs: port groups, ALUA states, leases",
         .details = "Each target port group the cluster knows (docs/DISTRIBUTED.md): its node,\n"
                    "whether the node holds a lease (live), its ALUA state and relative ports;\n"
                    "this node is marked, and shown unavailable while fenced (no etcd).",
         .example = "cluster status"});
  t.add({.name = "logout",
         .summary = "ask a session's initiator to log out (RFC 7143 11.9.1), then close it",
         .options = {{"session", ArgType::kInt, "the session id (show sessions)", true, true,
                      "sessions"}},
         .example = "logout 3"});
}

CommandTable standard_table() {
  CommandTable t;
  register_core_commands(t);
  snapshot::register_snapshot_commands(t);
  replication::register_replication_commands(t);
  return t;
}

}  // namespace zuma::admin
