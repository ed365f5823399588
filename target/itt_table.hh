// The commands of a session by Initiator Task Tag: open addressing with linear probing and
// backward-shift deletion, sized once for the session's bound on live commands, so
// inserting and erasing never allocate (STYLE.md 5).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace zuma::target {

template <typename T>
class IttTable {
 public:
  // Room for at least `max_entries` entries at a load factor of at most 1/2.
  void reserve(size_t max_entries) {
    size_t cap = 16;
    while (cap < 2 * max_entries) cap <<= 1;
    if (cap <= slots_.size()) return;
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    size_ = 0;
    for (const Slot& s : old)
      if (s.value) insert(s.key, s.value);
  }

  // Returns false if the key is present already. The table grows if it must.
  bool insert(uint32_t key, T* value) {
    if (2 * (size_ + 1) > slots_.size()) reserve(size_ + 1);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (!s.value) {
        s = {key, value};
        ++size_;
        return true;
      }
      if (s.key == key) return false;
    }
  }

  T* find(uint32_t key) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (!s.value) return nullptr;
      if (s.key == key) return s.value;
    }
  }

  bool erase(uint32_t key) {
    if (slots_.empty()) return false;
    size_t i = hash(key);
    for (;; i = (i + 1) & mask_) {
      if (!slots_[i].value) return false;
      if (slots_[i].key == key) break;
    }
    // Backward-shift: pull later entries of the cluster into the hole, so lookups never
    // need tombstones.
    for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      if (!slots_[j].value) break;
      const size_t home = hash(slots_[j].key);
      // Move j into i when its home is not in the cyclic range (i, j].
      if (((j - home) & mask_) >= ((j - i) & mask_)) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = Slot{};
    --size_;
    return true;
  }

  size_t size() const { return size_; }
  bool contains(uint32_t key) const { return find(key) != nullptr; }

  // Calls fn(T*) for every entry; fn must not insert or erase.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const Slot& s : slots_)
      if (s.value) fn(s.value);
  }

 private:
  struct Slot {
    uint32_t key = 0;
    T* value = nullptr;
  };
  size_t hash(uint32_t key) const { return (uint32_t(key * 0x9e3779b1u) ^ (key >> 16)) & mask_; }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace zuma::target
