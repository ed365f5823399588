#include "target/pdu.hh"

#include <doctest/doctest.h>

using namespace zuma::target;

TEST_CASE("big-endian helpers round-trip") {
  uint8_t b[8] = {};
  store_be16(b, 0x1234);
  CHECK(b[0] == 0x12);
  CHECK(b[1] == 0x34);
  CHECK(load_be16(b) == 0x1234);
  store_be24(b, 0xabcdef);
  CHECK(b[0] == 0xab);
  CHECK(b[2] == 0xef);
  CHECK(load_be24(b) == 0xabcdef);
  store_be32(b, 0xdeadbeef);
  CHECK(load_be32(b) == 0xdeadbeef);
  store_be64(b, 0x0102030405060708ull);
  CHECK(b[0] == 1);
  CHECK(b[7] == 8);
  CHECK(load_be64(b) == 0x0102030405060708ull);
}

TEST_CASE("serial number arithmetic wraps (RFC 1982)") {
  CHECK(sn_lt(1, 2));
  CHECK_FALSE(sn_lt(2, 2));
  CHECK(sn_le(2, 2));
  CHECK(sn_lt(0xffffffffu, 0));
  CHECK_FALSE(sn_lt(0, 0xffffffffu));
  CHECK(sn_lt(0xfffffff0u, 5));
}

TEST_CASE("padding to four bytes") {
  CHECK(pad_len(0) == 0);
  CHECK(pad_len(1) == 3);
  CHECK(pad_len(2) == 2);
  CHECK(pad_len(3) == 1);
  CHECK(pad_len(4) == 0);
  CHECK(pad_len(8193) == 3);
}

TEST_CASE("LUN field encoding (SAM-5 4.7)") {
  CHECK(encode_lun(0) == 0);
  CHECK(encode_lun(5) == 0x0005000000000000ull);
  CHECK(encode_lun(255) == 0x00ff000000000000ull);
  CHECK(encode_lun(256) == 0x4100000000000000ull);
  CHECK(encode_lun(16383) == 0x7fff000000000000ull);
  for (uint64_t l : {0ull, 1ull, 200ull, 255ull, 256ull, 4000ull, 16383ull})
    CHECK(decode_lun(encode_lun(l)) == l);
  CHECK(decode_lun(0x4005000000000000ull) == 5);      // flat space, small number
  CHECK(decode_lun(0x0105000000000000ull) == ~0ull);  // peripheral with a bus id
  CHECK(decode_lun(0x8000000000000000ull) == ~0ull);  // logical unit addressing
  CHECK(decode_lun(0x0001000100000000ull) == ~0ull);  // second level
}

TEST_CASE("SCSI Command BHS fields (RFC 7143 11.3)") {
  uint8_t raw[kBhsLen] = {};
  Bhs b(raw);
  b.set_opcode(Op::kScsiCommand, true);
  b.set_flags(0x80 | 0x40 | 0x01);  // F, R, SIMPLE
  b.set_data_segment_len(0x012345);
  b.set_lun_field(encode_lun(3));
  b.set_itt(0x11223344);
  b.set_word(20, 4096);   // EDTL
  b.set_word(24, 77);     // CmdSN
  b.set_word(28, 99);     // ExpStatSN
  raw[32] = 0x28;         // READ(10)
  raw[4] = 2;             // TotalAHSLength
  CHECK(raw[0] == 0x41);
  CHECK(b.opcode() == Op::kScsiCommand);
  CHECK(b.immediate());
  CHECK(b.final_bit());
  CHECK(b.flags() == 0xc1);
  CHECK(b.total_ahs_len() == 2);
  CHECK(b.data_segment_len() == 0x012345);
  CHECK(raw[5] == 0x01);
  CHECK(raw[6] == 0x23);
  CHECK(raw[7] == 0x45);
  CHECK(decode_lun(b.lun_field()) == 3);
  CHECK(b.itt() == 0x11223344);
  CHECK(b.edtl() == 4096);
  CHECK(b.cmd_sn() == 77);
  CHECK(b.exp_stat_sn() == 99);
  CHECK(b.cdb()[0] == 0x28);
}

TEST_CASE("Data-Out BHS fields (RFC 7143 11.7)") {
  uint8_t raw[kBhsLen] = {};
  Bhs b(raw);
  b.set_opcode(Op::kDataOut);
  b.set_flags(0x80);
  b.set_itt(5);
  b.set_word(20, 0x77);  // TTT
  b.set_word(36, 3);     // DataSN
  b.set_word(40, 8192);  // BufferOffset
  CHECK(b.opcode() == Op::kDataOut);
  CHECK_FALSE(b.immediate());
  CHECK(b.ttt() == 0x77);
  CHECK(b.data_sn() == 3);
  CHECK(b.buffer_offset() == 8192);
}

TEST_CASE("every opcode survives the opcode byte with and without the I bit") {
  for (Op op : {Op::kNopOut, Op::kScsiCommand, Op::kTaskMgmtRequest, Op::kLoginRequest,
                Op::kTextRequest, Op::kDataOut, Op::kLogoutRequest, Op::kSnackRequest, Op::kNopIn,
                Op::kScsiResponse, Op::kTaskMgmtResponse, Op::kLoginResponse, Op::kTextResponse,
                Op::kDataIn, Op::kLogoutResponse, Op::kR2t, Op::kAsyncMessage, Op::kReject}) {
    for (bool imm : {false, true}) {
      uint8_t raw[kBhsLen] = {};
      Bhs b(raw);
      b.set_opcode(op, imm);
      CHECK(b.opcode() == op);
      CHECK(b.immediate() == imm);
      CHECK((raw[0] & 0x80) == 0);  // bit 7 reserved
    }
  }
}
