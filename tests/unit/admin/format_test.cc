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
