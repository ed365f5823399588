#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (small, real PDUs and CDBs).

Run from anywhere: python3 tests/fuzz/make_corpus.py. The formats are those described at
the top of each fuzz_*.cc. Seeds are committed; rerun this after changing a format.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = b"iqn.2026-11.org.zuma:fuzz"
INITIATOR = b"iqn.2026-11.org.zuma:fuzz-initiator"


def keys(*kv):
    return b"".join(k + b"=" + v + b"\0" for k, v in kv)


def pad(b):
    return b + b"\0" * ((4 - len(b) % 4) % 4)


def bhs(opcode, flags=0x80, dsl=0, lun=0, itt=0, w20=0, w24=0, w28=0, rest=b"", immediate=False):
    b = bytearray(48)
    b[0] = opcode | (0x40 if immediate else 0)
    b[1] = flags
    b[5:8] = dsl.to_bytes(3, "big")
    b[8:16] = lun.to_bytes(8, "big")
    b[16:20] = struct.pack(">I", itt)
    b[20:24] = struct.pack(">I", w20)
    b[24:28] = struct.pack(">I", w24)
    b[28:32] = struct.pack(">I", w28)
    b[32:32 + len(rest)] = rest
    return bytes(b)


def login(csg, nsg, text, transit=True, isid=b"\x80\x46\x55\x5a\x5a\x02"):
    b = bytearray(bhs(0x03, flags=(0x80 if transit else 0) | csg << 2 | (nsg if transit else 0),
                      dsl=len(text), w24=1, immediate=True))
    b[8:14] = isid
    return bytes(b) + pad(text)


def scsi(cdb, itt, cmdsn, edtl=0, read=False, write=False, data=b"", lun=0):
    flags = 0x80 | (0x40 if read else 0) | (0x20 if write else 0) | 0x01
    cdb = cdb + b"\0" * (16 - len(cdb))
    return bhs(0x01, flags, len(data), lun << 48, itt, edtl, cmdsn, 0, cdb) + pad(data)


def data_out(itt, offset, data, datasn=0, final=True, ttt=0xFFFFFFFF):
    b = bytearray(bhs(0x05, 0x80 if final else 0, len(data), 0, itt, ttt))
    b[36:40] = struct.pack(">I", datasn)
    b[40:44] = struct.pack(">I", offset)
    return bytes(b) + pad(data)


def read10(lba, blocks):
    return bytes([0x28, 0]) + struct.pack(">I", lba) + bytes([0]) + struct.pack(">H", blocks) + b"\0"


def write10(lba, blocks):
    return bytes([0x2A, 0]) + struct.pack(">I", lba) + bytes([0]) + struct.pack(">H", blocks) + b"\0"


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


OPERATIONAL = keys((b"HeaderDigest", b"None"), (b"DataDigest", b"None"),
                   (b"MaxRecvDataSegmentLength", b"262144"), (b"InitialR2T", b"No"),
                   (b"ImmediateData", b"Yes"), (b"MaxBurstLength", b"262144"),
                   (b"FirstBurstLength", b"65536"), (b"MaxOutstandingR2T", b"1"),
                   (b"DataPDUInOrder", b"Yes"), (b"DataSequenceInOrder", b"Yes"),
                   (b"ErrorRecoveryLevel", b"0"), (b"MaxConnections", b"1"),
                   (b"DefaultTime2Wait", b"2"), (b"DefaultTime2Retain", b"0"))


