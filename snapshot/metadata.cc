#include "snapshot/metadata.hh"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace zuma::snapshot {

namespace {

constexpr uint64_t kCheckpointMagic = 0x54504b43504e535aull;  // "ZSNPCKPT"
constexpr uint32_t kCheckpointVersion = 2;  // 1: clones without lines (still read)
constexpr size_t kMaxName = 255;

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>* out) : out_(out) {}
  void u8(uint8_t v) { out_->push_back(v); }
  void u16(uint16_t v) { raw(&v, 2); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u16(static_cast<uint16_t>(s.size()));
    raw(s.data(), s.size());
  }

 private:
  void raw(const void* p, size_t n) {  // little-endian hosts only (x86-64, aarch64)
    const auto* b = static_cast<const uint8_t*>(p);
    out_->insert(out_->end(), b, b + n);
  }
  std::vector<uint8_t>* out_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }
  uint8_t u8() {
    uint8_t v = 0;
    raw(&v, 1);
    return v;
  }
  uint16_t u16() {
    uint16_t v = 0;
    raw(&v, 2);
    return v;
  }
  uint32_t u32() {
    uint32_t v = 0;
    raw(&v, 4);
    return v;
  }
  uint64_t u64() {
    uint64_t v = 0;
    raw(&v, 8);
    return v;
  }
  std::string str() {
    const uint16_t n = u16();
    if (!ok_ || n > kMaxName || in_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  // A count of items of at least `item_bytes` each that the rest of the input can hold.
  uint64_t count(size_t item_bytes) {
    const uint64_t n = u64();
    if (!ok_ || n > (in_.size() - pos_) / item_bytes) {
      ok_ = false;
      return 0;
    }
    return n;
  }

 private:
  void raw(void* p, size_t n) {
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return;
    }
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

Metadata::Metadata(uint64_t home_chunks, uint64_t store_chunks)
    : home_(home_chunks), store_(store_chunks), live_(home_chunks) {
  for (uint64_t c = 0; c < home_; ++c) live_[c] = {c, 0};
  rebuild_allocator();
}

Phys Metadata::lookup(Epoch e, uint64_t chunk) const {
  const Mapping& m = live_[chunk];
  if (m.birth <= e) return m.phys;
  auto it = history_.upper_bound({chunk, e});
  if (it == history_.begin()) return kZeroPhys;
  --it;
  if (it->first.first != chunk || it->second.death <= e) return kZeroPhys;
  return it->second.phys;
}

std::optional<Phys> Metadata::clone_own(uint64_t clone, uint64_t chunk) const {
  auto l = lines_.find(clone);
  if (l == lines_.end()) return std::nullopt;
  auto it = l->second.own.find(chunk);
  if (it == l->second.own.end()) return std::nullopt;
  return it->second.phys;
}

std::optional<Phys> Metadata::clone_writable_in_place(uint64_t clone, uint64_t chunk) const {
  auto l = lines_.find(clone);
  if (l == lines_.end()) return std::nullopt;
  auto it = l->second.own.find(chunk);
  if (it == l->second.own.end() || it->second.phys == kZeroPhys) return std::nullopt;
  const Epoch newest = l->second.newest();
  if (newest != 0 && it->second.birth <= newest) return std::nullopt;
  return it->second.phys;
}

Phys Metadata::clone_lookup(uint64_t clone, uint64_t chunk) const {
  if (auto own = clone_own(clone, chunk)) return *own;
  auto c = clones_.find(clone);
  return c == clones_.end() ? kZeroPhys : snapshot_lookup(c->second.base, chunk);
}

Phys Metadata::snapshot_lookup(Epoch e, uint64_t chunk) const {
  auto o = clone_snap_owner_.find(e);
  if (o == clone_snap_owner_.end()) return lookup(e, chunk);
  // Within the clone's line as for the LU; a chunk the clone had not written by e is its
  // base snapshot's (the recursion is as deep as clones of clone snapshots nest).
  const uint64_t clone = o->second;
  auto l = lines_.find(clone);
  if (l == lines_.end()) return kZeroPhys;
  const CloneLine& line = l->second;
  if (auto it = line.own.find(chunk); it != line.own.end() && it->second.birth <= e)
    return it->second.phys;
  auto it = line.history.upper_bound({chunk, e});
  if (it != line.history.begin()) {
    --it;
    if (it->first.first == chunk && it->second.death > e) return it->second.phys;
  }
  auto c = clones_.find(clone);
  return c == clones_.end() ? kZeroPhys : snapshot_lookup(c->second.base, chunk);
}

bool Metadata::snapshot_exists(Epoch e) const {
  if (snaps_.count(e)) return true;
  auto o = clone_snap_owner_.find(e);
  if (o == clone_snap_owner_.end()) return false;
  auto l = lines_.find(o->second);
  return l != lines_.end() && l->second.snaps.count(e);
}

uint64_t Metadata::snapshot_owner(Epoch e) const {
  auto o = clone_snap_owner_.find(e);
  return o == clone_snap_owner_.end() ? 0 : o->second;
}

const std::map<Epoch, SnapshotInfo>& Metadata::clone_snapshots(uint64_t clone) const {
  static const std::map<Epoch, SnapshotInfo> kNone;
  auto l = lines_.find(clone);
  return l == lines_.end() ? kNone : l->second.snaps;
}

std::optional<Phys> Metadata::allocate() {
  const uint64_t total = home_ + store_;
  if (used_count_ >= total) return std::nullopt;
  // Next fit: amortised O(1) while free chunks are plentiful.
  for (uint64_t n = 0; n < total; ++n) {
    const uint64_t p = cursor_;
    cursor_ = cursor_ + 1 >= total ? 0 : cursor_ + 1;
    if (!used_[p]) {
      used_[p] = true;
      ++used_count_;
      return p;
    }
  }
  return std::nullopt;
}

void Metadata::unallocate(Phys p) {
  if (p < used_.size() && used_[p]) {
    used_[p] = false;
    --used_count_;
  }
}

void Metadata::free_phys(Phys p) {
  if (p != kZeroPhys) frees_.push_back(p);
}

void Metadata::release(std::span<const Phys> frees) {
  for (Phys p : frees) unallocate(p);
}

void Metadata::set_live(uint64_t chunk, Mapping m) {
  const Mapping old = live_[chunk];
  const bool was = !(old.phys == chunk && old.birth == 0);
  const bool now = !(m.phys == chunk && m.birth == 0);
  if (was) live_by_birth_.erase({old.birth, chunk});
  if (now) live_by_birth_.insert({m.birth, chunk});
  explicit_live_ += static_cast<uint64_t>(now) - static_cast<uint64_t>(was);
  live_[chunk] = m;
  record({OpType::kMap, chunk, m.phys, m.birth, 0, {}});
}

void Metadata::add_version(uint64_t chunk, Epoch birth, Epoch death, Phys phys) {
  history_[{chunk, birth}] = {death, phys};
  by_birth_.insert({birth, chunk});
  by_death_.insert({death, chunk, birth});
  record({OpType::kRetire, chunk, birth, death, phys, {}});
}

void Metadata::drop_version(uint64_t chunk, Epoch birth) {
  auto it = history_.find({chunk, birth});
  if (it == history_.end()) return;
  free_phys(it->second.phys);
  by_birth_.erase({birth, chunk});
  by_death_.erase({it->second.death, chunk, birth});
  history_.erase(it);
  record({OpType::kDrop, chunk, birth, 0, 0, {}});
}

bool Metadata::has_snapshot_in(Epoch b, Epoch d) const {
  auto it = snaps_.lower_bound(b);
  return it != snaps_.end() && it->first < d;
}

void Metadata::remap_live(uint64_t chunk, Phys phys) {
  const Mapping old = live_[chunk];
  // The old version stays only while a snapshot sees it (one O(log n) check).
  if (has_snapshot_in(old.birth, current_)) {
    add_version(chunk, old.birth, current_, old.phys);
  } else {
    free_phys(old.phys);
  }
  set_live(chunk, {phys, current_});
}

void Metadata::refresh_newest() {
  newest_ = snaps_.empty() ? 0 : snaps_.rbegin()->first;
}

void Metadata::add_snapshot(SnapshotInfo s) {
  names_bytes_ += s.name.size();
  current_ = std::max(current_, s.epoch + 1);
  snaps_[s.epoch] = std::move(s);
  refresh_newest();
}

std::optional<std::string> Metadata::create_snapshot(const std::string& name, int64_t created,
                                                     Epoch* epoch) {
  if (name.size() > kMaxName) return fmt::format("a snapshot name has at most {} bytes", kMaxName);
  if (Epoch other = 0; name_taken(name, &other))
    return fmt::format("a snapshot named '{}' exists (id {})", name, other);
  if (current_ == kLive - 1) return std::string("no epoch numbers left");
  const Epoch e = current_;
  add_snapshot({e, created, name});
  record({OpType::kSnap, e, static_cast<uint64_t>(created), 0, 0, name});
  *epoch = e;
  return std::nullopt;
}

bool Metadata::name_taken(const std::string& name, Epoch* e) const {
  if (name.empty()) return false;
  for (const auto& [k, s] : snaps_)
    if (s.name == name) return *e = k, true;
  for (const auto& [id, line] : lines_)
    for (const auto& [k, s] : line.snaps)
      if (s.name == name) return *e = k, true;
  return false;
}

std::optional<std::string> Metadata::create_clone_snapshot(uint64_t clone, const std::string& name,
                                                           int64_t created, Epoch* epoch) {
  auto l = lines_.find(clone);
  if (l == lines_.end()) return fmt::format("no clone {}", clone);
  if (name.size() > kMaxName) return fmt::format("a snapshot name has at most {} bytes", kMaxName);
  if (Epoch other = 0; name_taken(name, &other))
    return fmt::format("a snapshot named '{}' exists (id {})", name, other);
  if (current_ == kLive - 1) return std::string("no epoch numbers left");
  const Epoch e = current_++;
  l->second.snaps[e] = {e, created, name};
  clone_snap_owner_[e] = clone;
  names_bytes_ += name.size();
  record({OpType::kCloneSnap, e, clone, static_cast<uint64_t>(created), 0, name});
  *epoch = e;
  return std::nullopt;
}

bool Metadata::pinned(Epoch e) const {
  return std::any_of(clones_.begin(), clones_.end(),
                     [&](const auto& c) { return c.second.base == e; });
}

std::optional<std::string> Metadata::delete_snapshot(Epoch e) {
  if (!snapshot_exists(e)) return fmt::format("no snapshot {}", e);
  if (pinned(e)) return fmt::format("snapshot {} is the base of a clone: delete the clone first", e);
  unsnap(e);
  record({OpType::kUnsnap, e, 0, 0, 0, {}});
  return std::nullopt;
}

void Metadata::unsnap(Epoch e) {
  if (auto it = snaps_.find(e); it != snaps_.end()) {
    names_bytes_ -= it->second.name.size();
    snaps_.erase(it);
    refresh_newest();
  } else if (auto o = clone_snap_owner_.find(e); o != clone_snap_owner_.end()) {
    auto l = lines_.find(o->second);
    if (l != lines_.end()) {
      if (auto s = l->second.snaps.find(e); s != l->second.snaps.end()) {
        names_bytes_ -= s->second.name.size();
        l->second.snaps.erase(s);
      }
    }
  }
  reclaim_.insert(e);
}

// Reclaim of a deleted clone snapshot: the LU's rule within the clone's line.
bool Metadata::reclaim_clone(Epoch e, size_t* budget) {
  auto l = lines_.find(clone_snap_owner_.at(e));
  if (l == lines_.end()) return true;
  const uint64_t clone = l->first;
  const CloneLine& line = l->second;
  auto next_it = line.snaps.upper_bound(e);
  const Epoch next = next_it == line.snaps.end() ? kLive : next_it->first;
  std::vector<Key> drop;
  bool more = false;
  for (auto it = line.by_death.lower_bound({e + 1, 0, 0});
       it != line.by_death.end() && std::get<0>(*it) <= next; ++it) {
    const auto& [d, c, b] = *it;
    if (line.has_snapshot_in(b, d)) continue;
    if (drop.size() == *budget) {
      more = true;
      break;
    }
    drop.push_back({c, b});
  }
  for (const Key& k : drop) clone_drop(clone, k.first, k.second);
  *budget -= drop.size();
  return !more;
}

void Metadata::clone_drop(uint64_t clone, uint64_t chunk, Epoch birth) {
  auto l = lines_.find(clone);
  if (l == lines_.end()) return;
  CloneLine& line = l->second;
  auto it = line.history.find({chunk, birth});
  if (it == line.history.end()) return;
  free_phys(it->second.phys);
  line.by_birth.erase({birth, chunk});
  line.by_death.erase({it->second.death, chunk, birth});
  line.history.erase(it);
  record({OpType::kCloneDrop, clone, chunk, birth, 0, {}});
}

bool Metadata::reclaim(size_t budget) {
  while (!reclaim_.empty() && budget > 0) {
    const Epoch e = *reclaim_.begin();
    if (clone_snap_owner_.count(e)) {
      if (!reclaim_clone(e, &budget)) break;
      reclaim_.erase(reclaim_.begin());
      clone_snap_owner_.erase(e);
      record({OpType::kReclaimed, e, 0, 0, 0, {}});
      continue;
    }
    auto next_it = snaps_.upper_bound(e);
    const Epoch next = next_it == snaps_.end() ? kLive : next_it->first;
    // A version freed by deleting e was alive at e and died by the next snapshot: death in
    // (e, next]. Those another snapshot still sees stay.
    std::vector<Key> drop;
    bool more = false;
    for (auto it = by_death_.lower_bound({e + 1, 0, 0});
         it != by_death_.end() && std::get<0>(*it) <= next; ++it) {
      const auto& [d, c, b] = *it;
      if (has_snapshot_in(b, d)) continue;
      if (drop.size() == budget) {
        more = true;
        break;
      }
      drop.push_back({c, b});
    }
    for (const Key& k : drop) drop_version(k.first, k.second);
    budget -= drop.size();
    if (more) break;
    reclaim_.erase(reclaim_.begin());
    record({OpType::kReclaimed, e, 0, 0, 0, {}});
  }
  return reclaim_.empty();
}

std::optional<std::string> Metadata::create_clone(Epoch base, const std::string& name,
                                                  int64_t created, uint64_t* id) {
  if (!snapshot_exists(base)) return fmt::format("no snapshot {}", base);
  if (name.size() > kMaxName) return fmt::format("a clone name has at most {} bytes", kMaxName);
  if (!name.empty()) {
    for (const auto& [i, c] : clones_)
      if (c.name == name) return fmt::format("a clone named '{}' exists (id {})", name, i);
  }
  *id = next_clone_++;
  clones_[*id] = {*id, base, created, name};
  lines_[*id];
  names_bytes_ += name.size();
  record({OpType::kClone, *id, base, static_cast<uint64_t>(created), 0, name});
  return std::nullopt;
}

void Metadata::clone_map(uint64_t clone, uint64_t chunk, Phys phys) {
  clone_map_at(clone, chunk, phys, current_);
}

void Metadata::clone_map_at(uint64_t clone, uint64_t chunk, Phys phys, Epoch birth) {
  CloneLine& line = lines_[clone];
  auto [it, inserted] = line.own.emplace(chunk, Mapping{phys, birth});
  if (!inserted) {
    const Mapping old = it->second;
    line.own_by_birth.erase({old.birth, chunk});
    // As remap_live: the old version stays only while a snapshot of the clone sees it.
    if (line.has_snapshot_in(old.birth, birth)) {
      line.history[{chunk, old.birth}] = {birth, old.phys};
      line.by_birth.insert({old.birth, chunk});
      line.by_death.insert({birth, chunk, old.birth});
    } else {
      free_phys(old.phys);
    }
    it->second = {phys, birth};
  }
  line.own_by_birth.insert({birth, chunk});
  record({OpType::kCloneMap, clone, chunk, phys, birth, {}});
}

std::optional<std::string> Metadata::delete_clone(uint64_t clone) {
  auto it = clones_.find(clone);
  if (it == clones_.end()) return fmt::format("no clone {}", clone);
  for (const auto& [e, s] : clone_snapshots(clone))
    if (pinned(e))
      return fmt::format("snapshot {} of clone {} is the base of a clone: delete that clone first",
                         e, clone);
  erase_clone(clone);
  record({OpType::kUnclone, clone, 0, 0, 0, {}});
  return std::nullopt;
}

void Metadata::erase_clone(uint64_t clone) {
  auto it = clones_.find(clone);
  if (it == clones_.end()) return;
  if (auto l = lines_.find(clone); l != lines_.end()) {
    for (const auto& [c, m] : l->second.own) free_phys(m.phys);
    for (const auto& [k, v] : l->second.history) free_phys(v.phys);
    for (const auto& [e, s] : l->second.snaps) names_bytes_ -= s.name.size();
    lines_.erase(l);
  }
  // Its snapshots, and deleted ones awaiting reclaim, go with it.
  for (auto o = clone_snap_owner_.begin(); o != clone_snap_owner_.end();) {
    if (o->second == clone) {
      reclaim_.erase(o->first);
      o = clone_snap_owner_.erase(o);
    } else {
      ++o;
    }
  }
  names_bytes_ -= it->second.name.size();
  clones_.erase(it);
}

std::optional<Epoch> Metadata::find_snapshot(const std::string& s) const {
  if (Epoch e = 0; name_taken(s, &e)) return e;
  if (!s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      s.size() < 20) {
    const Epoch e = std::stoull(s);
    if (snapshot_exists(e)) return e;
  }
  return std::nullopt;
}

namespace {

void to_runs(std::vector<uint64_t>& chunks, std::vector<ChunkRun>* out) {
  std::sort(chunks.begin(), chunks.end());
  chunks.erase(std::unique(chunks.begin(), chunks.end()), chunks.end());
  out->clear();
  for (uint64_t c : chunks) {
    if (!out->empty() && out->back().first + out->back().count == c) {
      ++out->back().count;
    } else {
      out->push_back({c, 1});
    }
  }
}

}  // namespace

std::optional<std::string> Metadata::clone_diff(uint64_t clone, Epoch from, Epoch to,
                                                std::vector<ChunkRun>* out) const {
  auto l = lines_.find(clone);
  if (l == lines_.end()) return fmt::format("no clone {}", clone);
  const CloneLine& line = l->second;
  if (!line.snaps.count(from)) return fmt::format("no snapshot {} of clone {}", from, clone);
  if (to != kLive && !line.snaps.count(to)) return fmt::format("no snapshot {} of clone {}", to, clone);
  if (from >= to) return std::string("the first snapshot must be older than the second");
  // Chunks the clone had not written by `to` are its base's at both points.
  std::vector<uint64_t> chunks;
  for (auto it = line.own_by_birth.lower_bound({from + 1, 0});
       it != line.own_by_birth.end() && it->first <= to; ++it)
    chunks.push_back(it->second);
  if (to != kLive) {
    for (auto it = line.by_birth.lower_bound({from + 1, 0}); it != line.by_birth.end() && it->first <= to;
         ++it) {
      if (line.history.at({it->second, it->first}).death > to) chunks.push_back(it->second);
    }
  }
  to_runs(chunks, out);
  return std::nullopt;
}

void Metadata::clone_snapshot_usage(Epoch e, uint64_t* exclusive, uint64_t* shared) const {
  *exclusive = 0;
  *shared = 0;
  auto l = lines_.find(snapshot_owner(e));
  if (l == lines_.end() || !l->second.snaps.count(e)) return;
  const CloneLine& line = l->second;
  auto next_it = line.snaps.upper_bound(e);
  const Epoch next = next_it == line.snaps.end() ? kLive : next_it->first;
  auto it_e = line.snaps.find(e);
  const bool first = it_e == line.snaps.begin();
  const Epoch prev = first ? 0 : std::prev(it_e)->first;
  for (auto it = line.by_death.lower_bound({e + 1, 0, 0}); it != line.by_death.end() && std::get<0>(*it) <= next;
       ++it) {
    const auto& [d, c, b] = *it;
    if ((first || b > prev) && b <= e && line.history.at({c, b}).phys != kZeroPhys) ++*exclusive;
  }
  uint64_t referenced = 0;
  for (uint64_t c = 0; c < home_; ++c) referenced += snapshot_lookup(e, c) != kZeroPhys;
  *shared = referenced - std::min(referenced, *exclusive);
}

std::optional<std::string> Metadata::diff(Epoch from, Epoch to, std::vector<ChunkRun>* out) const {
  if (!snaps_.count(from)) return fmt::format("no snapshot {}", from);
  if (to != kLive && !snaps_.count(to)) return fmt::format("no snapshot {}", to);
  if (from >= to) return std::string("the first snapshot must be older than the second");
  std::vector<uint64_t> chunks;
  // Live mappings born in (from, to] are alive at `to`.
  for (auto it = live_by_birth_.lower_bound({from + 1, 0});
       it != live_by_birth_.end() && it->first <= to; ++it)
    chunks.push_back(it->second);
  if (to != kLive) {
    for (auto it = by_birth_.lower_bound({from + 1, 0}); it != by_birth_.end() && it->first <= to;
         ++it) {
      if (history_.at({it->second, it->first}).death > to) chunks.push_back(it->second);
    }
  }
  to_runs(chunks, out);
  return std::nullopt;
}

void Metadata::snapshot_usage(Epoch e, uint64_t* exclusive, uint64_t* shared) const {
  *exclusive = 0;
  *shared = 0;
  if (!snaps_.count(e)) return;
  auto next_it = snaps_.upper_bound(e);
  const Epoch next = next_it == snaps_.end() ? kLive : next_it->first;
  auto prev_it = snaps_.find(e);
  const bool first = prev_it == snaps_.begin();
  const Epoch prev = first ? 0 : std::prev(prev_it)->first;
  // Exclusive: alive at e only (born after the previous snapshot, dead by the next).
  for (auto it = by_death_.lower_bound({e + 1, 0, 0}); it != by_death_.end() && std::get<0>(*it) <= next;
       ++it) {
    const auto& [d, c, b] = *it;
    if ((first || b > prev) && b <= e && history_.at({c, b}).phys != kZeroPhys) ++*exclusive;
  }
  uint64_t referenced = 0;
  for (uint64_t c = 0; c < home_; ++c) referenced += lookup(e, c) != kZeroPhys;
  *shared = referenced - std::min(referenced, *exclusive);
}

void Metadata::take_pending(std::vector<MetaOp>* ops, std::vector<Phys>* frees) {
  ops->swap(ops_);
  ops_.clear();
  frees->swap(frees_);
  frees_.clear();
}

uint64_t Metadata::serialized_size() const {
  uint64_t lines = 0;
  for (const auto& [id, l] : lines_)
    lines += l.own.size() * 24 + l.history.size() * 32 + l.snaps.size() * 18;
  return 88 + snaps_.size() * 18 + reclaim_.size() * 16 + clones_.size() * 50 + lines +
         names_bytes_ + explicit_live_ * 24 + history_.size() * 32;
}

void Metadata::serialize(std::vector<uint8_t>* out) const {
  out->clear();
  out->reserve(serialized_size());
  Writer w(out);
  w.u64(kCheckpointMagic);
  w.u32(kCheckpointVersion);
  w.u32(0);
  w.u64(home_);
  w.u64(store_);
  w.u64(current_);
  w.u64(next_clone_);
  w.u64(snaps_.size());
  for (const auto& [e, s] : snaps_) {
    w.u64(e);
    w.u64(static_cast<uint64_t>(s.created));
    w.str(s.name);
  }
  w.u64(reclaim_.size());
  for (Epoch e : reclaim_) {
    w.u64(e);
    w.u64(snapshot_owner(e));
  }
  w.u64(clones_.size());
  for (const auto& [id, c] : clones_) {
    w.u64(id);
    w.u64(c.base);
    w.u64(static_cast<uint64_t>(c.created));
    w.str(c.name);
    const CloneLine& l = lines_.at(id);
    w.u64(l.own.size());
    for (const auto& [b, chunk] : l.own_by_birth) {  // a deterministic order
      w.u64(chunk);
      w.u64(l.own.at(chunk).phys);
      w.u64(b);
    }
    w.u64(l.history.size());
    for (const auto& [k, v] : l.history) {
      w.u64(k.first);
      w.u64(k.second);
      w.u64(v.death);
      w.u64(v.phys);
    }
    w.u64(l.snaps.size());
    for (const auto& [e, sn] : l.snaps) {
      w.u64(e);
      w.u64(static_cast<uint64_t>(sn.created));
      w.str(sn.name);
    }
  }
  w.u64(explicit_live_);
  for (const auto& [b, c] : live_by_birth_) {
    w.u64(c);
    w.u64(live_[c].phys);
    w.u64(b);
  }
  w.u64(history_.size());
  for (const auto& [k, v] : history_) {
    w.u64(k.first);
    w.u64(k.second);
    w.u64(v.death);
    w.u64(v.phys);
  }
}

std::optional<std::string> Metadata::deserialize(std::span<const uint8_t> in) {
  Reader r(in);
  if (r.u64() != kCheckpointMagic) return std::string("checkpoint: bad magic");
  const uint32_t version = r.u32();
  if (version != 1 && version != kCheckpointVersion) return std::string("checkpoint: unknown version");
  const bool v1 = version == 1;
  r.u32();
  const uint64_t home = r.u64(), store = r.u64();
  if (home != home_ || store != store_)
    return fmt::format("checkpoint: geometry {}+{} chunks, expected {}+{}", home, store, home_, store_);
  Metadata fresh(home_, store_);
  fresh.recording_ = false;
  fresh.current_ = r.u64();
  fresh.next_clone_ = r.u64();
  for (uint64_t n = r.count(18); n > 0 && r.ok(); --n) {
    SnapshotInfo s;
    s.epoch = r.u64();
    s.created = static_cast<int64_t>(r.u64());
    s.name = r.str();
    fresh.add_snapshot(std::move(s));
  }
  for (uint64_t n = r.count(v1 ? 8 : 16); n > 0 && r.ok(); --n) {
    const Epoch e = r.u64();
    fresh.reclaim_.insert(e);
    if (!v1) {
      if (const uint64_t owner = r.u64(); owner != 0) fresh.clone_snap_owner_[e] = owner;
    }
  }
  for (uint64_t n = r.count(v1 ? 34 : 50); n > 0 && r.ok(); --n) {
    CloneInfo c;
    c.id = r.u64();
    c.base = r.u64();
    c.created = static_cast<int64_t>(r.u64());
    c.name = r.str();
    fresh.names_bytes_ += c.name.size();
    CloneLine& l = fresh.lines_[c.id];
    for (uint64_t k = r.count(v1 ? 16 : 24); k > 0 && r.ok(); --k) {
      const uint64_t chunk = r.u64();
      const Phys p = r.u64();
      const Epoch b = v1 ? 0 : r.u64();
      if (chunk >= home_) return std::string("checkpoint: clone mapping of a chunk beyond the LU");
      l.own[chunk] = {p, b};
      l.own_by_birth.insert({b, chunk});
    }
    if (!v1) {
      for (uint64_t k = r.count(32); k > 0 && r.ok(); --k) {
        const uint64_t chunk = r.u64(), b = r.u64(), d = r.u64(), p = r.u64();
        if (chunk >= home_) return std::string("checkpoint: clone version of a chunk beyond the LU");
        l.history[{chunk, b}] = {d, p};
        l.by_birth.insert({b, chunk});
        l.by_death.insert({d, chunk, b});
      }
      for (uint64_t k = r.count(18); k > 0 && r.ok(); --k) {
        SnapshotInfo sn;
        sn.epoch = r.u64();
        sn.created = static_cast<int64_t>(r.u64());
        sn.name = r.str();
        fresh.names_bytes_ += sn.name.size();
        fresh.clone_snap_owner_[sn.epoch] = c.id;
        l.snaps[sn.epoch] = std::move(sn);
      }
    }
    fresh.clones_[c.id] = std::move(c);
  }
  for (uint64_t n = r.count(24); n > 0 && r.ok(); --n) {
    const uint64_t c = r.u64(), p = r.u64(), b = r.u64();
    if (c >= home_) return std::string("checkpoint: live mapping of a chunk beyond the LU");
    fresh.set_live(c, {p, b});
  }
  for (uint64_t n = r.count(32); n > 0 && r.ok(); --n) {
    const uint64_t c = r.u64(), b = r.u64(), d = r.u64(), p = r.u64();
    if (c >= home_) return std::string("checkpoint: version of a chunk beyond the LU");
    fresh.add_version(c, b, d, p);
  }
  if (!r.ok() || !r.at_end()) return std::string("checkpoint: truncated or malformed");
  fresh.recording_ = true;
  *this = std::move(fresh);
  return std::nullopt;
}

std::optional<std::string> Metadata::apply(const MetaOp& op) {
  recording_ = false;
  std::optional<std::string> err;
  switch (op.type) {
    case OpType::kMap:
      if (op.a >= home_) err = "journal: mapping of a chunk beyond the LU";
      else set_live(op.a, {op.b, op.c});
      break;
    case OpType::kRetire:
      if (op.a >= home_) err = "journal: version of a chunk beyond the LU";
      else add_version(op.a, op.b, op.c, op.d);
      break;
    case OpType::kDrop:
      drop_version(op.a, op.b);
      break;
    case OpType::kSnap:
      add_snapshot({op.a, static_cast<int64_t>(op.b), op.name});
      break;
    case OpType::kUnsnap:
      unsnap(op.a);
      break;
    case OpType::kReclaimed:
      reclaim_.erase(op.a);
      clone_snap_owner_.erase(op.a);
      break;
    case OpType::kClone:
      clones_[op.a] = {op.a, op.b, static_cast<int64_t>(op.c), op.name};
      lines_[op.a];
      names_bytes_ += op.name.size();
      next_clone_ = std::max(next_clone_, op.a + 1);
      break;
    case OpType::kCloneMap:
      if (op.b >= home_ || !clones_.count(op.a)) err = "journal: clone mapping that does not fit";
      else clone_map_at(op.a, op.b, op.c, op.d);
      break;
    case OpType::kCloneSnap:
      if (!clones_.count(op.b)) {
        err = "journal: snapshot of an unknown clone";
      } else {
        lines_[op.b].snaps[op.a] = {op.a, static_cast<int64_t>(op.c), op.name};
        clone_snap_owner_[op.a] = op.b;
        names_bytes_ += op.name.size();
        current_ = std::max(current_, op.a + 1);
      }
      break;
    case OpType::kCloneDrop:
      clone_drop(op.a, op.b, op.c);
      break;
    case OpType::kUnclone:
      erase_clone(op.a);
      break;
    default:
      err = fmt::format("journal: unknown op {}", static_cast<int>(op.type));
  }
  frees_.clear();  // the allocator is rebuilt after replay
  recording_ = true;
  return err;
}

void Metadata::rebuild_allocator() {
  const uint64_t total = home_ + store_;
  used_.assign(total, false);
  used_count_ = 0;
  auto mark = [&](Phys p) {
    if (p < total && !used_[p]) {
      used_[p] = true;
      ++used_count_;
    }
  };
  for (const Mapping& m : live_) mark(m.phys);
  for (const auto& [k, v] : history_) mark(v.phys);
  for (const auto& [id, l] : lines_) {
    for (const auto& [c, m] : l.own) mark(m.phys);
    for (const auto& [k, v] : l.history) mark(v.phys);
  }
  cursor_ = home_ < total ? home_ : 0;
  frees_.clear();
}

void encode_ops(std::span<const MetaOp> ops, std::vector<uint8_t>* out) {
  Writer w(out);
  w.u64(ops.size());
  for (const MetaOp& op : ops) {
    w.u8(static_cast<uint8_t>(op.type));
    w.u64(op.a);
    w.u64(op.b);
    w.u64(op.c);
    w.u64(op.d);
    w.str(op.name);
  }
}

std::optional<std::string> decode_ops(std::span<const uint8_t> in, std::vector<MetaOp>* out) {
  Reader r(in);
  out->clear();
  for (uint64_t n = r.count(35); n > 0 && r.ok(); --n) {
    MetaOp op;
    op.type = static_cast<OpType>(r.u8());
    op.a = r.u64();
    op.b = r.u64();
    op.c = r.u64();
    op.d = r.u64();
    op.name = r.str();
    out->push_back(std::move(op));
  }
  if (!r.ok() || !r.at_end()) return std::string("journal record: malformed operations");
  return std::nullopt;
}

}  // namespace zuma::snapshot
