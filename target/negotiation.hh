// Operational parameter negotiation (RFC 7143 6.2 and 13).
//
// The Negotiator answers each operational key an initiator offers with the value the
// RFC's result function gives (minimum, maximum, boolean AND/OR, list selection) against
// the target's own limits, and records the outcome. Keys it does not know are answered
// NotUnderstood (by the caller); malformed values Reject (RFC 7143 6.2). X- and X# keys
// (private and IANA-registered extensions, RFC 7143 13.x / 6.2) are ignored.
//
// During login (until end_login()) it also sees the initiator's habits through: a key
// repeated with the same value (some initiators resend every key in each PDU of a stage,
// with or without the C bit) is not answered again; with another value it is an attempt
// to renegotiate, which fails the login (RFC 7143 6.2: status 0x0200). Before the login
// leaves the operational stage, propose() offers the target's own values for session
// keys the initiator left at RFC defaults the target cannot accept (RFC 7143 6.2: e.g.
// ImmediateData=No, a MaxBurstLength below 262144); the initiator's answers to those
// offers are taken, not answered.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "target/text_keys.hh"

namespace zuma::target {

// The target's side of the negotiation: what zumad is willing to do (from the config).
struct IscsiLimits {
  uint32_t max_recv_data_segment_length = 262144;
  uint32_t max_burst_length = 1048576;
  uint32_t first_burst_length = 262144;
  bool immediate_data = true;
  bool initial_r2t = false;
  uint32_t max_outstanding_r2t = 8;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t max_connections = 1;
  uint32_t queue_depth = 128;
  uint32_t nop_in_interval = 0;
  uint32_t nop_in_timeout = 30;
  uint32_t login_timeout = 15;
  // Bytes of WRITE data a connection may have asked for by R2T and not yet released
  // (Connection's write budget): a stalled initiator pins at most this much (plus one
  // command, plus the unsolicited bursts it may send without asking). It must be at
  // least the largest transfer (8 MiB) for a single big WRITE to run at full speed.
  uint64_t write_buffer_budget = 32ull << 20;
  bool header_digest_crc32c = true;  // digests accepted (RFC 7143 13.1)
  bool header_digest_none = true;
  bool data_digest_crc32c = true;
  bool data_digest_none = true;
};

// Session-wide results; initial values are the RFC 7143 13 defaults, in force for any key
// the initiator does not negotiate.
struct SessionParams {
  uint32_t max_burst_length = 262144;
  uint32_t first_burst_length = 65536;
  bool immediate_data = true;
  bool initial_r2t = true;
  uint32_t max_outstanding_r2t = 1;
  bool data_pdu_in_order = true;
  bool data_sequence_in_order = true;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t error_recovery_level = 0;
  uint32_t max_connections = 1;
};

// Connection-only results.
struct ConnParams {
  uint32_t max_send_data_segment_length = 8192;  // the initiator's MaxRecvDataSegmentLength
  uint32_t max_recv_data_segment_length = 8192;  // ours, once declared
  bool header_digest = false;
  bool data_digest = false;
};

class Negotiator {
 public:
  Negotiator(const IscsiLimits& limits, bool discovery) : limits_(limits), discovery_(discovery) {}

  enum class Outcome {
    kAnswered,        // handled; response appended (or nothing to answer)
    kNotOperational,  // not an operational key: the caller handles it (or NotUnderstood)
    kRenegotiated,    // repeated with another value during login: the login fails (0x0200)
  };
  Outcome offer(const KeyValue& kv, std::vector<uint8_t>& response);
  // Appends offers of the target's values for session keys nobody negotiated yet whose
  // RFC default the target's limits do not allow (normal sessions, once per login).
  // True when it offered any: the login must not leave the stage before the initiator's
  // answer (RFC 7143 6.2: an offer needs a response).
  bool propose(std::vector<uint8_t>& response);
  // Appends the target's declarations the initiator has not yet seen (MaxRecvData-
  // SegmentLength) and enforces cross-key rules (FirstBurstLength <= MaxBurstLength).
  // False when a session key ended outside the target's limits (the initiator rejected
  // the target's offer, or offered a malformed value and kept the default): the login
  // fails.
  [[nodiscard]] bool finish(std::vector<uint8_t>& response);
  // Login over: from now on (Text requests in full feature phase) declarations may be
  // repeated.
  void end_login() { in_login_ = false; }
  void set_discovery(bool d) { discovery_ = d; }
  // A login that adds a connection to a session (RFC 7143 6.3.6): the session-wide keys
  // (LO, "leading only", 13.2-13.20) were settled on the leading connection; offered here
  // they are answered Irrelevant and change nothing, and none is proposed or checked.
  void set_leading(bool l) { leading_ = l; }

  SessionParams session;
  ConnParams conn;

 private:
  Outcome negotiate(std::string_view k, std::string_view v, std::vector<uint8_t>& out);

  const IscsiLimits& limits_;
  bool discovery_;
  bool leading_ = true;
  bool declared_mrdsl_ = false;
  bool in_login_ = true;
  bool proposed_any_ = false;
  std::map<std::string, std::string, std::less<>> offered_;  // by the initiator, this login
  std::set<std::string, std::less<>> proposed_;              // by the target, awaiting answers
};

}  // namespace zuma::target
