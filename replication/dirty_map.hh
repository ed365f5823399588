// A site link's dirty-region map (the `bitmap` fall-behind policy, docs/REPLICATION.md
// "Fall-behind"): which 64 KiB regions of which LU of the group changed in records the log
// released before the link's peer had them. A compressed bitmap (libroaring), kept in a file
// replaced atomically (written, synced, renamed) with a checksum, so a crash leaves the
// previous map whole.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <roaring/roaring64map.hh>

#include "replication/group_log.hh"

namespace zuma::replication {

class DirtyMap {
 public:
  static constexpr uint64_t kRegion = 64 * 1024;

  // Marks the regions that [offset, offset + length) of LU `lu` touches.
  void add(uint32_t lu, uint64_t offset, uint64_t length);
  // The marked regions as byte ranges, merged, clipped to the LUs' sizes.
  std::vector<Region> ranges(const std::vector<uint64_t>& lu_sizes) const;
  uint64_t regions() const { return bits_.cardinality(); }
  bool empty() const { return bits_.isEmpty(); }
  void clear() { bits_ = Roaring64Map(); }

  // "" or why not. load() of a missing file gives an empty map.
  std::string save(const std::string& path, uint64_t covered) const;
  std::string load(const std::string& path, uint64_t* covered);

 private:
  Roaring64Map bits_;  // (lu << 40) | region index
};

}  // namespace zuma::replication
