#include "admin/format.hh"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

namespace zuma::admin {

namespace {

std::string cell(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_array()) {
    std::string s;
    for (const Json& e : v) s += (s.empty() ? "" : ",") + cell(e);
    return s.empty() ? "-" : s;
  }
  return v.dump();
}

}  // namespace

std::string render_table(const Json& columns, const Json& rows) {
  const size_t n = columns.size();
  std::vector<size_t> width(n, 0);
  std::vector<bool> numeric(n, true);
  std::vector<std::vector<std::string>> text;
  for (size_t i = 0; i < n; ++i) width[i] = cell(columns[i]).size();
  for (const Json& r : rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < n; ++i) {
      const Json& v = i < r.size() ? r[i] : Json();
      line.push_back(cell(v));
      if (!v.is_number() && !v.is_null()) numeric[i] = false;
      width[i] = std::max(width[i], line.back().size());
    }
    text.push_back(std::move(line));
  }
  auto emit = [&](const std::vector<std::string>& line, bool header) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
      const bool last = i + 1 == n;
      if (numeric[i] && !header)
        out += fmt::format("{:>{}}", line[i], width[i]);
      else
        out += last ? line[i] : fmt::format("{:<{}}", line[i], width[i]);
      if (!last) out += "  ";
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::vector<std::string> header;
  for (const Json& c : columns) header.push_back(cell(c));
  // Right-aligned columns get right-aligned headers too.
  std::string out;
  {
    std::string h;
    for (size_t i = 0; i < n; ++i) {
      const bool last = i + 1 == n;
      if (numeric[i] && !rows.empty())
        h += fmt::format("{:>{}}", header[i], width[i]);
      else
        h += last ? header[i] : fmt::format("{:<{}}", header[i], width[i]);
      if (!last) h += "  ";
    }
    out += h + "\n";
  }
  for (auto& line : text) out += emit(line, false);
  if (rows.empty()) out += "(none)\n";
  return out;
}

std::string render(const Json& result) {
  if (result.is_null()) return "";
  if (result.is_string()) {
    std::string s = result.get<std::string>();
    if (!s.empty() && s.back() != '\n') s += '\n';
    return s;
  }
  if (!result.is_object()) return result.dump(2) + "\n";
  std::string out;
  if (result.contains("rows") && result.contains("columns")) {
    out = render_table(result["columns"], result["rows"]);
  } else {
    size_t width = 0;
    for (auto it = result.begin(); it != result.end(); ++it)
      if (it.key() != "message") width = std::max(width, it.key().size());
    for (auto it = result.begin(); it != result.end(); ++it)
      if (it.key() != "message")
        out += fmt::format("{:<{}}  {}\n", it.key(), width, cell(it.value()));
  }
  if (result.contains("message")) out += cell(result["message"]) + "\n";
  return out;
}

}  // namespace zuma::admin
