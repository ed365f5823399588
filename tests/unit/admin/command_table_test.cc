// admin/command_table.cc and commands.cc: parsing, validation, help, completion.
#include "admin/command_table.hh"

#include <doctest/doctest.h>

#include "snapshot/commands.hh"

// Commands and options are written with designated initializers; what they leave out
// keeps its default on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

using namespace zuma::admin;

namespace {

std::vector<std::string> w(std::initializer_list<const char*> words) {
  return {words.begin(), words.end()};
}

// The core verbs only: other modules' verbs (standard_table) must not change these tests.
CommandTable core_table() {
  CommandTable t;
  register_core_commands(t);
  return t;
}

NameSource fake_names() {
  return [](const std::string& source) -> std::vector<std::string> {
    if (source == "luns") return {"data", "disk0", "disk1"};
    if (source == "targets") return {"iqn.2026-11.org.zuma:a", "iqn.2026-11.org.zuma:b"};
    if (source == "snapshots:data") return {"nightly-1", "nightly-2", "before"};
    if (source == "clones:data") return {"test"};
    return {};
  };
}

}  // namespace

TEST_CASE("parse: longest command name, positionals, typed options") {
  const CommandTable t = core_table();
  auto r = t.parse(w({"add", "lun", "iqn.2026-11.org.zuma:a", "--id", "3", "--name", "x", "--size",
                      "1GiB", "--thin", "--path=/tmp/x.img"}));
  REQUIRE(r.has_value());
  CHECK(r->first->name == "add lun");
  CHECK(r->second["target"] == "iqn.2026-11.org.zuma:a");
  CHECK(r->second["id"] == 3);
  CHECK(r->second["size"] == 1073741824);
  CHECK(r->second["thin"] == true);
  CHECK(r->second["path"] == "/tmp/x.img");
  // Underscores are accepted for dashes.
  auto b = t.parse(
      w({"add", "lun", "t", "--id", "0", "--name", "x", "--size", "1M", "--block_size", "4096"}));
  REQUIRE(b.has_value());
  CHECK(b->second["block-size"] == 4096);
  auto l = t.parse(w({"add", "acl", "t", "i", "--networks", "10.0.0.0/8,fd00::/8"}));
  REQUIRE(l.has_value());
  CHECK(l->second["networks"] == Json::array({"10.0.0.0/8", "fd00::/8"}));
}

TEST_CASE("parse: one-line usage errors") {
  const CommandTable t = core_table();
  CHECK(t.parse(w({"frobnicate"})).error() == "unknown command 'frobnicate'; try 'help'");
  CHECK(t.parse(w({"show"}))
            .error()
            .starts_with("'show' needs more: one of show node, show portals"));
  CHECK(t.parse(w({"show", "lunz"}))
            .error()
            .starts_with("unknown command 'show lunz'; did you mean"));
  CHECK(t.parse(w({"add", "lun", "t", "--id", "x"})).error() ==
        "--id: expected an unsigned integer, got 'x'");
  CHECK(t.parse(w({"add", "lun", "t", "--id", "1", "--name", "n", "--size", "big"})).error() ==
        "--size: expected a size such as 4096, 512MiB or 1GiB, got 'big'");
  CHECK(t.parse(w({"add", "lun", "t", "--id", "1", "--name", "n"})).error() ==
        "add lun: SIZE is required; usage: add lun TARGET --id ID --name NAME --size SIZE "
        "[--backend BACKEND] [--path PATH] [--block-size BLOCK_SIZE] [--thin]");
  CHECK(t.parse(w({"remove", "lun", "x", "--frob"})).error() ==
        "remove lun: unknown option '--frob'; see 'help remove lun'");
  CHECK(t.parse(w({"remove", "lun", "x", "y"}))
            .error()
            .starts_with("remove lun: unexpected argument 'y'"));
  CHECK(
      t.parse(w({"log", "level", "loud"})).error() ==
      "log level: LEVEL must be one of trace, debug, info, warn, error, critical, off, got 'loud'");
  CHECK(t.parse(w({"logout", "--session"})).error() == "--session needs a value (integer)");
  CHECK(t.parse(w({"remove", "lun", "--force=1", "x"})).error() == "--force takes no value");
  CHECK(t.parse({}).error() == "no command given; try 'help'");
}

