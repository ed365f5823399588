#include "target/negotiation.hh"

#include <algorithm>
#include <string_view>

namespace zuma::target {
namespace {

constexpr uint32_t kMaxDsl = 16777215;  // 2^24 - 1, RFC 7143 13.12/13.13/13.14

std::optional<bool> parse_bool(std::string_view v) {
  if (v == "Yes") return true;
  if (v == "No") return false;
  return std::nullopt;
}
const char* yes_no(bool b) { return b ? "Yes" : "No"; }

// Selects from a digest list (RFC 7143 13.1, 6.2.1): the first of the initiator's values
// the target accepts. true = CRC32C, false = None, nullopt = nothing acceptable.
std::optional<bool> choose_digest(std::string_view list, bool crc32c, bool none) {
  size_t i = 0;
  while (i <= list.size()) {
    size_t comma = list.find(',', i);
    if (comma == std::string_view::npos) comma = list.size();
    const std::string_view v = list.substr(i, comma - i);
    if (v == "None" && none) return false;
    if (v == "CRC32C" && crc32c) return true;
    i = comma + 1;
  }
  return std::nullopt;
}

// Session-wide keys that are irrelevant in a discovery session (RFC 7143 13.x "Irrelevant
// when SessionType=Discovery").
bool irrelevant_for_discovery(std::string_view k) {
  return k == "MaxConnections" || k == "InitialR2T" || k == "ImmediateData" ||
         k == "MaxBurstLength" || k == "FirstBurstLength" || k == "MaxOutstandingR2T" ||
         k == "DataPDUInOrder" || k == "DataSequenceInOrder";
}

}  // namespace

Negotiator::Outcome Negotiator::offer(const KeyValue& kv, std::vector<uint8_t>& out) {
  const std::string_view k = kv.key;
  const std::string_view v = kv.value;
  auto reply = [&](std::string_view value) { append_key(out, k, value); };
  auto number = [&](uint64_t lo, uint64_t hi) -> std::optional<uint32_t> {
    auto n = parse_number(v, hi);
    if (!n || *n < lo) return std::nullopt;
    return uint32_t(*n);
  };

  if (k == "HeaderDigest" || k == "DataDigest") {
    const bool header = k == "HeaderDigest";
    auto chosen = header ? choose_digest(v, limits_.header_digest_crc32c, limits_.header_digest_none)
                         : choose_digest(v, limits_.data_digest_crc32c, limits_.data_digest_none);
    if (!chosen) {
      reply("Reject");
    } else {
      (header ? conn.header_digest : conn.data_digest) = *chosen;
      reply(*chosen ? "CRC32C" : "None");
    }
    return Outcome::kAnswered;
  }
  if (k == "MaxRecvDataSegmentLength") {  // declarative (RFC 7143 13.12)
    auto n = number(512, kMaxDsl);
    if (!n) {
      reply("Reject");
    } else {
      conn.max_send_data_segment_length = *n;
      if (!declared_mrdsl_) {
        conn.max_recv_data_segment_length = limits_.max_recv_data_segment_length;
        reply(std::to_string(conn.max_recv_data_segment_length));
        declared_mrdsl_ = true;
      }
    }
    return Outcome::kAnswered;
  }
  if (discovery_ && irrelevant_for_discovery(k)) {
    reply("Irrelevant");
    return Outcome::kAnswered;
  }
  if (k == "MaxConnections") {  // min (13.2)
    auto n = number(1, 65535);
    if (!n) return reply("Reject"), Outcome::kAnswered;
    session.max_connections = std::min(*n, limits_.max_connections);
    reply(std::to_string(session.max_connections));
  } else if (k == "InitialR2T") {  // OR (13.10)
    auto b = parse_bool(v);
    if (!b) return reply("Reject"), Outcome::kAnswered;
    session.initial_r2t = *b || limits_.initial_r2t;
    reply(yes_no(session.initial_r2t));
  } else if (k == "ImmediateData") {  // AND (13.11)
    auto b = parse_bool(v);
    if (!b) return reply("Reject"), Outcome::kAnswered;
    session.immediate_data = *b && limits_.immediate_data;
    reply(yes_no(session.immediate_data));
  } else if (k == "MaxBurstLength") {  // min (13.13)
    auto n = number(512, kMaxDsl);
    if (!n) return reply("Reject"), Outcome::kAnswered;
    session.max_burst_length = std::min(*n, limits_.max_burst_length);
    reply(std::to_string(session.max_burst_length));
  } else if (k == "FirstBurstLength") {  // min (13.14)
    auto n = number(512, kMaxDsl);
    if (!n) return reply("Reject"), Outcome::kAnswered;
    session.first_burst_length = std::min(*n, limits_.first_burst_length);
    reply(std::to_string(session.first_burst_length));
  } else if (k == "DefaultTime2Wait") {  // max (13.15)
    auto n = number(0, 3600);
    if (!n) return reply("Reject"), Outcome::kAnswered;
    session.default_time2wait = std::max(*n, limits_.default_time2wait);
    reply(std::to_string(session.default_time2wait));
  } else if (k == "DefaultTime2Retain") {  // min (13.16)
    auto n = number(0, 3600);
    if (!n) return reply("Reject"), Outcome::kAnswered;
    session.default_time2retain = std::min(*n, limits_.default_time2retain);
    reply(std::to_string(session.default_time2retain));
  } else if (k == "MaxOutstandingR2T") {  // min (13.17)
    auto n = number(1, 65535);
    if (!n) return reply("Reject"), Outcome::kAnswered;
    session.max_outstanding_r2t = std::min(*n, limits_.max_outstanding_r2t);
    reply(std::to_string(session.max_outstanding_r2t));
  } else if (k == "DataPDUInOrder") {  // OR (13.18); Zuma's own value is Yes
    auto b = parse_bool(v);
    if (!b) return reply("Reject"), Outcome::kAnswered;
    session.data_pdu_in_order = true;
    reply("Yes");
  } else if (k == "DataSequenceInOrder") {  // OR (13.19); Zuma's own value is Yes
    auto b = parse_bool(v);
    if (!b) return reply("Reject"), Outcome::kAnswered;
    session.data_sequence_in_order = true;
    reply("Yes");
  } else if (k == "ErrorRecoveryLevel") {  // min (13.20); Zuma implements level 0
    auto n = number(0, 2);
    if (!n) return reply("Reject"), Outcome::kAnswered;
    session.error_recovery_level = 0;
    reply("0");
  } else {
    return Outcome::kNotOperational;
  }
  return Outcome::kAnswered;
}

void Negotiator::finish(std::vector<uint8_t>& out) {
  if (!declared_mrdsl_) {
    conn.max_recv_data_segment_length = limits_.max_recv_data_segment_length;
    append_key(out, "MaxRecvDataSegmentLength", std::to_string(conn.max_recv_data_segment_length));
    declared_mrdsl_ = true;
  }
  // RFC 7143 13.14: FirstBurstLength MUST NOT exceed MaxBurstLength.
  session.first_burst_length = std::min(session.first_burst_length, session.max_burst_length);
}

}  // namespace zuma::target
