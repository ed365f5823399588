#include "replication/ring_log.hh"

#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace zuma::replication {
namespace {

constexpr uint64_t kSbMagic = 0x474f4c52414d555aULL;  // "ZUMARLOG" little-endian
constexpr uint32_t kBatchMagic = 0x424c525a;          // "ZRLB"
constexpr uint32_t kVersion = 1;
constexpr uint16_t kFlagWrap = 1;

// Little-endian on-disk structures (docs/REPLICATION.md). x86-64 and arm64 are
// little-endian; a big-endian port would byte-swap here.
struct Superblock {
  uint64_t magic;
  uint32_t version;
  uint32_t reserved0;
  uint64_t size;
  uint64_t log_id;
  uint64_t generation;
  uint64_t epoch;
  uint64_t head_off;
  uint64_t head_seq;
  uint64_t checksum;  // XXH3-64 of the whole 4 KiB slot with this field zero
};
static_assert(sizeof(Superblock) == 72);

struct BatchHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t flags;
  uint32_t nrecords;
  uint32_t reserved0;
  uint64_t len;  // the whole batch: this header, the record headers, the payloads
  uint64_t first_seq;
  uint64_t log_id;
  uint64_t epoch;
  uint64_t checksum;  // XXH3-64 of the whole batch with this field zero
  uint64_t reserved1;
};
static_assert(sizeof(BatchHeader) == 64);

struct RecordHeader {
  uint8_t type;
  uint8_t reserved0[3];
  uint32_t lu;
  uint64_t offset;
  uint32_t length;
  uint32_t reserved1;
};
static_assert(sizeof(RecordHeader) == 24);

constexpr uint64_t kHdr = sizeof(BatchHeader);
constexpr uint64_t kRec = sizeof(RecordHeader);

BatchHeader batch_header(uint16_t flags, uint32_t nrecords, uint64_t len, uint64_t first_seq, uint64_t log_id,
                         uint64_t epoch) {
  // magic, version, flags, nrecords, reserved, len, first_seq, log_id, epoch, checksum, reserved
  BatchHeader h{kBatchMagic, uint16_t(kVersion), flags, nrecords, 0, len, first_seq, log_id, epoch, 0, 0};
  return h;  // checksum still zero
}

bool has_payload(RecordType t) {
  return t == RecordType::kWrite || is_marker(t);
}
bool valid_type(uint8_t t) {
  return (t >= 1 && t <= 4) || t == uint8_t(RecordType::kVerify) ||
         t == uint8_t(RecordType::kBookmarkRemove);
}

int pread_all(int fd, void* buf, size_t len, uint64_t off) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len) {
    ssize_t r = ::pread(fd, p, len, off_t(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) return -EIO;  // beyond the end of the file
    p += r, len -= size_t(r), off += uint64_t(r);
  }
  return 0;
}

