// One iSCSI connection (RFC 7143); what its session shares with its other connections
// (MaxConnections > 1) is in target/session.hh.
//
// Receive is a resumable state machine (BHS -> AHS -> data -> padding) with bounded work
// per wakeup (STYLE.md 6): at most kPdusPerWakeup PDUs, then the rest is deferred to the
// end of the loop iteration so one busy connection cannot starve the others. Data-Out and
// immediate data land in the command's own buffer; Data-In is sent straight out of it;
// every PDU queued during one loop iteration goes out in one writev (STYLE.md 5).
//
// Threading: everything here runs on the owning reactor's thread.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "scsi/device_server.hh"
#include "scsi/sense.hh"
#include "scsi/task.hh"
#include "storage/unique_fd.hh"
#include "target/itt_table.hh"
#include "target/negotiation.hh"
#include "target/pdu.hh"
#include "target/reactor.hh"
#include "target/ring.hh"
#include "target/server.hh"
#include "target/session.hh"

namespace zuma::target {

class Connection;

// One SCSI command in flight. The scsi::Task is embedded (STYLE.md 3).
struct Command {
  scsi::Task task;
  Connection* conn = nullptr;
  uint32_t itt = 0;
  uint32_t cmd_sn = 0;
  uint64_t lun_field = 0;
  uint32_t edtl = 0;
  bool immediate = false;
  bool is_write = false;
  bool is_read = false;
  enum class State : uint8_t { kCollecting, kQueued, kExecuting, kResponding } state{};
  bool sequenced = false;  // CmdSN accepted (in order)
  bool aborted = false;
  // A transport failure (bad Data-Out sequence, data digest error): the command ends with
  // CHECK CONDITION and this reason instead of executing.
  scsi::Reason failed = scsi::Reason::kGood;
  // Data-Out collection (RFC 7143 4.2.5.2 / 11.7)
  uint32_t received = 0;          // bytes of data-out received in all
  uint32_t unsolicited_end = 0;   // end of the unsolicited range (immediate + first burst)
  uint32_t unsolicited_got = 0;   // bytes received in that range
  uint32_t next_r2t_offset = 0;   // first byte not yet asked for by an R2T
  uint32_t r2t_sn = 0;
  uint32_t data_sn = 0;           // Data-In PDUs sent / R2Ts sent (ExpDataSN)
  struct R2t {
    uint32_t ttt, offset, length, got;
    uint32_t next_data_sn;  // DataSN restarts at 0 for each R2T's sequence (11.7.5)
  };
  uint32_t unsol_data_sn = 0;
  std::vector<R2t> r2ts;          // outstanding R2Ts
  uint32_t pending_tx = 0;        // queued PDUs still referring to task.data
  // Write budget (Connection::take_budget): bytes charged to the connection's budget, and
  // whether the command waits in the budget queue for its R2Ts (or, a READ, to execute).
  uint32_t charged = 0;
  bool budget_wait = false;
  std::chrono::steady_clock::time_point started{};  // execute(); for latency statistics
};

class Connection final : public EventHandler, public Deferred {
 public:
  Connection(Reactor& reactor, ServerContext& server, storage::UniqueFd fd, uint64_t id,
             uint16_t tpgt, const sockaddr_storage& local, const sockaddr_storage& peer);
  ~Connection() override;

  void start();
  uint64_t id() const { return id_; }
  uint16_t tpgt() const { return tpgt_; }
  const sockaddr_storage& local_addr() const { return local_; }
  const sockaddr_storage& peer_addr() const { return peer_; }
  bool finished() const { return closed_ && executing_ == 0; }
  // Close from outside (shutdown, session reinstatement): stop reading, let executing
  // commands finish, flush, close.
  void drain();
  void close(const char* why);
  void tick(std::chrono::steady_clock::time_point now);
  // Set by the owner: called once when the connection is closed and idle (may delete it).
  std::function<void(Connection&)> on_finished;

