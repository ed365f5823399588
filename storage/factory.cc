#include "storage/factory.hh"

#include <new>

#include <fmt/format.h>

#include "storage/file_backend.hh"
#include "storage/memory_backend.hh"
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
           fmt::format("unknown backend kind \"{}\" (expected file, memory or null)", spec.kind));
}

}  // namespace zuma::storage
