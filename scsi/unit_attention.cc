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

bool UnitAttentions::cached(uint64_t nexus) const {
  if (nexus == kTombstone) return false;  // id ~0 cannot be stored as id+1
  const uint64_t key = nexus + 1;
  size_t i = slot_of(key);
  for (size_t n = 0; n < kSlots; ++n, i = (i + 1) % kSlots) {
    const uint64_t v = slots_[i].load(std::memory_order_acquire);
    if (v == key) return true;
    if (v == 0) return false;
  }
  return false;
}

void UnitAttentions::cache_insert(uint64_t nexus) {
  if (nexus == kTombstone) return;
  constexpr size_t kLimit = kSlots * 3 / 4;  // keeps probe chains short
  if (cache_live_ + 1 > kLimit) return;      // more nexuses than the cache holds
  if (slots_used_ + 1 > kLimit) {
    // Tombstones fill the table: rebuild it from the map. Readers racing the rebuild may
    // miss an entry and take the locked path, which is always correct.
    for (auto& s : slots_) s.store(0, std::memory_order_release);
    slots_used_ = 0;
    for (const auto& entry : nexuses_) {
      const uint64_t id = entry.first;
      if (id == nexus || id == kTombstone || slots_used_ + 2 > kLimit) continue;
      size_t i = slot_of(id + 1);
      while (slots_[i].load(std::memory_order_relaxed) != 0) i = (i + 1) % kSlots;
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
  slots_[i].store(key, std::memory_order_release);
  ++slots_used_;
  ++cache_live_;
}

void UnitAttentions::cache_erase(uint64_t nexus) {
  if (nexus == kTombstone) return;
  const uint64_t key = nexus + 1;
  size_t i = slot_of(key);
  for (size_t n = 0; n < kSlots; ++n, i = (i + 1) % kSlots) {
    const uint64_t v = slots_[i].load(std::memory_order_relaxed);
    if (v == key) {
      slots_[i].store(kTombstone, std::memory_order_release);
      --cache_live_;
      return;
    }
    if (v == 0) return;
  }
}

void UnitAttentions::touch(uint64_t nexus) {
  if (cached(nexus)) return;
  std::lock_guard lock(mu_);
  nexuses_.try_emplace(nexus);
  cache_insert(nexus);
}

std::optional<Reason> UnitAttentions::take(uint64_t nexus) {
  if (queued_.load(std::memory_order_acquire) == 0) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = nexuses_.find(nexus);
  if (it == nexuses_.end() || it->second.empty()) return std::nullopt;
  const Reason r = it->second.front();
  it->second.erase(it->second.begin());
  queued_.fetch_sub(1, std::memory_order_release);
  return r;
}

bool UnitAttentions::pending(uint64_t nexus) const {
  if (queued_.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard lock(mu_);
  auto it = nexuses_.find(nexus);
  return it != nexuses_.end() && !it->second.empty();
}

void UnitAttentions::add_locked(std::vector<Reason>& q, Reason ua) {
  if (is_reset_class(ua)) {
    queued_.fetch_sub(q.size(), std::memory_order_release);
    q.clear();
    q.push_back(ua);
    queued_.fetch_add(1, std::memory_order_release);
    return;
  }
  if (std::find(q.begin(), q.end(), ua) != q.end() || q.size() >= kMaxQueued) return;
  q.push_back(ua);
  queued_.fetch_add(1, std::memory_order_release);
}

void UnitAttentions::establish(uint64_t nexus, Reason ua) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = nexuses_.try_emplace(nexus);
  if (inserted) cache_insert(nexus);
  add_locked(it->second, ua);
}

void UnitAttentions::establish_all(Reason ua, std::optional<uint64_t> except) {
  std::lock_guard lock(mu_);
  for (auto& [id, q] : nexuses_) {
    if (except && *except == id) continue;
    add_locked(q, ua);
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
