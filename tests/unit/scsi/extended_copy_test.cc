// EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: copies between LUs of the nexus's table,
// refusal of LUs outside it, descriptor checks with exact sense, copy status.
#include "scsi/extended_copy.hh"

#include <doctest/doctest.h>

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::Bytes;
using test::FakeBackend;
using test::Fixture;
using test::run_cdb;
using test::slice;

// A second LU in the fixture's table (LUN 1), with its own identity.
struct TwoLus {
  Fixture f;
  FakeBackend* backend2 = nullptr;
  std::shared_ptr<LogicalUnit> lu2;

  TwoLus() {
    LuParams p = test::default_params();
    p.name = "lu1";
    p.uuid = "0fedcba9-8765-4321-8fed-cba987654321";
    auto b = std::make_unique<FakeBackend>(p.num_blocks * p.block_size);
    backend2 = b.get();
    lu2 = make_logical_unit(std::move(p), std::move(b));
    f.table.luns[1] = lu2;
  }
};

// Identification CSCD descriptor (E4h) naming `lu` by its NAA designator.
Bytes cscd(const LogicalUnit& lu, uint32_t block_size = 512) {
  Bytes d(32, 0);
  d[0] = 0xE4;
  d[4] = 0x01;  // binary
  d[5] = 0x03;  // association LU, NAA
  d[7] = 16;
  std::memcpy(d.data() + 8, lu.naa().data(), 16);
  d[29] = static_cast<uint8_t>(block_size >> 16);
  d[30] = static_cast<uint8_t>(block_size >> 8);
  d[31] = static_cast<uint8_t>(block_size);
  return d;
}

// Block device to block device segment descriptor (02h).
Bytes seg(uint16_t src, uint16_t dst, uint16_t blocks, uint64_t src_lba, uint64_t dst_lba) {
  Bytes d(28, 0);
  d[0] = 0x02;
  d[3] = 0x18;
  d[5] = static_cast<uint8_t>(src);
  d[7] = static_cast<uint8_t>(dst);
  d[10] = static_cast<uint8_t>(blocks >> 8);
  d[11] = static_cast<uint8_t>(blocks);
  for (int i = 0; i < 8; ++i) {
    d[12 + i] = static_cast<uint8_t>(src_lba >> (56 - 8 * i));
    d[20 + i] = static_cast<uint8_t>(dst_lba >> (56 - 8 * i));
  }
  return d;
}

Bytes list(uint8_t list_id, uint8_t usage, const std::vector<Bytes>& cscds,
           const std::vector<Bytes>& segs) {
  Bytes p(16, 0);
  p[0] = list_id;
  p[1] = static_cast<uint8_t>(usage << 3);
  size_t cl = 0, sl = 0;
  for (const Bytes& c : cscds) {
    p.insert(p.end(), c.begin(), c.end());
    cl += c.size();
  }
  for (const Bytes& s : segs) {
    p.insert(p.end(), s.begin(), s.end());
    sl += s.size();
  }
  p[2] = static_cast<uint8_t>(cl >> 8);
  p[3] = static_cast<uint8_t>(cl);
  p[10] = static_cast<uint8_t>(sl >> 8);
  p[11] = static_cast<uint8_t>(sl);
  return p;
}

std::unique_ptr<test::TestTask> xcopy(Fixture& f, const Bytes& params, uint64_t lun = 0) {
  const uint32_t len = static_cast<uint32_t>(params.size());
  Bytes cdb(16, 0);
  cdb[0] = op::kExtendedCopy;
  cdb[10] = static_cast<uint8_t>(len >> 24);
  cdb[11] = static_cast<uint8_t>(len >> 16);
  cdb[12] = static_cast<uint8_t>(len >> 8);
  cdb[13] = static_cast<uint8_t>(len);
  return run_cdb(f, cdb, DataDir::kOut, len, params, lun);
}

