#include "snapshot/meta_log.hh"

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <xxhash.h>

#include "storage/buffer.hh"
#include "storage/sync_io.hh"

namespace zuma::snapshot {

namespace {

constexpr uint64_t kSuperMagic = 0x525055534e505a5aull;  // "ZZPNSUPR"
constexpr uint32_t kFormatVersion = 1;
constexpr uint32_t kRecordMagic = 0x31524a5a;  // "ZJR1"
constexpr size_t kRecordHeader = 32;
constexpr size_t kSumOffset = MetaLog::kSuperblockSize - 8;

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint64_t get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

std::expected<std::unique_ptr<MetaLog>, std::string> MetaLog::open(
    std::unique_ptr<storage::Backend> dev, const StoreGeometry& geo, Metadata* md) {
  using R = std::expected<std::unique_ptr<MetaLog>, std::string>;
  const uint64_t size = dev->size();
  if (size < kMinSize)
    return R(std::unexpect, fmt::format("metadata area of {} bytes is too small (at least {})",
                                        size, kMinSize));
  std::unique_ptr<MetaLog> log(new MetaLog(std::move(dev)));
  log->geo_ = geo;
  log->journal_off_ = 2 * kSuperblockSize;
  log->journal_size_ = (size - log->journal_off_) / 3 / kRecordAlign * kRecordAlign;
  log->slot_size_ = (size - log->journal_off_ - log->journal_size_) / 2 / 4096 * 4096;
  log->slot_off_[0] = log->journal_off_ + log->journal_size_;
  log->slot_off_[1] = log->slot_off_[0] + log->slot_size_;
  if (auto err = log->load(geo, md)) return R(std::unexpect, std::move(*err));
  return R(std::move(log));
}

int MetaLog::write_superblock() {
  storage::Buffer b(kSuperblockSize);
  b.zero();
  uint8_t* p = b.data();
  put64(p + 0, kSuperMagic);
  put32(p + 8, kFormatVersion);
  put64(p + 16, generation_);
  put64(p + 24, geo_.chunk_size);
  put64(p + 32, geo_.home_chunks);
  put64(p + 40, geo_.store_chunks);
  put64(p + 48, dev_->size());
  put64(p + 56, active_slot_);
  put64(p + 64, cp_len_);
  put64(p + 72, cp_sum_);
  put64(p + 80, first_seq_);
  put64(p + kSumOffset, XXH64(p, kSumOffset, 0));
  // Generation g lives in superblock g % 2: the other one (g - 1) stays intact until this
  // one is durable.
  int r = storage::sync_io(*dev_, storage::IoOp::kWrite, (generation_ % 2) * kSuperblockSize, p,
                           kSuperblockSize);
  if (r == 0) r = storage::sync_io(*dev_, storage::IoOp::kFlush, 0, nullptr, 0);
  return r;
}

std::optional<std::string> MetaLog::load(const StoreGeometry& geo, Metadata* md) {
  storage::Buffer sb(2 * kSuperblockSize);
  if (int r = storage::sync_io(*dev_, storage::IoOp::kRead, 0, sb.data(), sb.size()); r != 0)
    return fmt::format("cannot read the superblocks: {}", std::strerror(-r));
  bool blank = true;
  for (size_t i = 0; i < sb.size() && blank; ++i) blank = sb[i] == 0;
  if (blank) {
    // A new store: an empty checkpoint in slot 0, generation 1.
    std::vector<uint8_t> state;
    md->serialize(&state);
    generation_ = 0;
    active_slot_ = 1;  // checkpoint() writes the other slot
    if (int r = checkpoint(state); r != 0)
      return fmt::format("cannot format the metadata: {}", std::strerror(-r));
    return std::nullopt;
  }
  int best = -1;
  std::string why;
  for (int i = 0; i < 2; ++i) {
    const uint8_t* p = sb.data() + i * kSuperblockSize;
    if (get64(p) != kSuperMagic) {
      why += fmt::format(" superblock {}: no magic;", i);
      continue;
    }
    if (XXH64(p, kSumOffset, 0) != get64(p + kSumOffset)) {
      why += fmt::format(" superblock {}: checksum mismatch;", i);
      continue;
    }
    if (best < 0 || get64(p + 16) > get64(sb.data() + best * kSuperblockSize + 16)) best = i;
  }
  if (best < 0) return fmt::format("no valid metadata superblock:{}", why);
  const uint8_t* p = sb.data() + best * kSuperblockSize;
  if (get32(p + 8) != kFormatVersion)
    return fmt::format("metadata format version {} is not supported", get32(p + 8));
  if (get64(p + 24) != geo.chunk_size || get64(p + 32) != geo.home_chunks ||
      get64(p + 40) != geo.store_chunks || get64(p + 48) != dev_->size()) {
    return fmt::format(
        "the metadata was made for chunk size {}, {} LU chunks, {} store chunks, a {}-byte "
        "metadata area; the config now gives {}, {}, {}, {} (they cannot change)",
        get64(p + 24), get64(p + 32), get64(p + 40), get64(p + 48), geo.chunk_size,
        geo.home_chunks, geo.store_chunks, dev_->size());
  }
  generation_ = get64(p + 16);
  active_slot_ = get64(p + 56);
  cp_len_ = get64(p + 64);
  cp_sum_ = get64(p + 72);
  first_seq_ = get64(p + 80);
  if (active_slot_ > 1 || cp_len_ > slot_size_) return std::string("metadata superblock: bad checkpoint location");
  storage::Buffer cp(std::max<uint64_t>(align_up(cp_len_, 4096), 4096));
  if (int r = storage::sync_io(*dev_, storage::IoOp::kRead, slot_off_[active_slot_], cp.data(),
                               align_up(cp_len_, 4096));
      r != 0)
    return fmt::format("cannot read the metadata checkpoint: {}", std::strerror(-r));
  if (XXH64(cp.data(), cp_len_, 0) != cp_sum_)
    return fmt::format("metadata checkpoint (generation {}): checksum mismatch", generation_);
  if (auto err = md->deserialize({cp.data(), cp_len_})) return err;

  // Replay the journal: records in sequence until the first one that is not whole.
  storage::Buffer j(journal_size_);
  if (int r = storage::sync_io(*dev_, storage::IoOp::kRead, journal_off_, j.data(), journal_size_);
      r != 0)
    return fmt::format("cannot read the metadata journal: {}", std::strerror(-r));
  uint64_t pos = 0, seq = first_seq_;
  std::vector<MetaOp> ops;
  while (pos + kRecordHeader <= journal_size_) {
    uint8_t* h = j.data() + pos;
    const uint32_t len = get32(h + 4);
    if (get32(h) != kRecordMagic || get64(h + 8) != seq || len > journal_size_ - pos - kRecordHeader)
      break;
    const uint64_t sum = get64(h + 16);
    put64(h + 16, 0);
    if (XXH64(h, kRecordHeader + len, 0) != sum) break;  // torn tail
    if (auto err = decode_ops({h + kRecordHeader, len}, &ops))
      return fmt::format("journal record {}: {}", seq, *err);
    for (const MetaOp& op : ops)
      if (auto err = md->apply(op)) return fmt::format("journal record {}: {}", seq, *err);
    pos += align_up(kRecordHeader + len, kRecordAlign);
    ++seq;
    ++replayed_;
  }
  write_pos_ = pos;
  next_seq_ = seq;
  md->rebuild_allocator();
  return std::nullopt;
}

int MetaLog::append(std::span<const MetaOp> ops) {
  std::vector<uint8_t> payload;
  encode_ops(ops, &payload);
  const uint64_t len = align_up(kRecordHeader + payload.size(), kRecordAlign);
  if (len > journal_size_ - write_pos_) return -ENOSPC;
  storage::Buffer rec(len);
  rec.zero();
  uint8_t* h = rec.data();
  put32(h, kRecordMagic);
  put32(h + 4, static_cast<uint32_t>(payload.size()));
  put64(h + 8, next_seq_);
  put64(h + 16, 0);
  put64(h + 24, generation_);
  std::memcpy(h + kRecordHeader, payload.data(), payload.size());
  put64(h + 16, XXH64(h, kRecordHeader + payload.size(), 0));
  int r = storage::sync_io(*dev_, storage::IoOp::kWrite, journal_off_ + write_pos_, h, len);
  if (r == 0) r = storage::sync_io(*dev_, storage::IoOp::kFlush, 0, nullptr, 0);
  if (r != 0) return r;
  write_pos_ += len;
  ++next_seq_;
  return 0;
}

int MetaLog::checkpoint(std::span<const uint8_t> state) {
  if (state.size() > slot_size_) return -ENOSPC;
  const uint64_t slot = 1 - active_slot_;
  const uint64_t len = align_up(std::max<size_t>(state.size(), 1), 4096);
  storage::Buffer b(len);
  b.zero();
  std::memcpy(b.data(), state.data(), state.size());
  int r = storage::sync_io(*dev_, storage::IoOp::kWrite, slot_off_[slot], b.data(), len);
  if (r == 0) r = storage::sync_io(*dev_, storage::IoOp::kFlush, 0, nullptr, 0);
  if (r != 0) return r;
  const uint64_t old_gen = generation_, old_slot = active_slot_, old_len = cp_len_,
                 old_sum = cp_sum_, old_first = first_seq_;
  ++generation_;
  active_slot_ = slot;
  cp_len_ = state.size();
  cp_sum_ = XXH64(state.data(), state.size(), 0);
  first_seq_ = next_seq_;
  if ((r = write_superblock()) != 0) {
    generation_ = old_gen;
    active_slot_ = old_slot;
    cp_len_ = old_len;
    cp_sum_ = old_sum;
    first_seq_ = old_first;
    return r;
  }
  write_pos_ = 0;
  return 0;
}

}  // namespace zuma::snapshot
