// SBC-4 logical block provisioning: UNMAP, WRITE SAME (10/16), GET LBA STATUS.
//
// A thin LU (LuParams::thin) reports LBPME=1 and LBPRZ=1 (READ CAPACITY (16)), LBPU, LBPWS
// and LBPWS10 (Logical Block Provisioning VPD page). Deallocating a range uses the best the
// backend offers: kDiscard (fallocate PUNCH_HOLE: the space is freed), else kWriteZeroes,
// else zeros written through a bounded buffer; whichever it is, the blocks read as zeros
// afterwards, as LBPRZ promises. A fully provisioned LU has no UNMAP (INVALID COMMAND
// OPERATION CODE, as LIO and tgt answer) and no UNMAP bit in WRITE SAME (INVALID FIELD IN
// CDB: SBC-4 lets only LUs with logical block provisioning management implement it).
//
// UNMAP and WRITE SAME hold their range shared in the LU's range lock (range_lock.hh) for
// the whole command, so a COMPARE AND WRITE never sees them half done. Their ranges go to
// the backend one after the other (one request in flight per command).
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "scsi/block_limits.hh"
#include "scsi/cdb.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"
#include "scsi/sbc_op.hh"

namespace zuma::scsi {

using namespace sbc;
using storage::IoOp;

namespace {

// How a fill writes its ranges (Op::flags).
enum Method : uint8_t {
  kDeallocate,   // kDiscard; falls back to kZeroFill when the backend refuses
  kZeroFill,     // kWriteZeroes; falls back to kWriteBuffer (with a zeroed buffer)
  kWriteBuffer,  // writes Op::buf (a one-block pattern repeated) chunk after chunk
};

// The UNMAP parameter list: an 8-byte header, then 16-byte block descriptors.
constexpr uint64_t kUnmapHeaderLen = 8;
constexpr uint64_t kDescriptorLen = 16;

// The ranges a fill writes: the UNMAP block descriptors (Op::arg = count, read from
// task.data), or the one range [Op::lba, Op::lba + Op::blocks) of a WRITE SAME (arg 0).
struct Range {
  uint64_t lba = 0;
  uint64_t blocks = 0;
};

struct FillState {
  // Op::pos packs the current range index (high 16 bits: at most 256 descriptors) and the
  // blocks of it done (low 48 bits: a descriptor has at most 2^32 - 1 blocks).
  static uint64_t index(const Op& op) { return op.pos >> 48; }
  static uint64_t done(const Op& op) { return op.pos & ((uint64_t{1} << 48) - 1); }
  static void set(Op& op, uint64_t index, uint64_t done) { op.pos = index << 48 | done; }
};

uint64_t range_count(const Op& op) {
  return op.arg == 0 ? 1 : op.arg;
}

Range range_at(const Op& op, uint64_t i) {
  if (op.arg == 0) return {op.lba, op.blocks};
  const uint8_t* d = op.task->data.data() + kUnmapHeaderLen + i * kDescriptorLen;
  return {get_be64(d), get_be32(d + 8)};
}

// Zeros written over the partial granules at the edges of a deallocated range.
alignas(4096) const uint8_t kZeroGranule[kUnmapGranularityBytes] = {};

// The next request of a deallocation of `left` blocks from `lba`: a partial granule
// (kUnmapGranularityBytes, the file system block) at either edge is written with zeros,
// the whole granules between are discarded. Punching a partial block frees nothing, and
// on a file costs a synchronous write-back of the range (ext4, xfs): a plain write of
// zeros is both cheaper and enough for LBPRZ. Initiators follow the OPTIMAL UNMAP
// GRANULARITY, so most ranges have no edges.
struct Piece {
  uint64_t blocks;
  bool zeros;  // write kZeroGranule rather than discard
};
Piece dealloc_piece(uint32_t bs, uint64_t lba, uint64_t left) {
  const uint64_t g = unmap_granularity_blocks(bs);
  if (g <= 1) return {left, false};
  if (lba % g != 0) return {std::min(left, g - lba % g), true};
  const uint64_t whole = left / g * g;
  if (whole > 0) return {whole, false};
  return {left, true};
}

bool all_zero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

void fill_step(Op& op, int result);

void fill_done(Op& op, int result) {
  if (failed(op, result)) return;
  complete(op, CmdResult::good());
}

// Every range is written. With the write cache disabled (WCE=0) the result is made durable
// before GOOD, as for a WRITE.
void fill_finish(Op& op) {
  if (!op.lu->write_cache()) {
    return submit(op, IoKind::kFlush, IoOp::kFlush, 0, nullptr, 0, false, fill_done);
  }
  complete(op, CmdResult::good());
}

// A zeroed write buffer for a method downgraded to kWriteBuffer. Runs inside a completion:
// no exceptions; false when memory is short.
bool zero_buffer(Op& op, uint64_t max_range_blocks) {
  const uint32_t bs = op.lu->block_size();
  const uint64_t len = std::min<uint64_t>(kWriteSameChunkBytes / bs, max_range_blocks) * bs;
  try {
    op.buf.resize(std::max<uint64_t>(len, bs));
  } catch (const std::bad_alloc&) {
    return false;
  }
  op.buf.zero();
  return true;
}

// Issues the next request of the fill (Op::flags = method, Op::pos = progress).
void fill_next(Op& op) {
  const uint32_t bs = op.lu->block_size();
  uint64_t i = FillState::index(op);
  uint64_t done = FillState::done(op);
  Range r;
  for (;; ++i, done = 0) {
    if (i == range_count(op)) return fill_finish(op);
    r = range_at(op, i);
    if (done < r.blocks) break;
  }
  FillState::set(op, i, done);
  const uint64_t lba = r.lba + done;
  const uint64_t left = r.blocks - done;
  switch (op.flags) {
    case kDeallocate: {
      const Piece piece = dealloc_piece(bs, lba, left);
      if (piece.zeros) {
        return submit(op, IoKind::kWrite, IoOp::kWrite, lba, const_cast<uint8_t*>(kZeroGranule),
                      piece.blocks * bs, false, fill_step);
      }
      return submit(op, IoKind::kWrite, IoOp::kDiscard, lba, nullptr, piece.blocks * bs, false,
                    fill_step);
    }
    case kZeroFill:
      return submit(op, IoKind::kWrite, IoOp::kWriteZeroes, lba, nullptr, left * bs, false,
                    fill_step);
    default: {
      const uint64_t n = std::min<uint64_t>(left, op.buf.size() / bs);
      return submit(op, IoKind::kWrite, IoOp::kWrite, lba, op.buf.data(), n * bs, false, fill_step);
    }
  }
}

// The request of the fill completed. A backend that turns down kDiscard or kWriteZeroes for
// this range (-EOPNOTSUPP; -EINVAL, e.g. a block device whose own block is larger than
// ours) gets the next method for the same range: the blocks must read as zeros either way.
// (Recursion through inline completions is bounded by the number of requests: the chunks of
// one WRITE SAME (at most 256 MiB / kWriteSameChunkBytes), or of one UNMAP's descriptors.)
void fill_step(Op& op, int result) {
  if ((result == -EOPNOTSUPP || result == -EINVAL) && op.flags != kWriteBuffer) {
    op.flags = op.flags == kDeallocate && op.lu->backend().supports(IoOp::kWriteZeroes)
                   ? kZeroFill
                   : kWriteBuffer;
    if (op.flags == kWriteBuffer) {
      uint64_t longest = 0;
      for (uint64_t i = 0; i < range_count(op); ++i) {
        longest = std::max(longest, range_at(op, i).blocks);
      }
      if (!zero_buffer(op, longest)) return complete(op, Reason::kBusy);
    }
    return fill_next(op);
  }
  if (failed(op, result)) return;
  const uint32_t bs = op.lu->block_size();
  const uint64_t i = FillState::index(op);
  const uint64_t done = FillState::done(op);
  const Range r = range_at(op, i);
  const uint64_t left = r.blocks - done;
  uint64_t wrote = left;
  if (op.flags == kWriteBuffer) wrote = std::min<uint64_t>(left, op.buf.size() / bs);
  if (op.flags == kDeallocate) wrote = dealloc_piece(bs, r.lba + done, left).blocks;
  FillState::set(op, i, done + wrote);
  fill_next(op);
}

// The range lock is held: start writing.
void fill_locked(Op& op, int) {
  FillState::set(op, 0, 0);
  fill_next(op);
}

// The first method for zeros: deallocate (UNMAP) or zero-fill, skipping what the backend
// says it lacks.
uint8_t zero_method(const LogicalUnit& lu, bool deallocate) {
  storage::Backend& b = const_cast<LogicalUnit&>(lu).backend();
  if (deallocate && b.supports(IoOp::kDiscard)) return kDeallocate;
  if (b.supports(IoOp::kWriteZeroes)) return kZeroFill;
  return kWriteBuffer;
}

}  // namespace

CmdResult handle_unmap(Cmd& c) {
  // SBC-4 UNMAP.
  LogicalUnit& lu = *c.lu;
  const uint8_t* cdb = c.cdb();
  // Thin provisioning LUs only (kThinOnly: a fully provisioned LU, LBPU=0, has no UNMAP);
  // ANCHOR=1 is refused by the CDB mask (ANC_SUP=0: no anchored state).
  const uint32_t plen = get_be16(cdb + 7);
  c.task.transfer_len = plen;
  if (plen == 0) return CmdResult::good();  // no parameter data: nothing to do
  if (c.task.data.size() < plen) return Reason::kInvalidFieldInCommandIu;
  // A parameter list too short for its header (LIO and SBC-4 UNMAP parameter list).
  if (plen < kUnmapHeaderLen) return Reason::kParameterListLengthError;
  const uint8_t* p = c.task.data.data();
  // UNMAP BLOCK DESCRIPTOR DATA LENGTH, trimmed to what the list holds; a trailing partial
  // descriptor is ignored (SBC-4).
  const uint64_t desc_bytes = std::min<uint64_t>(get_be16(p + 2), plen - kUnmapHeaderLen);
  const uint64_t count = desc_bytes / kDescriptorLen;
  if (count > kMaxUnmapDescriptors) return CmdResult::invalid_param(2, 7);
  const uint64_t cap = lu.num_blocks();
  const uint32_t max_blocks = max_unmap_blocks(lu.block_size());
  uint64_t total = 0;
  uint64_t first = ~uint64_t{0};
  uint64_t end = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t* d = p + kUnmapHeaderLen + i * kDescriptorLen;
    const uint64_t lba = get_be64(d);
    const uint32_t num = get_be32(d + 8);
    // SBC-4 UNMAP block descriptor: past the capacity is LBA OUT OF RANGE; more blocks in
    // all than MAXIMUM UNMAP LBA COUNT is INVALID FIELD IN PARAMETER LIST. Zero blocks is
    // not an error (at any LBA up to the capacity).
    if (out_of_range(lba, num, cap)) return Reason::kLbaOutOfRange;
    total += num;
    if (total > max_blocks) {
      return CmdResult::invalid_param(
          static_cast<uint16_t>(kUnmapHeaderLen + i * kDescriptorLen + 8), 7);
    }
    if (num == 0) continue;
    first = std::min(first, lba);
    end = std::max(end, lba + num);
  }
  if (total == 0) return CmdResult::good();
  // Descriptors may overlap and come in any order (SBC-4): sort and merge them, in place in
  // the parameter data (ours until the command completes), so each block is deallocated
  // once and adjacent ones in one request.
  Range ranges[kMaxUnmapDescriptors];
  size_t nranges = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t* d = p + kUnmapHeaderLen + i * kDescriptorLen;
    if (const uint32_t num = get_be32(d + 8); num != 0) ranges[nranges++] = {get_be64(d), num};
  }
  std::sort(ranges, ranges + nranges, [](const Range& a, const Range& b) { return a.lba < b.lba; });
  size_t merged = 0;
  for (size_t i = 0; i < nranges; ++i) {
    Range& last = ranges[merged > 0 ? merged - 1 : 0];
    if (merged > 0 && ranges[i].lba <= last.lba + last.blocks) {
      last.blocks = std::max(last.blocks, ranges[i].lba + ranges[i].blocks - last.lba);
    } else {
      ranges[merged++] = ranges[i];
    }
  }
  uint8_t* out = c.task.data.data() + kUnmapHeaderLen;
  uint64_t longest = 0;
  for (size_t i = 0; i < merged; ++i) {
    longest = std::max(longest, ranges[i].blocks);
    put_be64(out + i * kDescriptorLen, ranges[i].lba);
    // At most `total` blocks: fits NUMBER OF LOGICAL BLOCKS (32 bits, max_unmap_blocks()).
    put_be32(out + i * kDescriptorLen + 8, static_cast<uint32_t>(ranges[i].blocks));
  }
  const uint8_t method = zero_method(lu, true);
  storage::Buffer zeros;
  if (method == kWriteBuffer) {
    // May throw std::bad_alloc: nothing started yet.
    zeros.resize(std::min<uint64_t>(kWriteSameChunkBytes / lu.block_size(), longest) *
                 lu.block_size());
    zeros.zero();
  }
  Op& op = start_op(c, first, end - first);
  op.arg = merged;
  op.flags = method;
  op.buf = std::move(zeros);
  lock_range(op, first, end - first, RangeLock::Mode::kShared, fill_locked);
  return CmdResult::pending();
}

