#include "admin/format.hh"

#include <algorithm>
#include <cctype>
#include <ctime>
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

std::string render_list(const Json& list) {
  if (list.empty()) return "(none)\n";
  const bool objects = std::all_of(list.begin(), list.end(), [](const Json& e) { return e.is_object(); });
  if (!objects) {
    std::string out;
    for (const Json& e : list) out += cell(e) + "\n";
    return out;
  }
  // Columns: id and name first (what an administrator looks for), then the other keys in
  // the order they first appear.
  std::vector<std::string> keys;
  for (const char* k : {"id", "name"})
    if (std::any_of(list.begin(), list.end(), [&](const Json& e) { return e.contains(k); }))
      keys.push_back(k);
  for (const Json& e : list)
    for (auto it = e.begin(); it != e.end(); ++it)
      if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) keys.push_back(it.key());
  Json columns = Json::array();
  for (const std::string& k : keys) {
    std::string h = k;
    std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::toupper(c); });
    columns.push_back(h);
  }
  Json rows = Json::array();
  for (const Json& e : list) {
    Json row = Json::array();
    for (const std::string& k : keys) {
      Json v = e.contains(k) ? e[k] : Json();
      // Unix seconds of a creation time: shown as UTC time (--json keeps the number).
      if (k == "created" && v.is_number_integer()) {
        const std::time_t t = v.get<std::time_t>();
        std::tm tm{};
        gmtime_r(&t, &tm);
        char buf[32];
        std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
        v = std::string(buf);
      }
      row.push_back(std::move(v));
    }
    rows.push_back(std::move(row));
  }
  return render_table(columns, rows);
}

std::string render(const Json& result) {
  if (result.is_null()) return "";
  if (result.is_string()) {
    std::string s = result.get<std::string>();
    if (!s.empty() && s.back() != '\n') s += '\n';
    return s;
  }
  if (result.is_array()) return render_list(result);
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
