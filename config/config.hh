// The zumad configuration as typed structs (DESIGN.md: config/). docs/CONFIG.md is the
// reference for every key.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace zuma::config {

// Where a value came from, for error messages: "file:line:column".
struct Location {
  std::string file;
  int line = 0;    // 1-based
  int column = 0;  // 1-based
  std::string str() const;
};

// Thrown by load() and parse(): what() is "FILE:LINE:COLUMN: KEY: message", one line.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(const Location& where, const std::string& key, const std::string& message);
  Location where;
  std::string key;  // dotted path, e.g. "targets[0].luns[1].size"
};

// TLS on replication links (docs/REPLICATION.md "TLS"): certificates (mutual TLS: each side
// presents `cert` and checks the other's against `ca`) or a TLS 1.3 pre-shared key. Files
// are read again for each connection, so rotated ones are used without a restart.
struct ReplicationTls {
  std::string cert, key, ca;  // PEM files: this side's certificate (chain), its key, the CA
  std::string peer_name;      // the name the peer's certificate must have (DNS SAN or CN); optional
  std::string psk_file;       // or a TLS 1.3 external PSK: 16..64 bytes from this file
  std::string psk_identity = "zuma-replication";
  Location loc;
  bool psk() const { return !psk_file.empty(); }
};

struct Node {
  std::string name = "zuma";
  std::string data_dir = "./var";  // LU identities, reservations, ... live here
  std::string control_socket;      // default: <data_dir>/zumad.sock
  unsigned reactors = 0;           // reactor threads; 0 = one per CPU
  std::string log_level = "info";  // trace debug info warn error critical off
  // Prometheus text endpoint "HOST:PORT" (a bare port means 127.0.0.1); empty = off.
  std::string metrics;
  // "HOST:PORT" where this node, as a secondary, accepts primaries' site links (groups
  // with role: secondary); empty = none.
  std::string replication_listen;
  // TLS on that listener; every primary's link must then use TLS too.
  std::optional<ReplicationTls> replication_tls;
};

struct Portal {
  std::string host;  // IPv4 literal, IPv6 literal (written "[::1]:3260" in YAML) or "0.0.0.0"
  uint16_t port = 3260;
  uint16_t tpgt = 1;  // target portal group tag
  Location loc;
};

// Target-side iSCSI limits and offers (RFC 7143 13). Defaults are zumad's.
struct Iscsi {
  uint32_t max_recv_data_segment_length = 262144;  // what zumad accepts (declared)
  uint32_t max_burst_length = 1048576;              // upper bound zumad negotiates
  uint32_t first_burst_length = 262144;
  bool immediate_data = true;
  bool initial_r2t = false;
  uint32_t max_outstanding_r2t = 8;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t max_connections = 1;
  uint32_t queue_depth = 128;   // commands per session (CmdSN window)
  uint32_t nop_in_interval = 0;  // seconds between NOP-In pings; 0 = off
  uint32_t nop_in_timeout = 30;  // seconds without an answer before the connection is dropped
  uint32_t login_timeout = 15;   // seconds a connection may take to finish login
  // Bytes of solicited WRITE data one connection may have asked for (R2T) and not yet
  // written: what a stalled initiator can pin (target::IscsiLimits::write_buffer_budget).
  uint64_t write_buffer_budget = 32ull << 20;
  // Digests zumad accepts (RFC 7143 13.1); the initiator's order picks among them.
  bool header_digest_crc32c = true;
  bool header_digest_none = true;
  bool data_digest_crc32c = true;
  bool data_digest_none = true;
};

struct Chap;

struct SubUnit {
  std::string backend;  // "file", "memory", "null", "iscsi", "rbd"; "mirror" when `mirror` is set
  std::string path;     // file backend: path (relative paths are relative to the cwd)
  uint64_t size = 0;    // bytes; 0 = whatever of the LU's size the other sub-units leave
  Location loc;
  // backend iscsi (docs/DISTRIBUTED.md): iscsi://HOST[:PORT]/TARGET-IQN/LUN.
  std::string url;
  std::string initiator;           // our initiator name; empty: <node name>-derived default
  std::vector<Chap> chap;          // zero or one: CHAP credentials to log in with
  uint32_t timeout = 10;           // seconds a remote command may take before the session is reset
  std::vector<SubUnit> mirror;     // backend "mirror": its two members (each file/memory/iscsi/rbd)
  // backend rbd (docs/DISTRIBUTED.md): an existing image of a Ceph pool; `timeout` bounds
  // connecting and each operation.
  std::string pool, image;
  std::string user;       // cephx client id (client.<user>); empty: admin
  std::string keyring;    // keyring file; empty: as ceph.conf says
  std::string ceph_conf;  // ceph.conf; empty: librados' default search
  std::string mon_host;   // monitor addresses; empty: ceph.conf's
};

// Snapshots of one LU (issue 7): the store's data and metadata files, the chunk size and
// the schedules.
struct SnapshotSchedule {
  uint64_t every = 0;  // seconds between snapshots
  uint32_t keep = 0;   // scheduled snapshots kept (the oldest go first)
  std::string name;    // name prefix; snapshots are "<name>-<UTC time>"
  Location loc;
};