std::unique_ptr<test::TestTask> rcr(Fixture& f, uint8_t sa, uint8_t list_id,
                                    uint32_t alloc = 1024) {
  Bytes cdb(16, 0);
  cdb[0] = op::kReceiveCopyResults;
  cdb[1] = sa;
  cdb[2] = list_id;
  cdb[12] = static_cast<uint8_t>(alloc >> 8);
  cdb[13] = static_cast<uint8_t>(alloc);
  return run_cdb(f, cdb, DataDir::kIn, alloc);
}

#define CHECK_SENSE_OF(expr, k, a, q) \
  do {                                \
    auto&& t_ = (expr);               \
    CHECK_SENSE(t_, k, a, q);         \
  } while (0)

TEST_CASE("EXTENDED COPY between two LUs of the table") {
  TwoLus s;
  const Bytes data = test::pattern(64 * 512, 9);
  std::memcpy(s.f.backend->data.data() + 100 * 512, data.data(), data.size());
  // Sent to LU 0: copy LU 0 blocks 100..163 to LU 1 block 7, LU 0 to itself at 1000.
  auto t = xcopy(s.f, list(1, 0, {cscd(*s.f.lu), cscd(*s.lu2)},
                           {seg(0, 1, 64, 100, 7), seg(0, 0, 64, 100, 1000)}));
  REQUIRE(t->good());
  CHECK(t->task.transfer_len == 16 + 64 + 56);
  CHECK(slice(s.backend2->data, 7 * 512, 71 * 512) == data);
  CHECK(slice(s.f.backend->data, 1000 * 512, 1064 * 512) == data);
  // COPY STATUS: completed, 2 segments, 64 KiB in bytes.
  auto st = rcr(s.f, 0x00, 1);
  REQUIRE(st->good());
  CHECK(st->data_in() == Bytes{0, 0, 0, 8, 0x01, 0, 2, 0, 0, 1, 0, 0});
}

TEST_CASE("EXTENDED COPY into a write-protected LU: 27h/00h, nothing copied; out of one works") {
  Fixture f;
  LuParams p = test::default_params();
  p.name = "lu1";
  p.uuid = "0fedcba9-8765-4321-8fed-cba987654321";
  p.read_only = true;
  auto b = std::make_unique<FakeBackend>(p.num_blocks * p.block_size);
  FakeBackend* ro_backend = b.get();
  const Bytes data = test::pattern(8 * 512, 3);
  std::memcpy(ro_backend->data.data(), data.data(), data.size());
  auto ro = make_logical_unit(std::move(p), std::move(b));
  f.table.luns[1] = ro;
  // Sent to the writable LU 0, copying into the read-only LU 1.
  auto t = xcopy(f, list(1, 0, {cscd(*f.lu), cscd(*ro)}, {seg(0, 1, 8, 0, 100)}));
  CHECK_SENSE(t, 0x7, 0x27, 0x00);
  CHECK(t->sense() ==
        Bytes{0x70, 0, 0x07, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x27, 0x00, 0, 0, 0, 0});
  CHECK(f.backend->calls.empty());
  CHECK(ro_backend->calls.empty());
  // Sent to the read-only LU itself (EXTENDED COPY is not a write of its own): copying out
  // of it into LU 0 works.
  t = xcopy(f, list(2, 0, {cscd(*ro), cscd(*f.lu)}, {seg(0, 1, 8, 0, 100)}), 1);
  REQUIRE(t->good());
  CHECK(slice(f.backend->data, 100 * 512, 108 * 512) == data);
}

TEST_CASE("a copy larger than a chunk, with a backend completing later") {
  const uint16_t blocks = 2048 + 3;  // > kCopyChunkBytes of 512-byte blocks
  LuParams big = test::default_params(8192);
  Fixture f(big);
  const Bytes data = test::pattern(blocks * 512, 1);
  std::memcpy(f.backend->data.data(), data.data(), data.size());
  f.backend->defer = true;
  auto t = xcopy(f, list(5, 3, {cscd(*f.lu)}, {seg(0, 0, blocks, 0, 4000)}));
  int rounds = 0;
  while (t->completions == 0 && rounds < 100) {
    f.backend->complete_deferred();
    ++rounds;
  }
  REQUIRE(t->good());
  CHECK(rounds == 4);  // 2 chunks (1 MiB and 1536 bytes), read then write each
  CHECK(slice(f.backend->data, 4000 * 512, (4000 + blocks) * 512) == data);
  // LIST ID USAGE 11b: no status is kept.
  CHECK_SENSE_OF(rcr(f, 0x00, 5), 0x5, 0x24, 0x00);
}