// Writes every byte of `iov` at `off`, in pieces of at most IOV_MAX vectors, resuming short
// writes. `iov` is consumed (modified).
int pwritev_all(int fd, std::vector<iovec>& iov, uint64_t off) {
  size_t i = 0;
  while (i < iov.size()) {
    const int cnt = int(std::min<size_t>(iov.size() - i, IOV_MAX));
    ssize_t r = ::pwritev(fd, &iov[i], cnt, off_t(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    off += uint64_t(r);
    size_t left = size_t(r);
    while (left && i < iov.size()) {
      if (left >= iov[i].iov_len) {
        left -= iov[i].iov_len;
        ++i;
      } else {
        iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + left;
        iov[i].iov_len -= left;
        left = 0;
      }
    }
    while (i < iov.size() && iov[i].iov_len == 0) ++i;
  }
  return 0;
}

uint64_t sb_checksum(const uint8_t* slot) {
  uint8_t copy[RingLog::kSuperblockSize];
  std::memcpy(copy, slot, sizeof(copy));
  std::memset(copy + offsetof(Superblock, checksum), 0, sizeof(uint64_t));
  return XXH3_64bits(copy, sizeof(copy));
}

}  // namespace

std::expected<std::unique_ptr<RingLog>, std::string> RingLog::open(const RingLogOptions& opt) {
  std::unique_ptr<RingLog> log(new RingLog());
  log->path_ = opt.path;
  const int flags = O_RDWR | O_CLOEXEC | (opt.create ? O_CREAT : 0);
  int fd = ::open(opt.path.c_str(), flags, 0600);
  if (fd < 0) return std::unexpected(fmt::format("{}: cannot open log: {}", opt.path, std::strerror(errno)));
  log->fd_.reset(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return std::unexpected(fmt::format("{}: {}", opt.path, std::strerror(errno)));
  if (st.st_size == 0) {
    if (opt.size < kMinSize)
      return std::unexpected(
          fmt::format("{}: log size {} is below the minimum of {} bytes", opt.path, opt.size, kMinSize));
    if (int r = log->format(opt.size); r < 0)
      return std::unexpected(fmt::format("{}: cannot format log: {}", opt.path, std::strerror(-r)));
  } else {
    std::string err;
    if (log->load_superblock(&err) < 0) return std::unexpected(fmt::format("{}: {}", opt.path, err));
    if (uint64_t(st.st_size) != log->end_)
      return std::unexpected(fmt::format("{}: file is {} bytes but its superblock says {}", opt.path,
                                         st.st_size, log->end_));
    if (opt.size && opt.size != log->end_)
      return std::unexpected(fmt::format(
          "{}: the log is {} bytes, the configuration says {}: resizing a log is not supported "
          "(drain it, remove the file, restart)",
          opt.path, log->end_, opt.size));
  }
  // Reads for the site links come from the page cache through this mapping (read_extents).
  void* m = ::mmap(nullptr, log->end_, PROT_READ, MAP_SHARED, fd, 0);
  if (m != MAP_FAILED) log->map_ = static_cast<const uint8_t*>(m);
  log->recover();
  // A new writer epoch, durable before the first append (see the header comment).
  ++log->epoch_;
  if (int r = log->checkpoint(); r < 0)
    return std::unexpected(fmt::format("{}: cannot write superblock: {}", opt.path, std::strerror(-r)));
  return log;
}

RingLog::~RingLog() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), end_);
}

int RingLog::format(uint64_t size) {
  if (::ftruncate(fd_.get(), off_t(size)) != 0) return -errno;
  end_ = size;
  if (::getrandom(&log_id_, sizeof(log_id_), 0) != sizeof(log_id_)) return -EIO;
  if (log_id_ == 0) log_id_ = 1;
  epoch_ = 0;
  sb_generation_ = 0;
  head_seq_ = next_seq_ = sb_head_seq_ = 1;
  head_off_ = tail_off_ = sb_head_off_ = kDataStart;
  // Both slots, so a damaged slot 0 never leaves a fresh log without a superblock.
  for (int i = 0; i < 2; ++i)
    if (int r = write_superblock(); r < 0) return r;
  if (::fsync(fd_.get()) != 0) return -errno;
  return 0;
}

int RingLog::reformat(uint64_t next_seq) {
  uint64_t id = 0;
  do {
    if (::getrandom(&id, sizeof(id), 0) != sizeof(id)) return -EIO;
  } while (id == 0 || id == log_id_);
  log_id_ = id;
  ++epoch_;  // batches of the old log are stale by their epoch as well as their id
  head_seq_ = next_seq_ = sb_head_seq_ = std::max<uint64_t>(next_seq, 1);
  head_off_ = tail_off_ = sb_head_off_ = kDataStart;
  used_ = 0;
  batches_.clear();
  for (int i = 0; i < 2; ++i)
    if (int r = write_superblock(); r < 0) return r;
  if (::fsync(fd_.get()) != 0) return -errno;
  return 0;
}

int RingLog::load_superblock(std::string* err) {
  uint8_t slot[2][kSuperblockSize];
  bool ok[2] = {false, false};
  Superblock sb[2]{};
  for (int i = 0; i < 2; ++i) {
    if (int r = pread_all(fd_.get(), slot[i], kSuperblockSize, uint64_t(i) * kSuperblockSize); r < 0) {
      *err = fmt::format("cannot read superblock: {}", std::strerror(-r));
      return r;
    }
    std::memcpy(&sb[i], slot[i], sizeof(Superblock));
    ok[i] = sb[i].magic == kSbMagic && sb[i].version == kVersion && sb[i].checksum == sb_checksum(slot[i]) &&
            sb[i].size >= kMinSize && sb[i].head_off >= kDataStart && sb[i].head_off < sb[i].size &&
            sb[i].head_seq >= 1;
  }
  if (!ok[0] && !ok[1]) {
    const bool ours = sb[0].magic == kSbMagic || sb[1].magic == kSbMagic;
    *err = ours ? "both superblocks fail their checksum: the log is damaged"
                : "not a Zuma replication log (no superblock magic)";
    return -EINVAL;
  }
  const int use = !ok[0] ? 1 : !ok[1] ? 0 : (sb[1].generation > sb[0].generation ? 1 : 0);
  const Superblock& s = sb[use];
  end_ = s.size;
  log_id_ = s.log_id;
  sb_generation_ = s.generation;
  epoch_ = s.epoch;
  sb_head_off_ = head_off_ = tail_off_ = s.head_off;
  sb_head_seq_ = head_seq_ = next_seq_ = s.head_seq;
  return 0;
}