struct Snapshots {
  std::string data;        // file (or block device) holding the chunks written since snapshots
  std::string meta;        // metadata file (journal + checkpoints)
  uint64_t size = 0;       // bytes of `data`
  uint64_t meta_size = 0;  // bytes of `meta`; default: size / 128, at least 1MiB
  uint64_t chunk_size = 64 * 1024;
  uint32_t warn_fill = 90;  // percent of the space in use that logs a warning
  std::vector<SnapshotSchedule> schedules;
  Location loc;
};

// A LU that exports a snapshot (read-only) or a writable clone of another LU's snapshots.
struct LunSource {
  std::string lu;        // the LU with `snapshots`
  std::string snapshot;  // a snapshot of it (name or id): read-only export
  std::string clone;     // or a clone's name (created from `from` at start when missing)
  std::string from;      // the snapshot a new clone branches from
  Location loc;
};

struct Lun {
  uint64_t id = 0;      // LUN number 0..16383
  std::string name;     // unique across the config; names the LU's identity in data_dir
  uint64_t size = 0;    // bytes, a multiple of block_size
  uint32_t block_size = 512;
  uint32_t physical_block_size = 0;  // 0: block_size (LBPPBE 0)
  bool thin = false;
  bool write_cache = true;
  // Write protected: MODE SENSE WP=1, writes get DATA PROTECT 27h/00h. Always true for a
  // snapshot export (source.snapshot).
  bool read_only = false;
  std::vector<SubUnit> subunits;  // in order; concat: sizes add up to `size`
  Location loc;
  // "concat" (sub-units one after another) or "striped" (round robin in stripe_unit
  // pieces; equal sub-unit sizes adding up to `size` rounded up to a full stripe).
  std::string layout = "concat";
  uint64_t stripe_unit = 0;  // bytes, striped only: a power of two, a multiple of block_size
  // Snapshots of this LU (issue 7, docs/CONFIG.md "snapshots"); nullopt = none.
  std::optional<Snapshots> snapshots;
  // This LU exports a snapshot or a clone of another LU instead of sub-units.
  std::optional<LunSource> source;
  // Exported by several zumad nodes of the `cluster` (issue 9, docs/DISTRIBUTED.md): its
  // identity and reservations live in etcd, each node is one ALUA target port group.
  bool shared = false;
};

// CHAP credentials (RFC 7143 12.1.3). Secrets come from the YAML or from a file that is
// not world-readable; each 12 to 255 bytes.
struct Chap {
  std::string user;             // the name the initiator must send (CHAP_N)
  std::string secret;           // the initiator's secret
  std::string mutual_user;      // mutual CHAP: the name the target sends back; empty = one-way
  std::string mutual_secret;    // the target's secret, different from `secret`
  std::vector<std::string> algorithms;  // of MD5, SHA-1, SHA-256, SHA3-256; empty = all
  // Where secret / mutual_secret were read from (secret_file keys); empty = given inline.
  // `config save` writes these back instead of the secrets.
  std::string secret_file;
  std::string mutual_secret_file;
  Location loc;
};

struct Discovery {
  std::optional<Chap> chap;  // CHAP required for discovery sessions
};

// One entry of a target's ACL (issue: ACLs with LUN mapping).
struct AclEntry {
  std::string initiator;              // the initiator's iSCSI name
  std::vector<std::string> networks;  // "ADDR/PREFIX" (IPv4 or IPv6); empty = any address
  // LUN number -> LU name (an LU of this target); empty = the target's own numbering.
  std::vector<std::pair<uint64_t, std::string>> luns;
  Location loc;
};

struct Target {
  std::string iqn;
  std::string alias;
  std::optional<Chap> chap;      // CHAP required for this target's sessions
  std::vector<AclEntry> acl;     // initiators allowed; empty = any
  std::vector<Lun> luns;
  Location loc;
};

// A site link of a primary group (docs/REPLICATION.md "Site links").
struct ReplicationLink {
  std::string name;  // unique in its group; names the link's state file in data_dir
  std::string peer;  // "HOST:PORT": the secondary's node.replication_listen
  bool sync = false;  // mode: sync (writes wait for the peer) or async
  uint32_t sync_timeout_ms = 5000;  // a sync link stops holding writes after this wait
  // Fall-behind limits of an async link (0: no limit) and the policy past them
  // (docs/REPLICATION.md "Fall-behind"): "sync" holds writes until the peer has them
  // (each wait bounded by sync_timeout_ms), "block" holds them however long it takes.
  uint64_t fallbehind_ios = 0;
  uint64_t fallbehind_bytes = 0;
  uint32_t fallbehind_seconds = 0;
  std::string on_full = "sync";
  // Authentication (docs/REPLICATION.md "Authentication"): the secret this link and its
  // peer's group share (`secret` or `secret_file`; default: the group's). Empty: none, and
  // the peer must have none either.
  std::string secret;
  std::string secret_file;  // read again at each connection (rotation without a restart)
  std::optional<ReplicationTls> tls;
  // Bytes of LU data per second a resync over this link reads and sends at most (0: no
  // limit; docs/REPLICATION.md "Roles", **Rate**).
  uint64_t resync_rate = 0;
  Location loc;
};

