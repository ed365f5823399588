// Connection: what the control socket asks of it (issue 6) -- session information, live
// target changes and per-command statistics. Runs on the connection's reactor thread.
#include <arpa/inet.h>

#include <algorithm>

#include <fmt/format.h>

#include "scsi/logical_unit.hh"
#include "target/connection.hh"

namespace zuma::target {

namespace {

std::string address(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
    return fmt::format("{}:{}", buf, ntohs(a.sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf);
    return fmt::format("[{}]:{}", buf, ntohs(a.sin6_port));
  }
  return "?";
}

enum class Kind { kRead, kWrite, kOther };

// SBC-4 opcodes whose data is user data read or written.
Kind kind_of(uint8_t opcode) {
  switch (opcode) {
    case 0x08:
    case 0x28:
    case 0xa8:
    case 0x88:  // READ (6/10/12/16)
      return Kind::kRead;
    case 0x0a:
    case 0x2a:
    case 0xaa:
    case 0x8a:  // WRITE (6/10/12/16)
    case 0x2e:
    case 0x8e:  // WRITE AND VERIFY (10/16)
    case 0x9c:  // WRITE ATOMIC (16)
      return Kind::kWrite;
    default:
      return Kind::kOther;
  }
}

}  // namespace

bool Connection::in_full_feature() const {
  return phase_ == Phase::kFullFeature && !discovery_ && !closed_;
}

SessionInfo Connection::info() const {
  SessionInfo s;
  s.id = id_;
  s.initiator = initiator_name_;
  s.initiator_alias = initiator_alias_;
  s.target = target_name_;
  s.isid = fmt::format("{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}", isid_[0], isid_[1], isid_[2],
                       isid_[3], isid_[4], isid_[5]);
  s.peer = address(peer_);
  s.local = address(local_);
  s.tpgt = tpgt_;
  s.tsih = tsih_;
  s.cid = cid_;
  s.connections = uint32_t(sess_->conns.size());
  s.queue_depth = sess_->queue_depth;
  s.in_flight = live_commands_;
  const auto& ss = sp();
  const auto& cc = neg_.conn;
  auto yn = [](bool b) { return std::string(b ? "Yes" : "No"); };
  s.parameters = {
      {"HeaderDigest", cc.header_digest ? "CRC32C" : "None"},
      {"DataDigest", cc.data_digest ? "CRC32C" : "None"},
      {"MaxRecvDataSegmentLength", std::to_string(cc.max_recv_data_segment_length)},
      {"MaxXmitDataSegmentLength", std::to_string(cc.max_send_data_segment_length)},
      {"MaxBurstLength", std::to_string(ss.max_burst_length)},
      {"FirstBurstLength", std::to_string(ss.first_burst_length)},
      {"ImmediateData", yn(ss.immediate_data)},
      {"InitialR2T", yn(ss.initial_r2t)},
      {"MaxOutstandingR2T", std::to_string(ss.max_outstanding_r2t)},
      {"DataPDUInOrder", yn(ss.data_pdu_in_order)},
      {"DataSequenceInOrder", yn(ss.data_sequence_in_order)},
      {"DefaultTime2Wait", std::to_string(ss.default_time2wait)},
      {"DefaultTime2Retain", std::to_string(ss.default_time2retain)},
      {"ErrorRecoveryLevel", std::to_string(ss.error_recovery_level)},
      {"MaxConnections", std::to_string(ss.max_connections)},
  };
  if (luns_)
    for (auto& [n, lu] : luns_->luns) s.lus.push_back(lu->params().name);
  s.stats = stats_;
  s.lu_stats = lu_stats_;
  return s;
}

bool Connection::retarget(std::shared_ptr<const TargetDef> def) {
  if (!in_full_feature()) return true;
  const AclRule* rule = def->admit(initiator_name_, peer_);
  if (!rule) {
    close("no longer admitted by the target's ACL");
    return false;
  }
  std::shared_ptr<const scsi::LunTable> table = rule->luns ? rule->luns : def->luns;
  target_ = std::move(def);
  chap_policy_ = nullptr;  // login only; the old definition may go away
  if (table == luns_) return true;
  // Commands already executing may still refer to the old table (task_set.table).
  if (executing_ == 0) retired_tables_.clear();
  // The session's nexus loses the LUs it no longer sees, once for all its connections.
  if (luns_ && sess_->luns != table) {
    sess_->luns = table;
    for (auto& [n, lu] : luns_->luns) {
      const bool kept = std::any_of(table->luns.begin(), table->luns.end(),
                                    [&](auto& e) { return e.second == lu; });
      if (!kept) scsi::nexus_lost(*lu, sess_->nexus);
    }
  }
  if (luns_) retired_tables_.push_back(std::move(luns_));
  luns_ = std::move(table);
  lun_slot_.clear();
  return true;
}

void Connection::account(Command* c) {
  if (c->started == std::chrono::steady_clock::time_point{}) return;  // never executed
  const auto us = uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::steady_clock::now() - c->started)
                               .count());
  c->started = {};
  const scsi::Task& t = c->task;
  IoStats d;
  d.commands = 1;
  switch (kind_of(t.cdb[0])) {
    case Kind::kRead:
      d.reads = 1;
      d.bytes_read = t.status == scsi::status::kGood ? std::min(t.data_in_len, t.expected_len) : 0;
      break;
    case Kind::kWrite:
      d.writes = 1;
      d.bytes_written = t.status == scsi::status::kGood ? t.data.size() : 0;
      break;
    case Kind::kOther:
      break;
  }
  d.errors = !t.aborted && t.status != scsi::status::kGood ? 1 : 0;
  d.latency_sum_us = us;
  size_t b = 0;
  while (b < IoStats::kLatencyBoundsUs.size() && us > IoStats::kLatencyBoundsUs[b]) ++b;
  d.latency[b] = 1;
  stats_.add(d);
  // Per LU: the LUN's slot, looked up once per LUN (and again after a table change).
  auto slot =
      std::find_if(lun_slot_.begin(), lun_slot_.end(), [&](auto& e) { return e.first == t.lun; });
  if (slot == lun_slot_.end()) {
    if (!luns_) return;
    auto it = luns_->luns.find(t.lun);
    if (it == luns_->luns.end()) return;  // no such LUN: not an LU's command
    const std::string& name = it->second->params().name;
    auto named =
        std::find_if(lu_stats_.begin(), lu_stats_.end(), [&](auto& e) { return e.first == name; });
    if (named == lu_stats_.end()) {
      lu_stats_.emplace_back(name, IoStats{});
      named = lu_stats_.end() - 1;
    }
    lun_slot_.emplace_back(t.lun, uint32_t(named - lu_stats_.begin()));
    slot = lun_slot_.end() - 1;
  }
  lu_stats_[slot->second].second.add(d);
}

}  // namespace zuma::target
