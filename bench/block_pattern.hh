// The self-describing block format zuma-bench writes in --verify mode.
//
// Every logical block written starts with a 40-byte header, little-endian:
//   [ 0, 8)  magic      kMagic ("ZUMABNCH")
//   [ 8,16)  lba        the block's own logical block address
//   [16,24)  seed       the run's seed (a block left over from another run never matches)
//   [24,28)  generation how many times this run has written the block's I/O unit (>= 1)
//   [28,32)  reserved   0
//   [32,40)  checksum   hash of the whole block with this field read as 0
//   [40, N)  payload    pseudo-random bytes derived from (seed, lba, generation)
// A read checks magic, LBA, seed, generation (against the one the writer recorded) and the
// checksum, so a misplaced, stale, torn or corrupted block is reported with its cause.
//
// Pure functions on caller-owned memory: no allocation, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace zuma::bench {

inline constexpr uint64_t kBlockMagic = 0x48434e42414d555aULL;  // "ZUMABNCH" little-endian
inline constexpr size_t kBlockHeaderSize = 40;

enum class BlockCheck : uint8_t {
  kOk,
  kBadMagic,
  kWrongLba,
  kWrongSeed,
  kWrongGeneration,
  kBadChecksum
};

constexpr std::string_view block_check_name(BlockCheck c) {
  switch (c) {
    case BlockCheck::kOk:
      return "ok";
    case BlockCheck::kBadMagic:
      return "bad magic (not written by zuma-bench, or zeros)";
    case BlockCheck::kWrongLba:
      return "header names another LBA (misplaced block)";
    case BlockCheck::kWrongSeed:
      return "written by another run (stale block)";
    case BlockCheck::kWrongGeneration:
      return "wrong generation (lost or reordered write)";
    case BlockCheck::kBadChecksum:
      return "checksum mismatch (corrupted or torn block)";
  }
  return "?";
}

namespace detail {

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline void store64(uint8_t* p, uint64_t v) {
  std::memcpy(p, &v, 8);
}
inline uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store32(uint8_t* p, uint32_t v) {
  std::memcpy(p, &v, 4);
}

inline uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A 64-bit multiply-xorshift hash over whole 8-byte words (block sizes are multiples of
// 8); the checksum field is hashed as 0.
inline uint64_t block_hash(const uint8_t* b, size_t size) {
  uint64_t h = 0x6a09e667f3bcc909ULL ^ size;
  for (size_t off = 0; off < size; off += 8) {
    const uint64_t w = off == 32 ? 0 : load64(b + off);
    h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
  }
  return h ^ (h >> 32);
}

}  // namespace detail

// Fills one logical block (block_size >= 64 and a multiple of 8) for (seed, lba, gen).
inline void fill_block(uint8_t* b, size_t block_size, uint64_t seed, uint64_t lba, uint32_t gen) {
  detail::store64(b + 0, kBlockMagic);
  detail::store64(b + 8, lba);
  detail::store64(b + 16, seed);
  detail::store32(b + 24, gen);
  detail::store32(b + 28, 0);
  uint64_t state = seed ^ (lba * 0xff51afd7ed558ccdULL) ^ (uint64_t{gen} << 32);
  for (size_t off = kBlockHeaderSize; off < block_size; off += 8) {
    detail::store64(b + off, detail::splitmix64(state));
  }
  detail::store64(b + 32, detail::block_hash(b, block_size));
}

// Checks a block read back; gen is the generation the writer recorded for it.
inline BlockCheck check_block(const uint8_t* b, size_t block_size, uint64_t seed, uint64_t lba,
                              uint32_t gen) {
  if (detail::load64(b) != kBlockMagic) return BlockCheck::kBadMagic;
  if (detail::load64(b + 8) != lba) return BlockCheck::kWrongLba;
  if (detail::load64(b + 16) != seed) return BlockCheck::kWrongSeed;
  if (detail::load64(b + 32) != detail::block_hash(b, block_size)) return BlockCheck::kBadChecksum;
  if (detail::load32(b + 24) != gen) return BlockCheck::kWrongGeneration;
  return BlockCheck::kOk;
}

// The generation a block claims (for error messages).
inline uint32_t block_generation(const uint8_t* b) {
  return detail::load32(b + 24);
}
inline uint64_t block_lba(const uint8_t* b) {
  return detail::load64(b + 8);
}

}  // namespace zuma::bench
