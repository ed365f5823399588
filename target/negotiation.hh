// Operational parameter negotiation (RFC 7143 6.2 and 13).
//
// The Negotiator answers each operational key an initiator offers with the value the
// RFC's result function gives (minimum, maximum, boolean AND/OR, list selection) against
// the target's own limits, and records the outcome. Keys it does not know are answered
// NotUnderstood; malformed values Reject (RFC 7143 6.2).
#pragma once

#include <cstdint>
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
    kAnswered,        // handled; response appended
    kNotOperational,  // not an operational key: the caller handles it (or NotUnderstood)
  };
  Outcome offer(const KeyValue& kv, std::vector<uint8_t>& response);
  // Appends the target's declarations the initiator has not yet seen (MaxRecvData-
  // SegmentLength) and enforces cross-key rules (FirstBurstLength <= MaxBurstLength).
  void finish(std::vector<uint8_t>& response);
  void set_discovery(bool d) { discovery_ = d; }

  SessionParams session;
  ConnParams conn;

 private:
  const IscsiLimits& limits_;
  bool discovery_;
  bool declared_mrdsl_ = false;
};

}  // namespace zuma::target
