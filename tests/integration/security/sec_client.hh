// Security tests' own iSCSI client pieces, beside the shared harness (harness.hh):
//   - SecConnection: the harness's raw client (RawConnection: framing, CRC32C digests by
//     a table, not ISA-L) driving a login with CHAP (every CHAP_A value, one-way or
//     mutual; the hashes come from OpenSSL EVP here, not from zumad's code; the binary
//     value codec is target/chap.hh's), negotiating header and data digests, and sending
//     hand-built PDUs whose digests it can corrupt on purpose;
//   - libiscsi helpers for CHAP logins and discovery under a chosen initiator name;
//   - small utilities (zumad's RSS, its number of open descriptors).
//
// Contract: as the harness, everything cleans up after itself; nothing here throws on a
// refused login (the outcome says what happened), only on local failures (socket()).
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "target/chap.hh"
#include "tests/integration/harness.hh"

struct iscsi_context;

namespace zuma::test::sec {

using namespace std::chrono_literals;

// ---- configs ---------------------------------------------------------------------------

// One target of a test config. `extra_yaml` is pasted into the target's mapping (e.g.
// "chap: { user: u, secret: s }" or "acl: [ iqn... ]"), one key per line, no indent.
struct TargetSpec {
  std::string iqn{};
  std::vector<std::string> extra_yaml{};
  // LUN 0: a memory LU of this size (16 MiB) unless `lun_yaml` is given (a flow mapping).
  std::string lun_yaml{};
};
// A Zumad config template: one portal (@PORT0@), 2 reactors, the targets, an optional
// `iscsi:` flow mapping and optional `discovery:` flow mapping.
std::string sec_config(const std::vector<TargetSpec>& targets, std::string_view iscsi_yaml = "",
                       std::string_view discovery_yaml = "");

// ---- primitives ------------------------------------------------------------------------

// CHAP_A values (RFC 7143 12.1.3, IANA PPP authentication algorithms).
inline constexpr int kChapMd5 = 5, kChapSha1 = 6, kChapSha256 = 7, kChapSha3_256 = 8;
// RFC 1994: H(id || secret || challenge) with the CHAP_A hash, from OpenSSL EVP.
std::vector<uint8_t> chap_hash(int chap_a, uint8_t id, std::string_view secret,
                               std::span<const uint8_t> challenge);
// RFC 7143 6.1 binary values: zumad's own codec ("0x" hex out, hex or "0b" base64 in).
using zuma::target::decode_binary;
using zuma::target::encode_hex;

using Keys = std::vector<std::pair<std::string, std::string>>;
Keys parse_keys(std::span<const uint8_t> data);
std::string key_value(const Keys& keys, std::string_view key);  // "" when absent
bool has_key(const Keys& keys, std::string_view key);
// "k=v\0k=v\0"
std::string keys_text(const Keys& keys);
// "k=v; k=v" for messages.
std::string keys_str(const Keys& keys);

// ---- raw client --------------------------------------------------------------------------

struct Creds {
  std::string user;
  std::string secret;
};

struct LoginOptions {
  std::string initiator = "iqn.2026-11.org.zuma:sec-raw";
  std::string target;  // ignored for discovery
  bool discovery = false;
  std::array<uint8_t, 6> isid = {0x80, 0x5a, 0x53, 0x45, 0x43, 0x01};
  // AuthMethod offered; empty = "CHAP,None" when chap is set, else "None".
  std::string auth_methods;
  std::optional<Creds> chap;          // answer the target's challenge with these
  std::string chap_algorithms = "5";  // CHAP_A offered, e.g. "5,7"
  // Mutual CHAP: challenge the target and expect it to prove these credentials.
  std::optional<Creds> mutual;
  bool reflect_challenge = false;      // mutual: send the target's own challenge back as CHAP_C
  std::string header_digest = "None";  // empty: the key is not sent
  std::string data_digest = "None";
  // false: the operational stage offers only MaxRecvDataSegmentLength and the digests,
  // so every session key keeps its RFC 7143 default unless the target proposes one.
  bool offer_session_keys = true;
  bool immediate_data = true;
  bool initial_r2t = false;
  uint32_t max_recv_data_segment_length = 262144;
  uint32_t first_burst_length = 262144;
  uint32_t max_burst_length = 1048576;
  uint32_t max_connections = 1;
  uint32_t default_time2wait = 0;
  uint32_t default_time2retain = 0;
  // A connection added to an existing session (RFC 7143 6.3.6): its TSIH, and this
  // connection's CID. With tsih != 0 only connection keys are offered (the session-wide
  // ones are leading only) and CmdSN continues from set_cmdsn().
  uint16_t tsih = 0;
  uint16_t cid = 0;
  // Keys the target offers itself (RFC 7143 6.2) are answered with the target's value,
  // unless listed here with the answer to give instead (e.g. {"HeaderDigest", "Reject"}).
  Keys proposal_answers{};
};

struct LoginOutcome {
  bool ok = false;
  std::string error;  // empty when ok
  // Status of the last Login Response (RFC 7143 11.13.5); 0/0 on success.
  uint8_t status_class = 0, status_detail = 0;
  uint16_t status() const { return uint16_t(status_class << 8 | status_detail); }
  int chap_a = 0;  // the algorithm the target picked, 0 if none
  Keys keys;       // every key the target sent, all stages
};

using Pdu = RawPdu;
using Received = RecvResult;

// Result of one SCSI command sent by SecConnection.
struct ScsiResult {
  std::string error;           // transport problem; empty when a status came back
  uint8_t response = 0;        // iSCSI response code (11.4.3)
  uint8_t status = 0xff;       // SAM status
  std::vector<uint8_t> sense;  // sense data (without SenseLength)
  std::vector<uint8_t> data;   // Data-In collected
  bool good() const { return error.empty() && response == 0 && status == 0; }
  // key/ASC/ASCQ from fixed (0x70/0x71) or descriptor (0x72/0x73) sense; -1 if absent.
  int sense_key() const;
  int asc() const;
  int ascq() const;
  std::string describe() const;
};

class SecConnection {
 public:
  explicit SecConnection(uint16_t port) : raw_(port) {}
  SecConnection(const SecConnection&) = delete;
  SecConnection& operator=(const SecConnection&) = delete;

