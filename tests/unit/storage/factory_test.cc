#include "storage/factory.hh"

#include <doctest/doctest.h>

#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

TEST_CASE("open_backend: dispatches on kind") {
  TempDir dir;
  auto f = open_backend({"file", dir / "x/lu.img", 1 << 20});
  REQUIRE_MESSAGE(f.has_value(), f.error());
  CHECK((*f)->describe() == "file:" + dir / "x/lu.img");
  CHECK((*f)->size() == 1 << 20);

  auto m = open_backend({"memory", "", 1 << 30});
  REQUIRE(m.has_value());
  CHECK((*m)->describe() == "memory:1073741824");

  auto n = open_backend({"null", "", 4096});
  REQUIRE(n.has_value());
  CHECK((*n)->describe() == "null:4096");
}

TEST_CASE("open_backend: errors are one line") {
  auto u = open_backend({"tape", "/dev/st0", 0});
  REQUIRE_FALSE(u.has_value());
  CHECK(u.error() == "unknown backend kind \"tape\" (expected file, memory, null, iscsi or rbd)");

  auto m = open_backend({"memory", "", 0});
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error() == "memory backend: the LU needs a size");

  auto n = open_backend({"null", "", 0});
  REQUIRE_FALSE(n.has_value());
  CHECK(n.error() == "null backend: the LU needs a size");

  TempDir dir;
  write_file(dir / "small", 0, pattern(100, 1));
  auto f = open_backend({"file", dir / "small", 4096});
  REQUIRE_FALSE(f.has_value());
  CHECK(f.error() ==
        dir / "small" + " is 100 bytes, the LU needs 4096 (zuma never resizes existing data)");
  CHECK(f.error().find('\n') == std::string::npos);
}
