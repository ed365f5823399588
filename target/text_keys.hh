// Text key=value pairs of Login and Text PDUs (RFC 7143 6.1).
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zuma::target {

struct KeyValue {
  std::string key;
  std::string value;
};

// Limits from RFC 7143 6.1: key names up to 63 bytes; values up to 255 bytes except the
// few keys whose values may be longer (CHAP_C/CHAP_R, up to 8192 with base64/hex).
inline constexpr size_t kMaxKeyLen = 63;
inline constexpr size_t kMaxValueLen = 8192;

// Parses NUL-separated "key=value" items. A trailing item without its NUL is accepted
// (some initiators omit the last one). Error: a message naming the offending item.
std::expected<std::vector<KeyValue>, std::string> parse_text(std::span<const uint8_t> data);

// Appends "key=value\0".
void append_key(std::vector<uint8_t>& out, std::string_view key, std::string_view value);

// RFC 7143 13 numbers: decimal, or hex 0x..., with an upper bound. nullopt when invalid.
std::optional<uint64_t> parse_number(std::string_view v, uint64_t max);

}  // namespace zuma::target