  // Whole login per `o`; on success the connection is in full feature phase with the
  // negotiated digests in force.
  LoginOutcome login(const LoginOptions& o);

  // Sends BHS (+ data segment, padded) with the digests in force; can corrupt them.
  bool send_pdu(std::span<const uint8_t> bhs, std::span<const uint8_t> data = {},
                const SendOptions& so = {}) {
    return raw_.send_pdu(bhs, data, so);
  }
  bool send_raw(std::span<const uint8_t> bytes) { return raw_.send(bytes); }
  // One PDU (digests read and checked when in force), or closed/timeout.
  Received recv(std::chrono::milliseconds timeout = 5000ms) { return raw_.recv(timeout); }
  // Drops PDUs until closed (true) or the timeout passes (false). `seen` collects them.
  bool wait_closed(std::chrono::milliseconds timeout, std::vector<Pdu>* seen = nullptr) {
    return raw_.wait_closed(timeout, seen);
  }

  // SCSI commands on LUN 0 (10-byte CDBs, simple attribute).
  // WRITE(10) of data.size() bytes at `lba`; `immediate` bytes go as immediate data, the
  // rest as unsolicited Data-Out PDUs (up to FirstBurstLength) and then R2T-solicited
  // Data-Out. `corrupt_pdu`: index of the data-carrying PDU (0 = the command's immediate
  // data, 1 = the first Data-Out, ...) whose data digest is corrupted; -1 none.
  ScsiResult write10(uint32_t lba, std::span<const uint8_t> data, uint32_t block_size,
                     uint32_t immediate, int corrupt_pdu = -1);
  ScsiResult read10(uint32_t lba, uint32_t blocks, uint32_t block_size);
  // TEST UNIT READY until GOOD (at most 4 tries): clears the unit attentions a new I_T
  // nexus sees first (power on, SAM-5 6.3). "" or what the last try got.
  std::string clear_unit_attentions();
  // Immediate NOP-Out ping with `data`; returns the answer (NOP-In or Reject) or status.
  Received nop(std::span<const uint8_t> data, const SendOptions& so = {});

