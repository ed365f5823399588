#include "admin/command_table.hh"

#include <algorithm>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "config/config.hh"

namespace zuma::admin {

namespace {

std::vector<std::string> words_of(const std::string& name) {
  std::vector<std::string> out;
  std::istringstream in(name);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string placeholder(const Option& o) {
  std::string p = o.name;
  for (char& c : p) c = c == '-' ? '_' : char(std::toupper(static_cast<unsigned char>(c)));
  return p;
}

const char* type_name(ArgType t) {
  switch (t) {
    case ArgType::kString:
      return "text";
    case ArgType::kInt:
      return "integer";
    case ArgType::kSize:
      return "size";
    case ArgType::kBool:
      return "true|false";
    case ArgType::kFlag:
      return "flag";
    case ArgType::kList:
      return "comma-separated list";
  }
  return "?";
}

std::optional<bool> parse_bool(const std::string& s) {
  if (s == "true" || s == "yes" || s == "on" || s == "1") return true;
  if (s == "false" || s == "no" || s == "off" || s == "0") return false;
  return std::nullopt;
}

// A command-line string -> the JSON value of the option's type.
std::expected<Json, std::string> convert(const Option& o, const std::string& v) {
  switch (o.type) {
    case ArgType::kString:
      return Json(v);
    case ArgType::kInt: {
      if (v.empty() || v.size() > 19 || !std::all_of(v.begin(), v.end(), ::isdigit))
        return std::unexpected(
            fmt::format("--{}: expected an unsigned integer, got '{}'", o.name, v));
      return Json(std::stoull(v));
    }
    case ArgType::kSize: {
      auto s = config::parse_size(v);
      if (!s)
        return std::unexpected(
            fmt::format("--{}: expected a size such as 4096, 512MiB or 1GiB, got '{}'", o.name, v));
      return Json(*s);
    }
    case ArgType::kBool: {
      auto b = parse_bool(v);
      if (!b)
        return std::unexpected(fmt::format("--{}: expected true or false, got '{}'", o.name, v));
      return Json(*b);
    }
    case ArgType::kFlag:
      return Json(true);
    case ArgType::kList: {
      Json arr = Json::array();
      std::string item;
      std::istringstream in(v);
      while (std::getline(in, item, ','))
        if (!item.empty()) arr.push_back(item);
      return arr;
    }
  }
  return std::unexpected("unknown option type");
}

}  // namespace

void CommandTable::add(Command c) {
  if (find(c.name)) throw std::logic_error("command '" + c.name + "' registered twice");
  std::set<std::string> seen;
  for (const Option& o : c.options)
    if (!seen.insert(o.name).second)
      throw std::logic_error("command '" + c.name + "': option '" + o.name + "' declared twice");
  commands_.push_back(std::move(c));
}

bool CommandTable::set_handler(const std::string& name, Handler h) {
  for (Command& c : commands_)
    if (c.name == name) {
      c.handler = std::move(h);
      return true;
    }
  return false;
}

const Command* CommandTable::find(const std::string& name) const {
  for (const Command& c : commands_)
    if (c.name == name) return &c;
  return nullptr;
}

std::expected<std::pair<const Command*, Json>, std::string> CommandTable::parse(
    const std::vector<std::string>& words) const {
  if (words.empty()) return std::unexpected("no command given; try 'help'");
  // The longest command name the words start with.
  const Command* cmd = nullptr;
  size_t used = 0;
  for (const Command& c : commands_) {
    const auto cw = words_of(c.name);
    if (cw.size() <= words.size() && cw.size() > used &&
        std::equal(cw.begin(), cw.end(), words.begin())) {
      cmd = &c;
      used = cw.size();
    }
  }
  if (!cmd) {
    // "show" alone, or "show frob": name the group's verbs.
    std::vector<std::string> group;
    for (const Command& c : commands_)
      if (!c.hidden && words_of(c.name)[0] == words[0]) group.push_back(c.name);
    if (!group.empty()) {
      std::string list;
      for (auto& g : group) list += (list.empty() ? "" : ", ") + g;
      if (words.size() == 1)
        return std::unexpected(fmt::format("'{}' needs more: one of {}", words[0], list));
      return std::unexpected(fmt::format("unknown command '{} {}'; did you mean one of: {}",
                                         words[0], words[1], list));
    }
    return std::unexpected(fmt::format("unknown command '{}'; try 'help'", words[0]));
  }
  Json args = Json::object();
  size_t next_positional = 0;
  auto positional_after = [&](size_t from) -> const Option* {
    for (size_t i = from; i < cmd->options.size(); ++i)
      if (cmd->options[i].positional) {
        next_positional = i + 1;
        return &cmd->options[i];
      }
    return nullptr;
  };
  for (size_t i = used; i < words.size(); ++i) {
    const std::string& w = words[i];
    const Option* opt = nullptr;
    std::optional<std::string> value;
    if (w.size() > 2 && w.starts_with("--")) {
      std::string name = w.substr(2);
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      std::replace(name.begin(), name.end(), '_', '-');
      for (const Option& o : cmd->options)
        if (o.name == name) opt = &o;
      if (!opt)
        return std::unexpected(
            fmt::format("{}: unknown option '--{}'; see 'help {}'", cmd->name, name, cmd->name));
      if (opt->type == ArgType::kFlag) {
        if (value) return std::unexpected(fmt::format("--{} takes no value", opt->name));
        value = "";
      } else if (!value) {
        if (i + 1 >= words.size())
          return std::unexpected(
              fmt::format("--{} needs a value ({})", opt->name, type_name(opt->type)));
        value = words[++i];
      }
    } else {
      opt = positional_after(next_positional);
      // Skip positionals already given by name.
      while (opt && args.contains(opt->name)) opt = positional_after(next_positional);
      if (!opt)
        return std::unexpected(
            fmt::format("{}: unexpected argument '{}'; usage: {}", cmd->name, w, usage(*cmd)));
      value = w;
    }
    if (args.contains(opt->name))
      return std::unexpected(fmt::format("{}: {} given twice", cmd->name, placeholder(*opt)));
    auto v = convert(*opt, *value);
    if (!v) return std::unexpected(v.error());
    args[opt->name] = std::move(*v);
  }
  auto checked = validate(*cmd, args);
  if (!checked) return std::unexpected(checked.error());
  return std::make_pair(cmd, std::move(*checked));
}

std::expected<Json, std::string> CommandTable::validate(const Command& c, const Json& args) const {
  if (!args.is_object()) return std::unexpected(c.name + ": arguments must be a JSON object");
  Json out = Json::object();
  for (auto it = args.begin(); it != args.end(); ++it) {
    const Option* opt = nullptr;
    for (const Option& o : c.options)
      if (o.name == it.key()) opt = &o;
    if (!opt) return std::unexpected(fmt::format("{}: unknown option '{}'", c.name, it.key()));
    const Json& v = it.value();
    bool ok = false;
    switch (opt->type) {
      case ArgType::kString:
        ok = v.is_string();
        break;
      case ArgType::kInt:
        ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
        break;
      case ArgType::kSize:
        if (v.is_string()) {
          auto s = convert(*opt, v.get<std::string>());
          if (!s) return std::unexpected(s.error());
          out[it.key()] = *s;
          continue;
        }
        ok = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
        break;
      case ArgType::kBool:
      case ArgType::kFlag:
        ok = v.is_boolean();
        break;
      case ArgType::kList:
        ok = v.is_array() &&
             std::all_of(v.begin(), v.end(), [](const Json& e) { return e.is_string(); });
        break;
    }
    if (!ok)
      return std::unexpected(
          fmt::format("{}: {} must be {}", c.name, placeholder(*opt), type_name(opt->type)));
    if (opt->type == ArgType::kString && !opt->choices.empty() &&
        std::find(opt->choices.begin(), opt->choices.end(), v.get<std::string>()) ==
            opt->choices.end()) {
      std::string list;
      for (auto& ch : opt->choices) list += (list.empty() ? "" : ", ") + ch;
      return std::unexpected(fmt::format("{}: {} must be one of {}, got '{}'", c.name,
                                         placeholder(*opt), list, v.get<std::string>()));
    }
    out[it.key()] = v;
  }
  for (const Option& o : c.options)
    if (o.required && !out.contains(o.name))
      return std::unexpected(
          fmt::format("{}: {} is required; usage: {}", c.name, placeholder(o), usage(c)));
  return out;
}

std::string CommandTable::usage(const Command& c) {
  std::string u = c.name;
  for (const Option& o : c.options) {
    std::string part;
    if (o.positional)
      part = placeholder(o);
    else if (o.type == ArgType::kFlag)
      part = "--" + o.name;
    else
      part = "--" + o.name + " " + placeholder(o);
    u += o.required ? " " + part : " [" + part + "]";
  }
  return u;
}

std::string CommandTable::help() const {
  size_t width = 0;
  for (const Command& c : commands_)
    if (!c.hidden) width = std::max(width, c.name.size());
  std::string out = "Commands (help VERB for details):\n";
  for (const Command& c : commands_)
    if (!c.hidden) out += fmt::format("  {:<{}}  {}\n", c.name, width, c.summary);
  return out;
}

std::string CommandTable::help(const std::string& verb) const {
  std::string out;
  auto describe = [&](const Command& c) {
    out += "usage: " + usage(c) + "\n  " + c.summary + "\n";
    if (!c.details.empty()) out += "\n" + c.details + "\n";
    if (!c.options.empty()) {
      size_t width = 0;
      for (const Option& o : c.options) width = std::max(width, o.name.size() + 2);
      out += "\noptions:\n";
      for (const Option& o : c.options) {
        std::string extra = o.required ? "required" : "optional";
        extra += std::string(", ") + type_name(o.type);
        if (o.positional) extra += ", may be given bare";
        if (!o.choices.empty()) {
          std::string list;
          for (auto& ch : o.choices) list += (list.empty() ? "" : "|") + ch;
          extra += ", one of " + list;
        }
        out += fmt::format("  --{:<{}}  {} ({})\n", o.name, width, o.help, extra);
      }
    }
    if (!c.example.empty()) out += "\nexample:\n  " + c.example + "\n";
  };
  if (const Command* c = find(verb)) {
    describe(*c);
    return out;
  }
  for (const Command& c : commands_)
    if (!c.hidden && words_of(c.name)[0] == verb)
      out += fmt::format("  {:<20}  {}\n", c.name, c.summary);
  return out;
}

std::vector<std::string> CommandTable::complete(const std::vector<std::string>& before,
                                                const std::string& partial,
                                                const NameSource& names) const {
  std::set<std::string> out;
  // Is a whole command typed already?
  const Command* cmd = nullptr;
  size_t used = 0;
  for (const Command& c : commands_) {
    const auto cw = words_of(c.name);
    if (cw.size() <= before.size() && cw.size() > used &&
        std::equal(cw.begin(), cw.end(), before.begin())) {
      cmd = &c;
      used = cw.size();
    }
  }
  if (!cmd) {
    // The next word of a command name.
    for (const Command& c : commands_) {
      if (c.hidden) continue;
      const auto cw = words_of(c.name);
      if (cw.size() <= before.size() || !std::equal(before.begin(), before.end(), cw.begin()))
        continue;
      const std::string& next = cw[before.size()];
      if (next.starts_with(partial)) out.insert(next);
    }
    return {out.begin(), out.end()};
  }
  // The first positional word after the command (the LU of the snapshot verbs).
  auto first_positional = [&]() -> std::string {
    for (size_t i = used; i < before.size(); ++i) {
      const std::string& w = before[i];
      if (!w.starts_with("--")) return w;
      for (const Option& o : cmd->options)
        if ("--" + o.name == w && o.type != ArgType::kFlag) ++i;
    }
    return "";
  };
  auto values_of = [&](const Option& o) {
    std::vector<std::string> v = o.choices;
    if (!o.complete.empty() && names) {
      if (o.complete == "verbs") {
        for (const Command& c : commands_)
          if (!c.hidden) v.push_back(words_of(c.name)[0]);
      } else {
        // "snapshots" and "clones" are per LU: the source asked for is "snapshots:LU".
        const bool per_lu = o.complete == "snapshots" || o.complete == "clones";
        if (per_lu && first_positional().empty()) return;
        auto got = names(per_lu ? o.complete + ":" + first_positional() : o.complete);
        v.insert(v.end(), got.begin(), got.end());
      }
    }
    for (const std::string& s : v)
      if (s.starts_with(partial)) out.insert(s);
  };
  // The value of an option just named?
  if (before.size() > used) {
    const std::string& last = before.back();
    if (last.starts_with("--") && last.find('=') == std::string::npos) {
      for (const Option& o : cmd->options)
        if ("--" + o.name == last && o.type != ArgType::kFlag) {
          values_of(o);
          return {out.begin(), out.end()};
        }
    }
  }
  // Options not given yet, and the next positional's values.
  std::set<std::string> given;
  size_t bare = 0;
  for (size_t i = used; i < before.size(); ++i) {
    const std::string& w = before[i];
    if (w.starts_with("--")) {
      std::string n =
          w.substr(2, w.find('=') == std::string::npos ? std::string::npos : w.find('=') - 2);
      given.insert(n);
      for (const Option& o : cmd->options)
        if (o.name == n && o.type != ArgType::kFlag && w.find('=') == std::string::npos) ++i;
    } else {
      ++bare;
    }
  }
  if (partial.empty() || partial.starts_with("-")) {
    for (const Option& o : cmd->options)
      if (!given.count(o.name) && ("--" + o.name).starts_with(partial)) out.insert("--" + o.name);
  }
  if (!partial.starts_with("-")) {
    size_t k = 0;
    for (const Option& o : cmd->options) {
      if (!o.positional || given.count(o.name)) continue;
      if (k++ == bare) {
        values_of(o);
        break;
      }
    }
  }
  return {out.begin(), out.end()};
}

std::expected<std::vector<std::string>, std::string> split_words(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quote) {
      if (ch == quote)
        quote = 0;
      else if (ch == '\\' && quote == '"' && i + 1 < line.size())
        cur += line[++i];
      else
        cur += ch;
    } else if (ch == '\'' || ch == '"') {
      quote = ch;
      in_word = true;
    } else if (ch == '\\' && i + 1 < line.size()) {
      cur += line[++i];
      in_word = true;
    } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
      if (in_word) out.push_back(std::move(cur));
      cur.clear();
      in_word = false;
    } else {
      cur += ch;
      in_word = true;
    }
  }
  if (quote) return std::unexpected("unterminated quote");
  if (in_word) out.push_back(std::move(cur));
  return out;
}

}  // namespace zuma::admin
