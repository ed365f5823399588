// Block Limits and Logical Block Provisioning VPD pages (block_limits.cc), through INQUIRY.
#include "scsi/block_limits.hh"

#include <doctest/doctest.h>

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::Bytes;
using test::Fixture;

Bytes block_limits(Fixture& f) {
  auto t = f.run({op::kInquiry, 1, 0xB0, 0, 255, 0});
  REQUIRE(t->good());
  return t->data_in();
}

TEST_CASE("Block Limits VPD: a thin LU of 512-byte blocks") {
  LuParams p = test::default_params();
  p.thin = true;
  Fixture f(p);
  Bytes want(64, 0);
  want[1] = 0xB0;
  want[3] = 0x3C;
  want[4] = 0x00;              // WSNZ=0
  want[5] = 0xFF;              // MAXIMUM COMPARE AND WRITE LENGTH 255
  want[7] = 0x08;              // OPTIMAL TRANSFER LENGTH GRANULARITY
  want[10] = 0x40;             // MAXIMUM TRANSFER LENGTH 4000h
  want[14] = 0x08;             // OPTIMAL TRANSFER LENGTH 800h
  want[21] = 0x10;             // MAXIMUM UNMAP LBA COUNT 100000h (512 MiB)
  want[26] = 0x01;             // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT 100h
  want[31] = 0x08;             // OPTIMAL UNMAP GRANULARITY 8 (4 KiB)
  want[32] = 0x80;             // UGAVALID, alignment 0
  want[42] = want[43] = 0xFF;  // MAXIMUM WRITE SAME LENGTH FFFFh
  want[46] = 0x08;             // MAXIMUM ATOMIC TRANSFER LENGTH 800h (1 MiB)
  want[51] = 0x08;             // ATOMIC ALIGNMENT 8
  want[55] = 0x08;             // ATOMIC TRANSFER LENGTH GRANULARITY 8
  CHECK(block_limits(f) == want);
}

TEST_CASE("Block Limits VPD: thin with 4 KiB blocks; fully provisioned has no unmap fields") {
  LuParams p = test::default_params(256, 4096);
  p.thin = true;
  Fixture f(p);
  Bytes want(64, 0);
  want[1] = 0xB0;
  want[3] = 0x3C;
  want[5] = 0xFF;
  want[7] = 0x01;
  want[10] = 0x08;  // 800h blocks = 8 MiB
  want[14] = 0x01;  // 100h
  want[21] = 0x02;  // MAXIMUM UNMAP LBA COUNT 20000h (512 MiB)
  want[26] = 0x01;
  want[31] = 0x01;  // one block is the granule
  want[32] = 0x80;
  want[42] = want[43] = 0xFF;
  want[46] = 0x01;  // 100h blocks = 1 MiB
  CHECK(block_limits(f) == want);

  Fixture full;
  const Bytes b = block_limits(full);
  CHECK(test::slice(b, 20, 36) == Bytes(16, 0));  // LBPU=0: no unmap limits
  CHECK(b[5] == 0xFF);
  CHECK(test::slice(b, 36, 44) == Bytes{0, 0, 0, 0, 0, 0, 0xFF, 0xFF});
}

TEST_CASE("Logical Block Provisioning VPD: thin only") {
  LuParams p = test::default_params();
  p.thin = true;
  Fixture thin(p);
  auto t = thin.run({op::kInquiry, 1, 0xB2, 0, 255, 0});
  REQUIRE(t->good());
  // LBPU, LBPWS, LBPWS10, LBPRZ 001b, ANC_SUP=0, DP=0; PROVISIONING TYPE 010b (thin).
  CHECK(t->data_in() == Bytes{0x00, 0xB2, 0x00, 0x04, 0x00, 0xE4, 0x02, 0x00});
  Fixture full;
  t = full.run({op::kInquiry, 1, 0xB2, 0, 255, 0});
  CHECK_INVALID_CDB(t, 2, 7);
}

TEST_CASE("block limits helpers") {
  CHECK(max_unmap_blocks(512) == 1u << 20);
  CHECK(max_unmap_blocks(4096) == 1u << 17);
  CHECK(unmap_granularity_blocks(512) == 8);
  CHECK(unmap_granularity_blocks(4096) == 1);
  CHECK(atomic_unit_blocks(512) == 8);
  CHECK(atomic_unit_blocks(1024) == 4);
  CHECK(atomic_unit_blocks(4096) == 0);
  CHECK(max_atomic_blocks(512) == 2048);
  CHECK(max_write_same_blocks(512) == 0xFFFF);
}

}  // namespace
}  // namespace zuma::scsi

namespace zuma::scsi {
namespace {

TEST_CASE("physical block exponent: READ CAPACITY (16) byte 13 and the transfer granularity") {
  LuParams p = test::default_params();  // 512-byte blocks
  p.thin = true;
  p.lbppb_exponent = 5;  // 16 KiB physical blocks: above the 4 KiB optimal granularity
  Fixture f(p);
  auto t = f.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0});
  REQUIRE(t->good());
  const Bytes rc = t->data_in();
  REQUIRE(rc.size() == 32);
  CHECK(rc[13] == 0x05);  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
  CHECK(rc[14] == 0xC0);  // LBPME, LBPRZ; LOWEST ALIGNED LBA 0
  CHECK(rc[15] == 0x00);
  const Bytes bl = block_limits(f);
  CHECK(bl[6] == 0x00);
  CHECK(bl[7] == 0x20);  // OPTIMAL TRANSFER LENGTH GRANULARITY: one physical block, 32
  CHECK(test::slice(bl, 28, 36) == Bytes{0, 0, 0, 0x20, 0x80, 0, 0, 0});  // OPTIMAL UNMAP
  // GRANULARITY: one physical block too; UGAVALID, alignment 0

  LuParams q = test::default_params();
  Fixture g(q);
  t = g.run({op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0});
  REQUIRE(t->good());
  CHECK(t->data_in()[13] == 0x00);
  CHECK(block_limits(g)[7] == 0x08);  // 4 KiB: the optimal granularity of a LU without one

  LuParams r = test::default_params();
  r.thin = true;
  r.lbppb_exponent = 3;  // 4 KiB physical blocks: the 4 KiB granule
  Fixture h(r);
  CHECK(test::slice(block_limits(h), 28, 36) == Bytes{0, 0, 0, 0x08, 0x80, 0, 0, 0});
}

}  // namespace
}  // namespace zuma::scsi