  uint32_t next_itt() { return itt_++; }
  uint32_t take_cmdsn() { return cmdsn_++; }  // for a non-immediate command
  uint32_t cmdsn() const { return cmdsn_; }
  void set_cmdsn(uint32_t sn) { cmdsn_ = sn; }  // the session's next CmdSN (several connections)
  uint16_t tsih() const { return tsih_; }
  uint32_t exp_statsn() const { return exp_statsn_; }
  bool header_digest() const { return raw_.header_digest(); }
  bool data_digest() const { return raw_.data_digest(); }
  int fd() const { return raw_.fd(); }
  // "127.0.0.1:PORT" of this end, as zumad logs the initiator's address.
  std::string local_address() const { return raw_.local_address(); }
  void close() { raw_.close(); }

 private:
  // One login request/response round trip.
  struct Step {
    bool ok = false;
    std::string error;
    Pdu pdu;
    Keys keys;
  };
  Step login_round(const LoginOptions& o, uint8_t csg, uint8_t nsg, bool transit,
                   const std::string& keys);
  void note_status(const Pdu& p);  // StatSN / ExpCmdSN from a target PDU

  RawConnection raw_;
  uint32_t itt_ = 0x1000;
  uint32_t cmdsn_ = 1;
  uint32_t exp_statsn_ = 0;
  uint16_t tsih_ = 0;
  uint16_t cid_ = 0;
  uint32_t peer_mrdsl_ = 8192;
  uint32_t first_burst_ = 65536;
  uint32_t max_burst_ = 262144;
  bool immediate_data_ = true;
  bool initial_r2t_ = true;
};

// A SCSI Command BHS (RFC 7143 11.3): flags byte (F, R, W, ATTR), LUN 0, a CDB of up to
// 16 bytes.
std::vector<uint8_t> scsi_command_bhs(uint8_t flags, uint32_t itt, uint32_t edtl, uint32_t cmdsn,
                                      uint32_t exp_statsn, std::span<const uint8_t> cdb);
// A Data-Out BHS (RFC 7143 11.7); the data segment length is set by send_pdu.
std::vector<uint8_t> data_out_bhs(uint32_t itt, uint32_t ttt, uint32_t exp_statsn, uint32_t data_sn,
                                  uint32_t offset, bool final);

// ---- libiscsi helpers -------------------------------------------------------------------

struct LibiscsiLogin {
  std::string initiator{};  // required
  std::string target{};
  std::optional<Creds> chap{};
  std::optional<Creds> mutual{};  // iscsi_set_target_username_pwd
  bool header_digest_crc32c = false;
  // ISID of type "random" (iscsi_set_isid_random: random part, qualifier); nullopt:
  // libiscsi's own random ISID.
  std::optional<std::pair<uint32_t, uint32_t>> isid{};
  int timeout_s = 20;
};

// A connected libiscsi context, or the login error. Destroys the context (after a logout
// if logged in) when it goes.
class LibiscsiSession {
 public:
  LibiscsiSession(const std::string& portal, const LibiscsiLogin& l, int lun = 0);
  ~LibiscsiSession();
  LibiscsiSession(const LibiscsiSession&) = delete;
  LibiscsiSession& operator=(const LibiscsiSession&) = delete;
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  iscsi_context* ctx() const { return ctx_; }
  // WRITE16 then READ16 of `blocks` blocks at `lba`, pattern `seed`; "" when the data
  // came back intact.
  std::string write_read_verify(uint64_t lba, uint32_t blocks, uint32_t block_size, uint64_t seed);
  // Services the connection (answers NOP-Ins) for `d`; false if it broke.
  bool service_for(std::chrono::milliseconds d);

 private:
  iscsi_context* ctx_ = nullptr;
  bool ok_ = false;
  std::string error_;
};

// SendTargets=All as `initiator` (optionally with CHAP); target names, or the error.
struct DiscoveryResult {
  std::string error;
  std::vector<std::string> targets;
};
DiscoveryResult discover_as(const std::string& portal, const std::string& initiator,
                            const std::optional<Creds>& chap = std::nullopt);

// ---- process utilities -----------------------------------------------------------------

// VmRSS of `pid` in KiB (from /proc/PID/status), -1 when unreadable.
long rss_kib(pid_t pid);
// Open descriptors of `pid` (entries of /proc/PID/fd), -1 when unreadable.
int open_fds(pid_t pid);

void sleep_ms(int ms);
// eventually(pred, timeout): harness.hh.

}  // namespace zuma::test::sec