int RingLog::write_superblock() {
  ++sb_generation_;
  uint8_t slot[kSuperblockSize] = {};
  // magic, version, reserved, size, log_id, generation, epoch, head_off, head_seq, checksum
  Superblock sb{kSbMagic, kVersion, 0, end_, log_id_, sb_generation_, epoch_, head_off_, head_seq_, 0};
  std::memcpy(slot, &sb, sizeof(sb));
  sb.checksum = sb_checksum(slot);
  std::memcpy(slot, &sb, sizeof(sb));
  // Alternate slots: a torn superblock write leaves the other, older one intact.
  const uint64_t off = (sb_generation_ % 2) * kSuperblockSize;
  std::vector<iovec> iov{{slot, sizeof(slot)}};
  return pwritev_all(fd_.get(), iov, off);
}

int RingLog::checkpoint() {
  if (int r = write_superblock(); r < 0) return r;
  if (::fdatasync(fd_.get()) != 0) return -errno;
  sb_head_off_ = head_off_;
  sb_head_seq_ = head_seq_;
  return 0;
}

bool RingLog::read_batch(uint64_t off, uint64_t seq, uint64_t min_epoch, Batch* b,
                         std::vector<uint8_t>* buf, std::string* why) const {
  BatchHeader h{};
  if (end_ - off < kHdr || pread_all(fd_.get(), &h, kHdr, off) < 0) {
    *why = "";
    return false;
  }
  // Not ours, or an older lap's batch: the clean end of the log.
  if (h.magic != kBatchMagic || h.log_id != log_id_ || h.first_seq != seq) {
    *why = "";
    return false;
  }
  if (h.version != kVersion || h.epoch < min_epoch) {
    *why = fmt::format("batch of seq {} at offset {} is stale (epoch {} after epoch {})", seq, off,
                       h.epoch, min_epoch);
    return false;
  }
  const bool wrap = h.flags & kFlagWrap;
  const uint64_t min_len = wrap ? kHdr : kHdr + uint64_t(h.nrecords) * kRec;
  if ((wrap && (h.nrecords != 0 || h.len != kHdr)) ||
      (!wrap && (h.nrecords == 0 || h.nrecords > kMaxRecordsPerBatch)) || h.len < min_len ||
      h.len > end_ - off) {
    *why = fmt::format("batch of seq {} at offset {} has a bad length or record count", seq, off);
    return false;
  }
  buf->resize(h.len);
  if (int r = pread_all(fd_.get(), buf->data(), h.len, off); r < 0) {
    *why = fmt::format("cannot read batch at offset {}: {}", off, std::strerror(-r));
    return false;
  }
  uint8_t* p = buf->data();
  std::memset(p + offsetof(BatchHeader, checksum), 0, sizeof(uint64_t));
  const uint64_t sum = XXH3_64bits(p, h.len);
  std::memcpy(p + offsetof(BatchHeader, checksum), &h.checksum, sizeof(uint64_t));
  if (sum != h.checksum) {
    *why = fmt::format("batch of seq {} at offset {} fails its checksum (torn write)", seq, off);
    return false;
  }
  uint64_t payload = 0;
  for (uint32_t i = 0; i < h.nrecords; ++i) {
    RecordHeader r{};
    std::memcpy(&r, p + kHdr + i * kRec, kRec);
    if (!valid_type(r.type)) {
      *why = fmt::format("batch of seq {} at offset {}: record {} has unknown type {}", seq, off, i, r.type);
      return false;
    }
    if (has_payload(RecordType(r.type))) payload += r.length;
  }
  if (min_len + payload != h.len) {
    *why = fmt::format("batch of seq {} at offset {}: record lengths do not add up", seq, off);
    return false;
  }
  b->first_seq = seq;
  b->nrecords = wrap ? 0 : h.nrecords;
  b->off = off;
  b->len = h.len;
  b->span = h.len;
  return true;
}