CmdResult handle_write_same(Cmd& c) {
  // SBC-4 WRITE SAME (10/16/32). The flags are in byte 1, or byte 10 of WRITE SAME (32).
  LogicalUnit& lu = *c.lu;
  const uint8_t* cdb = c.cdb();
  const bool ws10 = cdb[0] == op::kWriteSame10;
  const uint16_t flags_byte = cdb[0] == op::kVariableLength ? 10 : 1;
  const BlockCdb b = decode_block_cdb(cdb);
  const uint32_t bs = lu.block_size();
  // WRPROTECT: no protection information.
  if (b.flags & 0xE0) return CmdResult::invalid_cdb(flags_byte, 7);
  const bool unmap = b.flags & 0x08;
  const bool ndob = !ws10 && (b.flags & 0x01);
  // ANCHOR is refused by the CDB mask (ANC_SUP=0: SBC-4 WRITE SAME, ANCHOR/UNMAP table).
  // UNMAP=1 is for LUs with logical block provisioning management only.
  if (unmap && !lu.params().thin) return CmdResult::invalid_cdb(flags_byte, 3);
  const uint64_t cap = lu.num_blocks();
  if (out_of_range(b.lba, b.blocks, cap)) return Reason::kLbaOutOfRange;
  // WSNZ=0: NUMBER OF BLOCKS 0 writes through the last LBA.
  const uint64_t blocks = b.blocks != 0 ? b.blocks : cap - b.lba;
  if (blocks > max_write_same_blocks(bs)) return CmdResult::invalid_cdb(b.length_byte, 7);
  c.task.transfer_len = ndob ? 0 : bs;
  // The Data-Out is exactly one block (NDOB=1: none, whatever arrived is ignored). Less
  // cannot be written; more is a command the initiator got wrong (LIO refuses both).
  if (!ndob && c.task.data.size() < bs) return Reason::kInvalidFieldInCommandIu;
  if (!ndob && c.task.data.size() > bs) return Reason::kInvalidFieldInCdb;
  if (blocks == 0) return CmdResult::good();
  const uint8_t* block = c.task.data.data();
  // UNMAP=1: deallocate, whatever the block holds (SBC-4: a thin LU should deallocate each
  // LBA); the blocks then read as zeros (LBPRZ). NDOB=1 (LBPRZ xx1b) or a block of zeros:
  // write zeros, the backend's cheapest way. Anything else: the pattern, chunk by chunk.
  const bool zeros = ndob || all_zero(block, bs);
  const uint8_t method =
      unmap || zeros ? zero_method(lu, unmap) : static_cast<uint8_t>(kWriteBuffer);
  storage::Buffer chunk;
  if (method == kWriteBuffer) {
    // May throw std::bad_alloc: nothing started yet.
    chunk.resize(std::min<uint64_t>(kWriteSameChunkBytes / bs, blocks) * bs);
    if (unmap || zeros) {
      chunk.zero();
    } else {
      for (size_t off = 0; off < chunk.size(); off += bs)
        std::memcpy(chunk.data() + off, block, bs);
    }
  }
  Op& op = start_op(c, b.lba, blocks);
  op.flags = method;
  op.buf = std::move(chunk);
  lock_range(op, b.lba, blocks, RangeLock::Mode::kShared, fill_locked);
  return CmdResult::pending();
}

