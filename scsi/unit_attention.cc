#include "scsi/unit_attention.hh"

#include <algorithm>

namespace zuma::scsi {
namespace {

bool is_reset_class(Reason r) {
  // ASC 29h: power on, reset, or bus device reset occurred.
  return is_unit_attention(r) && sense_code(r).asc == 0x29;
}

size_t slot_of(uint64_t key) {
  // Fibonacci hashing spreads sequential ids.
  return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 56);
}

}  // namespace

int UnitAttentions::find_slot(uint64_t nexus) const {
  if (nexus == kTombstone) return -1;  // id ~0 cannot be stored as id+1
  const uint64_t key = nexus + 1;
  size_t i = slot_of(key);
  for (size_t n = 0; n < kSlots; ++n, i = (i + 1) % kSlots) {
    const uint64_t v = slots_[i].load(std::memory_order_acquire);
    if (v == key) return static_cast<int>(i);
    if (v == 0) return -1;
  }
  return -1;
}

void UnitAttentions::cache_insert(uint64_t nexus, bool pending) {
  if (nexus == kTombstone || cache_live_ + 1 > kLimit) return;  // uncached: locked path
  if (slots_used_ + 1 > kLimit) {
    // Tombstones fill the table: rebuild it from the map. Readers racing the rebuild may
    // miss an entry and take the locked path, which is always correct.
    for (size_t i = 0; i < kSlots; ++i) {
      slots_[i].store(0, std::memory_order_release);
      pending_[i].store(false, std::memory_order_release);
    }
    slots_used_ = 0;
    for (const auto& [id, q] : nexuses_) {
      if (id == nexus || id == kTombstone || slots_used_ + 2 > kLimit) continue;
      size_t i = slot_of(id + 1);
      while (slots_[i].load(std::memory_order_relaxed) != 0) i = (i + 1) % kSlots;
      pending_[i].store(!q.empty(), std::memory_order_release);
      slots_[i].store(id + 1, std::memory_order_release);
      ++slots_used_;
    }
    cache_live_ = slots_used_;
  }
  const uint64_t key = nexus + 1;
  size_t i = slot_of(key);
  while (true) {
    const uint64_t v = slots_[i].load(std::memory_order_relaxed);
    if (v == key) return;
    if (v == 0) break;
    i = (i + 1) % kSlots;
  }
  pending_[i].store(pending, std::memory_order_release);
  slots_[i].store(key, std::memory_order_release);
  ++slots_used_;
  ++cache_live_;
}

void UnitAttentions::cache_erase(uint64_t nexus) {
  const int i = find_slot(nexus);
  if (i < 0) return;
  slots_[i].store(kTombstone, std::memory_order_release);
  pending_[i].store(false, std::memory_order_release);
  --cache_live_;
}

void UnitAttentions::set_flag(uint64_t nexus, bool pending) {
  if (const int i = find_slot(nexus); i >= 0) pending_[i].store(pending, std::memory_order_release);
}

void UnitAttentions::touch(uint64_t nexus) {
  if (find_slot(nexus) >= 0) return;
  std::lock_guard lock(mu_);
  auto [it, inserted] = nexuses_.try_emplace(nexus);
  cache_insert(nexus, !it->second.empty());
}

std::optional<Reason> UnitAttentions::take(uint64_t nexus) {
  const int i = find_slot(nexus);
  if (i >= 0 ? !pending_[i].load(std::memory_order_acquire)
             : queued_.load(std::memory_order_acquire) == 0) {
    return std::nullopt;
  }
  std::lock_guard lock(mu_);
  auto it = nexuses_.find(nexus);
  if (it == nexuses_.end() || it->second.empty()) return std::nullopt;
  const Reason r = it->second.front();
  it->second.erase(it->second.begin());
  queued_.fetch_sub(1, std::memory_order_release);
  if (it->second.empty()) set_flag(nexus, false);
  return r;
}

bool UnitAttentions::pending(uint64_t nexus) const {
  const int i = find_slot(nexus);
  if (i >= 0) return pending_[i].load(std::memory_order_acquire);
  if (queued_.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard lock(mu_);
  auto it = nexuses_.find(nexus);
  return it != nexuses_.end() && !it->second.empty();
}

void UnitAttentions::add_locked(uint64_t nexus, std::vector<Reason>& q, Reason ua) {
  if (is_reset_class(ua)) {
    queued_.fetch_sub(q.size(), std::memory_order_release);
    q.clear();
  } else if (std::find(q.begin(), q.end(), ua) != q.end() || q.size() >= kMaxQueued) {
    return;
  }
  q.push_back(ua);
  queued_.fetch_add(1, std::memory_order_release);
  set_flag(nexus, true);
}

void UnitAttentions::establish(uint64_t nexus, Reason ua) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = nexuses_.try_emplace(nexus);
  if (inserted) cache_insert(nexus, false);
  add_locked(nexus, it->second, ua);
}

void UnitAttentions::establish_all(Reason ua, std::optional<uint64_t> except) {
  std::lock_guard lock(mu_);
  for (auto& [id, q] : nexuses_) {
    if (except && *except == id) continue;
    add_locked(id, q, ua);
  }
}

void UnitAttentions::forget(uint64_t nexus) {
  std::lock_guard lock(mu_);
  auto it = nexuses_.find(nexus);
  if (it == nexuses_.end()) return;
  queued_.fetch_sub(it->second.size(), std::memory_order_release);
  nexuses_.erase(it);
  cache_erase(nexus);
}

size_t UnitAttentions::known_count() const {
  std::lock_guard lock(mu_);
  return nexuses_.size();
}

}  // namespace zuma::scsi