void RingLog::recover() {
  batches_.clear();
  used_ = 0;
  uint64_t pos = head_off_, seq = head_seq_, min_epoch = 0, scanned = 0;
  std::vector<uint8_t> buf;
  std::string why;
  for (;;) {
    const uint64_t start = pos;
    uint64_t at = pos;
    // The writer skips to the data area's start when a batch does not fit before the end:
    // either nothing (less than a header left) or a wrap marker marks the skip.
    if (end_ - at < kHdr) {
      at = kDataStart;
    } else {
      Batch marker{};
      BatchHeader h{};
      if (pread_all(fd_.get(), &h, kHdr, at) == 0 && (h.flags & kFlagWrap) &&
          read_batch(at, seq, min_epoch, &marker, &buf, &why)) {
        BatchHeader mh{};
        std::memcpy(&mh, buf.data(), kHdr);
        min_epoch = mh.epoch;
        at = kDataStart;
      }
    }
    Batch b{};
    if (!read_batch(at, seq, min_epoch, &b, &buf, &why) || b.nrecords == 0) {
      if (!why.empty()) {
        recovery_.cut = true;
        recovery_.cut_reason = why;
      }
      tail_off_ = start;
      break;
    }
    BatchHeader h{};
    std::memcpy(&h, buf.data(), kHdr);
    b.span = at == start ? b.len : (end_ - start) + b.len;
    scanned += b.span;
    if (scanned > capacity()) {  // cannot happen with a sane log; never loop forever
      recovery_.cut = true;
      recovery_.cut_reason = "the chain of batches is longer than the ring";
      tail_off_ = start;
      break;
    }
    min_epoch = h.epoch;
    appended_bytes_ += b.len;
    b.cum_end = appended_bytes_;
    b.appended = std::chrono::steady_clock::now();
    batches_.push_back(b);
    used_ += b.span;
    recovery_.records += b.nrecords;
    ++recovery_.batches;
    seq += b.nrecords;
    pos = b.off + b.len;
  }
  next_seq_ = seq;
}

int RingLog::append(std::span<const AppendRecord> recs, uint64_t* first_seq) {
  if (recs.empty() || recs.size() > kMaxRecordsPerBatch) return -EINVAL;
  uint64_t len = kHdr + recs.size() * kRec;
  for (const auto& r : recs) {
    if (!valid_type(uint8_t(r.type))) return -EINVAL;
    if (!has_payload(r.type)) continue;
    uint64_t n = 0;
    for (int i = 0; i < r.iovcnt; ++i) n += r.iov[i].iov_len;
    if (n != r.length) return -EINVAL;
    len += r.length;
  }
  if (len + kHdr > capacity()) return -EINVAL;

  uint64_t pos = tail_off_, skip = 0;
  if (end_ - pos < len) {
    skip = end_ - pos;
    pos = kDataStart;
  }
  const uint64_t need = skip + len;
  if (need > free_bytes()) return -ENOSPC;
  // Released space that the durable superblock still calls live must not be overwritten
  // before the superblock says otherwise, or a crash would leave recovery starting in
  // the middle of new data.
  const uint64_t released_unckpt = [&] {
    if (sb_head_seq_ == head_seq_) return uint64_t(0);
    // bytes from the superblock's head to ours, around the ring
    return head_off_ >= sb_head_off_ ? head_off_ - sb_head_off_ : capacity() - (sb_head_off_ - head_off_);
  }();
  if (need + used_ + released_unckpt > capacity())
    if (int r = checkpoint(); r < 0) return r;

  if (skip >= kHdr) {
    BatchHeader m = batch_header(kFlagWrap, 0, kHdr, next_seq_, log_id_, epoch_);
    m.checksum = XXH3_64bits(&m, kHdr);
    std::vector<iovec> iov{{&m, kHdr}};
    if (int r = pwritev_all(fd_.get(), iov, tail_off_); r < 0) return r;
  }

  hdr_buf_.assign(kHdr + recs.size() * kRec, 0);
  BatchHeader h = batch_header(0, uint32_t(recs.size()), len, next_seq_, log_id_, epoch_);
  std::vector<iovec> iov;
  iov.reserve(1 + recs.size() * 2);
  iov.push_back({hdr_buf_.data(), hdr_buf_.size()});
  for (size_t i = 0; i < recs.size(); ++i) {
    RecordHeader rh{};
    rh.type = uint8_t(recs[i].type);
    rh.lu = recs[i].lu;
    rh.offset = recs[i].offset;
    rh.length = recs[i].length;
    std::memcpy(hdr_buf_.data() + kHdr + i * kRec, &rh, kRec);
    if (has_payload(recs[i].type))
      for (int j = 0; j < recs[i].iovcnt; ++j)
        if (recs[i].iov[j].iov_len) iov.push_back(recs[i].iov[j]);
  }
  std::memcpy(hdr_buf_.data(), &h, kHdr);  // checksum field still zero
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  for (const auto& v : iov) XXH3_64bits_update(&st, v.iov_base, v.iov_len);
  h.checksum = XXH3_64bits_digest(&st);
  std::memcpy(hdr_buf_.data(), &h, kHdr);

  if (int r = pwritev_all(fd_.get(), iov, pos); r < 0) return r;
  appended_bytes_ += len;
  batches_.push_back(Batch{next_seq_, h.nrecords, pos, len, need, appended_bytes_, std::chrono::steady_clock::now()});
  used_ += need;
  tail_off_ = pos + len;
  *first_seq = next_seq_;
  next_seq_ += h.nrecords;
  return 0;
}

