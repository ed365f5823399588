#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

#include "scsi/device_server.hh"
#include "scsi/logical_unit.hh"

namespace zuma::scsi {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/zuma-scsi-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_CASE("creates a random version 4 UUID once, then reads it back") {
  TempDir d;
  const std::string data_dir = d.path() + "/var";  // created too
  auto a = load_or_create_lu_uuid(data_dir, "data");
  REQUIRE(a.has_value());
  CHECK(a->size() == 36);
  CHECK(parse_uuid(*a).has_value());
  CHECK((*a)[14] == '4');                                          // version
  CHECK(std::string("89ab").find((*a)[19]) != std::string::npos);  // variant 10b
  CHECK(slurp(data_dir + "/lu/data.uuid") == *a + "\n");

  auto again = load_or_create_lu_uuid(data_dir, "data");
  REQUIRE(again.has_value());
  CHECK(*again == *a);

  auto other = load_or_create_lu_uuid(data_dir, "logs");
  REQUIRE(other.has_value());
  CHECK(*other != *a);

  // No temporary files left behind.
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(data_dir + "/lu")) names.insert(e.path().filename());
  CHECK(names == std::set<std::string>{"data.uuid", "logs.uuid"});
}

TEST_CASE("reads a stored UUID in upper case and normalises it") {
  TempDir d;
  fs::create_directories(d.path() + "/lu");
  std::ofstream(d.path() + "/lu/x.uuid") << "12345678-9ABC-4DEF-8123-456789ABCDEF\n";
  auto u = load_or_create_lu_uuid(d.path(), "x");
  REQUIRE(u.has_value());
  CHECK(*u == "12345678-9abc-4def-8123-456789abcdef");
}

TEST_CASE("a damaged file is an error, not a new identity") {
  TempDir d;
  fs::create_directories(d.path() + "/lu");
  std::ofstream(d.path() + "/lu/x.uuid") << "not a uuid\n";
  auto u = load_or_create_lu_uuid(d.path(), "x");
  REQUIRE_FALSE(u.has_value());
  CHECK(u.error().find(d.path() + "/lu/x.uuid") != std::string::npos);
  CHECK(u.error().find('\n') == std::string::npos);
  CHECK(slurp(d.path() + "/lu/x.uuid") == "not a uuid\n");
}

TEST_CASE("names that are not file names, unwritable directories") {
  TempDir d;
  for (const char* bad : {"", ".", "..", "a/b"}) {
    CAPTURE(bad);
    auto u = load_or_create_lu_uuid(d.path(), bad);
    CHECK_FALSE(u.has_value());
  }
  if (::geteuid() != 0) {
    fs::create_directories(d.path() + "/ro");
    ::chmod((d.path() + "/ro").c_str(), 0555);
    auto u = load_or_create_lu_uuid(d.path() + "/ro", "x");
    CHECK_FALSE(u.has_value());
    ::chmod((d.path() + "/ro").c_str(), 0755);
  }
  // data_dir is a file.
  std::ofstream(d.path() + "/file") << "x";
  auto u = load_or_create_lu_uuid(d.path() + "/file", "x");
  CHECK_FALSE(u.has_value());
}

}  // namespace
}  // namespace zuma::scsi
