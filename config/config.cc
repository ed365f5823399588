// YAML -> config::Config (config.hh), validated. The first problem found throws
// ConfigError naming the file, line, column and dotted key of the offending value.
// docs/CONFIG.md documents every key and check below; keep the two in step.
#include "config/config.hh"

#include <sys/stat.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <expected>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <string_view>
#include <system_error>
#include <utility>

namespace zuma::config {

std::string Location::str() const {
  if (line <= 0) return file;  // nothing read yet (e.g. the file cannot be opened)
  return fmt::format("{}:{}:{}", file, line, column);
}

namespace {

// Escapes control characters so that what() stays one line whatever the YAML holds.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string compose(const Location& where, const std::string& key, const std::string& message) {
  std::string s = printable(where.str());
  if (!key.empty()) s += ": " + printable(key);
  return s + ": " + printable(message);
}

}  // namespace

ConfigError::ConfigError(const Location& where, const std::string& key, const std::string& message)
    : std::runtime_error(compose(where, key, message)), where(where), key(key) {}

std::optional<std::pair<std::string, unsigned>> parse_network(const std::string& text) {
  const size_t slash = text.find('/');
  const std::string addr = text.substr(0, slash);
  const bool v6 = addr.find(':') != std::string::npos;
  unsigned char bytes[16];
  if (inet_pton(v6 ? AF_INET6 : AF_INET, addr.c_str(), bytes) != 1) return std::nullopt;
  const unsigned max = v6 ? 128 : 32;
  unsigned prefix = max;
  if (slash != std::string::npos) {
    const std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit)) return std::nullopt;
    prefix = unsigned(std::stoul(p));
    if (prefix > max) return std::nullopt;
  }
  return std::make_pair(addr, prefix);
}

