// Opens the backend a sub-unit names in the config.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "storage/backend.hh"
#include "storage/iscsi_backend.hh"
#include "storage/rbd_backend.hh"

namespace zuma::storage {

struct BackendSpec {
  std::string kind;   // "file" (regular file or block device), "memory", "null", "iscsi", "rbd"
  std::string path;   // file: path; created as a sparse file of `size` when missing
  uint64_t size = 0;  // bytes; for an existing block device 0 means its whole size
};

// Error: a one-line message naming the path and the errno text.
std::expected<std::unique_ptr<Backend>, std::string> open_backend(const BackendSpec& spec);

// One sub-unit of a LU as the config describes it: one backend, or a mirror of two
// (docs/DISTRIBUTED.md).
struct SubUnitSpec {
  struct Member {
    BackendSpec backend;  // kind "iscsi"/"rbd": `iscsi`/`rbd` says where (open_subunit sets size)
    IscsiSpec iscsi;
    RbdSpec rbd;
  };
  std::vector<Member> members;  // one, or two for a mirror
  std::string mirror_state;     // mirror: path prefix of its state files in data_dir
  uint64_t size = 0;            // bytes of the sub-unit
};

// Opens a sub-unit. A mirror's members are opened kHeaderBytes larger (their header), and
// remote members may be unreachable at start (they are resynchronised when they return).
std::expected<std::unique_ptr<Backend>, std::string> open_subunit(const SubUnitSpec& spec);

// One address space made of `parts` in order (DESIGN.md: a LU's sub-units, concatenated).
// A request that crosses a boundary is split and completes once, with the first error.
std::unique_ptr<Backend> make_concat(std::vector<std::unique_ptr<Backend>> parts);

// `size` bytes striped over `parts` in units of `stripe_unit` bytes (a power of two):
// unit u lies on part u % parts.size() (DESIGN.md: a LU's sub-units, striped). Every part
// must hold ceil(size / (parts.size() * stripe_unit)) units. A request crossing units is
// split without copying and completes once, with the first error a part reports.
// Error: why the parts do not fit.
std::expected<std::unique_ptr<Backend>, std::string> make_striped(
    std::vector<std::unique_ptr<Backend>> parts, uint64_t stripe_unit, uint64_t size);

}  // namespace zuma::storage