int RingLog::sync() { return ::fdatasync(fd_.get()) == 0 ? 0 : -errno; }

void RingLog::release(uint64_t seq) {
  while (!batches_.empty() && batches_.front().first_seq + batches_.front().nrecords - 1 <= seq) {
    used_ -= batches_.front().span;
    batches_.pop_front();
  }
  if (batches_.empty()) {
    head_off_ = tail_off_;
    head_seq_ = next_seq_;
  } else {
    const Batch& b = batches_.front();
    // The batch's span starts where the writer skipped to the ring's start, if it did.
    head_off_ = b.span > b.len ? end_ - (b.span - b.len) : b.off;
    head_seq_ = b.first_seq;
  }
}

std::deque<RingLog::Batch>::const_iterator RingLog::batch_holding(uint64_t seq) const {
  auto it = std::upper_bound(batches_.begin(), batches_.end(), seq,
                             [](uint64_t s, const Batch& b) { return s < b.first_seq; });
  if (it != batches_.begin()) --it;
  return it;
}

int RingLog::read(uint64_t from, const std::function<bool(const RecordView&)>& fn) const {
  if (from < head_seq_) return -ERANGE;
  auto it = batch_holding(from);
  std::vector<uint8_t> buf;
  std::string why;
  for (; it != batches_.end(); ++it) {
    Batch b{};
    if (!read_batch(it->off, it->first_seq, 0, &b, &buf, &why)) return -EIO;
    uint64_t payload_off = kHdr + uint64_t(it->nrecords) * kRec;
    for (uint32_t i = 0; i < it->nrecords; ++i) {
      RecordHeader rh{};
      std::memcpy(&rh, buf.data() + kHdr + i * kRec, kRec);
      const bool pl = has_payload(RecordType(rh.type));
      RecordView v;
      v.seq = it->first_seq + i;
      v.type = RecordType(rh.type);
      v.lu = rh.lu;
      v.offset = rh.offset;
      v.length = rh.length;
      if (pl) v.payload = {buf.data() + payload_off, rh.length};
      if (pl) payload_off += rh.length;
      if (v.seq < from) continue;
      if (!fn(v)) return 0;
    }
  }
  return 0;
}

int RingLog::read_raw(uint64_t from, size_t max_bytes, std::vector<uint8_t>* out, size_t* count) const {
  *count = 0;
  RawExtents ext;
  if (int r = raw_extents(from, max_bytes, &ext); r < 0) return r;
  const size_t at = out->size();
  out->resize(at + ext.bytes);
  if (int r = read_extents(ext, out->data() + at); r < 0) {
    out->resize(at);
    return r;
  }
  *count = ext.first_seqs.size();
  return 0;
}

int RingLog::raw_extents(uint64_t from, size_t max_bytes, RawExtents* out) const {
  *out = RawExtents{};
  out->log_id = log_id_;
  if (from < head_seq_) return -ERANGE;
  for (auto it = batch_holding(from); it != batches_.end() && out->bytes < max_bytes; ++it) {
    if (it->first_seq + it->nrecords <= from) continue;
    // Batches follow each other in the file except where the ring wrapped.
    if (!out->spans.empty() && out->spans.back().first + out->spans.back().second == it->off)
      out->spans.back().second += it->len;
    else
      out->spans.emplace_back(it->off, it->len);
    out->first_seqs.push_back(it->first_seq);
    out->last_seq = it->first_seq + it->nrecords - 1;
    out->bytes += it->len;
  }
  return 0;
}

