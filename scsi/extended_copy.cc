#include "scsi/extended_copy.hh"

#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "scsi/cdb.hh"
#include "scsi/handlers.hh"
#include "scsi/logical_unit.hh"
#include "storage/buffer.hh"

namespace zuma::scsi {
namespace {

// SPC-5 descriptor type codes.
constexpr uint8_t kSegBlockToBlock = 0x02;
constexpr uint8_t kCscdIdentification = 0xE4;
constexpr size_t kCscdLen = 32;
constexpr size_t kSegBlockToBlockLen = 0x18;  // DESCRIPTOR LENGTH (bytes after byte 3)

// COPY OPERATION STATUS (RECEIVE COPY RESULTS, COPY STATUS).
[[maybe_unused]] constexpr uint8_t kCopyInProgress = 0x00;
constexpr uint8_t kCopyGood = 0x01;
constexpr uint8_t kCopyFailed = 0x02;

struct Segment {
  LogicalUnit* src;
  LogicalUnit* dst;
  uint64_t src_lba;
  uint64_t dst_lba;
  uint64_t bytes;
};

// One EXTENDED COPY in progress. Owns itself: deleted when the command completes.
struct CopyJob {
  Task* task = nullptr;
  LogicalUnit* lu = nullptr;        // the LU the command was sent to
  std::shared_ptr<NexusTasks> set;  // holds the copy record; may be null (no nexus)
  uint8_t list_id = 0;
  bool tracked = false;
  std::vector<Segment> segs;
  // LUs of other targets the segments name (Nexus::find_copy_target): kept alive until the
  // copy ends, whatever a live configuration change does to their targets meanwhile.
  std::vector<std::shared_ptr<LogicalUnit>> held;
  size_t seg = 0;
  uint64_t done = 0;     // bytes of segs[seg] copied
  uint64_t total = 0;    // bytes copied in all
  uint64_t chunk = 0;    // bytes of the I/O in flight
  bool writing = false;  // the I/O in flight is the write of the chunk
  int result = 0;
  bool submitting = false;  // inside submit(): a completion now is inline
  bool completed_inline = false;
  storage::Buffer buf;
  storage::IoRequest req;
  iovec iov{};
};

void record(CopyJob& j, uint8_t status) {
  if (!j.tracked || !j.set) return;
  NexusTasks::CopyRecord r;
  r.list_id = j.list_id;
  r.status = status;
  r.segments = static_cast<uint16_t>(j.seg);
  r.bytes = j.total;
  j.set->copy_update(r);
}

void end(CopyJob* j, const CmdResult& r) {
  record(*j, r.ok() ? kCopyGood : kCopyFailed);
  Task& task = *j->task;
  LogicalUnit& lu = *j->lu;
  delete j;
  finish(task, r, lu.descriptor_sense());
}

void io_done(storage::IoRequest& req, int result);

// Handles the outcome of the I/O that completed (if any) and starts the next one, looping
// while completions come back inline (memory backends), so the stack does not grow.
void step(CopyJob* j) {
  while (true) {
    if (j->result != 0) {
      // SPC-5 (copy manager errors): COPY ABORTED, with the source read or destination
      // write failure as additional sense code.
      return end(j, j->writing ? Reason::kCopyAbortedWriteError : Reason::kCopyAbortedReadError);
    }
    if (j->chunk != 0) {
      if (!j->writing) {
        j->writing = true;  // the chunk is read: write it
      } else {
        j->writing = false;
        j->done += j->chunk;
        j->total += j->chunk;
        j->chunk = 0;
      }
    }
    if (j->chunk == 0) {
      while (j->seg < j->segs.size() && j->done == j->segs[j->seg].bytes) {
        ++j->seg;
        j->done = 0;
      }
      if (j->seg == j->segs.size()) return end(j, CmdResult::good());
      const Segment& s = j->segs[j->seg];
      j->chunk = std::min<uint64_t>(kCopyChunkBytes, s.bytes - j->done);
      j->writing = false;
    }
    const Segment& s = j->segs[j->seg];
    j->req = storage::IoRequest{};
    j->iov = {j->buf.data(), j->chunk};
    j->req.iov = &j->iov;
    j->req.iovcnt = 1;
    j->req.length = j->chunk;
    j->req.user = j;
    j->req.done = io_done;
    LogicalUnit* target;
    if (j->writing) {
      target = s.dst;
      j->req.op = storage::IoOp::kWrite;
      j->req.offset = s.dst_lba * s.dst->block_size() + j->done;
      j->req.fua = !s.dst->write_cache();
    } else {
      target = s.src;
      j->req.op = storage::IoOp::kRead;
      j->req.offset = s.src_lba * s.src->block_size() + j->done;
    }
    j->completed_inline = false;
    j->submitting = true;
    target->backend().submit(j->req);
    j->submitting = false;
    if (!j->completed_inline) return;  // io_done continues
  }
}

void io_done(storage::IoRequest& req, int result) {
  auto* j = static_cast<CopyJob*>(req.user);
  j->result = result;
  if (j->submitting) {
    j->completed_inline = true;
    return;
  }
  step(j);
}

// The LU whose NAA designator is `id` (`len` bytes, association LU): one of the nexus's
// table, else one of another target this nexus's initiator may address there
// (Nexus::find_copy_target; appended to `held`). Nothing else: an initiator can never name a
// LU it could not reach itself (the LIO XCOPY bug, CVE-2020-28374).
LogicalUnit* find_lu(const LunTable& table, const Nexus* nexus, uint8_t code_set, uint8_t assoc,
                     uint8_t type, const uint8_t* id, size_t len,
                     std::vector<std::shared_ptr<LogicalUnit>>& held) {
  // SPC-5 designation descriptor: binary code set (1h), NAA (3h), associated with the LU.
  if ((code_set & 0x0F) != 0x1 || assoc != 0 || type != 0x3 || len != 16) return nullptr;
  for (const auto& [lun, lu] : table.luns) {
    if (lu && std::memcmp(lu->naa().data(), id, 16) == 0) return lu.get();
  }
  if (nexus == nullptr || !nexus->find_copy_target) return nullptr;
  for (const auto& lu : held)
    if (std::memcmp(lu->naa().data(), id, 16) == 0) return lu.get();
  std::shared_ptr<LogicalUnit> lu = nexus->find_copy_target(id);
  if (!lu || std::memcmp(lu->naa().data(), id, 16) != 0) return nullptr;
  held.push_back(std::move(lu));
  return held.back().get();
}

bool out_of_range(uint64_t lba, uint64_t blocks, uint64_t capacity) {
  return blocks > capacity || lba > capacity - blocks;
}

}  // namespace

size_t build_third_party_copy_vpd(uint8_t* p) {
  // SPC-5 Third-party Copy VPD page with one Supported Commands third-party copy descriptor
  // (0001h): EXTENDED COPY (83h) service action 00h (LID1); RECEIVE COPY RESULTS (84h)
  // service actions 00h (COPY STATUS), 03h (OPERATING PARAMETERS).
  p[1] = 0x8F;
  uint8_t* d = p + 4;
  put_be16(d, 0x0001);
  uint8_t* list = d + 5;
  size_t n = 0;
  list[n++] = op::kExtendedCopy;
  list[n++] = 1;
  list[n++] = static_cast<uint8_t>(sa::kExtendedCopyLid1);
  list[n++] = op::kReceiveCopyResults;
  list[n++] = 2;
  list[n++] = static_cast<uint8_t>(sa::kCopyStatusLid1);
  list[n++] = static_cast<uint8_t>(sa::kOperatingParameters);
  d[4] = static_cast<uint8_t>(n);  // COMMANDS SUPPORTED LIST LENGTH
  // DESCRIPTOR LENGTH: the bytes after byte 3, padded to a multiple of 4.
  const size_t body = (1 + n + 3) / 4 * 4;
  put_be16(d + 2, static_cast<uint16_t>(body));
  const size_t page = 4 + body;
  put_be16(p + 2, static_cast<uint16_t>(page));
  return 4 + page;
}

CmdResult handle_extended_copy(Cmd& c) {
  // SPC-5 EXTENDED COPY (LID1) parameter list: LIST IDENTIFIER (0), STR, LIST ID USAGE (4:3)
  // and PRIORITY (1), CSCD DESCRIPTOR LIST LENGTH (2-3), SEGMENT DESCRIPTOR LIST LENGTH
  // (8-11), INLINE DATA LENGTH (12-15), then the CSCD and segment descriptors.
  const uint32_t len = get_be32(c.cdb() + 10);
  c.task.transfer_len = len;
  if (len == 0) return CmdResult::good();  // no parameter list: nothing to copy
  if (c.task.data.size() < len) return Reason::kInvalidFieldInCommandIu;
  const uint8_t* p = c.task.data.data();
  if (len < 16) return Reason::kParameterListLengthError;
  if (p[1] & 0xC0) return CmdResult::invalid_param(1, 7);
  const uint8_t usage = (p[1] >> 3) & 0x03;
  if (usage == 0x01) return CmdResult::invalid_param(1, 4);  // reserved
  const uint64_t cscd_len = get_be16(p + 2);
  const uint64_t seg_len = get_be32(p + 8);
  const uint64_t inline_len = get_be32(p + 12);
  if (cscd_len + seg_len > kMaxDescriptorListLength) return Reason::kParameterListLengthError;
  if (16 + cscd_len + seg_len + inline_len > len) return Reason::kParameterListLengthError;
  if (inline_len != 0) return CmdResult::invalid_param(12, 7);  // no inline data (no 04h)

  // CSCD descriptors.
  if (cscd_len % kCscdLen != 0) return Reason::kParameterListLengthError;
  const size_t ncscd = cscd_len / kCscdLen;
  if (ncscd > kMaxCscdDescriptors) return Reason::kTooManyTargetDescriptors;
  std::vector<LogicalUnit*> cscd(ncscd, nullptr);
  std::vector<std::shared_ptr<LogicalUnit>> held;  // other targets' LUs (find_lu)
  for (size_t i = 0; i < ncscd; ++i) {
    const size_t off = 16 + i * kCscdLen;
    const uint8_t* d = p + off;
    const auto at = [&](size_t b) { return static_cast<uint16_t>(off + b); };
    if (d[0] != kCscdIdentification) {
      CmdResult r(Reason::kUnsupportedTargetDescriptorType);
      r.has_field = true;
      r.field_in_cdb = false;
      r.field = at(0);
      return r;
    }
    // Byte 1: LU ID TYPE is ignored for identification descriptors and NUL is obsolete
    // (SPC-4); the PERIPHERAL DEVICE TYPE must be a block device.
    if (d[1] & 0x1F) return CmdResult::invalid_param(at(1), 4);
    const uint8_t id_len = d[7];
    if (id_len > 20 - 4) return CmdResult::invalid_param(at(7), 7);
    LogicalUnit* lu = find_lu(c.table, c.task.nexus, d[4], (d[5] >> 4) & 0x03, d[5] & 0x0F,
                              d + 8, id_len, held);
    if (lu && get_be24(d + 29) != lu->block_size()) return CmdResult::invalid_param(at(29), 7);
    cscd[i] = lu;
  }

  // Segment descriptors.
  std::vector<Segment> segs;
  size_t off = 16 + cscd_len;
  const size_t seg_end = off + seg_len;
  while (off < seg_end) {
    if (seg_end - off < 4) return Reason::kParameterListLengthError;
    const uint8_t* d = p + off;
    const auto at = [&](size_t b) { return static_cast<uint16_t>(off + b); };
    const size_t dlen = 4 + get_be16(d + 2);
    if (segs.size() == kMaxSegmentDescriptors) return Reason::kTooManySegmentDescriptors;
    if (d[0] != kSegBlockToBlock) {
      CmdResult r(Reason::kUnsupportedSegmentDescriptorType);
      r.has_field = true;
      r.field_in_cdb = false;
      r.field = at(0);
      return r;
    }
    if (get_be16(d + 2) != kSegBlockToBlockLen) return CmdResult::invalid_param(at(2), 7);
    if (off + dlen > seg_end) return Reason::kParameterListLengthError;
    if (d[1] & 0xFC) return CmdResult::invalid_param(at(1), 7);
    const bool dc = d[1] & 0x02;
    const uint16_t si = get_be16(d + 4);
    const uint16_t di = get_be16(d + 6);
    const uint64_t blocks = get_be16(d + 10);
    const uint64_t src_lba = get_be64(d + 12);
    const uint64_t dst_lba = get_be64(d + 20);
    // A descriptor index beyond the list, or a LU this nexus cannot reach: the copy target
    // is not reachable (SPC-5: COPY ABORTED).
    if (si >= ncscd || di >= ncscd || !cscd[si] || !cscd[di]) {
      return Reason::kCopyTargetNotReachable;
    }
    LogicalUnit* src = cscd[si];
    LogicalUnit* dst = cscd[di];
    // NUMBER OF BLOCKS counts destination blocks when DC=1, source blocks otherwise.
    const uint64_t bytes = blocks * (dc ? dst->block_size() : src->block_size());
    if (bytes % src->block_size() != 0 || bytes % dst->block_size() != 0)
      return Reason::kCopyTargetNotReachable;
    // A range beyond a copy target's capacity: the copy target would refuse the read or
    // write, so the copy is aborted (COPY ABORTED; libiscsi expects this additional sense
    // code, as LIO reports it).
    if (out_of_range(src_lba, bytes / src->block_size(), src->num_blocks()) ||
        out_of_range(dst_lba, bytes / dst->block_size(), dst->num_blocks()))
      return Reason::kCopyTargetNotReachable;
    if (bytes != 0) segs.push_back({src, dst, src_lba, dst_lba, bytes});
    off += dlen;
  }

  // Reservations of the other copy targets, as if this nexus read the source and wrote the
  // destination itself (the LU addressed was checked before the handler ran).
  if (c.task.nexus) {
    for (const Segment& s : segs) {
      if (s.src != c.lu && s.src->reservations().any() &&
          s.src->reservations().conflicts(*c.task.nexus,
                                          cmd_flag::kMediumAccess | cmd_flag::kPrRead, c.cdb()))
        return Reason::kReservationConflict;
      if (s.dst != c.lu && s.dst->reservations().any() &&
          s.dst->reservations().conflicts(*c.task.nexus, cmd_flag::kMediumAccess, c.cdb()))
        return Reason::kReservationConflict;
    }
  }

  // A write-protected destination: refused before anything is copied, as a write to it
  // would be (SBC-4 write protection: DATA PROTECT, WRITE PROTECTED).
  for (const Segment& s : segs)
    if (s.dst->write_protected()) return Reason::kWriteProtected;

  auto job = std::make_unique<CopyJob>();
  job->task = &c.task;
  job->lu = c.lu;
  job->list_id = p[0];
  job->segs = std::move(segs);
  job->held = std::move(held);
  if (c.task.nexus) {
    job->set = c.lu->nexuses().find(c.task.nexus->id);
  }
  // LIST ID USAGE 00b and 10b: the list identifier is unique among copies in progress; 00b
  // also keeps the results. 11b: the identifier means nothing.
  if (usage != 0x03 && job->set) {
    if (!job->set->copy_begin(job->list_id, usage == 0x00)) return Reason::kOperationInProgress;
    job->tracked = true;
  }
  uint64_t largest = 0;
  for (const Segment& s : job->segs) largest = std::max(largest, s.bytes);
  job->buf.resize(std::min<uint64_t>(largest, kCopyChunkBytes));  // may throw: nothing started
  step(job.release());
  return CmdResult::pending();
}

CmdResult handle_receive_copy_results(Cmd& c) {
  // SPC-5 RECEIVE COPY RESULTS (LID1 service actions): byte 2 LIST IDENTIFIER, bytes 10-13
  // ALLOCATION LENGTH.
  const uint8_t* cdb = c.cdb();
  const uint8_t sa = cdb[1] & 0x1F;
  const uint8_t list_id = cdb[2];
  const uint32_t alloc = get_be32(cdb + 10);
  if (sa == sa::kOperatingParameters) {
    constexpr size_t kLen = 44 + 2;
    uint8_t* p = data_in_buffer(c.task, kLen);
    const uint32_t bs = c.lu->block_size();
    put_be32(p, kLen - 4);  // AVAILABLE DATA
    p[4] = 0x01;            // SNLID: the list identifier of a copy may be reused
    put_be16(p + 8, kMaxCscdDescriptors);
    put_be16(p + 10, kMaxSegmentDescriptors);
    put_be32(p + 12, kMaxDescriptorListLength);
    put_be32(p + 16, 0xFFFFu * bs);  // MAXIMUM SEGMENT LENGTH: 65535 blocks (02h descriptors)
    // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE TRANSFER SIZE: 0.
    put_be16(p + 34, kMaxConcurrentCopies);  // TOTAL CONCURRENT COPIES
    p[36] = static_cast<uint8_t>(kMaxConcurrentCopies);
    p[37] = static_cast<uint8_t>(std::countr_zero(bs));  // DATA SEGMENT GRANULARITY (log2)
    p[43] = 2;                                           // IMPLEMENTED DESCRIPTOR LIST LENGTH
    p[44] = kSegBlockToBlock;
    p[45] = kCscdIdentification;
    set_data_in(c.task, kLen, alloc);
    return CmdResult::good();
  }
  // COPY STATUS: the copy with that list identifier sent by this I_T nexus to this LU.
  std::optional<NexusTasks::CopyRecord> r;
  if (c.task.nexus) {
    if (auto set = c.lu->nexuses().find(c.task.nexus->id)) r = set->copy_record(list_id);
  }
  if (!r) return CmdResult::invalid_cdb(2, 7);
  constexpr size_t kLen = 12;
  uint8_t* p = data_in_buffer(c.task, kLen);
  put_be32(p, kLen - 4);
  p[4] = r->status;  // HDD 0
  put_be16(p + 5, r->segments);
  // TRANSFER COUNT in bytes (units 00h) while it fits, else in KiB (01h) or MiB (02h).
  uint8_t units = 0;
  uint64_t count = r->bytes;
  while (count > 0xFFFFFFFFu && units < 2) {
    count >>= 10;
    ++units;
  }
  p[7] = units;
  put_be32(p + 8, static_cast<uint32_t>(std::min<uint64_t>(count, 0xFFFFFFFFu)));
  set_data_in(c.task, kLen, alloc);
  return CmdResult::good();
}

}  // namespace zuma::scsi
