// State files of a LU: atomic replacement, removal, reading back.
#include "scsi/state_file.hh"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace zuma::scsi {
namespace {

struct Dir {
  std::string path;
  Dir() {
    char tmpl[] = "/tmp/zuma-state-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~Dir() { std::filesystem::remove_all(path); }
};

TEST_CASE("write, replace, read, remove") {
  Dir d;
  const std::string f = d.path + "/x.pr";
  CHECK_FALSE(read_state_file(f).has_value());
  CHECK(write_state_file(f, "one\n") == 0);
  CHECK(read_state_file(f) == "one\n");
  CHECK(write_state_file(f, "two") == 0);
  CHECK(read_state_file(f) == "two");
  CHECK_FALSE(std::filesystem::exists(f + ".tmp"));
  CHECK(remove_state_file(f) == 0);
  CHECK_FALSE(std::filesystem::exists(f));
  CHECK(remove_state_file(f) == 0);  // absent is fine
}

TEST_CASE("errors are errno values; an unreadable file throws") {
  Dir d;
  CHECK(write_state_file(d.path + "/missing-dir/x", "a") == ENOENT);
  const std::string f = d.path + "/x";
  REQUIRE(::mkdir(f.c_str(), 0755) == 0);  // a directory where the file should be
  CHECK_THROWS_AS(read_state_file(f), std::runtime_error);
}

}  // namespace
}  // namespace zuma::scsi
