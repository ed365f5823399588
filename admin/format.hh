// Turning command results into text for people (zumactl without --json).
//
// Result conventions (what handlers return):
//   {"columns": [..], "rows": [[..], ..]}   a table, printed with aligned columns
//   {"message": "..."}                       one line
//   any other object                         "key  value" lines, aligned
//   a string                                 printed as it is
//   an array of objects                      a table: ID and NAME first, then every other
//                                            key; "created" (Unix seconds) as UTC time
//   an array of other values                 one per line
// A table or object may also carry "message", printed after it.
#pragma once

#include <string>

#include "admin/protocol.hh"

namespace zuma::admin {

std::string render(const Json& result);
// A table from column names and rows of strings/numbers (two spaces between columns;
// numbers right-aligned).
std::string render_table(const Json& columns, const Json& rows);
// An array result (see above); "(none)" when empty.
std::string render_list(const Json& list);

}  // namespace zuma::admin