def text_keys():
    d = os.path.join(HERE, "corpus", "fuzz_text_keys")
    write(os.path.join(d, "operational"), b"\x00" + OPERATIONAL)
    write(os.path.join(d, "operational-digests"), b"\x0a" + keys(
        (b"HeaderDigest", b"CRC32C,None"), (b"DataDigest", b"CRC32C"),
        (b"MaxBurstLength", b"0x100000"), (b"FirstBurstLength", b"16777215")))
    write(os.path.join(d, "discovery"), b"\x01" + keys(
        (b"InitiatorName", INITIATOR), (b"SessionType", b"Discovery"), (b"AuthMethod", b"None"),
        (b"MaxRecvDataSegmentLength", b"8192"), (b"MaxBurstLength", b"512"),
        (b"SendTargets", b"All")))
    write(os.path.join(d, "chap"), b"\x40" + keys(
        (b"AuthMethod", b"CHAP,None"), (b"CHAP_A", b"8,7,6,5"), (b"CHAP_I", b"17"),
        (b"CHAP_C", b"0x" + b"0123456789abcdef" * 4), (b"CHAP_N", b"fuzz-user"),
        (b"CHAP_R", b"0bAAECAwQFBgcICQoLDA0ODw==")))
    write(os.path.join(d, "odd"), b"\x7f" + keys(
        (b"MaxRecvDataSegmentLength", b"511"), (b"MaxOutstandingR2T", b"0"),
        (b"InitialR2T", b"Maybe"), (b"X-com.example.vendor", b"1"), (b"ErrorRecoveryLevel", b"2")))


def pdu_stream():
    d = os.path.join(HERE, "corpus", "fuzz_pdu_stream")
    sec = keys((b"InitiatorName", INITIATOR), (b"TargetName", TARGET),
               (b"SessionType", b"Normal"), (b"AuthMethod", b"None"))
    # Mode 0: the whole login by hand, then a TEST UNIT READY.
    write(os.path.join(d, "raw-login"), b"\x00" + login(0, 1, sec) + login(1, 3, OPERATIONAL) +
          scsi(b"\x00", 1, 1))
    # Mode 0: CHAP target, wrong response.
    chap_sec = keys((b"InitiatorName", INITIATOR), (b"TargetName", TARGET + b"-chap"),
                    (b"SessionType", b"Normal"), (b"AuthMethod", b"CHAP"))
    write(os.path.join(d, "raw-chap"), b"\x00" + login(0, 0, chap_sec, transit=False) +
          login(0, 0, keys((b"CHAP_A", b"7,5")), transit=False) +
          login(0, 1, keys((b"CHAP_N", b"fuzz-user"), (b"CHAP_R", b"0x" + b"00" * 32),
                           (b"CHAP_I", b"3"), (b"CHAP_C", b"0x" + b"ab" * 16))))
    # Mode 0: ACL target.
    acl_sec = keys((b"InitiatorName", INITIATOR), (b"TargetName", TARGET + b"-acl"),
                   (b"SessionType", b"Normal"), (b"AuthMethod", b"None"))
    write(os.path.join(d, "raw-acl"), b"\x00" + login(0, 1, acl_sec))
    # Mode 1 (normal session): commands.
    write(os.path.join(d, "read10"), b"\x01" + scsi(read10(0, 8), 1, 1, edtl=4096, read=True))
    block = bytes(range(256)) * 2  # one 512-byte block
    write(os.path.join(d, "write10-immediate"), b"\x01" +
          scsi(write10(8, 1), 2, 1, edtl=512, write=True, data=block) +
          scsi(read10(8, 1), 3, 2, edtl=512, read=True))
    write(os.path.join(d, "write10-dataout"), b"\x01" +
          scsi(write10(16, 2), 4, 1, edtl=1024, write=True, data=block) +
          data_out(4, 512, block))
    # FirstBurstLength 1024, MaxBurstLength 2048 (the harness's login): R2Ts for the rest.
    write(os.path.join(d, "write10-r2t"), b"\x01" +
          scsi(write10(0, 8), 5, 1, edtl=4096, write=True, data=block) +
          data_out(5, 512, block, final=True) +
          data_out(5, 1024, block * 4, ttt=1) +
          data_out(5, 3072, block * 2, ttt=2))
    write(os.path.join(d, "inquiry-reportluns"), b"\x01" +
          scsi(b"\x12\x00\x00\x00\xff\x00", 6, 1, edtl=255, read=True) +
          scsi(b"\x12\x01\x83\x00\xff\x00", 7, 2, edtl=255, read=True) +
          scsi(b"\xa0\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00", 8, 3, edtl=256, read=True) +
          scsi(b"\x9e\x10" + b"\0" * 8 + b"\x00\x00\x00\x20\x00\x00", 9, 4, edtl=32, read=True, lun=1))
    write(os.path.join(d, "nop-text-tmf"), b"\x01" +
          bhs(0x00, 0x80, 8, 0, 10, 0xFFFFFFFF, 1, immediate=True) + b"pingpong" +
          bhs(0x04, 0x80, 13, 0, 11, 0xFFFFFFFF, 1, immediate=True) + pad(b"SendTargets=\0") +
          bhs(0x02, 0x81, 0, 0, 12, 99, 1, immediate=True))
    # Mode 2 (discovery session).
    write(os.path.join(d, "discovery-sendtargets"), b"\x02" +
          bhs(0x04, 0x80, 16, 0, 1, 0xFFFFFFFF, 1, immediate=True) + pad(b"SendTargets=All\0"))
    # Mode 3 (digests; the harness adds them).
    write(os.path.join(d, "digests-write-read"), b"\x03" +
          scsi(write10(32, 1), 13, 1, edtl=512, write=True, data=block) +
          scsi(read10(32, 8), 14, 2, edtl=4096, read=True))
    write(os.path.join(d, "digests-bad-data"), b"\x23" +
          scsi(write10(40, 1), 15, 1, edtl=512, write=True, data=block) +
          scsi(write10(48, 1), 16, 2, edtl=512, write=True, data=block))