TEST_CASE("a LU outside the nexus's table cannot be named (CVE-2020-28374)") {
  TwoLus s;
  // Another target's LU: not in this nexus's table.
  LuParams p = test::default_params();
  p.uuid = "11111111-2222-4333-8444-555555555555";
  Fixture other_target(p);
  auto t = xcopy(s.f, list(1, 0, {cscd(*s.f.lu), cscd(*other_target.lu)}, {seg(0, 1, 8, 0, 0)}));
  CHECK_SENSE(t, 0xA, 0x0D, 0x02);
  t = xcopy(s.f, list(1, 0, {cscd(*other_target.lu), cscd(*s.f.lu)}, {seg(0, 1, 8, 0, 0)}));
  CHECK_SENSE(t, 0xA, 0x0D, 0x02);
  CHECK(other_target.backend->calls.empty());
}

// Nexus::find_copy_target (set by the transport for the LUs of other targets the initiator
// may address): such a LU can be a source or a destination; what it does not return stays
// unreachable.
TEST_CASE("EXTENDED COPY to and from another target's LU through find_copy_target") {
  TwoLus s;
  LuParams p = test::default_params();
  p.uuid = "11111111-2222-4333-8444-555555555555";
  Fixture other_target(p);
  LuParams q = test::default_params();
  q.uuid = "66666666-2222-4333-8444-555555555555";
  Fixture refused(q);
  int lookups = 0;
  s.f.nexus.find_copy_target = [&](const uint8_t* naa) -> std::shared_ptr<LogicalUnit> {
    ++lookups;
    if (std::memcmp(naa, other_target.lu->naa().data(), 16) == 0) return other_target.lu;
    return nullptr;
  };
  const Bytes data = test::pattern(16 * 512, 5);
  std::memcpy(s.f.backend->data.data() + 40 * 512, data.data(), data.size());
  // LU 0 -> the other target's LU at 8, then from there into LU 1 at 300 (at most two CSCD
  // descriptors per list: kMaxCscdDescriptors), then within it: named twice, looked up once.
  auto t = xcopy(s.f, list(2, 0, {cscd(*s.f.lu), cscd(*other_target.lu)}, {seg(0, 1, 16, 40, 8)}));
  REQUIRE(t->good());
  CHECK(lookups == 1);
  CHECK(slice(other_target.backend->data, 8 * 512, 24 * 512) == data);
  t = xcopy(s.f, list(3, 0, {cscd(*other_target.lu), cscd(*s.lu2)}, {seg(0, 1, 16, 8, 300)}));
  REQUIRE(t->good());
  CHECK(slice(s.backend2->data, 300 * 512, 316 * 512) == data);
  t = xcopy(s.f, list(4, 0, {cscd(*other_target.lu), cscd(*other_target.lu)},
                      {seg(0, 1, 16, 8, 500)}));
  REQUIRE(t->good());
  CHECK(lookups == 3);
  CHECK(slice(other_target.backend->data, 500 * 512, 516 * 512) == data);
  // A LU the hook does not return: COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE.
  t = xcopy(s.f, list(3, 0, {cscd(*s.f.lu), cscd(*refused.lu)}, {seg(0, 1, 8, 0, 0)}));
  CHECK_SENSE(t, 0xA, 0x0D, 0x02);
  CHECK(refused.backend->calls.empty());
}

