#include "target/negotiation.hh"

#include <algorithm>
#include <iterator>
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

// X-<reversed domain>.<name> (private) and X#<name> (IANA-registered) extension keys.
bool is_extension(std::string_view k) { return k.starts_with("X-") || k.starts_with("X#"); }

bool is_operational(std::string_view k) {
  static constexpr std::string_view kKeys[] = {
      "HeaderDigest",       "DataDigest",        "MaxRecvDataSegmentLength",
      "MaxConnections",     "InitialR2T",        "ImmediateData",
      "MaxBurstLength",     "FirstBurstLength",  "DefaultTime2Wait",
      "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder",
      "DataSequenceInOrder", "ErrorRecoveryLevel"};
  return std::find(std::begin(kKeys), std::end(kKeys), k) != std::end(kKeys);
}

}  // namespace

Negotiator::Outcome Negotiator::offer(const KeyValue& kv, std::vector<uint8_t>& out) {
  const std::string_view k = kv.key;
  const std::string_view v = kv.value;
  // RFC 7143 6.2 lets an acceptor ignore keys it does not understand; extension keys have
  // no defined answer, so none is sent (a NotUnderstood could confuse their negotiation).
  if (is_extension(k)) return Outcome::kAnswered;
  if (!is_operational(k)) return Outcome::kNotOperational;
  if (auto p = proposed_.find(k); p != proposed_.end()) {
    // The initiator's answer to the target's own offer: taken, not answered (RFC 7143
    // 6.2). Reject, NotUnderstood or a bad value leave the default; finish() judges it.
    proposed_.erase(p);
    offered_.emplace(std::string(k), std::string(v));
    std::vector<uint8_t> discard;
    negotiate(k, v, discard);
    return Outcome::kAnswered;
  }
  if (in_login_) {
    auto [it, fresh] = offered_.emplace(std::string(k), std::string(v));
    if (!fresh) return it->second == v ? Outcome::kAnswered : Outcome::kRenegotiated;
  }
  return negotiate(k, v, out);
}

bool Negotiator::propose(std::vector<uint8_t>& out) {
  if (proposed_any_) return false;
  proposed_any_ = true;
  auto want = [&](std::string_view k, const std::string& value) {
    if (offered_.contains(k)) return;
    append_key(out, k, value);
    proposed_.emplace(k);
  };
  // A required digest (CRC32C without None): the default None is not acceptable.
  if (!limits_.header_digest_none && limits_.header_digest_crc32c) want("HeaderDigest", "CRC32C");
  if (!limits_.data_digest_none && limits_.data_digest_crc32c) want("DataDigest", "CRC32C");
  if (!discovery_ && leading_) {
    const SessionParams rfc;  // the defaults in force for keys nobody offers
    if (rfc.immediate_data && !limits_.immediate_data) want("ImmediateData", "No");
    if (rfc.max_burst_length > limits_.max_burst_length)
      want("MaxBurstLength", std::to_string(limits_.max_burst_length));
    const uint32_t first = std::min(limits_.first_burst_length, limits_.max_burst_length);
    if (rfc.first_burst_length > first) want("FirstBurstLength", std::to_string(first));
    if (rfc.max_connections > limits_.max_connections)
      want("MaxConnections", std::to_string(limits_.max_connections));
    if (rfc.default_time2wait < limits_.default_time2wait)
      want("DefaultTime2Wait", std::to_string(limits_.default_time2wait));
    if (rfc.default_time2retain > limits_.default_time2retain)
      want("DefaultTime2Retain", std::to_string(limits_.default_time2retain));
  }
  return !proposed_.empty();
}

Negotiator::Outcome Negotiator::negotiate(std::string_view k, std::string_view v,
                                          std::vector<uint8_t>& out) {
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
  if (!leading_) {  // every key left is leading only (connection keys were answered above)
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

bool Negotiator::finish(std::vector<uint8_t>& out) {
  if (!declared_mrdsl_) {
    conn.max_recv_data_segment_length = limits_.max_recv_data_segment_length;
    append_key(out, "MaxRecvDataSegmentLength", std::to_string(conn.max_recv_data_segment_length));
    declared_mrdsl_ = true;
  }
  // RFC 7143 13.14: FirstBurstLength MUST NOT exceed MaxBurstLength.
  session.first_burst_length = std::min(session.first_burst_length, session.max_burst_length);
  if (discovery_ || !leading_) return true;
  // A default left in force by a rejected offer must still be within what the target can
  // do: it would buffer more than it allows, or take immediate data it refuses.
  return session.max_burst_length <= limits_.max_burst_length &&
         session.first_burst_length <= limits_.first_burst_length &&
         (!session.immediate_data || limits_.immediate_data) &&
         session.max_outstanding_r2t <= limits_.max_outstanding_r2t &&
         session.max_connections <= limits_.max_connections;
}

}  // namespace zuma::target