TEST_CASE("validate: JSON requests get the same checks") {
  const CommandTable t = core_table();
  const Command& c = *t.find("add lun");
  CHECK(t.validate(c, Json{{"target", "t"}, {"id", 1}, {"name", "n"}, {"size", "4KiB"}})
            ->at("size") == 4096);
  CHECK(t.validate(c, Json{{"target", "t"}, {"id", -1}, {"name", "n"}, {"size", 1}}).error() ==
        "add lun: ID must be integer");
  CHECK(t.validate(c, Json{{"target", 5}}).error() == "add lun: TARGET must be text");
  CHECK(t.validate(c, Json{{"bogus", 1}}).error() == "add lun: unknown option 'bogus'");
  CHECK(t.validate(c, Json::array()).error() == "add lun: arguments must be a JSON object");
}

TEST_CASE("help lists visible commands; help VERB describes one or a group") {
  const CommandTable t = core_table();
  const std::string all = t.help();
  CHECK(all.find("  show luns ") != std::string::npos);
  CHECK(all.find("complete") == std::string::npos);  // hidden
  const std::string one = t.help("remove lun");
  CHECK(one.starts_with("usage: remove lun NAME [--force]\n"));
  CHECK(one.find("example:\n  remove lun scratch") != std::string::npos);
  const std::string group = t.help("show");
  CHECK(group.find("show sessions") != std::string::npos);
  CHECK(group.find("add lun") == std::string::npos);
  CHECK(t.help("nothing").empty());
}

TEST_CASE("complete: verbs, next words, options, values from the daemon") {
  const CommandTable t = core_table();
  const auto names = fake_names();
  CHECK(t.complete({}, "sh", names) == std::vector<std::string>{"show"});
  CHECK(t.complete(w({"show"}), "l", names) == std::vector<std::string>{"luns"});
  CHECK(t.complete(w({"show"}), "s", names) == std::vector<std::string>{"sessions", "stats"});
  CHECK(t.complete(w({"remove", "lun"}), "d", names) ==
        std::vector<std::string>{"data", "disk0", "disk1"});
  CHECK(t.complete(w({"remove", "lun"}), "--", names) ==
        std::vector<std::string>{"--force", "--name"});
  CHECK(t.complete(w({"remove", "lun", "disk0"}), "", names) ==
        std::vector<std::string>{"--force", "--name"});
  CHECK(t.complete(w({"add", "lun"}), "iqn.2026-11.org.zuma:", names).size() == 2);
  CHECK(t.complete(w({"add", "lun", "t", "--backend"}), "", names) ==
        std::vector<std::string>{"file", "memory", "null"});
  CHECK(t.complete(w({"log", "level"}), "de", names) == std::vector<std::string>{"debug"});
  CHECK(t.complete(w({"help"}), "rem", names) == std::vector<std::string>{"remove"});
}

TEST_CASE("complete: snapshot and clone names of the LU typed first") {
  CommandTable t = core_table();
  zuma::snapshot::register_snapshot_commands(t);
  const auto names = fake_names();
  CHECK(t.complete(w({"snapshot", "delete"}), "d", names) == std::vector<std::string>{"data", "disk0", "disk1"});
  CHECK(t.complete(w({"snapshot", "delete", "data"}), "night", names) ==
        std::vector<std::string>{"nightly-1", "nightly-2"});
  CHECK(t.complete(w({"snapshot", "diff", "data", "nightly-1"}), "n", names) ==
        std::vector<std::string>{"nightly-1", "nightly-2"});
  CHECK(t.complete(w({"snapshot", "delete-clone", "data"}), "t", names) ==
        std::vector<std::string>{"test"});
  CHECK(t.complete(w({"snapshot", "rollback", "disk0"}), "n", names).empty());  // no snapshots
}

TEST_CASE("standard_table holds the core verbs") {
  const CommandTable t = standard_table();
  const CommandTable core = core_table();
  for (const Command& c : core.commands()) CHECK(t.find(c.name) != nullptr);
}

TEST_CASE("add rejects duplicates; set_handler finds commands") {
  CommandTable t;
  t.add({.name = "x y", .summary = "s"});
  CHECK_THROWS_AS(t.add({.name = "x y", .summary = "again"}), std::logic_error);
  CHECK_THROWS_AS(t.add({.name = "z", .options = {{"a"}, {"a"}}}), std::logic_error);
  CHECK(t.set_handler("x y", [](const Json&) { return Json(1); }));
  CHECK(!t.set_handler("nope", [](const Json&) { return Json(1); }));
}

TEST_CASE("split_words: blanks, quotes, escapes") {
  CHECK(*split_words("  add  lun 'a b' \"c\\\"d\" e\\ f ") ==
        std::vector<std::string>{"add", "lun", "a b", "c\"d", "e f"});
  CHECK(*split_words("x ''") == std::vector<std::string>{"x", ""});
  CHECK(split_words("x 'open").error() == "unterminated quote");
  CHECK(split_words("")->empty());
}