TEST_CASE("EXTENDED COPY parameter list checks") {
  TwoLus s;
  Fixture& f = s.f;
  const Bytes good = list(1, 0, {cscd(*f.lu)}, {seg(0, 0, 8, 0, 100)});
  SUBCASE("no parameter list: nothing to do") {
    Bytes cdb(16, 0);
    cdb[0] = op::kExtendedCopy;
    CHECK(run_cdb(f, cdb, DataDir::kNone, 0)->good());
  }
  SUBCASE("truncated") {
    CHECK_SENSE_OF(xcopy(f, slice(good, 0, 16 + 31)), 0x5, 0x1A, 0x00);
    CHECK_SENSE_OF(xcopy(f, slice(good, 0, good.size() - 1)), 0x5, 0x1A, 0x00);
    CHECK_SENSE_OF(xcopy(f, slice(good, 0, 12)), 0x5, 0x1A, 0x00);
  }
  SUBCASE("too many descriptors, too long a list") {
    CHECK_SENSE_OF(
        xcopy(f, list(1, 0, {cscd(*f.lu), cscd(*f.lu), cscd(*f.lu)}, {seg(0, 0, 8, 0, 100)})), 0x5,
        0x26, 0x06);
    std::vector<Bytes> segs(kMaxSegmentDescriptors + 1, seg(0, 0, 8, 0, 100));
    CHECK_SENSE_OF(xcopy(f, list(1, 0, {cscd(*f.lu)}, segs)), 0x5, 0x26, 0x08);
    std::vector<Bytes> many(40, seg(0, 0, 8, 0, 100));  // 32 + 40 * 28 > 1024
    CHECK_SENSE_OF(xcopy(f, list(1, 0, {cscd(*f.lu)}, many)), 0x5, 0x1A, 0x00);
  }
  SUBCASE("unsupported descriptor types point at the type") {
    Bytes fc = cscd(*f.lu);
    fc[0] = 0xE0;
    auto t = xcopy(f, list(1, 0, {fc}, {seg(0, 0, 8, 0, 100)}));
    CHECK_SENSE(t, 0x5, 0x26, 0x07);
    CHECK(t->task.sense[15] == 0x80);
    CHECK(t->task.sense[17] == 16);
    Bytes st = seg(0, 0, 8, 0, 100);
    st[0] = 0x03;  // stream to stream
    st[3] = 0x10;
    t = xcopy(f, list(1, 0, {cscd(*f.lu)}, {slice(st, 0, 20)}));
    CHECK_SENSE(t, 0x5, 0x26, 0x09);
    CHECK(t->task.sense[17] == 48);
  }
  SUBCASE("fields of the descriptors") {
    Bytes c = cscd(*f.lu);
    c[1] = 0x01;  // PERIPHERAL DEVICE TYPE 1: not a block device
    auto t = xcopy(f, list(1, 0, {c}, {seg(0, 0, 8, 0, 100)}));
    CHECK_SENSE(t, 0x5, 0x26, 0x00);
    CHECK(t->task.sense[17] == 17);
    c = cscd(*f.lu, 4096);  // the wrong block length
    t = xcopy(f, list(1, 0, {c}, {seg(0, 0, 8, 0, 100)}));
    CHECK_SENSE(t, 0x5, 0x26, 0x00);
    CHECK(t->task.sense[17] == 16 + 29);
    c = cscd(*f.lu);
    c[1] = 0xC0 | 0x20;  // LU ID TYPE and NUL are ignored (SPC-4)
    CHECK(xcopy(f, list(1, 0, {c}, {seg(0, 0, 8, 0, 100)}))->good());
    Bytes l = good;
    l[1] = 0x01 << 3;  // LIST ID USAGE 01b: reserved
    t = xcopy(f, l);
    CHECK_SENSE(t, 0x5, 0x26, 0x00);
    l = good;
    l[15] = 4;  // inline data
    l.insert(l.end(), 4, 0);
    t = xcopy(f, l);
    CHECK_SENSE(t, 0x5, 0x26, 0x00);
  }
  SUBCASE("unreachable or out of range: COPY ABORTED") {
    CHECK_SENSE_OF(xcopy(f, list(1, 0, {cscd(*f.lu)}, {seg(0, 1, 8, 0, 100)})), 0xA, 0x0D, 0x02);
    CHECK_SENSE_OF(xcopy(f, list(1, 0, {cscd(*f.lu)}, {seg(0, 0, 8, 0, 2047)})), 0xA, 0x0D, 0x02);
    CHECK_SENSE_OF(xcopy(f, list(1, 0, {cscd(*f.lu)}, {seg(0, 0, 8, ~uint64_t{0}, 0)})), 0xA, 0x0D,
                   0x02);
  }
}

