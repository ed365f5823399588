#include "target/text_keys.hh"

#include <charconv>

namespace zuma::target {

std::expected<std::vector<KeyValue>, std::string> parse_text(std::span<const uint8_t> data) {
  std::vector<KeyValue> out;
  size_t i = 0;
  while (i < data.size()) {
    size_t end = i;
    while (end < data.size() && data[end] != 0) ++end;
    std::string_view item(reinterpret_cast<const char*>(data.data() + i), end - i);
    i = end + 1;
    if (item.empty()) continue;  // padding NULs
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return std::unexpected("text item without '=': '" + std::string(item.substr(0, 64)) + "'");
    if (eq == 0 || eq > kMaxKeyLen)
      return std::unexpected("bad key length in '" + std::string(item.substr(0, 64)) + "'");
    if (item.size() - eq - 1 > kMaxValueLen)
      return std::unexpected("value too long for key '" + std::string(item.substr(0, eq)) + "'");
    out.push_back({std::string(item.substr(0, eq)), std::string(item.substr(eq + 1))});
  }
  return out;
}

void append_key(std::vector<uint8_t>& out, std::string_view key, std::string_view value) {
  out.insert(out.end(), key.begin(), key.end());
  out.push_back('=');
  out.insert(out.end(), value.begin(), value.end());
  out.push_back(0);
}

std::optional<uint64_t> parse_number(std::string_view v, uint64_t max) {
  if (v.empty()) return std::nullopt;
  int base = 10;
  if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
    base = 16;
    v.remove_prefix(2);
  }
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n, base);
  if (ec != std::errc() || p != v.data() + v.size() || n > max) return std::nullopt;
  return n;
}

}  // namespace zuma::target