std::expected<std::string, std::string> read_secret_file(const std::string& path, size_t min) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return std::unexpected(fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) return std::unexpected(fmt::format("'{}' is not a regular file", path));
  if (st.st_mode & S_IROTH)
    return std::unexpected(fmt::format("'{}' is world-readable; chmod o-r it (a secret)", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected(fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
  std::string secret(std::istreambuf_iterator<char>(in), {});
  // One trailing newline (LF or CRLF) is dropped, as for CHAP secrets (docs/CONFIG.md).
  if (secret.ends_with("\r\n"))
    secret.resize(secret.size() - 2);
  else if (secret.ends_with('\n'))
    secret.pop_back();
  if (secret.size() < min || secret.size() > 255)
    return std::unexpected(fmt::format("'{}': a secret needs {} to 255 bytes, this one has {}",
                                       path, min, secret.size()));
  return secret;
}

std::optional<uint64_t> parse_size(const std::string& text) {
  size_t i = 0;
  uint64_t value = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    const uint64_t digit = text[i] - '0';
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  if (i == 0) return std::nullopt;
  static constexpr std::pair<std::string_view, int> kSuffixes[] = {
      {"", 0},     {"B", 0},  {"K", 10},   {"KiB", 10}, {"M", 20},
      {"MiB", 20}, {"G", 30}, {"GiB", 30}, {"T", 40},   {"TiB", 40},
  };
  const std::string_view suffix = std::string_view(text).substr(i);
  for (const auto& [name, shift] : kSuffixes) {
    if (suffix != name) continue;
    if (value > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
    return value << shift;
  }
  return std::nullopt;
}

namespace {

constexpr uint64_t kMaxLunId = 16383;        // 14-bit LUN, SAM flat space addressing
constexpr size_t kMaxIscsiNameBytes = 223;   // RFC 7143 4.2.7 (RFC 3720 3.2.6)
constexpr size_t kMaxTextValueBytes = 255;   // RFC 7143 6.1: longest key=value value
constexpr size_t kMaxSocketPathBytes = 107;  // sizeof(sockaddr_un::sun_path) - NUL
constexpr uint32_t kMaxSegment = 16777215;   // 2^24 - 1, RFC 7143 13.12-13.14

// "1073741824 bytes (1GiB)": exact, and readable when it is a whole number of units.
std::string describe_size(uint64_t bytes) {
  static constexpr std::pair<const char*, int> kUnits[] = {
      {"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}};
  for (const auto& [unit, shift] : kUnits) {
    if (bytes >= (uint64_t{1} << shift) && bytes % (uint64_t{1} << shift) == 0) {
      return fmt::format("{} bytes ({}{})", bytes, bytes >> shift, unit);
    }
  }
  return fmt::format("{} bytes", bytes);
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Why `name` is not a valid iSCSI name (RFC 7143 4.2.7), or nullopt if it is.
// Only ASCII is accepted: RFC 3722 allows more after stringprep, which is not done here.
std::optional<std::string> iscsi_name_problem(std::string_view name) {
  if (name.empty()) return "it is empty";
  if (name.size() > kMaxIscsiNameBytes) {
    return fmt::format("it is {} bytes long, the limit is {}", name.size(), kMaxIscsiNameBytes);
  }
  const std::string_view type = name.substr(0, 4);
  if (type == "eui.") {  // RFC 7143 4.2.7.5: IEEE EUI-64 as 16 hex digits
    if (name.size() != 20 || !is_hex(name.substr(4)))
      return "eui. must be followed by 16 hex digits";
    return std::nullopt;
  }
  if (type == "naa.") {  // RFC 7143 4.2.7.6 (RFC 3980): 64- or 128-bit NAA as hex
    const std::string_view hex = name.substr(4);
    if ((hex.size() != 16 && hex.size() != 32) || !is_hex(hex)) {
      return "naa. must be followed by 16 or 32 hex digits";
    }
    return std::nullopt;
  }
  if (lowercase(type) == "eui." || lowercase(type) == "naa.") {
    return fmt::format("the type must be written in lowercase ({})", lowercase(type));
  }
  if (lowercase(type) != "iqn.") return "it must start with iqn., eui. or naa.";
  // RFC 7143 4.2.7.4: iqn.YYYY-MM.reversed.domain[:unique]. RFC 3722 maps names to
  // lowercase; of ASCII only a-z 0-9 - . : remain (RFC 7143 4.2.7.2).
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') return "iqn names must be lowercase";
  }
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':';
    if (static_cast<unsigned char>(c) >= 0x80) return "non-ASCII characters are not accepted";
    if (!ok) return fmt::format("character '{}' is not allowed (only a-z 0-9 - . :)", c);
  }
  constexpr std::string_view kShape = "expected iqn.YYYY-MM.reversed.domain[:name]";
  if (name.size() < 12 || !is_digits(name.substr(4, 4)) || name[8] != '-' ||
      !is_digits(name.substr(9, 2)) || name[11] != '.') {
    return fmt::format("{} (no YYYY-MM date after iqn.)", kShape);
  }
  const int month = (name[9] - '0') * 10 + (name[10] - '0');
  if (month < 1 || month > 12) return fmt::format("{} (month {:02} is not 01..12)", kShape, month);
  const size_t colon = name.find(':');
  const std::string_view domain =
      name.substr(12, colon == std::string_view::npos ? colon : colon - 12);
  size_t start = 0;
  while (true) {
    const size_t dot = domain.find('.', start);
    const std::string_view label =
        domain.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty()) return fmt::format("{} (empty domain label)", kShape);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (colon != std::string_view::npos && colon + 1 == name.size()) return "nothing after ':'";
  return std::nullopt;
}

// [A-Za-z0-9_.-]+, and not "." or "..": LU names name files in data_dir.
bool is_plain_name(std::string_view s) {
  if (s.empty() || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// Lowercase without '_' and '-', so that "MaxBurstLength" finds "max_burst_length".
std::string squash(std::string_view s) {
  std::string out;
  for (char c : lowercase(s)) {
    if (c != '_' && c != '-') out += c;
  }
  return out;
}

std::optional<std::string_view> closest_key(std::string_view typo,
                                            std::initializer_list<std::string_view> known) {
  std::optional<std::string_view> best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (std::string_view k : known) {
    const size_t d = std::min(edit_distance(typo, k), edit_distance(squash(typo), squash(k)));
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  const size_t allowed = best && best->size() <= 4 ? 1 : best && best->size() <= 8 ? 2 : 3;
  if (best_distance > allowed) return std::nullopt;
  return best;
}

// A portal address: "HOST:PORT" or "HOST", HOST an IPv4 literal or a bracketed IPv6 one.
struct Address {
  std::string host;  // without brackets
  uint16_t port = 3260;
  std::string identity;  // family + address bytes + port, for duplicate detection
};

std::expected<Address, std::string> parse_address(std::string_view text) {
  constexpr std::string_view kShape = "expected HOST:PORT, e.g. 127.0.0.1:3260 or [::1]:3260";
  if (text.empty()) return std::unexpected(std::string(kShape));
  Address a;
  std::string_view port;
  bool has_port = false;
  int family = AF_INET;
  if (text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos)
      return std::unexpected("missing ']' after the IPv6 address");
    a.host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return std::unexpected(std::string(kShape));
      port = rest.substr(1);
      has_port = true;
    }
    family = AF_INET6;
  } else {
    const size_t colons = std::count(text.begin(), text.end(), ':');
    if (colons > 1) return std::unexpected("write an IPv6 address in brackets, e.g. [::1]:3260");
    const size_t colon = text.find(':');
    a.host = text.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = text.substr(colon + 1);
      has_port = true;
    }
  }
  std::array<unsigned char, 16> bytes{};
  if (inet_pton(family, a.host.c_str(), bytes.data()) != 1) {
    if (family == AF_INET6)
      return std::unexpected(fmt::format("'{}' is not an IPv6 address", a.host));
    return std::unexpected(fmt::format(
        "'{}' is not an IPv4 address (host names are not accepted, give an address)", a.host));
  }
  if (has_port) {
    // At most 5 digits keeps the conversion below free of overflow.
    if (!is_digits(port) || port.size() > 5) return std::unexpected("the port must be 1..65535");
    unsigned value = 0;
    for (char c : port) value = value * 10 + (c - '0');
    if (value < 1 || value > 65535) return std::unexpected("the port must be 1..65535");
    a.port = static_cast<uint16_t>(value);
  }
  a.identity = fmt::format(
      "{}/{}/{}", family,
      std::string_view(reinterpret_cast<const char*>(bytes.data()), family == AF_INET6 ? 16 : 4),
      a.port);
  return a;
}

// One value in the document and where to blame it.
struct Item {
  YAML::Node node;
  YAML::Mark mark;   // of the value; of its key when the value is empty
  std::string path;  // dotted, e.g. "targets[0].luns[1].size"
};

// The entries of one YAML mapping, already checked against the keys it may hold.
struct Fields {
  Item self;
  std::vector<std::pair<std::string, Item>> entries;

  const Item* get(std::string_view key) const {
    for (const auto& [k, item] : entries) {
      if (k == key) return &item;
    }
    return nullptr;
  }
};

// A key that is recognised but not implemented, and what to tell the user.
struct Unsupported {
  std::string_view key;
  std::string_view message;
};

struct SeenAt {
  std::string owner;  // e.g. the LU using a file
  YAML::Mark mark;
};

std::string join_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : fmt::format("{}.{}", parent, key);
}

class Parser {
 public:
  Parser(const std::string& text, const std::string& file) : text_(text), file_(file) {}

  Config run() {
    Config config;
    config.path = file_;
    std::vector<YAML::Node> docs;
    try {
      docs = YAML::LoadAll(text_);
    } catch (const YAML::DeepRecursion& e) {  // its msg is an unhelpful "bad file"
      fail(e.mark, "", "invalid YAML: nested too deeply");
    } catch (const YAML::Exception& e) {  // ParserException and the rest
      fail(e.mark, "", "invalid YAML: " + e.msg);
    }
    if (docs.size() > 1) {
      fail(docs[1].Mark(), "", fmt::format("expected one YAML document, found {}", docs.size()));
    }
    if (docs.empty() || docs[0].IsNull()) {
      fail(YAML::Mark(), "", "the file is empty: it needs at least portals and targets");
    }
    const Item root{docs[0], docs[0].Mark(), ""};
    const Fields top =
        fields(root, {"node", "portals", "iscsi", "discovery", "targets", "groups", "cluster"});
    if (const Item* node = top.get("node")) parse_node(*node, config.node);
    if (config.node.control_socket.empty()) {
      std::string dir = config.node.data_dir;
      if (dir.size() > 1 && dir.back() == '/') dir.pop_back();
      config.node.control_socket = dir == "/" ? "/zumad.sock" : dir + "/zumad.sock";
      if (config.node.control_socket.size() > kMaxSocketPathBytes) {
        fail(data_dir_mark_, "node.data_dir",
             fmt::format("the default control socket '{}' would be longer than {} bytes "
                         "(a Unix socket path limit); set node.control_socket",
                         config.node.control_socket, kMaxSocketPathBytes));
      }
    }
    config.portals = parse_portals(require(top, "portals"));
    if (const Item* iscsi = top.get("iscsi")) parse_iscsi(*iscsi, config.iscsi);
    if (const Item* d = top.get("discovery")) {
      const Fields df = fields(*d, {"chap"}, {}, true);
      if (const Item* c = df.get("chap")) config.discovery.chap = parse_chap(*c);
    }
    config.targets = parse_targets(require(top, "targets"));
    check_sources(config);
    if (const Item* g = top.get("groups")) config.groups = parse_groups(*g, config);
    if (const Item* c = top.get("cluster")) config.cluster = parse_cluster(*c);
    check_shared(config);
    return config;
  }

 private:
  Location location(const YAML::Mark& m) const {
    if (m.is_null()) return Location{file_, 1, 1};
    return Location{file_, m.line + 1, m.column + 1};
  }

  [[noreturn]] void fail(const YAML::Mark& m, const std::string& path,
                         const std::string& message) const {
    throw ConfigError(location(m), path, message);
  }
  [[noreturn]] void fail(const Item& item, const std::string& message) const {
    fail(item.mark, item.path, message);
  }

  static std::string at(const YAML::Mark& m) {
    return fmt::format("line {}, column {}", m.line + 1, m.column + 1);
  }

  // `key:` and `key: null` both load as a null node; the source text tells them apart.
  bool written_null(const Item& item) const {
    if (!item.node.IsNull() || item.node.Mark().is_null()) return false;
    // yaml-cpp counts positions after a UTF-8 byte order mark.
    const size_t bom = std::string_view(text_).starts_with("\xef\xbb\xbf") ? 3 : 0;
    const size_t pos = bom + static_cast<size_t>(item.node.Mark().pos);
    if (pos >= text_.size()) return false;
    const std::string_view rest = std::string_view(text_).substr(pos);
    for (std::string_view word : {"null", "Null", "NULL", "~"}) {
      if (rest.starts_with(word)) return true;
    }
    return false;
  }

  Fields fields(const Item& item, std::initializer_list<std::string_view> known,
                std::initializer_list<Unsupported> unsupported = {},
                bool null_is_empty = false) const {
    Fields out{item, {}};
    if (null_is_empty && item.node.IsNull()) return out;
    if (!item.node.IsMap()) {
      std::string keys;
      for (std::string_view k : known) keys += (keys.empty() ? "" : ", ") + std::string(k);
      fail(item, "expected a mapping with keys " + keys);
    }
    std::map<std::string, YAML::Mark> seen;
    for (auto it = item.node.begin(); it != item.node.end(); ++it) {
      const YAML::Node key = it->first;  // a copy: `it->` yields a temporary
      if (!key.IsScalar()) fail(key.Mark(), item.path, "expected a key name");
      const std::string name = key.Scalar();
      const std::string path = join_path(item.path, name);
      for (const Unsupported& u : unsupported) {
        if (name == u.key) fail(key.Mark(), path, std::string(u.message));
      }
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        std::string message = fmt::format("unknown key '{}'", name);
        if (auto best = closest_key(name, known))
          message += fmt::format("; did you mean '{}'?", *best);
        fail(key.Mark(), path, message);
      }
      if (auto [first, inserted] = seen.emplace(name, key.Mark()); !inserted) {
        fail(key.Mark(), path,
             fmt::format("duplicate key '{}' (first at {})", name, at(first->second)));
      }
      const YAML::Node value = it->second;
      out.entries.emplace_back(name, Item{value, value.IsNull() ? key.Mark() : value.Mark(), path});
    }
    return out;
  }

  const Item& require(const Fields& f, std::string_view key) const {
    if (const Item* item = f.get(key)) return *item;
    fail(f.self.mark, f.self.path, fmt::format("missing key '{}'", key));
  }

  std::vector<Item> list(const Item& item, std::string_view what) const {
    if (!item.node.IsSequence()) fail(item, fmt::format("expected a list of {}", what));
    std::vector<Item> out;
    size_t i = 0;
    for (const YAML::Node& element : item.node) {
      out.push_back(Item{element, element.Mark(), fmt::format("{}[{}]", item.path, i++)});
    }
    return out;
  }

  std::string text(const Item& item, std::string_view expected = "expected a string") const {
    if (!item.node.IsScalar()) fail(item, std::string(expected));
    return item.node.Scalar();
  }

  uint64_t integer(const Item& item, uint64_t lo, uint64_t hi) const {
    const std::string message = fmt::format("expected an integer {}..{}", lo, hi);
    if (!item.node.IsScalar() || !is_digits(item.node.Scalar())) fail(item, message);
    uint64_t value = 0;
    for (char c : item.node.Scalar()) {
      const uint64_t digit = c - '0';
      if (digit > hi || value > (hi - digit) / 10) fail(item, message);  // value*10+digit > hi
      value = value * 10 + digit;
    }
    if (value < lo || value > hi) fail(item, message);
    return value;
  }

  bool boolean(const Item& item) const {
    // YAML 1.2 core schema spellings only; yes/no/on/off are YAML 1.1 and ambiguous.
    if (item.node.IsScalar()) {
      const std::string& s = item.node.Scalar();
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
    }
    fail(item, "expected true or false");
  }

  uint64_t size(const Item& item) const {
    std::optional<uint64_t> value;
    if (item.node.IsScalar()) value = parse_size(item.node.Scalar());
    if (!value) fail(item, "expected a size like 1GiB");
    return *value;
  }

  std::string plain_name(const Item& item) const {
    const std::string s = text(item);
    if (s.empty()) fail(item, "expected a name, got an empty string");
    if (!is_plain_name(s)) {
      fail(item, fmt::format("'{}' is not a valid name (use letters, digits, '_', '.', '-')", s));
    }
    return s;
  }

  std::string iscsi_name(const Item& item) const {
    const std::string s = text(item, "expected an iSCSI name like iqn.2026-11.org.example:disk");
    if (auto problem = iscsi_name_problem(s)) {
      fail(item, fmt::format("'{}' is not a valid iSCSI name: {}", s, *problem));
    }
    return s;
  }

  void parse_node(const Item& item, Node& node) {
    const Fields f = fields(item,
                            {"name", "data_dir", "control_socket", "reactors", "log_level",
                             "metrics", "replication_listen", "replication_tls"},
                            {}, true);
    if (const Item* v = f.get("name")) node.name = plain_name(*v);
    if (const Item* v = f.get("data_dir")) {
      node.data_dir = text(*v);
      if (node.data_dir.empty()) fail(*v, "expected a directory, got an empty string");
      data_dir_mark_ = v->mark;
    }
    if (const Item* v = f.get("control_socket")) {
      node.control_socket = text(*v);
      if (node.control_socket.empty()) fail(*v, "expected a path, got an empty string");
      if (node.control_socket.size() > kMaxSocketPathBytes) {
        fail(*v, fmt::format("longer than {} bytes, the limit of a Unix socket path",
                             kMaxSocketPathBytes));
      }
    }
    if (const Item* v = f.get("reactors"))
      node.reactors = static_cast<unsigned>(integer(*v, 0, 256));
    if (const Item* v = f.get("log_level")) {
      // spdlog's level names; "warning" is spdlog's long spelling of "warn".
      std::string level = text(*v);
      if (level == "warning") level = "warn";
      static constexpr std::string_view kLevels[] = {"trace", "debug",    "info", "warn",
                                                     "error", "critical", "off"};
      if (std::find(std::begin(kLevels), std::end(kLevels), level) == std::end(kLevels)) {
        fail(*v, "expected one of trace, debug, info, warn, error, critical, off");
      }
      node.log_level = level;
    }
    if (const Item* v = f.get("metrics")) {
      // Off when empty; a bare port listens on loopback only (docs/CONFIG.md).
      std::string m = text(*v);
      if (!m.empty() && is_digits(m)) m = "127.0.0.1:" + m;
      if (!m.empty()) {
        auto a = parse_address(m);
        if (!a) fail(*v, fmt::format("invalid metrics address '{}': {}", m, a.error()));
        if (m.find(':') == std::string::npos || m.back() == ']')
          fail(*v, fmt::format("give the metrics port too, e.g. \"127.0.0.1:9460\""));
      }
      node.metrics = m;
    }
    if (const Item* v = f.get("replication_listen")) {
      const std::string a = text(*v);
      auto parsed = parse_address(a);
      if (!parsed) fail(*v, fmt::format("invalid address '{}': {}", a, parsed.error()));
      if (a.find(':') == std::string::npos || a.back() == ']')
        fail(*v, "give the port too, e.g. \"127.0.0.1:3270\"");
      node.replication_listen = a;
    }
    if (const Item* v = f.get("replication_tls")) {
      if (node.replication_listen.empty())
        fail(*v, "replication_tls needs node.replication_listen (the listener it secures)");
      node.replication_tls = parse_tls(*v, true);
    }
  }

  // A replication secret (docs/REPLICATION.md "Authentication"): `secret` or `secret_file`
  // (at most one), 12..255 bytes; the file's path is kept too (read again at each
  // connection). Neither: "".
  void replication_secret(const Fields& f, std::string* secret, std::string* file) const {
    const Item* inline_secret = f.get("secret");
    const Item* path = f.get("secret_file");
    if (inline_secret && path) fail(*path, "give either secret or secret_file, not both");
    if (inline_secret) {
      *secret = text(*inline_secret);
      if (secret->size() < 12 || secret->size() > kMaxTextValueBytes)
        fail(*inline_secret,
             fmt::format("a replication secret needs 12 to {} bytes, this one has {}",
                         kMaxTextValueBytes, secret->size()));
    } else if (path) {
      *file = text(*path);
      auto r = read_secret_file(*file);
      if (!r) fail(*path, r.error());
      *secret = *r;
    }
  }

  // tls: {cert, key, ca, peer_name} or {psk_file, psk_identity} (docs/CONFIG.md "groups").
  // The files are checked here as zumad will use them: the certificate and key parse and
  // match, the CA file holds certificates, key and PSK files are not world-readable.
  ReplicationTls parse_tls(const Item& item, bool listener) const {
    const Fields f = fields(item, {"cert", "key", "ca", "peer_name", "psk_file", "psk_identity"});
    ReplicationTls t;
    t.loc = location(item.mark);
    const Item* psk = f.get("psk_file");
    const Item* cert = f.get("cert");
    if (psk) {
      for (const char* k : {"cert", "key", "ca", "peer_name"})
        if (const Item* v = f.get(k))
          fail(*v,
               fmt::format("{} is for certificates; this tls uses psk_file (give one or the other)",
                           k));
      t.psk_file = text(*psk);
      auto r = read_secret_file(t.psk_file, 16);
      if (!r) fail(*psk, r.error());
      if (r->size() > 64)
        fail(*psk, fmt::format("'{}': a PSK may have at most 64 bytes", t.psk_file));
      if (const Item* v = f.get("psk_identity")) {
        t.psk_identity = text(*v);
        if (t.psk_identity.empty() || t.psk_identity.size() > 128)
          fail(*v, "expected an identity of 1 to 128 bytes");
      }
      return t;
    }
    if (const Item* v = f.get("psk_identity")) fail(*v, "psk_identity needs psk_file");
    if (!cert)
      fail(item, listener ? "give cert, key and ca (mutual TLS), or psk_file"
                          : "give cert, key and ca (mutual TLS), or psk_file");
    const Item& key = require(f, "key");
    const Item& ca = require(f, "ca");
    t.cert = text(*cert);
    t.key = text(key);
    t.ca = text(ca);
    if (const Item* v = f.get("peer_name")) {
      t.peer_name = text(*v);
      if (t.peer_name.empty()) fail(*v, "expected a name, got an empty string");
    }
    check_tls_files(t, *cert, key, ca);
    return t;
  }

  void check_tls_files(const ReplicationTls& t, const Item& cert_item, const Item& key_item,
                       const Item& ca_item) const {
    auto openssl_reason = [] {
      const unsigned long e = ERR_get_error();
      ERR_clear_error();
      const char* r = e ? ERR_reason_error_string(e) : nullptr;
      return std::string(r ? r : "not PEM");
    };
    auto open = [&](const std::string& path, const Item& where) {
      FILE* fp = std::fopen(path.c_str(), "r");
      if (!fp) fail(where, fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
      return std::unique_ptr<FILE, int (*)(FILE*)>(fp, &std::fclose);
    };
    std::unique_ptr<X509, void (*)(X509*)> x(nullptr, &X509_free);
    {
      auto fp = open(t.cert, cert_item);
      x.reset(PEM_read_X509(fp.get(), nullptr, nullptr, nullptr));
      if (!x)
        fail(cert_item,
             fmt::format("'{}' is not a PEM certificate ({})", t.cert, openssl_reason()));
    }
    struct stat st {};
    if (::stat(t.key.c_str(), &st) == 0 && (st.st_mode & S_IROTH))
      fail(key_item, fmt::format("'{}' is world-readable; chmod o-r it (a private key)", t.key));
    {
      auto fp = open(t.key, key_item);
      std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> k(
          PEM_read_PrivateKey(fp.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
      if (!k)
        fail(key_item, fmt::format("'{}' is not a PEM private key without a passphrase ({})", t.key,
                                   openssl_reason()));
      if (X509_check_private_key(x.get(), k.get()) != 1) {
        ERR_clear_error();
        fail(key_item, fmt::format("'{}' is not the key of the certificate '{}'", t.key, t.cert));
      }
    }
    {
      auto fp = open(t.ca, ca_item);
      std::unique_ptr<X509, void (*)(X509*)> c(PEM_read_X509(fp.get(), nullptr, nullptr, nullptr),
                                               &X509_free);
      if (!c)
        fail(ca_item, fmt::format("'{}' holds no PEM certificate ({})", t.ca, openssl_reason()));
    }
  }

  // cluster: the nodes that export `shared` LUs together (issue 9, docs/CONFIG.md "cluster").
  Cluster parse_cluster(const Item& item) {
    const Fields f = fields(item, {"name", "etcd", "port_group", "alua", "lease_ttl"});
    Cluster c;
    c.loc = location(item.mark);
    c.name = plain_name(require(f, "name"));
    const Item& etcd = require(f, "etcd");
    for (const Item& e : list(etcd, "etcd endpoints like [\"http://127.0.0.1:2379\"]")) {
      const std::string url = text(e);
      const std::string hp = url.starts_with("http://") ? url.substr(7) : "";
      if (hp.empty() || hp.find('/') != std::string::npos || hp.find(':') == std::string::npos)
        fail(e, fmt::format("expected an etcd client URL like \"http://127.0.0.1:2379\", got '{}'",
                            url));
      c.etcd.push_back(url);
    }
    if (c.etcd.empty()) fail(etcd, "give at least one etcd endpoint");
    const Item& pg = require(f, "port_group");
    c.port_group = static_cast<uint16_t>(integer(pg, 1, 65535));
    if (const Item* v = f.get("alua")) {
      c.alua = text(*v);
      if (c.alua != "active_optimized" && c.alua != "active_non_optimized" && c.alua != "standby")
        fail(*v, "expected one of active_optimized, active_non_optimized, standby");
    }
    if (const Item* v = f.get("lease_ttl")) {
      const uint64_t t = duration(*v);
      if (t < 2 || t > 300) fail(*v, "expected a lease time between 2s and 300s");
      c.lease_ttl = static_cast<uint32_t>(t);
    }
    return c;
  }

  // `shared: true` LUs need a cluster, and state that every node sees the same way: no
  // snapshots (their metadata lives in one zumad), no replication group, no source export.
  void check_shared(const Config& config) {
    for (const auto& t : config.targets)
      for (const auto& l : t.luns) {
        if (!l.shared) continue;
        const auto& [m, key] = shared_keys_.at(l.name);
        if (!config.cluster)
          fail(m, key, "a shared LU needs a `cluster:` section (etcd endpoints, port_group)");
        if (l.snapshots)
          fail(m, key, "a shared LU cannot have snapshots: their metadata lives in one node");
        if (l.source) fail(m, key, "a snapshot or clone export cannot be shared");
        if (group_of(config, l.name)) fail(m, key, "a shared LU cannot be in a replication group");
      }
  }

  // groups: replication consistency groups (issue 8, docs/CONFIG.md "groups"). After the
  // targets: every member is a LU defined there.
  std::vector<Group> parse_groups(const Item& item, const Config& config) {
    std::map<std::string, const Lun*> lus;
    for (const auto& t : config.targets)
      for (const auto& l : t.luns) lus[l.name] = &l;
    std::vector<Group> groups;
    std::map<std::string, YAML::Mark> names;
    std::map<std::string, std::pair<std::string, YAML::Mark>> members;  // LU -> group, where
    for (const Item& entry : list(item, "groups like {name: db, luns: [data], log: {...}}")) {
      const Fields f = fields(
          entry, {"name", "role", "luns", "log", "links", "secret", "secret_file", "bookmarks"});
      Group g;
      g.loc = location(entry.mark);
      const Item& name = require(f, "name");
      g.name = plain_name(name);
      if (auto [first, inserted] = names.emplace(g.name, name.mark); !inserted)
        fail(name, fmt::format("duplicate group '{}' (first at {})", g.name, at(first->second)));
      if (const Item* v = f.get("role")) {
        const std::string role = text(*v);
        if (role != "primary" && role != "secondary") fail(*v, "expected primary or secondary");
        g.secondary = role == "secondary";
        if (g.secondary && config.node.replication_listen.empty())
          fail(*v, "a secondary group needs node.replication_listen (where its primary connects)");
      }
      const Item& luns = require(f, "luns");
      const std::vector<Item> lu_items = list(luns, "LU names");
      if (lu_items.empty()) fail(luns, "a group needs at least one LU");
      for (const Item& l : lu_items) {
        const std::string lu = plain_name(l);
        auto it = lus.find(lu);
        if (it == lus.end()) fail(l, fmt::format("'{}' is not a LU of any target", lu));
        if (it->second->source)
          fail(l, fmt::format("LU '{}' exports a snapshot or clone; only LUs with sub-units "
                              "can be replicated", lu));
        if (auto [first, inserted] = members.emplace(lu, std::make_pair(g.name, l.mark)); !inserted)
          fail(l, fmt::format("LU '{}' is already in group '{}' (at {})", lu, first->second.first,
                              at(first->second.second)));
        g.luns.push_back(lu);
      }
      replication_secret(f, &g.secret, &g.secret_file);
      const Item* log = f.get("log");
      const Item* links = f.get("links");
      // A secondary group's log and links are what it uses once promoted (docs/REPLICATION.md
      // "Roles"); without a log it cannot be promoted.
      if (g.secondary && !log) {
        if (links)
          fail(*links, "a secondary group's links are used once it is promoted, which needs a log");
        if (const Item* b = f.get("bookmarks"))
          fail(*b, "bookmarks are taken while the group is primary, which needs a log");
        groups.push_back(std::move(g));
        continue;
      }
      parse_group_log(require(f, "log"), g);
      if (links) {
        std::map<std::string, YAML::Mark> link_names;
        for (const Item& le : list(*links, "links like {name: dr, peer: \"127.0.0.1:3270\", mode: async}")) {
          const Fields lf = fields(le, {"name", "peer", "mode", "sync_timeout_ms", "fallbehind",
                                        "on_full", "secret", "secret_file", "tls", "resync_rate"});
          ReplicationLink link;
          link.loc = location(le.mark);
          const Item& ln = require(lf, "name");
          link.name = plain_name(ln);
          if (auto [first, inserted] = link_names.emplace(link.name, ln.mark); !inserted)
            fail(ln, fmt::format("duplicate link '{}' (first at {})", link.name, at(first->second)));
          const Item& peer = require(lf, "peer");
          link.peer = text(peer);
          auto parsed = parse_address(link.peer);
          if (!parsed) fail(peer, fmt::format("invalid peer '{}': {}", link.peer, parsed.error()));
          if (link.peer.find(':') == std::string::npos || link.peer.back() == ']')
            fail(peer, "give the peer's port too, e.g. \"127.0.0.1:3270\"");
          const Item& mode = require(lf, "mode");
          const std::string m = text(mode);
          if (m != "sync" && m != "async") fail(mode, "expected sync or async");
          link.sync = m == "sync";
          // A sync link's wait, or the wait of an async link's `on_full: sync` policy.
          const Item* fb = lf.get("fallbehind");
          if (const Item* v = lf.get("sync_timeout_ms")) {
            if (!link.sync && !fb)
              fail(*v, "sync_timeout_ms applies to mode: sync, or to an async link's fallbehind");
            link.sync_timeout_ms = static_cast<uint32_t>(integer(*v, 10, 600000));
          }
          if (fb) {
            // docs/REPLICATION.md "Fall-behind": limits of an async link's lag.
            if (link.sync)
              fail(*fb, "fallbehind applies to mode: async (a sync link never falls behind)");
            const Fields ff = fields(*fb, {"ios", "bytes", "seconds"});
            if (const Item* v = ff.get("ios")) link.fallbehind_ios = integer(*v, 1, 1ull << 40);
            if (const Item* v = ff.get("bytes")) link.fallbehind_bytes = size(*v);
            if (const Item* v = ff.get("seconds")) {
              link.fallbehind_seconds = static_cast<uint32_t>(duration(*v));
              if (link.fallbehind_seconds == 0) fail(*v, "expected at least 1 second");
            }
            if (!link.fallbehind_ios && !link.fallbehind_bytes && !link.fallbehind_seconds)
              fail(*fb, "give at least one of ios, bytes, seconds");
          }
          if (const Item* v = lf.get("on_full")) {
            if (!fb) fail(*v, "on_full needs fallbehind limits on this link");
            const std::string p = text(*v);
            if (p != "sync" && p != "block" && p != "bitmap")
              fail(*v, "expected sync, block or bitmap");
            link.on_full = p;
          }
          // Without its own, a link uses the group's secret (a pair of sites that can each be
          // primary then shares one secret per group).
          replication_secret(lf, &link.secret, &link.secret_file);
          if (link.secret.empty()) {
            link.secret = g.secret;
            link.secret_file = g.secret_file;
          }
          if (const Item* v = lf.get("tls")) link.tls = parse_tls(*v, false);
          if (const Item* v = lf.get("resync_rate")) {
            // A size per second ("200MiB"); below 1 MiB a resync of any real LU would take days.
            link.resync_rate = size(*v);
            if (link.resync_rate < (1u << 20))
              fail(*v, "expected at least 1MiB (bytes per second, e.g. resync_rate: 200MiB)");
          }
          g.links.push_back(std::move(link));
        }
      }
      if (const Item* b = f.get("bookmarks")) parse_bookmarks(*b, g, lus);
      groups.push_back(std::move(g));
    }
    return groups;
  }

  // bookmarks: [{every, keep, name}]: scheduled bookmarks of a group (docs/REPLICATION.md
  // "Bookmarks"), the keys of a LU's snapshots.schedules.
  void parse_bookmarks(const Item& item, Group& g, const std::map<std::string, const Lun*>& lus) {
    std::map<std::string, YAML::Mark> names;
    for (const Item& e : list(item, "bookmarks like [{every: 15m, keep: 24, name: quarter}]")) {
      const Fields ef = fields(e, {"every", "keep", "name"});
      BookmarkSchedule b;
      b.loc = location(e.mark);
      const Item& every = require(ef, "every");
      b.every = duration(every);
      if (b.every < 1) fail(every, "expected at least 1s");
      b.keep = static_cast<uint32_t>(integer(require(ef, "keep"), 1, 100000));
      b.name = ef.get("name") ? plain_name(*ef.get("name")) : fmt::format("bookmark-{}", b.every);
      if (auto [first, inserted] = names.emplace(b.name, e.mark); !inserted)
        fail(e, fmt::format("two bookmark schedules named '{}' (first at {}); give each a name",
                            b.name, at(first->second)));
      // Retention deletes by name prefix: it must not meet a LU's own scheduled snapshots.
      for (const auto& lu : g.luns) {
        const Lun& l = *lus.at(lu);
        if (!l.snapshots)
          fail(item,
               fmt::format("LU '{}' of the group has no snapshots: a bookmark snapshots every "
                           "LU of the group",
                           lu));
        for (const auto& sch : l.snapshots->schedules)
          if (sch.name == b.name)
            fail(ef.get("name") ? *ef.get("name") : e,
                 fmt::format("LU '{}' has a snapshot schedule named '{}' too (at line {}, column "
                             "{}): retention would delete the other's snapshots",
                             lu, b.name, sch.loc.line, sch.loc.column));
      }
      g.bookmarks.push_back(std::move(b));
    }
  }

  // log: {path, size}: the group's ring-buffer log (docs/REPLICATION.md "The log").
  void parse_group_log(const Item& item, Group& g) {
    const Fields f = fields(item, {"path", "size"});
    const Item& path = require(f, "path");
    g.log_path = text(path);
    if (g.log_path.empty()) fail(path, "expected a path, got an empty string");
    std::error_code ec;
    std::filesystem::path full = std::filesystem::absolute(g.log_path, ec);
    if (ec) full = g.log_path;
    const auto [first, inserted] = file_users_.emplace(
        full.lexically_normal().string(), SeenAt{fmt::format("group {}", g.name), path.mark});
    if (!inserted)
      fail(path, fmt::format("file '{}' is already used by {} (at {})", g.log_path,
                             first->second.owner.starts_with("group ")
                                 ? first->second.owner
                                 : "LU '" + first->second.owner + "'",
                             at(first->second.mark)));
    const Item& sz = require(f, "size");
    g.log_size = size(sz);
    // A write is one record of the log: the largest one a LU takes (MAXIMUM TRANSFER
    // LENGTH, 8 MiB: scsi/logical_unit.hh kMaxTransferBytes) must fit, with room to spare.
    constexpr uint64_t kMinLog = 16 << 20, kMaxLog = 1ull << 40;
    if (g.log_size < kMinLog || g.log_size > kMaxLog)
      fail(sz, fmt::format("expected a size from 16MiB to 1TiB (a log holds at least two of the "
                           "largest writes, 8MiB), got {}",
                           describe_size(g.log_size)));
  }

  std::vector<Portal> parse_portals(const Item& item) const {
    const std::vector<Item> items = list(item, "portals like \"127.0.0.1:3260\"");
    if (items.empty()) fail(item, "at least one portal is needed");
    std::vector<Portal> portals;
    std::map<std::string, YAML::Mark> seen;
    for (const Item& entry : items) {
      Portal portal;
      portal.loc = location(entry.mark);
      Item address = entry;
      if (entry.node.IsMap()) {
        const Fields f = fields(entry, {"address", "tpgt"});
        address = require(f, "address");
        // RFC 7143 13.9: a 16-bit tag; zumad reserves 0.
        if (const Item* tpgt = f.get("tpgt"))
          portal.tpgt = static_cast<uint16_t>(integer(*tpgt, 1, 65535));
      }
      const std::string s =
          text(address, "expected \"HOST:PORT\" or a mapping {address: \"HOST:PORT\", tpgt: N}");
      auto parsed = parse_address(s);
      if (!parsed) fail(address, fmt::format("invalid portal '{}': {}", s, parsed.error()));
      if (auto [first, inserted] = seen.emplace(parsed->identity, address.mark); !inserted) {
        fail(address, fmt::format("duplicate portal '{}' (first at {})", s, at(first->second)));
      }
      portal.host = parsed->host;
      portal.port = parsed->port;
      portals.push_back(std::move(portal));
    }
    return portals;
  }

  void parse_iscsi(const Item& item, Iscsi& iscsi) const {
    struct Range {
      std::string_view key;
      uint32_t Iscsi::*field;
      uint32_t lo, hi;
    };
    static constexpr Range kRanges[] = {
        {"max_recv_data_segment_length", &Iscsi::max_recv_data_segment_length, 512,
         kMaxSegment},                                                         // 13.12
        {"max_burst_length", &Iscsi::max_burst_length, 512, kMaxSegment},      // RFC 7143 13.13
        {"first_burst_length", &Iscsi::first_burst_length, 512, kMaxSegment},  // RFC 7143 13.14
        {"max_outstanding_r2t", &Iscsi::max_outstanding_r2t, 1, 65535},        // RFC 7143 13.17
        {"default_time2wait", &Iscsi::default_time2wait, 0, 3600},             // RFC 7143 13.15
        {"default_time2retain", &Iscsi::default_time2retain, 0, 3600},         // RFC 7143 13.16
        {"max_connections", &Iscsi::max_connections, 1, 65535},                // RFC 7143 13.2
        {"queue_depth", &Iscsi::queue_depth, 1, 4096},                         // zumad's limit
        {"nop_in_interval", &Iscsi::nop_in_interval, 0, 3600},
        {"nop_in_timeout", &Iscsi::nop_in_timeout, 1, 3600},
        {"login_timeout", &Iscsi::login_timeout, 1, 3600},
    };
    const Fields f = fields(
        item,
        {"max_recv_data_segment_length", "max_burst_length", "first_burst_length", "immediate_data",
         "initial_r2t", "max_outstanding_r2t", "default_time2wait", "default_time2retain",
         "max_connections", "queue_depth", "nop_in_interval", "nop_in_timeout", "login_timeout",
         "header_digest", "data_digest", "write_buffer_budget"},
        {}, true);
    for (const Range& r : kRanges) {
      if (const Item* v = f.get(r.key))
        iscsi.*r.field = static_cast<uint32_t>(integer(*v, r.lo, r.hi));
    }
    if (const Item* v = f.get("write_buffer_budget")) {
      // At least one burst can always be asked for; the top keeps a typo (1TiB) from
      // turning the limit off.
      constexpr uint64_t kMinBudget = 1ull << 20, kMaxBudget = 64ull << 30;
      const uint64_t b = size(*v);
      if (b < kMinBudget || b > kMaxBudget)
        fail(*v, fmt::format("expected a size from 1MiB to 64GiB, got {} bytes", b));
      iscsi.write_buffer_budget = b;
    }
    if (const Item* v = f.get("immediate_data")) iscsi.immediate_data = boolean(*v);  // 13.11
    if (const Item* v = f.get("initial_r2t")) iscsi.initial_r2t = boolean(*v);        // 13.10
    // RFC 7143 13.1: HeaderDigest/DataDigest values zumad accepts, from CRC32C and None.
    auto digests = [&](const char* key, bool& crc32c, bool& none) {
      const Item* v = f.get(key);
      if (!v) return;
      crc32c = none = false;
      const std::vector<Item> values = list(*v, "digests (CRC32C, None)");
      if (values.empty()) fail(*v, "at least one of CRC32C and None is needed");
      for (const Item& d : values) {
        const std::string name = lowercase(text(d, "expected CRC32C or None"));
        if (name == "crc32c") {
          crc32c = true;
        } else if (name == "none") {
          none = true;
        } else {
          fail(d, fmt::format("unknown digest '{}': expected CRC32C or None", d.node.Scalar()));
        }
      }
    };
    digests("header_digest", iscsi.header_digest_crc32c, iscsi.header_digest_none);
    digests("data_digest", iscsi.data_digest_crc32c, iscsi.data_digest_none);
    // RFC 7143 13.14: FirstBurstLength MUST NOT exceed MaxBurstLength.
    if (iscsi.first_burst_length > iscsi.max_burst_length) {
      const Item* blame = f.get("first_burst_length");
      if (!blame) blame = f.get("max_burst_length");
      fail(*blame, fmt::format("first_burst_length {} is larger than max_burst_length {}",
                               iscsi.first_burst_length, iscsi.max_burst_length));
    }
    // A budget below one burst would stall every WRITE that needs an R2T.
    if (iscsi.write_buffer_budget < iscsi.max_burst_length) {
      const Item* blame = f.get("write_buffer_budget");
      if (!blame) blame = f.get("max_burst_length");
      fail(*blame, fmt::format("write_buffer_budget {} is smaller than max_burst_length {}",
                               iscsi.write_buffer_budget, iscsi.max_burst_length));
    }
  }

  std::vector<Target> parse_targets(const Item& item) {
    const std::vector<Item> items = list(item, "targets");
    if (items.empty()) fail(item, "at least one target is needed");
    std::vector<Target> targets;
    std::map<std::string, YAML::Mark> seen;
    for (const Item& entry : items) {
      const Fields f = fields(entry, {"iqn", "alias", "chap", "acl", "luns"});
      Target target;
      target.loc = location(entry.mark);
      const Item& iqn = require(f, "iqn");
      target.iqn = iscsi_name(iqn);
      // RFC 7143 4.2.7.1: names compare case-insensitively (eui./naa. hex may be either case).
      if (auto [first, inserted] = seen.emplace(lowercase(target.iqn), iqn.mark); !inserted) {
        fail(iqn,
             fmt::format("duplicate target '{}' (first at {})", target.iqn, at(first->second)));
      }
      if (const Item* v = f.get("alias")) {
        target.alias = text(*v);
        // RFC 7143 13.6, 6.1: TargetAlias is a text value of at most 255 bytes.
        if (target.alias.size() > kMaxTextValueBytes) {
          fail(*v, fmt::format("longer than {} bytes", kMaxTextValueBytes));
        }
        if (std::any_of(target.alias.begin(), target.alias.end(),
                        [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
          fail(*v, "control characters are not allowed");
        }
      }
      if (const Item* v = f.get("chap")) target.chap = parse_chap(*v);
      const Item* acl = f.get("acl");
      const Item& luns = require(f, "luns");
      const std::vector<Item> lun_items = list(luns, "LUNs");
      if (lun_items.empty()) fail(luns, "a target needs at least one LUN");
      std::map<uint64_t, YAML::Mark> ids;
      for (const Item& lun_item : lun_items) {
        Lun lun = parse_lun(lun_item, ids);
        target.luns.push_back(std::move(lun));
      }
      if (acl) target.acl = parse_acl(*acl, target);
      targets.push_back(std::move(target));
    }
    return targets;
  }

  // A secret given inline or by `*_file` (exactly one of them); RFC 7143 12.1.3 wants at
  // least 96 bits, and CHAP values are text of at most 255 bytes (6.1).
  std::string chap_secret(const Fields& f, const std::string& key, bool required) const {
    const Item* inline_secret = f.get(key);
    const Item* file = f.get(key + "_file");
    if (inline_secret && file) fail(*file, fmt::format("give either {} or {}_file, not both", key, key));
    if (!inline_secret && !file) {
      if (required) fail(f.self.mark, f.self.path, fmt::format("missing key '{}' (or '{}_file')", key, key));
      return {};
    }
    std::string secret;
    const Item& where = inline_secret ? *inline_secret : *file;
    if (inline_secret) {
      secret = text(*inline_secret);
    } else {
      const std::string path = text(*file);
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0)
        fail(*file, fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
      if (!S_ISREG(st.st_mode)) fail(*file, fmt::format("'{}' is not a regular file", path));
      if (st.st_mode & S_IROTH)
        fail(*file, fmt::format("'{}' is world-readable; chmod o-r it (a CHAP secret)", path));
      std::ifstream in(path, std::ios::binary);
      if (!in) fail(*file, fmt::format("cannot read '{}'", path));
      secret.assign(std::istreambuf_iterator<char>(in), {});
      // Exactly one trailing newline (LF or CRLF), as an editor or `echo` leaves it; any
      // other byte, a second newline included, is part of the secret (docs/CONFIG.md).
      if (secret.ends_with("\r\n"))
        secret.resize(secret.size() - 2);
      else if (secret.ends_with('\n'))
        secret.pop_back();
    }
    if (secret.size() < 12)
      fail(where, fmt::format("a CHAP secret needs at least 12 bytes (RFC 7143 12.1.3), this one has {}",
                              secret.size()));
    if (secret.size() > kMaxTextValueBytes)
      fail(where, fmt::format("a CHAP secret may have at most {} bytes", kMaxTextValueBytes));
    return secret;
  }

  Chap parse_chap(const Item& item) const {
    const Fields f = fields(item, {"user", "secret", "secret_file", "mutual_user", "mutual_secret",
                                   "mutual_secret_file", "algorithms"});
    Chap chap;
    chap.loc = location(item.mark);
    chap.user = text(require(f, "user"));
    if (chap.user.empty() || chap.user.size() > kMaxTextValueBytes)
      fail(require(f, "user"), "expected a name of 1 to 255 bytes");
    chap.secret = chap_secret(f, "secret", true);
    if (const Item* v = f.get("secret_file")) chap.secret_file = text(*v);
    if (const Item* v = f.get("mutual_secret_file")) chap.mutual_secret_file = text(*v);
    if (const Item* v = f.get("mutual_user")) {
      chap.mutual_user = text(*v);
      if (chap.mutual_user.empty() || chap.mutual_user.size() > kMaxTextValueBytes)
        fail(*v, "expected a name of 1 to 255 bytes");
      chap.mutual_secret = chap_secret(f, "mutual_secret", true);
      // The same secret in both directions would let a reflection attack succeed.
      if (chap.mutual_secret == chap.secret) {
        const Item* m = f.get("mutual_secret");
        if (!m) m = f.get("mutual_secret_file");
        fail(*m, "mutual_secret must differ from secret");
      }
    } else if (f.get("mutual_secret") || f.get("mutual_secret_file")) {
      const Item* m = f.get("mutual_secret");
      if (!m) m = f.get("mutual_secret_file");
      fail(*m, "mutual_secret needs mutual_user");
    }
    if (const Item* v = f.get("algorithms")) {
      const std::vector<Item> algs = list(*v, "CHAP algorithms (MD5, SHA-1, SHA-256, SHA3-256)");
      if (algs.empty()) fail(*v, "at least one algorithm is needed");
      for (const Item& a : algs) {
        std::string name = text(a);
        std::string upper = name;
        for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
        if (upper != "MD5" && upper != "SHA-1" && upper != "SHA-256" && upper != "SHA3-256")
          fail(a, fmt::format("unknown CHAP algorithm '{}': expected MD5, SHA-1, SHA-256 or SHA3-256",
                              name));
        chap.algorithms.push_back(upper);
      }
    }
    return chap;
  }

  // `acl:` entries: an initiator name, or {initiator, networks, luns} (docs/CONFIG.md).
  std::vector<AclEntry> parse_acl(const Item& item, const Target& target) const {
    std::vector<AclEntry> out;
    std::map<std::string, YAML::Mark> seen;
    for (const Item& entry : list(item, "initiator names (leave acl out to allow any initiator)")) {
      AclEntry e;
      e.loc = location(entry.mark);
      const Item* name_item = &entry;
      Fields f{entry, {}};
      if (entry.node.IsMap()) {
        f = fields(entry, {"initiator", "networks", "luns"});
        name_item = &require(f, "initiator");
      }
      e.initiator = iscsi_name(*name_item);
      if (auto [first, inserted] = seen.emplace(lowercase(e.initiator), name_item->mark); !inserted) {
        fail(*name_item, fmt::format("duplicate initiator '{}' (first at {})", e.initiator,
                                     at(first->second)));
      }
      if (const Item* nets = f.get("networks")) {
        const std::vector<Item> items = list(*nets, "networks like 192.0.2.0/24 or ::1/128");
        if (items.empty()) fail(*nets, "at least one network (leave networks out to allow any address)");
        for (const Item& n : items) {
          const std::string text = this->text(n);
          if (!parse_network(text))
            fail(n, fmt::format("'{}' is not a network: expected ADDRESS/PREFIX, e.g. "
                                "192.0.2.0/24 or fd00::/8", text));
          e.networks.push_back(text);
        }
      }
      if (const Item* luns = f.get("luns")) {
        // LUN number -> name of one of this target's LUs (SAM-5: a LUN is per I_T nexus).
        if (!luns->node.IsMap()) fail(*luns, "expected a mapping LUN: LU name, e.g. {0: data, 1: logs}");
        std::map<uint64_t, YAML::Mark> ids;
        for (auto it = luns->node.begin(); it != luns->node.end(); ++it) {
          const YAML::Node key = it->first, value = it->second;
          const Item key_item{key, key.Mark(), luns->path};
          const uint64_t lun = integer(key_item, 0, kMaxLunId);
          const std::string path = fmt::format("{}.{}", luns->path, lun);
          if (auto [first, inserted] = ids.emplace(lun, key.Mark()); !inserted)
            fail(key.Mark(), path, fmt::format("duplicate LUN {} (first at {})", lun, at(first->second)));
          const Item value_item{value, value.IsNull() ? key.Mark() : value.Mark(), path};
          const std::string lu = text(value_item, "expected the name of one of this target's LUs");
          const bool known = std::any_of(target.luns.begin(), target.luns.end(),
                                         [&](const Lun& l) { return l.name == lu; });
          if (!known) fail(value_item, fmt::format("'{}' is not an LU of target {}", lu, target.iqn));
          e.luns.emplace_back(lun, lu);
        }
        if (e.luns.empty()) fail(*luns, "at least one LUN (leave luns out to see all of them)");
      }
      out.push_back(std::move(e));
    }
    return out;
  }

  Lun parse_lun(const Item& item, std::map<uint64_t, YAML::Mark>& ids) {
    const Fields f =
        fields(item, {"id", "name", "size", "block_size", "physical_block_size", "thin",
                      "write_cache", "read_only", "subunits", "backend", "path", "layout",
                      "stripe_unit", "snapshots", "source", "shared"});
    Lun lun;
    lun.loc = location(item.mark);
    const Item& id = require(f, "id");
    lun.id = integer(id, 0, kMaxLunId);
    if (auto [first, inserted] = ids.emplace(lun.id, id.mark); !inserted) {
      fail(id, fmt::format("duplicate LUN id {} in this target (first at {})", lun.id,
                           at(first->second)));
    }
    const Item& name = require(f, "name");
    lun.name = plain_name(name);
    if (auto [first, inserted] = lu_names_.emplace(lun.name, name.mark); !inserted) {
      fail(name, fmt::format("duplicate LU name '{}' (first at {})", lun.name, at(first->second)));
    }
    if (const Item* v = f.get("block_size")) {
      const std::string s = v->node.IsScalar() ? v->node.Scalar() : "";
      if (s != "512" && s != "4096") fail(*v, "expected 512 or 4096");
      lun.block_size = s == "512" ? 512 : 4096;
    }
    if (const Item* v = f.get("physical_block_size")) {
      // SBC-4 READ CAPACITY (16): 2^LBPPBE logical blocks per physical block, 0..15.
      const uint64_t pbs = this->size(*v);
      if (pbs < lun.block_size || pbs % lun.block_size != 0 ||
          !std::has_single_bit(pbs / lun.block_size) || pbs / lun.block_size > (1u << 15)) {
        fail(*v, fmt::format("expected block_size ({}) times a power of two up to 32768",
                             lun.block_size));
      }
      lun.physical_block_size = uint32_t(pbs);
    }
    const Item& size = require(f, "size");
    lun.size = this->size(size);
    if (lun.size == 0) fail(size, "expected a size greater than 0");
    if (lun.size % lun.block_size != 0) {
      fail(size, fmt::format("{} is not a multiple of block_size {}", describe_size(lun.size),
                             lun.block_size));
    }
    if (const Item* v = f.get("thin")) lun.thin = boolean(*v);
    if (const Item* v = f.get("write_cache")) lun.write_cache = boolean(*v);
    if (const Item* v = f.get("read_only")) lun.read_only = boolean(*v);

    const Item* subunits = f.get("subunits");
    const Item* backend = f.get("backend");
    const Item* path = f.get("path");
    if (subunits) {
      if (backend || path) {
        fail(backend ? *backend : *path, "give either subunits or backend/path, not both");
      }
      const std::vector<Item> items = list(*subunits, "sub-units");
      if (items.empty()) fail(*subunits, "a LUN needs at least one sub-unit");
      std::vector<std::optional<Item>> sizes;  // as written; nullopt where left out
      for (const Item& sub : items) {
        const Fields sf =
            fields(sub, {"backend", "path", "size", "url", "initiator", "chap", "timeout", "mirror",
                         "pool", "image", "user", "keyring", "ceph_conf", "mon_host"});
        if (const Item* m = sf.get("mirror")) {
          lun.subunits.push_back(parse_mirror(sf, *m, lun.name, sub.mark));
        } else {
          lun.subunits.push_back(
              parse_subunit(sf, require(sf, "backend"), sf.get("path"), lun.name, sub.mark));
        }
        const Item* s = sf.get("size");
        sizes.push_back(s ? std::optional<Item>(*s) : std::nullopt);
      }
      if (parse_layout(f, lun)) {
        resolve_striped(*subunits, items, sizes, lun);
      } else {
        resolve_sizes(*subunits, items, sizes, lun);
      }
    } else if (backend) {
      // Shorthand: backend/path on the LUN itself is one sub-unit covering the whole LU.
      lun.subunits.push_back(parse_subunit(f, *backend, path, lun.name, backend->mark));
      lun.subunits.back().size = lun.size;
      if (parse_layout(f, lun)) {
        fail(*f.get("layout"), "a striped layout needs a list of subunits");
      }
    } else if (path) {
      fail(*path, "path needs a backend (backend: file)");
    } else if (!f.get("source")) {
      fail(item, "missing key 'subunits' (or backend and path for a single sub-unit)");
    }
    if (const Item* v = f.get("source")) {
      if (subunits || backend) fail(*v, "a LU with a source has no sub-units of its own");
      if (f.get("snapshots")) fail(*v, "a snapshot or clone export cannot have snapshots itself");
      lun.source = parse_source(*v, lun.name);
      if (!lun.source->snapshot.empty()) {
        // A snapshot's data never changes: its export is write protected.
        if (const Item* ro = f.get("read_only"); ro && !lun.read_only)
          fail(*ro, "a snapshot export is always read-only");
        lun.read_only = true;
      }
    }
    if (const Item* v = f.get("snapshots")) lun.snapshots = parse_snapshots(*v, lun);
    if (const Item* v = f.get("shared")) {
      lun.shared = boolean(*v);
      shared_keys_[lun.name] = {v->mark, v->path};
    }
    return lun;
  }

  // `snapshots:` of a LUN (issue 7, docs/CONFIG.md).
  Snapshots parse_snapshots(const Item& item, const Lun& lun) {
    const Fields f = fields(item, {"store", "chunk_size", "warn_fill", "schedules"});
    Snapshots s;
    s.loc = location(item.mark);
    const Item& store = require(f, "store");
    const Fields sf = fields(store, {"data", "meta", "size", "meta_size"});
    auto file = [&](const Item& v) {
      std::string p = text(v);
      if (p.empty()) fail(v, "expected a path, got an empty string");
      std::error_code ec;
      std::filesystem::path full = std::filesystem::absolute(p, ec);
      if (ec) full = p;
      const auto [first, inserted] =
          file_users_.emplace(full.lexically_normal().string(), SeenAt{lun.name, v.mark});
      if (!inserted)
        fail(v, fmt::format("file '{}' is already used by LU '{}' (at {})", p, first->second.owner,
                            at(first->second.mark)));
      return p;
    };
    s.data = file(require(sf, "data"));
    s.meta = file(require(sf, "meta"));
    if (const Item* v = f.get("chunk_size")) {
      s.chunk_size = size(*v);
      if (s.chunk_size < 4096 || s.chunk_size > (8u << 20) || (s.chunk_size & (s.chunk_size - 1)))
        fail(*v, "expected a power of two from 4KiB to 8MiB");
    }
    if (lun.size % s.chunk_size != 0)
      fail(f.get("chunk_size") ? *f.get("chunk_size") : item,
           fmt::format("the LU size {} is not a multiple of the chunk size {}",
                       describe_size(lun.size), describe_size(s.chunk_size)));
    const Item& sz = require(sf, "size");
    s.size = size(sz);
    if (s.size < s.chunk_size)
      fail(sz, fmt::format("expected at least one chunk ({})", describe_size(s.chunk_size)));
    s.meta_size = std::max<uint64_t>(1u << 20, s.size / 128);
    if (const Item* v = sf.get("meta_size")) {
      s.meta_size = size(*v);
      if (s.meta_size < (64u << 10)) fail(*v, "expected at least 64KiB");
    }
    if (const Item* v = f.get("warn_fill")) {
      std::string t = v->node.IsScalar() ? v->node.Scalar() : "";
      if (!t.empty() && t.back() == '%') t.pop_back();
      const Item n{YAML::Node(t), v->mark, v->path};
      s.warn_fill = static_cast<uint32_t>(integer(n, 1, 100));
    }
    if (const Item* v = f.get("schedules")) {
      std::map<std::string, YAML::Mark> names;
      for (const Item& e : list(*v, "schedules like {every: 15m, keep: 24}")) {
        const Fields ef = fields(e, {"every", "keep", "name"});
        SnapshotSchedule sch;
        sch.loc = location(e.mark);
        const Item& every = require(ef, "every");
        sch.every = duration(every);
        if (sch.every < 1) fail(every, "expected at least 1s");
        sch.keep = static_cast<uint32_t>(integer(require(ef, "keep"), 1, 100000));
        sch.name = ef.get("name") ? plain_name(*ef.get("name")) : fmt::format("auto-{}", sch.every);
        if (auto [first, inserted] = names.emplace(sch.name, e.mark); !inserted)
          fail(e, fmt::format("two schedules named '{}' (first at {}); give each a name",
                              sch.name, at(first->second)));
        s.schedules.push_back(std::move(sch));
      }
    }
    return s;
  }

  // "90s", "15m", "1h", "1d" or plain seconds.
  uint64_t duration(const Item& item) const {
    const std::string t = item.node.IsScalar() ? item.node.Scalar() : "";
    uint64_t mult = 1;
    std::string digits = t;
    if (!t.empty() && !std::isdigit(static_cast<unsigned char>(t.back()))) {
      switch (t.back()) {
        case 's': mult = 1; break;
        case 'm': mult = 60; break;
        case 'h': mult = 3600; break;
        case 'd': mult = 86400; break;
        default: fail(item, "expected a duration like 90s, 15m, 1h or 1d");
      }
      digits.pop_back();
    }
    if (digits.empty() || !is_digits(digits) || digits.size() > 9)
      fail(item, "expected a duration like 90s, 15m, 1h or 1d");
    return std::stoull(digits) * mult;
  }

  LunSource parse_source(const Item& item, const std::string& lu_name) {
    const Fields f = fields(item, {"lu", "snapshot", "clone", "from"});
    LunSource src;
    src.loc = location(item.mark);
    src.lu = plain_name(require(f, "lu"));
    const Item* snap = f.get("snapshot");
    const Item* clone = f.get("clone");
    if (!!snap == !!clone) fail(item, "give either snapshot (read-only) or clone (writable)");
    if (snap) src.snapshot = text(*snap);
    if (clone) {
      src.clone = plain_name(*clone);
      if (const Item* v = f.get("from")) src.from = text(*v);
    } else if (const Item* v = f.get("from")) {
      fail(*v, "from goes with clone");
    }
    source_items_.emplace(lu_name, item);
    return src;
  }

  // Every source names a LU with snapshots and the same size.
  void check_sources(const Config& config) const {
    std::map<std::string, const Lun*> by_name;
    for (const auto& t : config.targets)
      for (const auto& l : t.luns) by_name[l.name] = &l;
    for (const auto& t : config.targets)
      for (const auto& l : t.luns) {
        if (!l.source) continue;
        const Item* where = &source_items_.at(l.name);
        auto it = by_name.find(l.source->lu);
        if (it == by_name.end() || !it->second->snapshots)
          fail(*where, fmt::format("'{}' is not a LU with snapshots", l.source->lu));
        if (it->second->size != l.size || it->second->block_size != l.block_size)
          fail(*where, fmt::format("the size and block size must be those of '{}' ({}, {})",
                                   l.source->lu, describe_size(it->second->size),
                                   it->second->block_size));
      }
  }

  // `owner` is the mapping holding backend/path: the sub-unit's, or the LUN's (shorthand).
  SubUnit parse_subunit(const Fields& owner, const Item& backend, const Item* path,
                        const std::string& lu_name, const YAML::Mark& mark) {
    SubUnit su;
    su.loc = location(mark);
    su.backend =
        written_null(backend) ? "null" : text(backend, "expected file, memory, null, iscsi or rbd");
    if (su.backend != "file" && su.backend != "memory" && su.backend != "null" &&
        su.backend != "iscsi" && su.backend != "rbd") {
      fail(backend, su.backend == "mirror" ? "a mirror is written mirror: [member, member]"
                                           : "expected file, memory, null, iscsi or rbd");
    }
    parse_remote(owner, su);
    parse_rbd(owner, su, lu_name);
    if (su.backend == "file") {
      if (!path) fail(owner.self, "missing key 'path' (the file backend needs one)");
      su.path = text(*path);
      if (su.path.empty()) fail(*path, "expected a path, got an empty string");
      // Relative paths are relative to the cwd, so "./a.img" and "/cwd/a.img" collide.
      std::error_code ec;
      std::filesystem::path full = std::filesystem::absolute(su.path, ec);
      if (ec) full = su.path;
      const auto [first, inserted] =
          file_users_.emplace(full.lexically_normal().string(), SeenAt{lu_name, path->mark});
      if (!inserted) {
        fail(*path, fmt::format("file '{}' is already used by LU '{}' (at {})", su.path,
                                first->second.owner, at(first->second.mark)));
      }
    } else if (path) {
      fail(*path, fmt::format("the {} backend takes no path", su.backend));
    }
    return su;
  }

  // backend iscsi: url (iscsi://HOST[:PORT]/IQN/LUN), initiator, chap, timeout; other
  // backends take none of these but timeout, which rbd takes too (docs/DISTRIBUTED.md).
  void parse_remote(const Fields& owner, SubUnit& su) const {
    const bool remote = su.backend == "iscsi";
    for (std::string_view key : {"url", "initiator", "chap", "timeout"}) {
      if (key == "timeout" && su.backend == "rbd") continue;
      if (const Item* v = owner.get(key); v && !remote)
        fail(*v,
             fmt::format("the {} backend takes no {} (only {})", su.backend, key,
                         key == "timeout" ? "backends iscsi and rbd do" : "backend iscsi does"));
    }
    if (!remote) return;
    if (const Item* p = owner.get("path")) fail(*p, "the iscsi backend takes url, not path");
    const Item* url = owner.get("url");
    if (!url) fail(owner.self, "missing key 'url' (iscsi://HOST[:PORT]/TARGET-IQN/LUN)");
    su.url = text(*url);
    if (auto problem = iscsi_url_problem(su.url))
      fail(*url, fmt::format("'{}' is not an iSCSI URL: {}", su.url, *problem));
    if (const Item* v = owner.get("initiator")) su.initiator = iscsi_name(*v);
    if (const Item* v = owner.get("chap")) {
      Chap c = parse_chap(*v);
      if (!c.algorithms.empty())
        fail(*v, "algorithms does not apply to a remote sub-unit (the remote target offers them)");
      su.chap.push_back(std::move(c));
    }
    if (const Item* v = owner.get("timeout")) su.timeout = static_cast<uint32_t>(integer(*v, 1, 3600));
  }

  // backend rbd: pool and image (required), user, keyring, ceph_conf, mon_host, timeout;
  // other backends take none of these (docs/DISTRIBUTED.md "Ceph RBD sub-units").
  void parse_rbd(const Fields& owner, SubUnit& su, const std::string& lu_name) {
    const bool rbd = su.backend == "rbd";
    for (std::string_view key : {"pool", "image", "user", "keyring", "ceph_conf", "mon_host"}) {
      if (const Item* v = owner.get(key); v && !rbd)
        fail(*v,
             fmt::format("the {} backend takes no {} (only backend rbd does)", su.backend, key));
    }
    if (!rbd) return;
    if (const Item* p = owner.get("path"))
      fail(*p, "the rbd backend takes pool and image, not path");
    // Ceph names: pools and images are non-empty and hold no '/' or '@' (rbd's POOL/IMAGE@SNAP).
    const auto ceph_name = [&](std::string_view key) {
      const Item* v = owner.get(key);
      if (!v)
        fail(owner.self,
             fmt::format("missing key '{}' (the rbd backend needs pool and image)", key));
      std::string s = text(*v);
      if (s.empty() || s.find_first_of("/@ \t") != std::string::npos)
        fail(*v, fmt::format("expected a Ceph {} name (no '/', '@' or blanks)", key));
      return s;
    };
    su.pool = ceph_name("pool");
    su.image = ceph_name("image");
    if (const Item* v = owner.get("user")) {
      su.user = text(*v);
      if (su.user.empty() || su.user == "client.")
        fail(*v, "expected a cephx client id, e.g. zuma (client.zuma)");
    }
    const auto file = [&](std::string_view key, std::string& out) {
      if (const Item* v = owner.get(key)) {
        out = text(*v);
        if (out.empty()) fail(*v, "expected a path, got an empty string");
      }
    };
    file("keyring", su.keyring);
    file("ceph_conf", su.ceph_conf);
    if (const Item* v = owner.get("mon_host")) {
      su.mon_host = text(*v);
      if (su.mon_host.empty()) fail(*v, "expected monitor addresses, e.g. 10.0.0.1:6789");
    }
    if (const Item* v = owner.get("timeout"))
      su.timeout = static_cast<uint32_t>(integer(*v, 1, 3600));
    // Two sub-units on one image would overwrite each other (unless they are in different
    // clusters, which the cluster's config file or monitors tell apart).
    const std::string key =
        fmt::format("rbd:{}|{}|{}/{}", su.ceph_conf, su.mon_host, su.pool, su.image);
    const auto [first, inserted] =
        file_users_.emplace(key, SeenAt{lu_name, owner.get("image")->mark});
    if (!inserted) {
      fail(*owner.get("image"),
           fmt::format("image {}/{} is already used by LU '{}' (at {})", su.pool, su.image,
                       first->second.owner, at(first->second.mark)));
    }
  }

  // iscsi://HOST[:PORT]/IQN/LUN, HOST an IPv4 address, [IPv6] or a host name. Credentials
  // in the URL are refused: they belong under chap (secret_file keeps them out of the YAML).
  std::optional<std::string> iscsi_url_problem(const std::string& url) const {
    constexpr std::string_view kScheme = "iscsi://";
    if (!url.starts_with(kScheme)) return "expected iscsi://HOST[:PORT]/TARGET-IQN/LUN";
    const std::string rest = url.substr(kScheme.size());
    const size_t slash = rest.find('/');
    if (slash == std::string::npos || slash == 0) return "expected HOST[:PORT] after iscsi://";
    const std::string hostport = rest.substr(0, slash);
    if (hostport.find('@') != std::string::npos)
      return "credentials do not go in the URL; give them under chap";
    const size_t colon = hostport.rfind(':');
    if (colon != std::string::npos && hostport.find(']', colon) == std::string::npos) {
      const std::string port = hostport.substr(colon + 1);
      if (!is_digits(port) || port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535)
        return "the port must be 1..65535";
    }
    const std::string path = rest.substr(slash + 1);
    const size_t second = path.rfind('/');
    if (second == std::string::npos) return "expected /TARGET-IQN/LUN after the host";
    const std::string iqn = path.substr(0, second), lun = path.substr(second + 1);
    if (auto problem = iscsi_name_problem(iqn)) return "target name: " + *problem;
    if (!is_digits(lun) || lun.size() > 5 || std::stoul(lun) > kMaxLunId)
      return fmt::format("the LUN must be 0..{}", kMaxLunId);
    return std::nullopt;
  }

  // mirror: [member, member]: two backends holding the same data (docs/DISTRIBUTED.md).
  SubUnit parse_mirror(const Fields& owner, const Item& item, const std::string& lu_name,
                       const YAML::Mark& mark) {
    if (const Item* b = owner.get("backend")) {
      if (text(*b) != "mirror") fail(*b, "give either backend or mirror, not both");
    }
    for (std::string_view key : {"path", "url", "initiator", "chap", "timeout", "pool", "image",
                                 "user", "keyring", "ceph_conf", "mon_host"}) {
      if (const Item* v = owner.get(key))
        fail(*v, fmt::format("{} belongs to a mirror member, not to the mirror", key));
    }
    SubUnit su;
    su.loc = location(mark);
    su.backend = "mirror";
    const std::vector<Item> members = list(item, "two mirror members");
    if (members.size() != 2)
      fail(item, fmt::format("a mirror has exactly two members, this one has {}", members.size()));
    for (const Item& m : members) {
      const Fields mf = fields(m, {"backend", "path", "url", "initiator", "chap", "timeout", "pool",
                                   "image", "user", "keyring", "ceph_conf", "mon_host"});
      SubUnit member = parse_subunit(mf, require(mf, "backend"), mf.get("path"), lu_name, m.mark);
      if (member.backend == "null") fail(require(mf, "backend"), "a null backend cannot mirror data");
      su.mirror.push_back(std::move(member));
    }
    return su;
  }

  // layout / stripe_unit; true when striped.
  bool parse_layout(const Fields& f, Lun& lun) const {
    const Item* layout = f.get("layout");
    const Item* unit = f.get("stripe_unit");
    if (layout) {
      lun.layout = text(*layout);
      if (lun.layout != "concat" && lun.layout != "striped") fail(*layout, "expected concat or striped");
    }
    if (lun.layout != "striped") {
      if (unit) fail(*unit, "stripe_unit needs layout: striped");
      return false;
    }
    lun.stripe_unit = 64 << 10;
    if (unit) {
      lun.stripe_unit = size(*unit);
      const uint64_t su = lun.stripe_unit;
      if (su == 0 || (su & (su - 1)) != 0)
        fail(*unit, fmt::format("{} is not a power of two", describe_size(su)));
      if (su % lun.block_size != 0)
        fail(*unit, fmt::format("{} is not a multiple of block_size {}", describe_size(su),
                                lun.block_size));
      if (su > (uint64_t{1} << 30)) fail(*unit, "at most 1GiB");
    }
    return true;
  }

  // Striped: every sub-unit holds the same number of stripe units, together the LU size
  // rounded up to a full stripe (sub-units x stripe_unit); a size left out gets that share.
  void resolve_striped(const Item& subunits, const std::vector<Item>& items,
                       const std::vector<std::optional<Item>>& sizes, Lun& lun) const {
    const uint64_t n = items.size();
    const uint64_t stripe = n * lun.stripe_unit;
    const uint64_t stripes = lun.size / stripe + (lun.size % stripe != 0 ? 1 : 0);
    const uint64_t each = stripes * lun.stripe_unit;
    if (stripes > std::numeric_limits<uint64_t>::max() / stripe)
      fail(subunits, "the LU is too large for this stripe");
    for (size_t i = 0; i < items.size(); ++i) {
      if (sizes[i]) {
        const uint64_t bytes = size(*sizes[i]);
        if (bytes != each) {
          fail(*sizes[i],
               fmt::format("striped sub-units are all {} (the LU's {} rounded up to a full "
                           "stripe of {} x {}, divided by {}), not {}",
                           describe_size(each), describe_size(lun.size), n,
                           describe_size(lun.stripe_unit), n, describe_size(bytes)));
        }
      }
      lun.subunits[i].size = each;
    }
  }

  // Sub-unit sizes: multiples of block_size, at most one left out (it gets the rest), and
  // together exactly the LU size. Fills in the left-out one.
  void resolve_sizes(const Item& subunits, const std::vector<Item>& items,
                     const std::vector<std::optional<Item>>& sizes, Lun& lun) const {
    uint64_t sum = 0;
    bool overflow = false;
    std::optional<size_t> open;  // the sub-unit without a size
    for (size_t i = 0; i < items.size(); ++i) {
      if (!sizes[i]) {
        if (open) {
          fail(items[i], fmt::format("only one sub-unit may leave out size ({}[{}] already does)",
                                     subunits.path, *open));
        }
        open = i;
        continue;
      }
      const uint64_t bytes = size(*sizes[i]);
      if (bytes == 0)
        fail(*sizes[i], "expected a size greater than 0 (leave size out to use the rest)");
      if (bytes % lun.block_size != 0) {
        fail(*sizes[i], fmt::format("{} is not a multiple of block_size {}", describe_size(bytes),
                                    lun.block_size));
      }
      lun.subunits[i].size = bytes;
      overflow = overflow || sum + bytes < sum;
      sum += bytes;
    }
    const std::string taken = overflow ? "more than 2^64 bytes" : describe_size(sum);
    if (open) {
      if (overflow || sum >= lun.size) {
        fail(items[*open], fmt::format("no room left for this sub-unit: the others already take {} "
                                       "of the LU's {}",
                                       taken, describe_size(lun.size)));
      }
      lun.subunits[*open].size = lun.size - sum;
    } else if (overflow || sum != lun.size) {
      fail(subunits, fmt::format("sub-unit sizes add up to {} but the LU size is {}", taken,
                                 describe_size(lun.size)));
    }
  }

  const std::string& text_;
  const std::string& file_;
  YAML::Mark data_dir_mark_;
  // LU name -> where its `shared:` key is (check_shared's errors point there).
  std::map<std::string, std::pair<YAML::Mark, std::string>> shared_keys_;
  std::map<std::string, YAML::Mark> lu_names_;
  std::map<std::string, SeenAt> file_users_;  // normalized absolute path -> first user
  std::map<std::string, Item> source_items_;  // LU name -> its `source:`
};

}  // namespace

Config parse(const std::string& text, const std::string& path) {
  try {
    return Parser(text, path).run();
  } catch (const YAML::Exception& e) {  // defensive: yaml-cpp errors outside LoadAll
    const bool known = !e.mark.is_null();
    throw ConfigError(Location{path, known ? e.mark.line + 1 : 1, known ? e.mark.column + 1 : 1},
                      "", "invalid YAML: " + e.msg);
  }
}

Config load(const std::string& path) {
  constexpr size_t kMaxBytes = 16 << 20;  // a config is a few KiB; refuse to slurp a disk image
  const auto error = [&](std::string_view what) {
    return ConfigError(
        Location{path, 0, 0}, "",
        fmt::format("{}: {}", what, std::error_code(errno, std::generic_category()).message()));
  };
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) throw error("cannot open");
  std::string text;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(file.fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw error("cannot read");
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxBytes) {
      throw ConfigError(Location{path, 0, 0}, "", "larger than 16MiB; is this the config file?");
    }
  }
  return parse(text, path);
}

}  // namespace zuma::config