TEST_CASE("EXTENDED COPY I/O errors: COPY ABORTED, status kept") {
  Fixture f;
  f.backend->fail_with = -EIO;
  f.backend->fail_op = storage::IoOp::kRead;
  auto t = xcopy(f, list(2, 0, {cscd(*f.lu)}, {seg(0, 0, 8, 0, 100)}));
  CHECK_SENSE(t, 0xA, 0x11, 0x00);
  auto st = rcr(f, 0x00, 2);
  REQUIRE(st->good());
  CHECK(st->data_in() == Bytes{0, 0, 0, 8, 0x02, 0, 0, 0, 0, 0, 0, 0});
  f.backend->fail_op = storage::IoOp::kWrite;
  CHECK_SENSE_OF(xcopy(f, list(2, 0, {cscd(*f.lu)}, {seg(0, 0, 8, 0, 100)})), 0xA, 0x0C, 0x00);
}

TEST_CASE("a list identifier in use: OPERATION IN PROGRESS") {
  Fixture f;
  f.backend->defer = true;
  auto a = xcopy(f, list(9, 0, {cscd(*f.lu)}, {seg(0, 0, 8, 0, 100)}));
  CHECK(a->completions == 0);
  CHECK_SENSE_OF(xcopy(f, list(9, 0, {cscd(*f.lu)}, {seg(0, 0, 8, 0, 200)})), 0x5, 0x00, 0x16);
  // In progress meanwhile.
  auto st = rcr(f, 0x00, 9);
  REQUIRE(st->good());
  CHECK(st->data_in()[4] == 0x00);
  while (a->completions == 0) f.backend->complete_deferred();
  CHECK(a->good());
  f.backend->defer = false;
  CHECK(xcopy(f, list(9, 0, {cscd(*f.lu)}, {seg(0, 0, 8, 0, 200)}))->good());
}

TEST_CASE("RECEIVE COPY RESULTS: operating parameters, unknown list, unknown service action") {
  Fixture f;
  auto t = rcr(f, 0x03, 0);
  REQUIRE(t->good());
  Bytes want(46, 0);
  want[3] = 42;
  want[4] = 0x01;
  want[9] = 2;      // CSCD descriptors
  want[11] = 8;     // segment descriptors
  want[14] = 0x04;  // 1024-byte descriptor list
  want[16] = 0x01;  // 65535 * 512 = 01FFFE00h
  want[17] = 0xFF;
  want[18] = 0xFE;
  want[19] = 0x00;
  want[35] = 16;
  want[36] = 16;
  want[37] = 9;  // 512 = 2^9
  want[43] = 2;
  want[44] = 0x02;
  want[45] = 0xE4;
  CHECK(t->data_in() == want);
  t = rcr(f, 0x03, 0, 8);
  CHECK(t->task.data_in_len == 8);
  CHECK(t->task.transfer_len == 8);
  t = rcr(f, 0x00, 77);
  CHECK_INVALID_CDB(t, 2, 7);
  t = rcr(f, 0x04, 0);
  CHECK_INVALID_CDB(t, 1, 4);
}

TEST_CASE("Third-party Copy VPD page") {
  Fixture f;
  auto t = f.run({op::kInquiry, 1, 0x8F, 0, 255, 0});
  REQUIRE(t->good());
  CHECK(t->data_in() == Bytes{0x00, 0x8F, 0x00, 0x0C,    // page length 12
                              0x00, 0x01, 0x00, 0x08,    // Supported Commands, length 8
                              0x07,                      // COMMANDS SUPPORTED LIST LENGTH
                              0x83, 0x01, 0x00,          // EXTENDED COPY (LID1)
                              0x84, 0x02, 0x00, 0x03});  // RECEIVE COPY RESULTS 00h, 03h
}

}  // namespace
}  // namespace zuma::scsi