def task(lun, ctl, cdb, edtl, data=b""):
    return bytes([lun, ctl, len(cdb)]) + edtl.to_bytes(3, "big") + cdb + data


def scsi_dispatch():
    d = os.path.join(HERE, "corpus", "fuzz_scsi_dispatch")
    IN, OUT = 1 << 2, 2 << 2
    write(os.path.join(d, "inquiry"), task(0, IN, b"\x12\x00\x00\x00\xff\x00", 255) +
          task(0, IN, b"\x12\x01\x00\x00\xff\x00", 255) + task(0, IN, b"\x12\x01\x83\x00\xff\x00", 255) +
          task(1, IN, b"\x12\x01\xb0\x00\xff\x00", 255) + task(1, IN, b"\x12\x01\xb2\x00\xff\x00", 255))
    write(os.path.join(d, "capacity-reportluns"), task(0, IN, b"\x25" + b"\0" * 9, 8) +
          task(1, IN, b"\x9e\x10" + b"\0" * 8 + b"\x00\x00\x00\x20\x00\x00", 32) +
          task(2, IN, b"\xa0\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00", 256) +
          task(3, 0, b"\x00" * 6, 0))
    block = bytes(range(256)) * 2
    write(os.path.join(d, "write-read"), task(0, OUT, write10(0, 2), 1024, block * 2) +
          task(0, IN, read10(0, 2), 1024) + task(0, 0, b"\x35" + b"\0" * 9, 0) +
          task(0, OUT, b"\x2f\x00" + struct.pack(">I", 0) + b"\x00\x00\x02\x00", 0))
    write(os.path.join(d, "mode"), task(0, IN, b"\x1a\x00\x3f\x00\xff\x00", 255) +
          task(0, IN, b"\x5a\x00\x08\x00\x00\x00\x00\x00\xff\x00", 255) +
          task(0, OUT, b"\x55\x10\x00\x00\x00\x00\x00\x00\x1c\x00", 28,
               b"\0" * 8 + b"\x08\x12\x04" + b"\0" * 17) +
          task(0, IN, b"\x03\x00\x00\x00\xfc\x00", 252))
    write(os.path.join(d, "unmap-writesame"), task(1, OUT, b"\x42" + b"\0" * 6 + b"\x00\x18\x00", 24,
                                                  b"\x00\x16\x00\x10" + b"\0" * 4 +
                                                  struct.pack(">QI", 0, 8) + b"\0" * 4) +
          task(1, OUT, b"\x93\x08" + struct.pack(">QI", 16, 8) + b"\0\0", 4096, b"\0" * 4096))
    write(os.path.join(d, "compare-and-write"),
          task(0, OUT, b"\x89\x00" + struct.pack(">Q", 4) + b"\0\0\0\x01\0\0", 1024, b"\0" * 1024))
    write(os.path.join(d, "opcodes-reset"), task(0, IN | 0x20, b"\xa3\x0c\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00", 4096) +
          task(0, IN | 0x10, b"\x03\x00\x00\x00\xfc\x00", 252) + task(0, 0x40, b"\x00" * 6, 0))