  // --- administration (connection_admin.cc; reactor thread only) ---
  bool in_full_feature() const;  // a normal session in full feature phase, not closed
  const std::string& target_iqn() const { return target_name_; }
  SessionInfo info() const;
  // The target's definition changed: re-admit the initiator by the new ACL and switch to
  // the LUN table it gives. False (and the connection is closed) when no longer admitted.
  bool retarget(std::shared_ptr<const TargetDef> def);
  // This connection's counters per LU name.
  std::vector<std::pair<std::string, IoStats>> lu_stats() const { return lu_stats_; }
  // The session this connection belongs to (or logs in to); never null.
  const std::shared_ptr<Session>& session() const { return sess_; }

  // A login moving to its session's reactor (Server::move_connection): the socket and
  // what was read from it that the new Connection must see again.
  struct Handover {
    storage::UniqueFd fd;
    std::array<uint8_t, kBhsLen> bhs{};  // the Login Request being handled
    std::vector<uint8_t> data;           // its data segment
    std::vector<uint8_t> unread;         // bytes received after it
  };
  // Gives up the socket (out of epoll) mid-login, without a word to the initiator, and
  // finishes this connection. Reactor thread of this connection.
  Handover hand_over();
  // On the new reactor, after start(): handles the handed-over Login Request again.
  void resume_login(Handover h);

  // EventHandler / Deferred
  void on_event(uint32_t events) override;
  void run_deferred() override;

 private:
  static constexpr int kPdusPerWakeup = 16;
  static constexpr size_t kStageSize = 64 * 1024;
  static constexpr size_t kPoolBytes = 8u << 20;  // buffer capacity pool_ may keep
  static constexpr size_t kLoginMaxDsl = 8192;  // RFC 7143 13.12 default before declaring

  enum class Phase { kLogin, kFullFeature, kLoggingOut };
  enum class Rx { kBhs, kAhs, kHeaderDigest, kData, kPad, kDataDigest };
  enum class Fill { kDone, kWait, kClosed };