int RingLog::read_extents(const RawExtents& ext, uint8_t* dst) const {
  size_t at = 0;
  for (const auto& [off, len] : ext.spans) {
    if (map_)
      std::memcpy(dst + at, map_ + off, len);
    else if (int r = pread_all(fd_.get(), dst + at, len, off); r < 0)
      return r;
    at += len;
  }
  at = 0;
  for (uint64_t seq : ext.first_seqs) {
    BatchHeader h{};
    if (ext.bytes - at < kHdr) return -EIO;
    std::memcpy(&h, dst + at, kHdr);
    if (h.magic != kBatchMagic || h.log_id != ext.log_id || h.first_seq != seq || h.len < kHdr ||
        h.len > ext.bytes - at)
      return -EIO;
    at += h.len;
  }
  return at == ext.bytes ? 0 : -EIO;
}

RingLog::Lag RingLog::lag(uint64_t acked) const {
  Lag l;
  // The first batch with a record after `acked`.
  auto it = std::upper_bound(batches_.begin(), batches_.end(), acked,
                             [](uint64_t s, const Batch& b) { return s < b.first_seq + b.nrecords - 1; });
  if (it == batches_.end()) return l;
  const uint64_t before = it == batches_.begin() ? it->cum_end - it->len : std::prev(it)->cum_end;
  l.bytes = appended_bytes_ - before;
  l.oldest = it->appended;
  return l;
}

uint64_t RingLog::batch_length(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHdr) return 0;
  BatchHeader h{};
  std::memcpy(&h, bytes.data(), kHdr);
  return h.len;
}

bool RingLog::parse_batch(std::span<const uint8_t> bytes, uint64_t log_id,
                          const std::function<bool(const RecordView&)>& fn, std::string* why) {
  if (bytes.size() < kHdr) {
    *why = "short batch";
    return false;
  }
  BatchHeader h{};
  std::memcpy(&h, bytes.data(), kHdr);
  if (h.magic != kBatchMagic || h.version != kVersion || h.log_id != log_id || (h.flags & kFlagWrap) ||
      h.nrecords == 0 || h.nrecords > kMaxRecordsPerBatch || h.len != bytes.size() ||
      h.len < kHdr + uint64_t(h.nrecords) * kRec) {
    *why = fmt::format("batch of seq {}: bad header", h.first_seq);
    return false;
  }
  BatchHeader zeroed = h;
  zeroed.checksum = 0;
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, &zeroed, kHdr);
  XXH3_64bits_update(&st, bytes.data() + kHdr, bytes.size() - kHdr);
  if (XXH3_64bits_digest(&st) != h.checksum) {
    *why = fmt::format("batch of seq {}: checksum mismatch", h.first_seq);
    return false;
  }
  uint64_t payload_off = kHdr + uint64_t(h.nrecords) * kRec, total = payload_off;
  for (uint32_t i = 0; i < h.nrecords; ++i) {
    RecordHeader rh{};
    std::memcpy(&rh, bytes.data() + kHdr + i * kRec, kRec);
    if (!valid_type(rh.type)) {
      *why = fmt::format("batch of seq {}: record {} has unknown type {}", h.first_seq, i, rh.type);
      return false;
    }
    if (has_payload(RecordType(rh.type))) total += rh.length;
  }
  if (total != h.len) {
    *why = fmt::format("batch of seq {}: record lengths do not add up", h.first_seq);
    return false;
  }
  for (uint32_t i = 0; i < h.nrecords; ++i) {
    RecordHeader rh{};
    std::memcpy(&rh, bytes.data() + kHdr + i * kRec, kRec);
    RecordView v;
    v.seq = h.first_seq + i;
    v.type = RecordType(rh.type);
    v.lu = rh.lu;
    v.offset = rh.offset;
    v.length = rh.length;
    if (has_payload(v.type)) {
      v.payload = bytes.subspan(payload_off, rh.length);
      payload_off += rh.length;
    }
    if (!fn(v)) break;
  }
  return true;
}

}  // namespace zuma::replication
