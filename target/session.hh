// One iSCSI session: the state its connections share (RFC 7143 4.4, 6.3.6).
//
// A session owns the command numbering (CmdSN window, ExpCmdSN, MaxCmdSN: RFC 7143
// 4.2.2.1, ordered across all of its connections), the Initiator Task Tags (unique within
// the session, 11.2.1.8), the I_T nexus the device server sees, and the session-wide
// parameters negotiated on its leading connection. Each connection keeps what is its own:
// StatSN, its digests and segment lengths, its transmit queue, and the commands that
// arrived on it (connection allegiance at ErrorRecoveryLevel 0: a command is answered and
// its Data-Out received on the connection that carried it).
//
// Threading: a session and every connection in it live on one reactor thread. A login that
// adds a connection (MaxConnections > 1) and reaches another reactor is handed over to the
// session's reactor before its first Login Response (Server::move_connection), so nothing
// here is ever touched by two threads. The shared_ptr is held by the session's connections
// and by the server's TSIH registry until the session ends.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "scsi/device_server.hh"
#include "scsi/task.hh"
#include "target/itt_table.hh"
#include "target/negotiation.hh"
#include "target/pdu.hh"

namespace zuma::target {

class Connection;
struct Command;
class ServerContext;

struct Session {
  uint16_t tsih = 0;
  std::array<uint8_t, 6> isid{};
  std::string initiator_name, target_name;
  uint16_t tpgt = 0;
  unsigned reactor = 0;
  bool discovery = false;
  SessionParams params;  // the leading connection's negotiation
  // LUs of the nexus, for I_T nexus loss when the session ends (the leading connection's
  // table; Connection::retarget keeps it current).
  std::shared_ptr<const scsi::LunTable> luns;
  scsi::Nexus nexus;
  std::string key;          // initiator|isid|target|tpgt (Server::session_started)
  bool registered = false;  // in the server's session and TSIH registries

  // Command numbering (RFC 7143 4.2.2.1).
  uint32_t exp_cmd_sn = 0;
  uint32_t queue_depth = 128;
  uint32_t window_used = 0;  // non-immediate commands accepted and not yet completed
  // PDUs that arrived ahead of ExpCmdSN, by CmdSN. nullptr: a non-command PDU (NOP-Out,
  // Text, Task Management, Logout) that was acted on at once; its number is only consumed
  // when ExpCmdSN reaches it (with several connections it may overtake a command).
  std::map<uint32_t, Command*, bool (*)(uint32_t, uint32_t)> out_of_order{&sn_lt};
  IttTable<Command> by_itt;  // every connection's live commands

  std::vector<Connection*> conns;  // connections in full feature phase
  // Set when the session is to end with its last connection (Logout, reinstatement,
  // shutdown), rather than wait for the initiator to continue it.
  bool closing = false;
  bool ended = false;
  // With no connection left after a failure: when the state is discarded (RFC 7143
  // 13.15/13.16: DefaultTime2Wait + DefaultTime2Retain).
  std::chrono::steady_clock::time_point retain_until{};

  // RFC 7143 4.2.2.1: the window shrinks by the commands in flight (queue depth as flow
  // control), so MaxCmdSN never moves back.
  uint32_t max_cmd_sn() const {
    return exp_cmd_sn - 1 + (queue_depth - std::min(window_used, queue_depth));
  }
};

// Ends a session: out of the server's registries, and I_T nexus loss on each of its LUs
// (SAM-5: reservations released, unit attentions for the others). Idempotent.
void end_session(Session& s, ServerContext& server);

}  // namespace zuma::target