  // --- receive ---
  void receive();
  Fill fill(uint8_t* dst, size_t len, size_t& done);
  bool begin_data();  // header (and digest) complete: choose where the data goes; false
                      // when the connection stops
  void end_pdu();     // whole PDU received
  // --- PDU handlers ---
  void handle_login();
  void handle_scsi_command_header();
  void handle_scsi_command();
  void handle_data_out_header();
  void handle_data_out();
  void handle_nop_out();
  void handle_text();
  void handle_logout();
  void handle_task_mgmt();
  void reject(RejectReason reason, const uint8_t* bhs);
  // --- login ---
  // `text`: the answers so far, sent along so the initiator sees which key failed.
  void login_fail(LoginStatus st, std::vector<uint8_t> text = {});
  bool login_identity_key(const KeyValue& kv);
  bool login_auth_key(const KeyValue& kv, std::vector<uint8_t>& out);
  bool chap_finish(std::vector<uint8_t>& out);
  void login_complete();
  bool join_session();  // first PDU of a login with TSIH != 0; false when it stopped
  bool room_in(const Session& s) const;  // this CID may join `s` (MaxConnections)
  // --- commands ---
  Command* new_command();
  void release(Command* c);
  bool sequence(uint32_t cmd_sn, bool immediate);  // CmdSN window; false = drop
  void command_ready(Command* c);
  void start_r2ts(Command* c);
  // Write budget: a WRITE's buffer beyond its unsolicited part is allocated when its
  // first R2T goes out, a READ's when it executes, both within
  // IscsiLimits::write_buffer_budget; commands that do not fit wait in order (FIFO).
  void data_phase(Command* c);       // sequenced, data still needed (or a READ): go or wait
  bool take_budget(Command* c);      // charge it; false when it must wait
  void grant(Command* c);            // charged: allocate, send R2Ts or execute
  void pump_budget();                // grant waiting commands in order while budget allows
  void unqueue_budget(Command* c);   // out of the budget queue (answered, aborted, released)
  void fail_command(Command* c, scsi::Reason why);
  void respond_failed(Command* c);
  bool check_header();  // after BHS/AHS (and digest): false when the connection stops
  void execute(Command* c);
  static void on_task_complete(scsi::Task& t);
  void complete(Command* c);
  void abort_commands(const std::function<bool(Command&)>& match);
  void maybe_finish_tmf();
  void account(Command* c);  // statistics of a completed command (connection_admin.cc)
  std::function<void()> tmf_waiter();  // a `done` for the device server's aborts
  uint32_t max_cmd_sn() const { return sess_->max_cmd_sn(); }
  const SessionParams& sp() const { return sess_->params; }
  // A non-command PDU's CmdSN (RFC 7143 4.2.2.1): consumed now when it is ExpCmdSN, later
  // when it is ahead inside the window. False when outside the window.
  bool take_cmd_sn(uint32_t sn);
  // Moves ExpCmdSN over the PDUs waiting for it, starting the commands among them (on
  // their own connections).
  void drain_ordered();
  // Out of the session's connections: the session ends, waits to be continued, or goes on
  // with its other connections.
  void leave_session();
  void finish_tmfs();  // maybe_finish_tmf on every connection of the session
  Connection* with_cid(uint16_t cid) const;  // the session's connection with this CID
  void end_for_logout();  // another connection logged this one (or the session) out
  void queue_logout_response(uint32_t itt, uint8_t response);
  // --- transmit ---
  struct TxItem {
    std::array<uint8_t, kBhsLen> bhs{};
    uint8_t header_digest[4] = {};
    uint8_t data_digest[4] = {};
    bool hd = false, dd = false;  // digests negotiated when the item was queued
    bool digested = false;
    const uint8_t* data = nullptr;
    uint32_t len = 0;
    std::vector<uint8_t> owned;  // backs `data` when the item owns its data segment
    Command* done_cmd = nullptr;  // pending_tx of this command drops when sent
  };
  TxItem& queue_pdu(Op op);
  // Queues a Login Response with the ISID, TSIH and ITT of this login filled in.
  TxItem& queue_login_response();
  void queue_status_fields(TxItem& it);  // StatSN, ExpCmdSN, MaxCmdSN at 24/28/32
  void send_text_like(Op op, uint8_t flags, uint32_t itt, uint32_t ttt, std::vector<uint8_t> data);
  void queue_scsi_response(Command* c);
  void flush_tx();
  static size_t wire_len(const TxItem& it);
  void want_write(bool on);
  void update_events();  // the reactor waits for input while reading_, output while epollout_
  void check_drained();
  void stop_reading_and_finish();
  void notify_finished();

  Reactor& reactor_;
  ServerContext& server_;
  storage::UniqueFd fd_;
  uint64_t id_;
  uint16_t tpgt_;
  sockaddr_storage local_{}, peer_{};
  std::string peer_str_;
  Phase phase_ = Phase::kLogin;
  bool closed_ = false;
  bool draining_ = false;
  bool reading_ = true;
  bool held_ = false;        // not reading until a reinstated session has ended (login_complete)
  bool rx_drained_ = false;  // the last recv came back short: the socket is empty
  bool epollout_ = false;
  std::chrono::steady_clock::time_point created_;
  std::chrono::steady_clock::time_point last_rx_;

  // receive state
  Rx rx_ = Rx::kBhs;
  std::array<uint8_t, kBhsLen> bhs_{};
  std::vector<uint8_t> ahs_;
  size_t rx_done_ = 0;
  uint8_t* rx_dst_ = nullptr;  // nullptr = discard
  uint32_t rx_len_ = 0;
  std::vector<uint8_t> rx_small_;
  Command* rx_cmd_ = nullptr;   // command the current data segment belongs to
  uint8_t pad_[4] = {};
  uint8_t rx_digest_[4] = {};
  bool rx_digest_bad_ = false;
  bool hd_on_ = false, dd_on_ = false;  // digests in force (after login)
  std::unique_ptr<uint8_t[]> stage_;
  size_t stage_beg_ = 0, stage_end_ = 0;

