#include "replication/dirty_map.hh"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

namespace zuma::replication {
namespace {

constexpr uint64_t kMagic = 0x50414d5954524944ULL;  // "DIRTYMAP"

struct Header {
  uint64_t magic;
  uint64_t covered;   // the highest sequence number whose regions are in the map
  uint64_t bytes;     // serialized bitmap bytes that follow
  uint64_t checksum;  // XXH3-64 of those bytes
};

}  // namespace

void DirtyMap::add(uint32_t lu, uint64_t offset, uint64_t length) {
  if (length == 0) return;
  const uint64_t first = offset / kRegion, last = (offset + length - 1) / kRegion;
  const uint64_t base = uint64_t(lu) << 40;
  for (uint64_t r = first; r <= last; ++r) bits_.add(base | r);
}

std::vector<Region> DirtyMap::ranges(const std::vector<uint64_t>& lu_sizes) const {
  std::vector<Region> out;
  for (auto it = bits_.begin(); it != bits_.end(); ++it) {
    const uint64_t v = *it;
    const uint32_t lu = uint32_t(v >> 40);
    const uint64_t off = (v & ((uint64_t(1) << 40) - 1)) * kRegion;
    if (lu >= lu_sizes.size() || off >= lu_sizes[lu]) continue;
    const uint64_t len = std::min(kRegion, lu_sizes[lu] - off);
    if (!out.empty() && out.back().lu == lu && out.back().offset + out.back().length == off)
      out.back().length += len;
    else
      out.push_back(Region{lu, off, len});
  }
  return out;
}

std::string DirtyMap::save(const std::string& path, uint64_t covered) const {
  std::string data(bits_.getSizeInBytes(true), '\0');
  bits_.write(data.data(), true);
  Header h{kMagic, covered, data.size(), XXH3_64bits(data.data(), data.size())};
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fmt::format("{}: {}", tmp, std::strerror(errno));
  bool ok = ::write(fd, &h, sizeof(h)) == ssize_t(sizeof(h)) &&
            ::write(fd, data.data(), data.size()) == ssize_t(data.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
    return fmt::format("{}: {}", path, std::strerror(errno));
  return "";
}

std::string DirtyMap::load(const std::string& path, uint64_t* covered) {
  std::ifstream in(path, std::ios::binary);
  *covered = 0;
  clear();
  if (!in) return "";
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Header h{};
  if (all.size() < sizeof(h)) return fmt::format("{}: too short for a dirty-region map", path);
  std::memcpy(&h, all.data(), sizeof(h));
  if (h.magic != kMagic || h.bytes != all.size() - sizeof(h) ||
      h.checksum != XXH3_64bits(all.data() + sizeof(h), h.bytes))
    return fmt::format("{}: damaged dirty-region map", path);
  bits_ = Roaring64Map::readSafe(all.data() + sizeof(h), h.bytes);
  *covered = h.covered;
  return "";
}

}  // namespace zuma::replication
