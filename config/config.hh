// The zumad configuration as typed structs (DESIGN.md: config/). docs/CONFIG.md is the
// reference for every key.
#pragma once

#include <cstdint>
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

struct Node {
  std::string name = "zuma";
  std::string data_dir = "./var";  // LU identities, reservations, ... live here
  std::string control_socket;      // default: <data_dir>/zumad.sock
  unsigned reactors = 0;           // reactor threads; 0 = one per CPU
  std::string log_level = "info";  // trace debug info warn error critical off
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
  // Digests zumad accepts (RFC 7143 13.1); the initiator's order picks among them.
  bool header_digest_crc32c = true;
  bool header_digest_none = true;
  bool data_digest_crc32c = true;
  bool data_digest_none = true;
};

struct SubUnit {
  std::string backend;  // "file", "memory", "null"
  std::string path;     // file backend: path (relative paths are relative to the cwd)
  uint64_t size = 0;    // bytes; 0 = whatever of the LU's size the other sub-units leave
  Location loc;
};

struct Lun {
  uint64_t id = 0;      // LUN number 0..16383
  std::string name;     // unique across the config; names the LU's identity in data_dir
  uint64_t size = 0;    // bytes, a multiple of block_size
  uint32_t block_size = 512;
  bool thin = false;
  bool write_cache = true;
  std::vector<SubUnit> subunits;  // concatenated in order; sizes add up to `size`
  Location loc;
};

// CHAP credentials (RFC 7143 12.1.3). Secrets come from the YAML or from a file that is
// not world-readable; each 12 to 255 bytes.
struct Chap {
  std::string user;             // the name the initiator must send (CHAP_N)
  std::string secret;           // the initiator's secret
  std::string mutual_user;      // mutual CHAP: the name the target sends back; empty = one-way
  std::string mutual_secret;    // the target's secret, different from `secret`
  std::vector<std::string> algorithms;  // of MD5, SHA-1, SHA-256, SHA3-256; empty = all
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

struct Config {
  std::string path;  // the file it was loaded from
  Node node;
  std::vector<Portal> portals;
  Iscsi iscsi;
  Discovery discovery;
  std::vector<Target> targets;
};

// Loads and validates; throws ConfigError (never returns a partly valid Config).
Config load(const std::string& path);
// The same from text, `path` used only in messages.
Config parse(const std::string& text, const std::string& path);

// "1GiB" -> 1073741824. Accepts a plain integer (bytes) or an integer with one of
// B, KiB, MiB, GiB, TiB, K, M, G, T (binary). Returns nullopt on anything else.
std::optional<uint64_t> parse_size(const std::string& text);

// "10.0.0.0/8", "::1/128", or a bare address (/32, /128) -> (address text, prefix length);
// nullopt when malformed or the prefix is too long for the family.
std::optional<std::pair<std::string, unsigned>> parse_network(const std::string& text);

}  // namespace zuma::config