def reproducers():
    """Inputs that showed a zumad bug (docs/SECURITY.md "Findings"); they pass once fixed."""
    d = os.path.join(HERE, "reproducers", "fuzz_pdu_stream")
    block = bytes(range(256)) * 2
    # Mode 3 (digests), byte0 0x33: odd-numbered PDUs get a bad data digest, the last PDU a
    # bad header digest. PDU 1, a WRITE, fails with CHECK CONDITION (queued response); PDU 2
    # closes the connection (header digest error) before the response is sent. The
    # connection never finishes: close() drops the queued response without releasing its
    # command.
    write(os.path.join(d, "leak-close-drops-queued-response"), b"\x33" +
          bhs(0x00, 0x80, 0, 0, 20, 0xFFFFFFFF, 1, immediate=True) +
          scsi(write10(40, 1), 21, 1, edtl=512, write=True, data=block) +
          bhs(0x00, 0x80, 0, 0, 22, 0xFFFFFFFF, 2, immediate=True))


    # Mode 0: the first login PDU has C=1 (text continues), so the checks zumad makes only
    # for "the first PDU" (target lookup, ACL, CHAP policy) never run; the second PDU goes
    # from the operational stage to full feature phase and login_complete() dereferences
    # the null target_ (SIGSEGV). With SessionType=Discovery the same skips discovery CHAP.
    first = bytearray(login(0, 0, keys((b"InitiatorName", INITIATOR), (b"TargetName", TARGET + b"-chap"),
                                       (b"SessionType", b"Normal")), transit=False))
    first[1] |= 0x40
    write(os.path.join(d, "null-target-after-continued-login"), b"\x00" + bytes(first) +
          login(1, 3, keys((b"HeaderDigest", b"None"), (b"MaxRecvDataSegmentLength", b"8192"))))