CmdResult handle_get_lba_status(Cmd& c) {
  // SBC-4 GET LBA STATUS. Descriptors from STARTING LOGICAL BLOCK ADDRESS on, as many as the
  // ALLOCATION LENGTH has room for (at least one, at most kMaxDescriptors), each a maximal
  // run of blocks in one state: mapped (0h) or deallocated (1h). A fully provisioned LU is
  // mapped throughout (SBC-4 allows GET LBA STATUS there). On a thin LU the backend says
  // which byte ranges hold storage (Backend::extent_status); a block only partly
  // deallocated counts as mapped.
  constexpr size_t kMaxDescriptors = 64;
  constexpr uint64_t kMaxRun = 0xFFFFFFFFu;  // NUMBER OF LOGICAL BLOCKS is 32 bits
  LogicalUnit& lu = *c.lu;
  const uint8_t* cdb = c.cdb();
  const uint64_t start = get_be64(cdb + 2);
  const uint32_t alloc = get_be32(cdb + 10);
  const uint64_t cap = lu.num_blocks();
  const uint32_t bs = lu.block_size();
  if (start >= cap) return Reason::kLbaOutOfRange;
  const size_t want = alloc < 24 ? 1 : std::min<size_t>((alloc - 8) / 16, kMaxDescriptors);
  uint8_t* p = data_in_buffer(c.task, 8 + 16 * want);
  size_t n = 0;
  uint64_t lba = start;
  while (lba < cap) {
    const uint64_t left = std::min(cap - lba, kMaxRun);
    uint64_t run = left;
    bool mapped = true;
    if (lu.params().thin) {
      storage::ExtentStatus st;
      if (const int r = lu.backend().extent_status(lba * bs, left * bs, &st); r < 0) {
        return io_error(IoKind::kRead, r, lba);
      }
      mapped = st.allocated;
      run = mapped ? (st.length + bs - 1) / bs : st.length / bs;
      if (run == 0) {  // a hole inside one block: the block still holds data
        mapped = true;
        run = 1;
      }
      run = std::min(run, left);
    }
    uint8_t* prev = n ? p + 8 + 16 * (n - 1) : nullptr;
    if (prev && (prev[12] == 0) == mapped && get_be32(prev + 8) + run <= kMaxRun) {
      put_be32(prev + 8, static_cast<uint32_t>(get_be32(prev + 8) + run));  // same state
    } else {
      if (n == want) break;
      uint8_t* d = p + 8 + 16 * n++;
      put_be64(d, lba);
      put_be32(d + 8, static_cast<uint32_t>(run));
      d[12] = mapped ? 0x0 : 0x1;  // PROVISIONING STATUS
    }
    lba += run;
  }
  const size_t len = 8 + 16 * n;
  put_be32(p, static_cast<uint32_t>(len - 4));  // PARAMETER DATA LENGTH
  set_data_in(c.task, len, alloc);
  return CmdResult::good();
}

}  // namespace zuma::scsi
