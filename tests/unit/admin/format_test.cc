// admin/format.cc: tables and key/value results as zumactl prints them.
#include "admin/format.hh"

#include <doctest/doctest.h>

using namespace zuma::admin;

TEST_CASE("render_table aligns columns, numbers to the right") {
  const Json r = {{"columns", {"NAME", "SIZE", "THIN"}},
                  {"rows", {{"disk0", 1073741824, true}, {"d", 512, false}}}};
  CHECK(render(r) ==
        "NAME         SIZE  THIN\n"
        "disk0  1073741824  yes\n"
        "d             512  no\n");
  CHECK(render(Json{{"columns", {"A", "B"}}, {"rows", Json::array()}}) == "A  B\n(none)\n");
}

TEST_CASE("render: objects as aligned key/value lines, messages, strings") {
  CHECK(render(Json{{"name", "zuma"}, {"luns", 2}, {"acl", {"a", "b"}}}) ==
        "acl   a,b\nluns  2\nname  zuma\n");
  CHECK(render(Json{{"message", "1 LU added"}}) == "1 LU added\n");
  CHECK(render(Json("text")) == "text\n");
  CHECK(render(Json()) == "");
}

TEST_CASE("render: arrays of objects as tables, id and name first, creation times in UTC") {
  const Json list = Json::array({{{"name", "before-upgrade"}, {"id", 1}, {"created", 0},
                                  {"shared_bytes", 65536}},
                                 {{"name", ""}, {"id", 12}, {"created", 1796420168},
                                  {"shared_bytes", 0}}});
  CHECK(render(list) ==
        "ID  NAME            CREATED               SHARED_BYTES\n"
        " 1  before-upgrade  1970-01-01 00:00:00Z         65536\n"
        "12                  2026-12-04 21:36:08Z             0\n");
  CHECK(render(Json::array()) == "(none)\n");
  CHECK(render(Json::array({"a", 2})) == "a\n2\n");
  // Extents of snapshot diff: no id or name, the keys as they come.
  CHECK(render(Json::array({{{"length", 4096}, {"offset", 0}}})) ==
        "LENGTH  OFFSET\n"
        "  4096       0\n");
}
