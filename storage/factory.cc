#include "storage/factory.hh"

#include <array>
#include <new>

#include <fmt/format.h>

#include "storage/file_backend.hh"
#include "storage/memory_backend.hh"
#include "storage/mirror_backend.hh"
#include "storage/null_backend.hh"

namespace zuma::storage {

std::expected<std::unique_ptr<Backend>, std::string> open_backend(const BackendSpec& spec) {
  using R = std::expected<std::unique_ptr<Backend>, std::string>;
  if (spec.kind == "file") {
    auto b = FileBackend::open(spec.path, spec.size);
    if (!b) return R(std::unexpect, std::move(b.error()));
    return R(std::move(*b));
  }
  if (spec.kind == "memory" || spec.kind == "null") {
    if (spec.size == 0) {
      return R(std::unexpect, fmt::format("{} backend: the LU needs a size", spec.kind));
    }
    if (spec.kind == "null") return R(std::make_unique<NullBackend>(spec.size));
    try {
      return R(std::make_unique<MemoryBackend>(spec.size));
    } catch (const std::bad_alloc&) {
      return R(std::unexpect,
               fmt::format("memory backend: cannot allocate the table for {} bytes", spec.size));
    }
  }
  return R(std::unexpect,
           fmt::format("unknown backend kind \"{}\" (expected file, memory, null, iscsi or rbd)",
                       spec.kind));
}

std::expected<std::unique_ptr<Backend>, std::string> open_subunit(const SubUnitSpec& spec) {
  using R = std::expected<std::unique_ptr<Backend>, std::string>;
  const bool mirror = spec.members.size() == 2;
  if (spec.members.size() != 1 && !mirror)
    return R(std::unexpect, "a sub-unit has one backend, or two mirror members");
  std::array<std::unique_ptr<Backend>, 2> opened;
  for (size_t i = 0; i < spec.members.size(); ++i) {
    const SubUnitSpec::Member& m = spec.members[i];
    const uint64_t size = spec.size + (mirror ? MirrorBackend::kHeaderBytes : 0);
    if (m.backend.kind == "iscsi") {
      IscsiSpec is = m.iscsi;
      is.size = size;
      is.allow_offline = mirror;
      auto b = IscsiBackend::open(is);
      if (!b) return R(std::unexpect, std::move(b.error()));
      opened[i] = std::move(*b);
    } else if (m.backend.kind == "rbd") {
      RbdSpec rs = m.rbd;
      rs.size = size;
      auto b = RbdBackend::open(rs);
      if (!b) return R(std::unexpect, std::move(b.error()));
      opened[i] = std::move(*b);
    } else {
      BackendSpec bs = m.backend;
      bs.size = size;
      auto b = open_backend(bs);
      if (!b) return R(std::unexpect, std::move(b.error()));
      opened[i] = std::move(*b);
    }
  }
  if (!mirror) return R(std::move(opened[0]));
  auto m = MirrorBackend::open(std::move(opened), spec.size, spec.mirror_state);
  if (!m) return R(std::unexpect, std::move(m.error()));
  return R(std::move(*m));
}

}  // namespace zuma::storage