def replica_stream():
    """Seeds of fuzz_replica_stream: byte 0 is its mode, then [type u8][len u16 LE][payload]."""
    d = os.path.join(HERE, "corpus", "fuzz_replica_stream")
    log_id = 0x5a756d61465a5a01

    def chunk(ftype, payload):
        return bytes([ftype]) + struct.pack("<H", len(payload)) + payload

    def frame(ftype, payload):  # the raw mode's frames: "ZRPF" header, then the payload
        return struct.pack("<IHHII", 0x4650525a, ftype, 0, len(payload), 0) + payload

    def batch(first_seq, records):  # records: (type, lu, offset, length, payload)
        heads = b"".join(struct.pack("<B3xIQII", t, lu, off, ln, 0) for t, lu, off, ln, _ in records)
        body = b"".join(p for *_, p in records)
        length = 64 + len(heads) + len(body)
        # checksum 0: the harness seals it (mode 0x08)
        hdr = struct.pack("<IHHIIQQQQQQ", 0x424c525a, 1, 0, len(records), 0, length, first_seq,
                          log_id, 1, 0, 0)
        return hdr + heads + body

    hello = json.dumps({"protocol": 5, "group": "db", "link": "fuzz", "log_id": log_id,
                        "last": 0, "luns": [1 << 20, 1 << 20]}).encode()
    w = batch(1, [(1, 0, 4096, 512, bytes(range(256)) * 2), (1, 1, 0, 16, b"z" * 16),
                  (2, 0, 65536, 8192, b""), (3, 1, 8192, 4096, b"")])
    marks = batch(5, [(4, 0, 0, 5, b"snap1"),
                      (8, 0, 0, 58, struct.pack("<QQIIQQQQH", 1, 0, 0, 0, 0, 1 << 20, 0, 0, 0)),
                      (9, 0, 0, 5, b"snap1")])
    write(os.path.join(d, "writes"), b"\x0a" + chunk(3, w + marks))
    write(os.path.join(d, "writes-gap"), b"\x0a" + chunk(3, marks) + chunk(3, w))
    write(os.path.join(d, "writes-held"), b"\x0a" + chunk(9, w) + chunk(3, marks))
    write(os.path.join(d, "unsealed"), b"\x02" + chunk(3, w))
    resync = struct.pack("<IIQ", 0, 0, 0) + b"r" * 4096
    zeros = struct.pack("<IIQQ", 0, 1, 4096, 124 << 10)
    write(os.path.join(d, "resync"), b"\x1a" + chunk(6, resync) + chunk(6, zeros) +
          chunk(7, struct.pack("<Q", 4)) + chunk(3, w))
    write(os.path.join(d, "auth-proof"), b"\x04" + chunk(17, b"\x11" * 32))
    write(os.path.join(d, "raw-hello"), b"\x01" + frame(1, hello) + frame(3, w))
    write(os.path.join(d, "raw-garbage"), b"\x01" + b"ZRPF" + b"\xff" * 40)


def site_link():
    """Seeds of fuzz_site_link: byte 0 is its mode, then [type u8][len u16 LE][payload]."""
    d = os.path.join(HERE, "corpus", "fuzz_site_link")

    def chunk(ftype, payload):
        return bytes([ftype]) + struct.pack("<H", len(payload)) + payload

    def frame(ftype, payload):  # the raw mode's frames: "ZRPF" header, then the payload
        return struct.pack("<IHHII", 0x4650525a, ftype, 0, len(payload), 0) + payload

    def welcome(**kw):
        return json.dumps(dict({"applied": 0, "log_id": 1}, **kw)).encode()

    # Harness-made WELCOME (applied 0), ACKs of records 1 and 3 (mode 0x04 maps the byte).
    write(os.path.join(d, "acks"), b"\x06" + chunk(4, b"\x01") + chunk(4, b"\x03"))
    # applied 3 (0x30 >> 4), then an ACK one past the log's end.
    write(os.path.join(d, "ack-past-end"), b"\x36" + chunk(4, b"\x04"))
    verify = struct.pack("<QQI", 1, 0, 0) + b"\x00" * 4 + b"\x5a" * 16 + b"\x00" * 8
    write(os.path.join(d, "verify-result"),
          b"\x02" + chunk(8, verify[:48]) + chunk(4, struct.pack("<Q", 2)))
    write(os.path.join(d, "resync"),
          b"\x00" + chunk(2, welcome(resync=[[0, 0, 4096], [1, 8192, 65536]])) +
          chunk(4, struct.pack("<Q", 3)))
    write(os.path.join(d, "resync-outside"), b"\x00" + chunk(2, welcome(resync=[[1, 1 << 20, 1]])))
    write(os.path.join(d, "ahead"), b"\x00" + chunk(2, welcome(applied=99)))
    write(os.path.join(d, "error"), b"\x00" + chunk(5, b"split brain: the fuzzer says so"))
    write(os.path.join(d, "auth"), b"\x08" + chunk(16, b"\x11" * 32) + chunk(18, b"\x22" * 32) +
          chunk(2, welcome()))
    write(os.path.join(d, "raw"), b"\x01" + frame(2, welcome()) + frame(4, struct.pack("<Q", 1)))


if __name__ == "__main__":
    text_keys()
    pdu_stream()
    scsi_dispatch()
    reproducers()
    replica_stream()
    site_link()