// Bookmarks of a group taken on a schedule by its primary (docs/REPLICATION.md "Bookmarks"),
// as `snapshots.schedules` are for one LU.
struct BookmarkSchedule {
  uint64_t every = 0;  // seconds between bookmarks
  uint32_t keep = 0;   // bookmarks of this schedule kept (the oldest go first, on every site)
  std::string name;    // name prefix; bookmarks are "<name>-<UTC time>"
  Location loc;
};

// A replication consistency group (issue 8, docs/CONFIG.md "groups"): LUs whose writes
// are logged in one order. On a primary they are logged and shipped over the links; on a
// secondary the primary's records are applied to them, and they are read-only.
struct Group {
  std::string name;
  bool secondary = false;         // role: primary (default) or secondary
  std::vector<std::string> luns;  // LU names, in the group's order (same on both sides)
  std::string log_path;           // primary: the ring-buffer log
  uint64_t log_size = 0;
  std::vector<ReplicationLink> links;  // primary only
  // The secret a primary's link must prove to replicate into this group here (secondary
  // side), and the default of the group's own links. Empty: no authentication.
  std::string secret;
  std::string secret_file;
  std::vector<BookmarkSchedule> bookmarks;  // taken while primary; every LU has snapshots
  Location loc;
};

// The zumad nodes that export `shared` LUs together (issue 9, docs/DISTRIBUTED.md): their
// shared state lives in etcd under /zuma/<name>/.
struct Cluster {
  std::string name;                       // unique among the clusters of one etcd
  std::vector<std::string> etcd;          // "http://HOST:PORT" of each etcd member
  uint16_t port_group = 0;                // this node's target port group, unique in the cluster
  std::string alua = "active_optimized";  // or active_non_optimized, standby: the initial state
  uint32_t lease_ttl = 5;  // seconds a node's claims outlive its last contact with etcd
  Location loc;
};

struct Config {
  std::string path;  // the file it was loaded from
  Node node;
  std::optional<Cluster> cluster;
  std::vector<Portal> portals;
  Iscsi iscsi;
  Discovery discovery;
  std::vector<Target> targets;
  std::vector<Group> groups;
};

// The group holding LU `lu`, or nullptr.
const Group* group_of(const Config& config, const std::string& lu);

// Loads and validates; throws ConfigError (never returns a partly valid Config).
Config load(const std::string& path);
// The same from text, `path` used only in messages.
Config parse(const std::string& text, const std::string& path);

// A secret file (CHAP, replication): a regular file that is not world-readable, one
// trailing newline dropped, `min`..255 bytes. The secret, or why not (naming the file).
std::expected<std::string, std::string> read_secret_file(const std::string& path, size_t min = 12);

// "1GiB" -> 1073741824. Accepts a plain integer (bytes) or an integer with one of
// B, KiB, MiB, GiB, TiB, K, M, G, T (binary). Returns nullopt on anything else.
std::optional<uint64_t> parse_size(const std::string& text);

// --- Live reconfiguration (issue 6: zumactl config reload / config save) ---

// What changed between two configurations, by name (LUs by name, targets by iqn,
// portals by address).
struct ConfigDiff {
  std::vector<std::string> restart_needed;  // keys that cannot change live, e.g. "node.data_dir"
  bool log_level_changed = false;
  bool metrics_changed = false;
  std::vector<Portal> portals_added, portals_removed;
  std::vector<std::string> targets_added, targets_removed, targets_changed;
  std::vector<std::string> luns_added, luns_removed;
  // Same name, other definition (size, block size, sub-units, ...): replaced by a new LU.
  std::vector<std::string> luns_changed;
  // links[].resync_rate of a group otherwise unchanged: set on the running link.
  struct ResyncRate {
    std::string group, link;
    uint64_t rate = 0;  // bytes per second, 0: no limit
  };
  std::vector<ResyncRate> resync_rates_changed;
  bool empty() const;
  std::string summary() const;  // one line, e.g. "1 LU added, 1 target changed"
};
ConfigDiff diff(const Config& from, const Config& to);

// The configuration as YAML text that parse() reads back to an equal Config. Secrets read
// from files are written as their *_file keys. `header` (comment lines) goes first.
std::string to_yaml(const Config& config, const std::string& header = "");
// The comment block at the top of a YAML text (lines starting with '#', and blank lines,
// before the first other line).
std::string leading_comments(const std::string& text);
// "HOST:PORT" of a portal, IPv6 hosts in brackets.
std::string portal_address(const Portal& p);
// Equality of the parts a live change cares about (locations ignored).
bool same_lun(const Lun& a, const Lun& b);
bool same_target(const Target& a, const Target& b);
bool same_group(const Group& a, const Group& b);

// "10.0.0.0/8", "::1/128", or a bare address (/32, /128) -> (address text, prefix length);
// nullopt when malformed or the prefix is too long for the family.
std::optional<std::pair<std::string, unsigned>> parse_network(const std::string& text);

}  // namespace zuma::config
