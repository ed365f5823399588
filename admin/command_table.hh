// The one command table shared by zumad and zumactl (DESIGN.md: admin/): every verb with
// its options, their types, help text and where completion finds object names, and (in
// zumad only) the handler that runs it. Help, completion and validation all come from here.
//
// Extending: a module adds its verbs with a registration function called from
// standard_table() (e.g. register_snapshot_commands(CommandTable&)), and its handlers in
// zumad with CommandTable::set_handler(). Nothing else needs to know about the verbs.
//
// Threading: build the table once, then only read it (set_handler before serving).
#pragma once

#include <expected>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "admin/protocol.hh"

namespace zuma::admin {

enum class ArgType {
  kString,
  kInt,   // unsigned decimal integer
  kSize,  // bytes, "1GiB" etc. (config::parse_size); sent as an integer
  kBool,  // true/false/yes/no/on/off
  kFlag,  // present or not ("--force"); sent as true
  kList,  // comma-separated strings; sent as a JSON array
};

struct Option {
  std::string name;  // "--name" on the command line, "name" in JSON
  ArgType type = ArgType::kString;
  std::string help;
  bool required = false;
  bool positional = false;  // may also be given bare, in declaration order
  // Where completion finds values: "targets", "luns", "sessions", "portals",
  // "initiators", "verbs", "log_levels"; a module may add its own ("snapshots"). "" = none.
  std::string complete;
  std::vector<std::string> choices;  // allowed values of a kString option; empty = any
};

// Thrown by handlers: the command failed; the message goes back as a one-line error.
class CommandError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs a validated request in zumad (on the control thread). Returns the result JSON.
using Handler = std::function<Json(const Json& args)>;

struct Command {
  std::string name;     // one or more words: "show luns"
  std::string summary;  // one line, for `help`
  std::string details;  // more text for `help VERB`; may be empty
  std::vector<Option> options;
  std::string example;  // one example invocation, for `help VERB`
  bool hidden = false;  // not listed by `help` (internal verbs such as `complete`)
  bool local = false;   // zumactl answers it itself (help, quit)
  Handler handler;      // zumad side; empty in zumactl
};

// Candidate names for a completion source (zumactl asks zumad with `complete SOURCE`).
// "snapshots:LU" and "clones:LU" name the snapshots and clones of the LU typed first.
using NameSource = std::function<std::vector<std::string>(const std::string& source)>;

class CommandTable {
 public:
  // Throws std::logic_error on a duplicate name or an option declared twice.
  void add(Command c);
  // Sets the zumad-side handler; false if no such command.
  bool set_handler(const std::string& name, Handler h);
  const Command* find(const std::string& name) const;
  const std::vector<Command>& commands() const { return commands_; }

  // Command line words (after the program's own flags) -> command and JSON args, checked.
  // Error: a one-line usage message.
  std::expected<std::pair<const Command*, Json>, std::string> parse(
      const std::vector<std::string>& words) const;
  // Checks JSON args against the command: unknown keys, types, choices, required ones.
  // Returns them normalised (sizes as integers). Error: a one-line message.
  std::expected<Json, std::string> validate(const Command& c, const Json& args) const;

  // `help`: every visible command with its summary, aligned.
  std::string help() const;
  // `help VERB`: usage, options, details and example; VERB may be a first word ("show")
  // naming a group. Empty when nothing matches.
  std::string help(const std::string& verb) const;
  // Completions for the word being typed, `partial`, after the complete words `before`.
  std::vector<std::string> complete(const std::vector<std::string>& before,
                                    const std::string& partial, const NameSource& names) const;
  // One usage line: "add lun TARGET --name NAME --size SIZE [--thin]".
  static std::string usage(const Command& c);

 private:
  std::vector<Command> commands_;
};

// Splits a REPL line into words: blanks separate, '...' and "..." quote, \ escapes.
// Error: "unterminated quote".
std::expected<std::vector<std::string>, std::string> split_words(const std::string& line);

// The verbs of this version (help, show, add/remove, config, log, logout, complete).
void register_core_commands(CommandTable& table);
// Every module's verbs: what zumad and zumactl both use.
CommandTable standard_table();

}  // namespace zuma::admin
