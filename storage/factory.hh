// Opens the backend a sub-unit names in the config.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "storage/backend.hh"

namespace zuma::storage {

struct BackendSpec {
  std::string kind;   // "file" (regular file or block device), "memory", "null"
  std::string path;   // file: path; created as a sparse file of `size` when missing
  uint64_t size = 0;  // bytes; for an existing block device 0 means its whole size
};

// Error: a one-line message naming the path and the errno text.
std::expected<std::unique_ptr<Backend>, std::string> open_backend(const BackendSpec& spec);

// One address space made of `parts` in order (DESIGN.md: a LU's sub-units, concatenated).
// A request that crosses a boundary is split and completes once, with the first error.
std::unique_ptr<Backend> make_concat(std::vector<std::unique_ptr<Backend>> parts);

}  // namespace zuma::storage