  // login / session
  Negotiator neg_;
  std::vector<uint8_t> login_text_;  // reassembled request text (C bit)
  bool login_started_ = false;
  bool identity_checked_ = false;  // initiator, session type and target looked at
  bool got_initiator_name_ = false;
  bool discovery_ = false;
  bool security_done_ = false;
  uint8_t login_csg_ = 0;
  uint32_t login_itt_ = 0;
  std::array<uint8_t, 6> isid_{};
  uint16_t tsih_ = 0;
  uint16_t cid_ = 0;
  std::string initiator_name_, initiator_alias_, target_name_;
  std::shared_ptr<const TargetDef> target_;
  std::shared_ptr<const scsi::LunTable> luns_;  // what this nexus sees (ACL LUN mapping)
  // CHAP (RFC 7143 12.1.3)
  enum class Chap { kOff, kWaitAlgorithm, kWaitResponse, kDone } chap_ = Chap::kOff;
  const ChapPolicy* chap_policy_ = nullptr;  // nullptr: no authentication required
  ChapAlgorithm chap_alg_ = ChapAlgorithm::kMd5;
  uint8_t chap_id_ = 0;
  std::vector<uint8_t> chap_challenge_;
  std::string chap_n_, chap_r_, chap_i_, chap_c_;  // the initiator's CHAP keys of this PDU
  bool auth_done_ = false;
  std::shared_ptr<Session> sess_;  // own until a login joins an existing session
  bool in_session_ = false;        // in sess_->conns (full feature phase, not closed)
  bool moved_ = false;             // handed over from another reactor already

  // sequence numbers (RFC 7143 4.2.2); CmdSN is the session's
  uint32_t stat_sn_ = 0;

  // commands (live ones are also in sess_->by_itt)
  std::vector<std::unique_ptr<Command>> pool_;
  uint32_t live_commands_ = 0;
  uint32_t executing_ = 0;
  uint32_t next_ttt_ = 1;
  std::deque<Command*> budget_wait_;  // commands waiting for budget, in arrival order
  uint64_t budget_used_ = 0;          // sum of the live commands' `charged`
  bool budget_pump_due_ = false;      // budget returned: pump at the end of the loop
  size_t pooled_bytes_ = 0;           // buffer capacity kept by commands in pool_

  // text continuation (RFC 7143 11.10/11.11)
  std::vector<uint8_t> text_pending_;
  size_t text_sent_ = 0;
  uint32_t text_ttt_ = kReservedTag;

  // task management waiting for aborted commands to finish executing
  struct PendingTmf {
    std::array<uint8_t, kBhsLen> bhs;
    TmfResponse response;
    std::function<void()> after;
  };
  std::vector<PendingTmf> pending_tmf_;
  // Device-server aborts (scsi::abort_task_set, reset_logical_unit) a pending TMF still waits
  // for: other nexuses' tasks end on their own reactors. Each also counts in executing_, so
  // the connection (and a logout) waits for it.
  uint32_t tmf_waits_ = 0;
  bool logout_pending_ = false;
  std::array<uint8_t, kBhsLen> logout_bhs_{};

  std::chrono::steady_clock::time_point drain_deadline_;

  // NOP-In pings
  uint32_t ping_ttt_ = kReservedTag;
  std::chrono::steady_clock::time_point ping_sent_;

  // statistics and live reconfiguration (connection_admin.cc)
  IoStats stats_;
  std::vector<std::pair<std::string, IoStats>> lu_stats_;  // by LU name
  std::vector<std::pair<uint64_t, uint32_t>> lun_slot_;    // LUN -> index in lu_stats_
  // LUN tables replaced by retarget() while commands may still run on them.
  std::vector<std::shared_ptr<const scsi::LunTable>> retired_tables_;

  // transmit
  Ring<TxItem> tx_;
  size_t tx_offset_ = 0;  // bytes of tx_.front() already sent
  bool close_after_tx_ = false;
  bool finish_notified_ = false;
};

}  // namespace zuma::target
