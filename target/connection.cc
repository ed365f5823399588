#include "target/connection.hh"

#include "target/digest.hh"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace zuma::target {
namespace {

constexpr uint8_t kZeros[4] = {0, 0, 0, 0};
// Largest write a command may carry; bigger ones fail in the device server (its block
// limits advertise less) without the transport buffering them.
constexpr uint32_t kMaxCommandBuffer = 8u << 20;  // the LUs' maximum transfer length (VPD B0h)

std::string addr_str(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    port = ntohs(a->sin_port);
    return fmt::format("{}:{}", buf, port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    port = ntohs(a->sin6_port);
    return fmt::format("[{}]:{}", buf, port);
  }
  return buf;
}

bool is_wildcard(const std::string& host) { return host == "0.0.0.0" || host == "::"; }

std::string host_port(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

}  // namespace

Connection::Connection(Reactor& reactor, ServerContext& server, storage::UniqueFd fd, uint64_t id,
                       uint16_t tpgt, const sockaddr_storage& local, const sockaddr_storage& peer)
    : reactor_(reactor),
      server_(server),
      fd_(std::move(fd)),
      id_(id),
      tpgt_(tpgt),
      local_(local),
      peer_(peer),
      peer_str_(addr_str(peer)),
      created_(std::chrono::steady_clock::now()),
      last_rx_(created_),
      stage_(new uint8_t[kStageSize]),
      neg_(server.limits(), false),
      sess_(std::make_shared<Session>()) {}

Connection::~Connection() = default;

void Connection::start() {
  reactor_.add(fd_.get(), EPOLLIN | EPOLLRDHUP, this);
  spdlog::debug("connection {} from {}", id_, peer_str_);
}

// ---------------------------------------------------------------------------------------
// Receive

void Connection::on_event(uint32_t events) {
  if (closed_) return;
  if (events & EPOLLOUT) flush_tx();
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
    rx_drained_ = false;
    if (reading_) {
      receive();
    } else if (events & (EPOLLHUP | EPOLLERR)) {
      close("connection reset");
    }
  }
}

void Connection::run_deferred() {
  if (closed_) return;
  if (budget_pump_due_) {
    budget_pump_due_ = false;
    pump_budget();
  }
  if (reading_ && stage_end_ > stage_beg_) receive();
  if (!closed_) flush_tx();
}

Connection::Fill Connection::fill(uint8_t* dst, size_t len, size_t& done) {
  while (done < len) {
    if (stage_end_ > stage_beg_) {
      const size_t n = std::min(stage_end_ - stage_beg_, len - done);
      if (dst) std::memcpy(dst + done, stage_.get() + stage_beg_, n);
      stage_beg_ += n;
      done += n;
      if (stage_beg_ == stage_end_) stage_beg_ = stage_end_ = 0;
      continue;
    }
    // A short read emptied the socket: skip the recv that would only say EAGAIN, epoll
    // reports more data (level-triggered) and on_event clears the flag.
    if (rx_drained_) return Fill::kWait;
    const size_t want = len - done;
    const bool direct = dst && want >= 16384;  // big data segments go straight to the command
    const size_t asked = direct ? want : kStageSize;
    ssize_t r = direct ? ::recv(fd_.get(), dst + done, want, 0)
                       : ::recv(fd_.get(), stage_.get(), kStageSize, 0);
    if (r > 0) {
      if (direct) {
        done += size_t(r);
      } else {
        stage_beg_ = 0;
        stage_end_ = size_t(r);
      }
      rx_drained_ = size_t(r) < asked;
      continue;
    }
    if (r == 0) return Fill::kClosed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Fill::kWait;
    return Fill::kClosed;
  }
  return Fill::kDone;
}

void Connection::receive() {
  for (int pdus = 0; pdus < kPdusPerWakeup;) {
    if (closed_ || !reading_) return;
    Fill f = Fill::kDone;
    switch (rx_) {
      case Rx::kBhs:
        f = fill(bhs_.data(), kBhsLen, rx_done_);
        if (f != Fill::kDone) break;
        rx_done_ = 0;
        last_rx_ = std::chrono::steady_clock::now();
        if (!check_header()) return;
        ahs_.resize(size_t(Bhs(bhs_.data()).total_ahs_len()) * 4);
        if (!ahs_.empty()) {
          rx_ = Rx::kAhs;
        } else if (hd_on_) {
          rx_ = Rx::kHeaderDigest;
        } else if (!begin_data()) {
          return;
        }
        continue;
      case Rx::kAhs:
        f = fill(ahs_.data(), ahs_.size(), rx_done_);
        if (f != Fill::kDone) break;
        rx_done_ = 0;
        if (hd_on_) {
          rx_ = Rx::kHeaderDigest;
        } else if (!begin_data()) {
          return;
        }
        continue;
      case Rx::kHeaderDigest: {
        f = fill(rx_digest_, 4, rx_done_);
        if (f != Fill::kDone) break;
        rx_done_ = 0;
        uint32_t crc = crc32c_update(kCrc32cInit, bhs_.data(), kBhsLen);
        crc = crc32c_final(crc32c_update(crc, ahs_.data(), ahs_.size()));
        if (crc != load_digest(rx_digest_)) {
          // RFC 7143 7.8: the header (and so its length) cannot be trusted; without
          // markers the next PDU cannot be found: at ERL 0 the connection ends.
          spdlog::warn("{}: header digest error (opcode {:#x}); closing", peer_str_, bhs_[0] & 0x3f);
          server_.counters().header_digest_errors.fetch_add(1, std::memory_order_relaxed);
          close("header digest error");
          return;
        }
        if (!begin_data()) return;
        continue;
      }
      case Rx::kData:
        f = fill(rx_dst_, rx_len_, rx_done_);
        if (f != Fill::kDone) break;
        rx_done_ = 0;
        rx_ = Rx::kPad;
        continue;
      case Rx::kPad:
        f = fill(pad_, pad_len(rx_len_), rx_done_);
        if (f != Fill::kDone) break;
        rx_done_ = 0;
        if (dd_on_ && rx_len_ > 0) {
          rx_ = Rx::kDataDigest;
          continue;
        }
        rx_ = Rx::kBhs;
        ++pdus;
        end_pdu();
        continue;
      case Rx::kDataDigest:
        f = fill(rx_digest_, 4, rx_done_);
        if (f != Fill::kDone) break;
        rx_done_ = 0;
        if (rx_dst_) {  // discarded data is not checked: the PDU is dropped anyway
          uint32_t crc = crc32c_update(kCrc32cInit, rx_dst_, rx_len_);
          crc = crc32c_final(crc32c_update(crc, pad_, pad_len(rx_len_)));
          rx_digest_bad_ = crc != load_digest(rx_digest_);
        }
        rx_ = Rx::kBhs;
        ++pdus;
        end_pdu();
        continue;
    }
    if (f == Fill::kClosed) close(phase_ == Phase::kLogin ? "closed during login" : "closed by peer");
    return;  // kWait: epoll tells us when more arrives
  }
  // PDU budget used up: continue at the end of this loop iteration (STYLE.md 6).
  if (!closed_) reactor_.defer(this);
}

// Checks what the BHS alone can tell, before reading anything it announces (an AHS of up
// to 1020 bytes, a data segment): a PDU that cannot be valid ends the connection at once
// instead of making the target wait for bytes a hostile peer never sends.
bool Connection::check_header() {
  Bhs h(bhs_.data());
  const Op op = h.opcode();
  const uint32_t dsl = h.data_segment_len();
  const uint32_t max = phase_ == Phase::kLogin
                           ? std::max<uint32_t>(kLoginMaxDsl, neg_.conn.max_recv_data_segment_length)
                           : neg_.conn.max_recv_data_segment_length;
  const char* why = nullptr;
  if (phase_ == Phase::kLogin && op != Op::kLoginRequest) {
    why = "only Login Requests before full feature phase (RFC 7143 6.3)";
  } else if (h.total_ahs_len() != 0 && op != Op::kScsiCommand) {
    why = "an AHS on a PDU other than a SCSI Command (RFC 7143 11.2.1.5)";
  } else if (dsl > max) {
    why = "a data segment longer than MaxRecvDataSegmentLength (RFC 7143 13.12)";
  }
  if (!why) return true;
  spdlog::warn("{}: opcode {:#x}, AHS {} words, data {} bytes: {}; closing", peer_str_,
               uint8_t(op), h.total_ahs_len(), dsl, why);
  reject(RejectReason::kProtocolError, bhs_.data());
  close_after_tx_ = true;
  reading_ = false;
  flush_tx();
  return false;
}

bool Connection::begin_data() {
  Bhs h(bhs_.data());
  const uint32_t dsl = h.data_segment_len();  // within limits: check_header() saw to it
  rx_len_ = dsl;
  rx_dst_ = nullptr;
  rx_cmd_ = nullptr;
  switch (h.opcode()) {
    case Op::kScsiCommand:
      if (phase_ == Phase::kFullFeature && !discovery_) {
        handle_scsi_command_header();
        break;
      }
      [[fallthrough]];
    default:
      rx_small_.resize(dsl);
      rx_dst_ = rx_small_.data();
      break;
    case Op::kDataOut:
      if (phase_ == Phase::kFullFeature) {
        handle_data_out_header();
      }
      break;  // otherwise discarded; end_pdu rejects it
  }
  if (closed_ || !reading_) return false;
  rx_ = Rx::kData;
  return true;
}

void Connection::end_pdu() {
  Bhs h(bhs_.data());
  const Op op = h.opcode();
  if (rx_digest_bad_) {
    rx_digest_bad_ = false;
    server_.counters().data_digest_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("{}: data digest error (opcode {:#x}, ITT {:#x})", peer_str_, uint8_t(op), h.itt());
    // RFC 7143 7.8: at ERL 0 a command whose data arrived damaged ends with CHECK
    // CONDITION (PROTOCOL SERVICE CRC ERROR); any other PDU is rejected and discarded.
    if (op == Op::kScsiCommand && rx_cmd_) {
      rx_cmd_->failed = scsi::Reason::kProtocolServiceCrcError;
      return handle_scsi_command();
    }
    if (op == Op::kDataOut && rx_cmd_) return fail_command(rx_cmd_, scsi::Reason::kProtocolServiceCrcError);
    return reject(RejectReason::kDataDigestError, bhs_.data());
  }
  if (phase_ == Phase::kLogin) return handle_login();  // the only opcode check_header() lets in
  switch (op) {
    case Op::kScsiCommand:
      if (discovery_) {  // RFC 7143 4.3: discovery sessions carry only Text and Logout
        reject(RejectReason::kProtocolError, bhs_.data());
        return;
      }
      return handle_scsi_command();
    case Op::kDataOut:
      return handle_data_out();
    case Op::kNopOut:
      return handle_nop_out();
    case Op::kTextRequest:
      return handle_text();
    case Op::kLogoutRequest:
      return handle_logout();
    case Op::kTaskMgmtRequest:
      if (discovery_) return reject(RejectReason::kProtocolError, bhs_.data());
      return handle_task_mgmt();
    case Op::kLoginRequest:
      // RFC 7143 6.3: a Login Request in full feature phase is a protocol error.
      return reject(RejectReason::kProtocolError, bhs_.data());
    case Op::kSnackRequest:  // ErrorRecoveryLevel 0: no SNACK (RFC 7143 7.1.4)
      return reject(RejectReason::kCommandNotSupported, bhs_.data());
    default:
      return reject(RejectReason::kCommandNotSupported, bhs_.data());
  }
}

void Connection::reject(RejectReason reason, const uint8_t* bhs) {
  server_.counters().rejects.fetch_add(1, std::memory_order_relaxed);
  TxItem& it = queue_pdu(Op::kReject);
  Bhs r(it.bhs.data());
  r.set_flags(0x80);
  it.bhs[2] = uint8_t(reason);
  r.set_itt(kReservedTag);
  queue_status_fields(it);
  it.owned.assign(bhs, bhs + kBhsLen);  // RFC 7143 11.17: the rejected PDU's header
  it.data = it.owned.data();
  it.len = kBhsLen;
  r.set_data_segment_len(kBhsLen);
}

// ---------------------------------------------------------------------------------------
// Transmit

size_t Connection::wire_len(const TxItem& it) {
  return kBhsLen + (it.hd ? 4 : 0) + it.len + pad_len(it.len) + (it.dd && it.len ? 4 : 0);
}

Connection::TxItem& Connection::queue_pdu(Op op) {
  TxItem& it = tx_.push_back([](TxItem& t) {
    std::vector<uint8_t> keep = std::move(t.owned);  // keep its capacity for reuse
    keep.clear();
    t = TxItem{};
    t.owned = std::move(keep);
  });
  it.bhs[0] = uint8_t(op);
  it.hd = hd_on_;
  it.dd = dd_on_;
  if (!closed_) reactor_.defer(this);
  return it;
}

void Connection::queue_status_fields(TxItem& it) {
  Bhs b(it.bhs.data());
  b.set_word(24, stat_sn_++);
  b.set_word(28, sess_->exp_cmd_sn);
  b.set_word(32, max_cmd_sn());
}

void Connection::want_write(bool on) {
  if (on == epollout_ || closed_) return;
  epollout_ = on;
  update_events();
}

void Connection::update_events() {
  reactor_.modify(
      fd_.get(),
      (reading_ ? uint32_t(EPOLLIN | EPOLLRDHUP) : 0u) | (epollout_ ? uint32_t(EPOLLOUT) : 0u),
      this);
}

void Connection::flush_tx() {
  while (!tx_.empty() && !closed_) {
    constexpr int kMaxIov = 128;
    iovec iov[kMaxIov];
    int n = 0;
    size_t skip = tx_offset_;
    for (size_t k = 0; k < tx_.size(); ++k) {
      TxItem& it = tx_[k];
      if (n + 5 > kMaxIov) break;
      const uint32_t pad = pad_len(it.len);
      if (!it.digested) {
        it.digested = true;
        if (it.hd) store_digest(it.header_digest, crc32c_final(crc32c_update(kCrc32cInit, it.bhs.data(), kBhsLen)));
        if (it.dd && it.len) {
          uint32_t crc = crc32c_update(kCrc32cInit, it.data, it.len);
          store_digest(it.data_digest, crc32c_final(crc32c_update(crc, kZeros, pad)));
        }
      }
      const std::pair<const uint8_t*, size_t> parts[5] = {
          {it.bhs.data(), kBhsLen},
          {it.header_digest, it.hd ? 4u : 0u},
          {it.data, it.len},
          {kZeros, pad},
          {it.data_digest, it.dd && it.len ? 4u : 0u}};
      for (auto [p, len] : parts) {
        if (len == 0) continue;
        if (skip >= len) {
          skip -= len;
          continue;
        }
        iov[n++] = {const_cast<uint8_t*>(p) + skip, len - skip};
        skip = 0;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = size_t(n);
    ssize_t r = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return want_write(true);
      return close("send failed");
    }
    size_t sent = size_t(r) + tx_offset_;
    while (!tx_.empty()) {
      TxItem& it = tx_.front();
      const size_t total = wire_len(it);
      if (sent < total) break;
      sent -= total;
      Command* c = it.done_cmd;
      tx_.pop_front();
      if (c && --c->pending_tx == 0 && c->state == Command::State::kResponding) release(c);
    }
    tx_offset_ = sent;
  }
  want_write(false);
  if (close_after_tx_ && tx_.empty()) close(logout_pending_ ? "logged out" : "closing");
}

// ---------------------------------------------------------------------------------------
// Login (RFC 7143 6.3, 11.12, 11.13)

Connection::TxItem& Connection::queue_login_response() {
  TxItem& it = queue_pdu(Op::kLoginResponse);
  std::memcpy(it.bhs.data() + 8, isid_.data(), 6);
  // RFC 7143 11.13.4: the TSIH, 0 until a new session's final response; an added
  // connection's, from its first response on.
  store_be16(it.bhs.data() + 14, tsih_);
  Bhs(it.bhs.data()).set_itt(login_itt_);
  return it;
}

void Connection::login_fail(LoginStatus st, std::vector<uint8_t> text) {
  server_.counters().login_failures.fetch_add(1, std::memory_order_relaxed);
  TxItem& it = queue_login_response();
  Bhs r(it.bhs.data());
  if (!text.empty() && text.size() <= kLoginMaxDsl) {
    it.owned = std::move(text);
    it.data = it.owned.data();
    it.len = uint32_t(it.owned.size());
    r.set_data_segment_len(it.len);
  }
  queue_status_fields(it);
  it.bhs[36] = uint8_t(uint16_t(st) >> 8);
  it.bhs[37] = uint8_t(uint16_t(st));
  spdlog::warn("login from {} ({}) to '{}' failed: status {:#06x}", peer_str_,
               initiator_name_.empty() ? "?" : initiator_name_, target_name_, uint16_t(st));
  close_after_tx_ = true;
  reading_ = false;
}

// Identity keys (RFC 7143 13.4-13.6, 13.21), read before anything else in a login PDU so
// the target (and so its CHAP policy) is known. Returns false when the login failed.
bool Connection::login_identity_key(const KeyValue& kv) {
  const std::string& k = kv.key;
  if (k == "InitiatorName") {
    if (kv.value.empty()) return login_fail(LoginStatus::kInitiatorError), false;
    initiator_name_ = kv.value;
    got_initiator_name_ = true;
  } else if (k == "InitiatorAlias") {
    initiator_alias_ = kv.value;
  } else if (k == "SessionType") {
    if (kv.value == "Discovery") {
      discovery_ = true;
    } else if (kv.value == "Normal") {
      discovery_ = false;
    } else {
      return login_fail(LoginStatus::kSessionTypeNotSupported), false;
    }
    neg_.set_discovery(discovery_);
  } else if (k == "TargetName") {
    target_name_ = kv.value;
  }
  return true;
}

// Authentication keys and whatever else is not operational. Returns false when the login
// failed (login_fail was called).
bool Connection::login_auth_key(const KeyValue& kv, std::vector<uint8_t>& out) {
  const std::string& k = kv.key;
  if (k == "InitiatorName" || k == "InitiatorAlias" || k == "SessionType" || k == "TargetName")
    return true;  // handled by login_identity_key
  if (k == "AuthMethod") {
    // RFC 7143 12.1: the target picks from the initiator's list; CHAP when a policy
    // requires it, None otherwise.
    bool none = false, chap = false;
    size_t i = 0;
    const std::string& v = kv.value;
    while (i <= v.size()) {
      size_t c = v.find(',', i);
      if (c == std::string::npos) c = v.size();
      if (v.compare(i, c - i, "None") == 0) none = true;
      if (v.compare(i, c - i, "CHAP") == 0) chap = true;
      i = c + 1;
    }
    if (chap_policy_) {
      if (!chap) return login_fail(LoginStatus::kAuthenticationFailure), false;
      append_key(out, "AuthMethod", "CHAP");
      chap_ = Chap::kWaitAlgorithm;
    } else {
      if (!none) return login_fail(LoginStatus::kAuthenticationFailure), false;
      append_key(out, "AuthMethod", "None");
      auth_done_ = true;
    }
    return true;
  }
  if (k == "CHAP_A") {
    if (chap_ != Chap::kWaitAlgorithm) return login_fail(LoginStatus::kInitiatorError), false;
    auto alg = chap_choose(kv.value, chap_policy_->allowed);
    if (!alg) {
      spdlog::warn("login from {} ({}): no acceptable CHAP algorithm in '{}'", peer_str_,
                   initiator_name_, kv.value);
      return login_fail(LoginStatus::kAuthenticationFailure), false;
    }
    chap_alg_ = *alg;
    // A fresh random identifier and a 32-byte random challenge for every exchange: never
    // reused, so a recorded response is worthless (RFC 7143 12.1.3, RFC 1994 2.3).
    auto id = random_bytes(1);
    chap_challenge_ = random_bytes(32);
    if (id.empty() || chap_challenge_.empty()) return login_fail(LoginStatus::kTargetError), false;
    chap_id_ = id[0];
    append_key(out, "CHAP_A", std::to_string(int(chap_alg_)));
    append_key(out, "CHAP_I", std::to_string(chap_id_));
    append_key(out, "CHAP_C", encode_hex(chap_challenge_));
    chap_ = Chap::kWaitResponse;
    return true;
  }
  if (k == "CHAP_N" || k == "CHAP_R" || k == "CHAP_I" || k == "CHAP_C") {
    if (chap_ != Chap::kWaitResponse) return login_fail(LoginStatus::kInitiatorError), false;
    (k == "CHAP_N" ? chap_n_ : k == "CHAP_R" ? chap_r_ : k == "CHAP_I" ? chap_i_ : chap_c_) = kv.value;
    return true;
  }
  if (k.starts_with("CHAP_")) return login_fail(LoginStatus::kInitiatorError), false;
  if (k == "TargetAlias" || k == "TargetAddress" || k == "TargetPortalGroupTag") {
    // Declared by the target only (RFC 7143 13.7-13.9).
    return login_fail(LoginStatus::kInitiatorError), false;
  }
  append_key(out, k, "NotUnderstood");
  return true;
}

// Checks the initiator's CHAP response and, for mutual CHAP, answers its challenge.
bool Connection::chap_finish(std::vector<uint8_t>& out) {
  auto fail_auth = [&](const char* why) {
    spdlog::warn("CHAP authentication of {} ({}) to '{}' failed: {}", initiator_name_, peer_str_,
                 discovery_ ? "discovery" : target_name_, why);
    login_fail(LoginStatus::kAuthenticationFailure);
    return false;
  };
  if (chap_n_.empty() || chap_r_.empty()) return fail_auth("CHAP_N or CHAP_R missing");
  const std::vector<uint8_t> sent = std::move(chap_challenge_);
  chap_challenge_.clear();  // one use only
  auto response = decode_binary(chap_r_);
  const auto expected = chap_response(chap_alg_, chap_id_, chap_policy_->initiator.secret, sent);
  // Name and response are both checked, in constant time, before deciding.
  const bool name_ok = constant_time_equal(
      std::span(reinterpret_cast<const uint8_t*>(chap_n_.data()), chap_n_.size()),
      std::span(reinterpret_cast<const uint8_t*>(chap_policy_->initiator.user.data()),
                chap_policy_->initiator.user.size()));
  const bool response_ok = response && !expected.empty() && constant_time_equal(*response, expected);
  if (!name_ok || !response_ok) return fail_auth(name_ok ? "wrong response" : "unknown user");
  if (!chap_i_.empty() || !chap_c_.empty()) {
    // Mutual CHAP: the initiator authenticates the target.
    if (!chap_policy_->target) return fail_auth("mutual CHAP asked for, none configured");
    auto id = parse_number(chap_i_, 255);
    auto challenge = decode_binary(chap_c_);
    if (!id || !challenge || challenge->empty() || challenge->size() > 1024)
      return fail_auth("malformed CHAP_I or CHAP_C");
    // Reflection attack: our own challenge sent back to make us compute the answer.
    if (*challenge == sent) return fail_auth("the initiator reflected the target's challenge");
    append_key(out, "CHAP_N", chap_policy_->target->user);
    append_key(out, "CHAP_R", encode_hex(chap_response(chap_alg_, uint8_t(*id),
                                                       chap_policy_->target->secret, *challenge)));
  }
  chap_ = Chap::kDone;
  auth_done_ = true;
  return true;
}

void Connection::handle_login() {
  Bhs h(bhs_.data());
  const uint8_t flags = h.flags();
  bool transit = flags & 0x80;
  const bool cont = flags & 0x40;
  const uint8_t csg = (flags >> 2) & 3, nsg = flags & 3;
  const bool first = !login_started_;
  if (first) {
    login_started_ = true;
    std::memcpy(isid_.data(), bhs_.data() + 8, 6);
    tsih_ = load_be16(bhs_.data() + 14);
    cid_ = load_be16(bhs_.data() + 20);
    if (tsih_ == 0) sess_->exp_cmd_sn = h.cmd_sn();  // a new session starts its numbering
    stat_sn_ = h.exp_stat_sn();
    login_csg_ = csg;
  } else if (std::memcmp(isid_.data(), bhs_.data() + 8, 6) != 0 ||
             load_be16(bhs_.data() + 14) != tsih_) {
    return login_fail(LoginStatus::kInitiatorError);  // RFC 7143 11.12.5: ISID/TSIH constant
  }
  login_itt_ = h.itt();
  // RFC 7143 11.12.4: version 0x00 is the only one.
  if (bhs_[3] > 0x00) return login_fail(LoginStatus::kUnsupportedVersion);
  if (csg == 2 || csg == 3 || (transit && (nsg == 2 || nsg <= csg)) || csg < login_csg_)
    return login_fail(LoginStatus::kInitiatorError);
  if (first && tsih_ != 0 && !join_session()) return;
  login_csg_ = csg;

  login_text_.insert(login_text_.end(), rx_small_.begin(), rx_small_.end());
  if (login_text_.size() > 64 * 1024) return login_fail(LoginStatus::kOutOfResources);
  if (cont) {
    // RFC 7143 11.12.2: more text follows; answer with an empty response.
    TxItem& it = queue_login_response();
    it.bhs[1] = uint8_t(csg << 2 | nsg);
    queue_status_fields(it);
    return;
  }
  auto keys = parse_text(login_text_);
  login_text_.clear();
  if (!keys) {
    spdlog::warn("{}: bad login text: {}", peer_str_, keys.error());
    return login_fail(LoginStatus::kInitiatorError);
  }

  std::vector<uint8_t> out;
  for (const KeyValue& kv : *keys)
    if (!login_identity_key(kv)) return;
  // The first complete request text (after any C-bit continuation, so not necessarily the
  // first PDU) names the initiator, the session type and the target.
  if (!identity_checked_) {
    identity_checked_ = true;
    if (!got_initiator_name_) return login_fail(LoginStatus::kMissingParameter);  // 13.5.2
    if (discovery_) {
      chap_policy_ = server_.discovery_chap();
    } else {
      if (target_name_.empty()) return login_fail(LoginStatus::kMissingParameter);
      target_ = server_.find_target(target_name_);
      if (!target_) return login_fail(LoginStatus::kNotFound);
      const AclRule* rule = target_->admit(initiator_name_, peer_);
      if (!rule) {
        spdlog::warn("login from {} ({}) to '{}' refused by the ACL", peer_str_, initiator_name_,
                     target_name_);
        return login_fail(LoginStatus::kAuthorizationFailure);
      }
      // The LUs this I_T nexus sees, under its own numbering when the ACL maps them.
      luns_ = rule->luns ? rule->luns : target_->luns;
      if (tsih_ != 0) {
        // RFC 7143 4.4.1: a session is named by initiator, ISID, target and portal group;
        // a connection added to it must name the same (11.13.5: 0x020a, 0x0208).
        if (initiator_name_ != sess_->initiator_name || target_->iqn != sess_->target_name)
          return login_fail(LoginStatus::kSessionDoesNotExist);
        if (tpgt_ != sess_->tpgt) return login_fail(LoginStatus::kCantIncludeInSession);
      }
      chap_policy_ = target_->chap ? &*target_->chap : nullptr;
      // RFC 7143 13.9: returned in the first response of a normal session.
      append_key(out, "TargetPortalGroupTag", std::to_string(tpgt_));
      if (!target_->alias.empty()) append_key(out, "TargetAlias", target_->alias);
    }
    if (!chap_policy_) auth_done_ = true;
    // RFC 7143 6.3: skipping the security stage is only for targets that need no
    // authentication.
    if (csg != 0 && !auth_done_) return login_fail(LoginStatus::kAuthenticationFailure);
  }
  chap_n_.clear();
  chap_r_.clear();
  chap_i_.clear();
  chap_c_.clear();
  for (const KeyValue& kv : *keys) {
    if (csg == 1 && (kv.key == "AuthMethod" || kv.key.starts_with("CHAP_")))
      return login_fail(LoginStatus::kInitiatorError);  // security keys after security stage
    const auto o = neg_.offer(kv, out);
    if (o == Negotiator::Outcome::kAnswered) continue;
    if (o == Negotiator::Outcome::kRenegotiated) {
      // RFC 7143 6.2: renegotiating a key during login is an initiator error.
      spdlog::warn("login from {} ({}): key {} offered again with another value", peer_str_,
                   initiator_name_, kv.key);
      return login_fail(LoginStatus::kInitiatorError);
    }
    if (!login_auth_key(kv, out)) return;
  }
  if (chap_ == Chap::kWaitResponse && !chap_r_.empty() && !chap_finish(out)) return;
  if (csg == 0 && transit && !auth_done_) {
    // The initiator wants to leave the security stage before authenticating: with a
    // policy that is a failure (RFC 7143 12.1.3: the target must authenticate it).
    if (chap_ == Chap::kOff || chap_ == Chap::kDone) return login_fail(LoginStatus::kAuthenticationFailure);
    transit = false;  // mid-exchange: answer without transiting (RFC 7143 6.3)
  }
  if (transit && nsg == 3 && neg_.propose(out)) {
    // The target offers its own values for keys whose RFC defaults it cannot accept; the
    // initiator answers before the login may leave the stage (RFC 7143 6.2).
    transit = false;
  } else if (transit && nsg == 3) {
    if (!neg_.finish(out)) {
      spdlog::warn("login from {} ({}): session parameters outside the target's limits (an "
                   "offer of the target's rejected)",
                   peer_str_, initiator_name_);
      return login_fail(LoginStatus::kInitiatorError, std::move(out));
    }
    // A digest the administrator requires ([CRC32C] without None) that was not
    // negotiated -- refused or never offered -- ends the login (RFC 7143 13.1).
    const auto& lim = server_.limits();
    if ((!lim.header_digest_none && !neg_.conn.header_digest) ||
        (!lim.data_digest_none && !neg_.conn.data_digest)) {
      spdlog::warn("login from {} ({}): digests required by the configuration not negotiated",
                   peer_str_, initiator_name_);
      return login_fail(LoginStatus::kInitiatorError, std::move(out));
    }
  }

  if (out.size() > neg_.conn.max_send_data_segment_length && out.size() > kLoginMaxDsl)
    return login_fail(LoginStatus::kTargetError);  // never happens with Zuma's few keys
  if (transit && nsg == 3 && tsih_ != 0) {
    // The session may have ended, or filled up, while this connection logged in.
    if (sess_->ended || !sess_->registered) return login_fail(LoginStatus::kSessionDoesNotExist);
    if (!room_in(*sess_)) return login_fail(LoginStatus::kTooManyConnections);
  }
  TxItem& it = queue_login_response();
  it.bhs[1] = uint8_t((transit ? 0x80 : 0) | csg << 2 | (transit ? nsg : 0));
  Bhs r(it.bhs.data());
  it.owned = std::move(out);
  it.data = it.owned.data();
  it.len = uint32_t(it.owned.size());
  r.set_data_segment_len(it.len);
  if (transit && nsg == 3) {
    if (tsih_ == 0) tsih_ = server_.allocate_tsih();
    store_be16(it.bhs.data() + 14, tsih_);
    login_complete();
  }
  queue_status_fields(it);
}

void Connection::login_complete() {
  phase_ = Phase::kFullFeature;
  neg_.end_login();
  // RFC 7143 13.1: digests start with the first PDU after the final Login Response (which
  // is already queued without them).
  hd_on_ = neg_.conn.header_digest;
  dd_on_ = neg_.conn.data_digest;
  Session& s = *sess_;
  if (s.registered) {
    // A connection added to a running session (RFC 7143 6.3.6). The same CID as one of
    // its connections reinstates that connection (6.3.4): below ErrorRecoveryLevel 2 the
    // old connection's tasks end without further notice.
    Connection* old = with_cid(cid_);
    s.conns.push_back(this);
    in_session_ = true;
    s.retain_until = {};
    spdlog::info("session {} (tsih {}) {} -> {}: connection {} (cid {}) from {} added, {} in all{}",
                 s.nexus.id, tsih_, initiator_name_, s.target_name, id_, cid_, peer_str_,
                 s.conns.size() - (old ? 1 : 0), old ? ", reinstating the old one" : "");
    if (old) old->close("connection reinstated");
    return;
  }
  s.params = neg_.session;
  s.queue_depth = server_.limits().queue_depth;
  // The bound on live commands (handle_scsi_command_header), for every connection it may get.
  s.by_itt.reserve(size_t(2 * s.queue_depth + 16) *
                   std::min<uint32_t>(s.params.max_connections, 4));
  if (discovery_) {
    s.discovery = true;
    spdlog::info("discovery session from {} ({})", peer_str_, initiator_name_);
    return;
  }
  const std::string isid_hex = fmt::format("{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}", isid_[0],
                                           isid_[1], isid_[2], isid_[3], isid_[4], isid_[5]);
  s.tsih = tsih_;
  s.isid = isid_;
  s.initiator_name = initiator_name_;
  s.target_name = target_->iqn;
  s.tpgt = tpgt_;
  s.reactor = reactor_.index();
  s.luns = luns_;
  s.nexus.id = server_.allocate_nexus_id();
  s.nexus.initiator_name = initiator_name_;
  s.nexus.initiator_port = fmt::format("{},i,0x{}", initiator_name_, isid_hex);
  s.nexus.target_name = target_->iqn;
  s.nexus.target_port = fmt::format("{},t,0x{:04x}", target_->iqn, tpgt_);
  s.nexus.relative_port_id = tpgt_;
  s.nexus.target_port_group = server_.port_group() ? server_.port_group() : tpgt_;
  // The device server finishes work on this reactor (PREEMPT AND ABORT waiting for other
  // nexuses' tasks; task.hh Nexus::post). Commands still executing keep the connection alive.
  s.nexus.post = [r = &reactor_](std::function<void()> fn) { r->post(std::move(fn)); };
  // EXTENDED COPY may name LUs of the other targets this initiator could log in to from
  // here, as itself: their ACLs, and their CHAP secret if it is the one proved now.
  std::optional<ChapSecret> proved;
  if (chap_policy_) proved = chap_policy_->initiator;
  s.nexus.find_copy_target = [&server = server_, own = target_->iqn, ini = initiator_name_,
                              peer = peer_, proved](const uint8_t* naa) {
    return find_copy_target(server, own, ini, peer, proved, naa);
  };
  // RFC 7143 4.4.1: a session is named by ISID and the target portal group tag, so a login
  // through another portal group is a second (multipath) session, not a reinstatement.
  s.key = initiator_name_ + "|" + isid_hex + "|" + target_->iqn + "|" + std::to_string(tpgt_);
  s.conns.push_back(this);
  in_session_ = true;
  s.registered = true;
  server_.register_tsih(sess_);
  // A reinstated session's end comes first: the new session reads no command until the old
  // one's I_T nexus loss is known to the LUs, so its first command on each LU reports it
  // (29h/07h), never a later one after a GOOD status.
  const bool reinstating = server_.session_started(s.key, tsih_, [this] {
    reactor_.post([this] {
      --executing_;
      const bool resume = held_ && !closed_ && !draining_ && !close_after_tx_ && !logout_pending_;
      held_ = false;
      if (resume) {
        reading_ = true;
        update_events();
        reactor_.defer(this);  // PDUs already staged
      }
      check_drained();
      notify_finished();
    });
  });
  if (reinstating) {
    ++executing_;  // keeps this connection until the callback has run
    if (reading_) {
      held_ = true;
      reading_ = false;
      update_events();
    }
  }
  spdlog::info(
      "session {} {} -> {} from {} (tsih {}, MaxBurst {}, FirstBurst {}, R2T {}, Imm {}, "
      "MaxConnections {})",
      id_, initiator_name_, target_->iqn, peer_str_, tsih_, s.params.max_burst_length,
      s.params.first_burst_length, s.params.initial_r2t ? "yes" : "no",
      s.params.immediate_data ? "yes" : "no", s.params.max_connections);
}

bool Connection::room_in(const Session& s) const {
  // RFC 7143 13.2 / 11.13.5: at most MaxConnections; one with this CID is replaced (6.3.4).
  size_t others = 0;
  for (Connection* k : s.conns) others += k->cid_ != cid_;
  return others < s.params.max_connections;
}

Connection* Connection::with_cid(uint16_t cid) const {
  for (Connection* k : sess_->conns)
    if (k->cid_ == cid) return k;
  return nullptr;
}

void Connection::end_for_logout() {
  draining_ = true;
  stop_reading_and_finish();
}

bool Connection::join_session() {
  // RFC 7143 6.3.6: a TSIH names the existing session this connection is to join; it must
  // have been opened with the same ISID (11.12.5) and still be there (11.13.5: 0x020a).
  std::shared_ptr<Session> s = server_.find_tsih(tsih_);
  if (!s || s->discovery || s->isid != isid_) {
    login_fail(LoginStatus::kSessionDoesNotExist);
    return false;
  }
  if (s->reactor != reactor_.index()) {
    // Everything of a session runs on one reactor: this login continues there.
    if (!moved_ && server_.move_connection(*this, s->reactor)) return false;
    login_fail(LoginStatus::kServiceUnavailable);
    return false;
  }
  if (!room_in(*s)) {
    login_fail(LoginStatus::kTooManyConnections);
    return false;
  }
  sess_ = std::move(s);
  neg_.set_leading(false);
  return true;
}

Connection::Handover Connection::hand_over() {
  Handover h;
  reactor_.remove(fd_.get());
  h.fd = std::move(fd_);
  h.bhs = bhs_;
  h.data = rx_small_;
  h.unread.assign(stage_.get() + stage_beg_, stage_.get() + stage_end_);
  stage_beg_ = stage_end_ = 0;
  closed_ = true;
  reading_ = false;
  notify_finished();
  return h;
}

void Connection::resume_login(Handover h) {
  moved_ = true;
  bhs_ = h.bhs;
  rx_small_ = std::move(h.data);
  // The stage was at most kStageSize when the bytes were handed over.
  stage_beg_ = 0;
  stage_end_ = std::min(h.unread.size(), kStageSize);
  if (stage_end_) std::memcpy(stage_.get(), h.unread.data(), stage_end_);
  rx_len_ = uint32_t(rx_small_.size());
  handle_login();
  if (!closed_) reactor_.defer(this);  // the bytes after it, if any
}

// ---------------------------------------------------------------------------------------
// SCSI commands (RFC 7143 11.3, 11.4, 11.7, 11.8)

Command* Connection::new_command() {
  Command* c;
  if (pool_.empty()) {
    c = new Command;
  } else {
    c = pool_.back().release();
    pool_.pop_back();
    pooled_bytes_ -= c->task.data.capacity();
  }
  c->conn = this;
  ++live_commands_;
  return c;
}

void Connection::release(Command* c) {
  unqueue_budget(c);
  if (c->charged) {
    budget_used_ -= c->charged;
    if (!budget_wait_.empty() && !closed_ && !budget_pump_due_) {
      // Not from here: release() runs inside transmit and completion loops.
      budget_pump_due_ = true;
      reactor_.defer(this);
    }
  }
  // Keep the command and its buffer for reuse (no allocation per I/O in steady state),
  // but do not hoard big buffers: at most 1 MiB each and kPoolBytes in all.
  storage::Buffer buf = std::move(c->task.data);
  if (buf.capacity() > (1u << 20) || pooled_bytes_ + buf.capacity() > kPoolBytes)
    buf = storage::Buffer();
  *c = Command{};
  c->task.data = std::move(buf);
  --live_commands_;
  if (pool_.size() < 2 * sess_->queue_depth) {
    pooled_bytes_ += c->task.data.capacity();
    pool_.emplace_back(c);
  } else {
    delete c;
  }
  notify_finished();
}

void Connection::notify_finished() {
  if (closed_ && executing_ == 0 && live_commands_ == 0 && !finish_notified_ && on_finished) {
    finish_notified_ = true;
    on_finished(*this);
  }
}

void Connection::handle_scsi_command_header() {
  Bhs h(bhs_.data());
  const uint32_t itt = h.itt();
  const uint32_t dsl = h.data_segment_len();
  if (itt == kReservedTag || sess_->by_itt.contains(itt)) {
    // RFC 7143 11.2.1.8: ITTs are unique among the session's outstanding tasks.
    spdlog::warn("{}: SCSI command reuses ITT {:#x}", peer_str_, itt);
    rx_dst_ = nullptr;  // data discarded; end_pdu rejects
    rx_cmd_ = nullptr;
    return;
  }
  if (live_commands_ >= 2 * sess_->queue_depth + 16) {
    rx_dst_ = nullptr;  // immediate commands beyond any sane bound
    return;
  }
  Command* c = new_command();
  const uint8_t flags = h.flags();
  c->itt = itt;
  c->cmd_sn = h.cmd_sn();
  c->lun_field = h.lun_field();
  c->edtl = h.edtl();
  c->immediate = h.immediate();
  c->is_write = flags & 0x20;
  c->is_read = flags & 0x40;
  scsi::Task& t = c->task;
  t.lun = decode_lun(c->lun_field);
  std::memcpy(t.cdb.data(), h.cdb(), 16);
  t.cdb_len = 16;
  // RFC 7143 11.3.6 / 11.2.1.2: an Extended CDB AHS (type 1) carries bytes 16.. of the CDB.
  for (size_t off = 0; off + 4 <= ahs_.size() && Bhs(bhs_.data()).total_ahs_len();) {
    const uint16_t ahs_len = load_be16(&ahs_[off]);
    const uint8_t type = ahs_[off + 2];
    if (off + 3 + ahs_len > ahs_.size()) break;
    if (type == 1 && ahs_len > 1 && size_t(16 + ahs_len - 1) <= t.cdb.size()) {
      std::memcpy(t.cdb.data() + 16, &ahs_[off + 4], ahs_len - 1);
      t.cdb_len = uint16_t(16 + ahs_len - 1);
    }
    off += (3 + ahs_len + 3) & ~size_t(3);
  }
  static constexpr scsi::TaskAttr kAttr[8] = {
      scsi::TaskAttr::kSimple,      scsi::TaskAttr::kSimple, scsi::TaskAttr::kOrdered,
      scsi::TaskAttr::kHeadOfQueue, scsi::TaskAttr::kAca,    scsi::TaskAttr::kSimple,
      scsi::TaskAttr::kSimple,      scsi::TaskAttr::kSimple};
  t.attr = kAttr[flags & 7];
  t.dir = c->is_write ? (c->is_read ? scsi::DataDir::kBidi : scsi::DataDir::kOut)
                      : (c->is_read ? scsi::DataDir::kIn : scsi::DataDir::kNone);
  t.expected_len = c->edtl;
  t.nexus = &sess_->nexus;
  t.on_complete = &Connection::on_task_complete;
  t.owner = c;
  sess_->by_itt.insert(itt, c);
  rx_cmd_ = c;

  if (!c->is_write) {
    if (dsl) rx_dst_ = nullptr;  // data with a non-write command: discarded, rejected below
    return;
  }
  const SessionParams& sp = sess_->params;
  if (c->edtl > kMaxCommandBuffer) {
    c->edtl = 0;  // executed with no data: the device server refuses the length
    rx_dst_ = nullptr;
    return;
  }
  if (dsl > 0 && (!sp.immediate_data || dsl > std::min(c->edtl, sp.first_burst_length))) {
    // RFC 7143 4.2.5.2: immediate data only if negotiated, within FirstBurstLength.
    rx_dst_ = nullptr;
    return;
  }
  c->unsolicited_end = sp.initial_r2t ? dsl : std::min(c->edtl, sp.first_burst_length);
  c->next_r2t_offset = c->unsolicited_end;
  // Only what the initiator may send unasked is buffered now (at most FirstBurstLength per
  // command, and the CmdSN window bounds the commands); the rest when its R2Ts go out,
  // within the write budget (grant()).
  c->task.data.resize(c->unsolicited_end);
  rx_dst_ = c->task.data.data();
}

void Connection::handle_scsi_command() {
  Bhs h(bhs_.data());
  Command* c = rx_cmd_;
  if (!c) {
    // Duplicate ITT or resource bound: RFC 7143 11.17.1.
    reject(sess_->by_itt.contains(h.itt()) ? RejectReason::kTaskInProgress
                                           : RejectReason::kImmediateCommandReject,
           bhs_.data());
    return;
  }
  const uint32_t dsl = h.data_segment_len();
  if (dsl && rx_dst_ == nullptr && c->edtl != 0) {
    // Data the command may not carry: protocol error, ERL 0 drops the connection.
    spdlog::warn("{}: SCSI command ITT {:#x} with {} bytes of data it may not carry", peer_str_,
                 c->itt, dsl);
    sess_->by_itt.erase(c->itt);
    release(c);
    reject(RejectReason::kProtocolError, bhs_.data());
    close_after_tx_ = true;
    reading_ = false;
    return;
  }
  if (rx_dst_) {
    c->received = dsl;
    c->unsolicited_got = dsl;
  }
  if (c->immediate) {
    c->sequenced = true;
    return command_ready(c);
  }
  const uint32_t sn = c->cmd_sn;
  if (sn_lt(sn, sess_->exp_cmd_sn) || sn_lt(max_cmd_sn(), sn)) {
    // RFC 7143 4.2.2.1: non-immediate commands outside the window are silently ignored.
    spdlog::debug("{}: CmdSN {} outside [{}, {}], ignored", peer_str_, sn, sess_->exp_cmd_sn,
                  max_cmd_sn());
    sess_->by_itt.erase(c->itt);
    release(c);
    return;
  }
  if (sn != sess_->exp_cmd_sn) {
    // Ahead of a command still on its way (on this connection, or another of the session).
    c->state = Command::State::kQueued;
    sess_->out_of_order[sn] = c;
    return;
  }
  ++sess_->exp_cmd_sn;
  ++sess_->window_used;
  c->sequenced = true;
  command_ready(c);
  drain_ordered();
}

void Connection::drain_ordered() {
  Session& s = *sess_;
  while (!s.out_of_order.empty() && s.out_of_order.begin()->first == s.exp_cmd_sn) {
    Command* next = s.out_of_order.begin()->second;
    s.out_of_order.erase(s.out_of_order.begin());
    ++s.exp_cmd_sn;
    if (!next) continue;  // a non-command PDU's number, acted on already
    ++s.window_used;
    next->sequenced = true;
    if (next->aborted) {
      --s.window_used;
      s.by_itt.erase(next->itt);
      next->conn->release(next);
      continue;
    }
    next->conn->command_ready(next);
  }
}

bool Connection::take_cmd_sn(uint32_t sn) {
  Session& s = *sess_;
  if (sn == s.exp_cmd_sn) {
    ++s.exp_cmd_sn;
    drain_ordered();
    return true;
  }
  if (sn_lt(sn, s.exp_cmd_sn) || sn_lt(s.max_cmd_sn(), sn)) return false;
  s.out_of_order.try_emplace(sn, nullptr);  // a command may hold the number already
  return true;
}

void Connection::fail_command(Command* c, scsi::Reason why) {
  if (c->failed != scsi::Reason::kGood) return;
  c->failed = why;
  c->r2ts.clear();
  if (c->state == Command::State::kCollecting && c->sequenced) respond_failed(c);
  // kQueued: answered when its CmdSN comes up (command_ready).
}

void Connection::respond_failed(Command* c) {
  scsi::Task& t = c->task;
  t.status = scsi::status::kCheckCondition;
  t.sense_len = scsi::build_sense(scsi::CmdResult(c->failed), false, t.sense);
  t.transfer_len = t.expected_len;  // no residual: nothing was transferred as asked
  t.data_in_len = 0;
  if (!c->immediate) --sess_->window_used;
  unqueue_budget(c);
  c->state = Command::State::kResponding;
  sess_->by_itt.erase(c->itt);
  queue_scsi_response(c);
}

void Connection::command_ready(Command* c) {
  c->state = Command::State::kCollecting;
  if (c->failed != scsi::Reason::kGood) return respond_failed(c);
  if ((c->is_write && c->received < c->edtl) || (!c->is_write && c->is_read && c->edtl > 0))
    return data_phase(c);
  execute(c);
}

namespace {
// Bytes a command's buffer needs beyond what it holds already: a WRITE the part it asks
// for by R2T, a READ its Data-In (capped: longer ones fail in the device server).
uint64_t budget_need(const Command& c) {
  if (c.is_write) return c.edtl - c.unsolicited_end;
  return std::min(c.edtl, kMaxCommandBuffer);
}
}  // namespace

void Connection::data_phase(Command* c) {
  // Commands that need no more memory go at once; the others in arrival order, so a big
  // WRITE is not starved by a stream of small ones (RFC 7143 lets the target choose when
  // it sends R2Ts, 4.2.5.2 / 11.8).
  if (budget_need(*c) == 0 || (budget_wait_.empty() && take_budget(c))) return grant(c);
  c->budget_wait = true;
  budget_wait_.push_back(c);
}

bool Connection::take_budget(Command* c) {
  const uint64_t need = budget_need(*c);
  // The first command always fits, however big, so one WRITE can never wait forever.
  if (budget_used_ != 0 && budget_used_ + need > server_.limits().write_buffer_budget)
    return false;
  budget_used_ += need;
  c->charged = uint32_t(need);
  return true;
}

void Connection::grant(Command* c) {
  if (!c->is_write) return execute(c);
  storage::Buffer& b = c->task.data;
  if (b.size() < c->edtl) {
    if (b.capacity() >= c->edtl) {
      b.resize(c->edtl);  // same allocation: the unsolicited bytes stay
    } else {
      storage::Buffer grown(c->edtl);
      if (b.size()) std::memcpy(grown.data(), b.data(), b.size());
      // Unsolicited data may be arriving into the old buffer right now.
      if (rx_cmd_ == c && b.data() && rx_dst_ >= b.data() && rx_dst_ <= b.data() + b.size())
        rx_dst_ = grown.data() + (rx_dst_ - b.data());
      b = std::move(grown);
    }
  }
  start_r2ts(c);
}

void Connection::pump_budget() {
  while (!budget_wait_.empty() && !closed_) {
    Command* c = budget_wait_.front();
    if (!take_budget(c)) break;
    budget_wait_.pop_front();
    c->budget_wait = false;
    grant(c);
  }
}

void Connection::unqueue_budget(Command* c) {
  if (!c->budget_wait) return;
  c->budget_wait = false;
  budget_wait_.erase(std::find(budget_wait_.begin(), budget_wait_.end(), c));
}

void Connection::start_r2ts(Command* c) {
  const SessionParams& sp = sess_->params;
  while (c->next_r2t_offset < c->edtl && c->r2ts.size() < sp.max_outstanding_r2t) {
    const uint32_t len = std::min(sp.max_burst_length, c->edtl - c->next_r2t_offset);
    uint32_t ttt = next_ttt_++;
    if (ttt == kReservedTag) ttt = next_ttt_++;
    c->r2ts.push_back({ttt, c->next_r2t_offset, len, 0, 0});
    TxItem& it = queue_pdu(Op::kR2t);
    Bhs r(it.bhs.data());
    r.set_flags(0x80);
    r.set_lun_field(c->lun_field);
    r.set_itt(c->itt);
    r.set_word(20, ttt);
    r.set_word(24, stat_sn_);  // R2T carries StatSN without advancing it (RFC 7143 11.8.3)
    r.set_word(28, sess_->exp_cmd_sn);
    r.set_word(32, max_cmd_sn());
    r.set_word(36, c->r2t_sn++);
    r.set_word(40, c->next_r2t_offset);
    r.set_word(44, len);
    c->next_r2t_offset += len;
  }
}

void Connection::handle_data_out_header() {
  Bhs h(bhs_.data());
  const uint32_t dsl = h.data_segment_len(), off = h.buffer_offset(), ttt = h.ttt();
  Command* c = sess_->by_itt.find(h.itt());
  // Data-Out goes on the command's own connection (connection allegiance at ERL 0).
  if (!c || c->conn != this) return;  // discarded; handle_data_out decides
  if (!c->is_write || c->edtl == 0 || c->failed != scsi::Reason::kGood ||
      (c->state != Command::State::kCollecting && c->state != Command::State::kQueued))
    return;
  bool ok = false;
  if (ttt == kReservedTag) {
    // Unsolicited data: in order, inside the first burst (RFC 7143 4.2.5.2, 13.14), DataSN
    // counting from 0 (11.7.5).
    ok = off == c->unsolicited_got && uint64_t(off) + dsl <= c->unsolicited_end &&
         h.data_sn() == c->unsol_data_sn;
  } else {
    for (auto& r : c->r2ts)
      if (r.ttt == ttt)
        ok = off == r.offset + r.got && uint64_t(off) + dsl <= r.offset + r.length &&
             h.data_sn() == r.next_data_sn;
  }
  if (!ok) return;
  rx_dst_ = c->task.data.data() + off;
  rx_cmd_ = c;
}

void Connection::handle_data_out() {
  Bhs h(bhs_.data());
  Command* c = rx_cmd_;
  const uint32_t dsl = h.data_segment_len();
  if (!c) {
    Command* bad = sess_->by_itt.find(h.itt());
    if (!bad || bad->conn != this) {
      // The task may have been aborted: RFC 7143 4.2.5.2 lets the target discard its data.
      spdlog::debug("{}: Data-Out for unknown ITT {:#x} discarded", peer_str_, h.itt());
      return;
    }
    if (bad->failed != scsi::Reason::kGood) return;  // the rest of a failed command's data
    if (bad->state != Command::State::kCollecting && bad->state != Command::State::kQueued) {
      spdlog::warn("{}: Data-Out for ITT {:#x}, which has all its data; discarded", peer_str_,
                   h.itt());
      return;
    }
    // A DataSN, offset or TTT outside the sequence we asked for (RFC 7143 11.7): at ERL 0
    // there is no recovery within the command, which ends with CHECK CONDITION; the
    // session goes on.
    spdlog::warn("{}: bad Data-Out (ITT {:#x} TTT {:#x} DataSN {} offset {} len {}); failing the "
                 "command",
                 peer_str_, h.itt(), h.ttt(), h.data_sn(), h.buffer_offset(), dsl);
    return fail_command(bad, scsi::Reason::kDataPhaseError);
  }
  c->received += dsl;
  if (h.ttt() == kReservedTag) {
    c->unsolicited_got += dsl;
    ++c->unsol_data_sn;
  } else {
    for (size_t i = 0; i < c->r2ts.size(); ++i) {
      auto& r = c->r2ts[i];
      if (r.ttt != h.ttt()) continue;
      r.got += dsl;
      ++r.next_data_sn;
      if (r.got == r.length) {
        c->r2ts.erase(c->r2ts.begin() + ptrdiff_t(i));
        if (c->sequenced) start_r2ts(c);
      }
      break;
    }
  }
  if (c->sequenced && c->state == Command::State::kCollecting && !c->budget_wait &&
      c->received >= c->edtl)
    execute(c);
}

void Connection::execute(Command* c) {
  c->state = Command::State::kExecuting;
  c->started = std::chrono::steady_clock::now();
  ++executing_;
  if (!c->is_write) c->task.data.resize(0);
  scsi::execute(*luns_, c->task);
}

void Connection::on_task_complete(scsi::Task& t) {
  Command* c = static_cast<Command*>(t.owner);
  c->conn->complete(c);
}

void Connection::complete(Command* c) {
  account(c);
  --executing_;
  if (!c->immediate && c->sequenced) --sess_->window_used;
  // Aborted by a TMF of ours: no response (RFC 7143 11.5.1, the TMF response answers for
  // it). Aborted in the device server (another nexus's LU reset or PREEMPT AND ABORT): TASK
  // ABORTED status only when TAS asks for it, else nothing (SAM-5 aborting commands; task.hh).
  if (c->aborted || closed_ || (c->task.aborted && !c->task.report_abort)) {
    sess_->by_itt.erase(c->itt);
    release(c);
    finish_tmfs();
    check_drained();
    return;
  }
  c->state = Command::State::kResponding;
  sess_->by_itt.erase(c->itt);
  queue_scsi_response(c);
  if (c->pending_tx == 0) release(c);
  finish_tmfs();
  check_drained();
}

void Connection::queue_scsi_response(Command* c) {
  scsi::Task& t = c->task;
  // Residuals (RFC 7143 11.4.5): what the command would transfer against the EDTL.
  uint8_t resid_flags = 0;
  uint32_t residual = 0;
  const uint32_t edtl = t.expected_len;
  if (t.transfer_len > edtl) {
    resid_flags = 0x04;  // O
    residual = t.transfer_len - edtl;
  } else if (t.transfer_len < edtl) {
    resid_flags = 0x02;  // U
    residual = edtl - t.transfer_len;
  }
  const uint32_t to_send = c->is_read ? std::min<uint32_t>(t.data_in_len, edtl) : 0;
  const bool collapse = to_send > 0 && t.status == scsi::status::kGood && t.sense_len == 0;
  const uint32_t mdsl = neg_.conn.max_send_data_segment_length;
  const uint32_t mbl = sp().max_burst_length;
  uint32_t off = 0, burst_left = mbl;
  while (off < to_send) {
    const uint32_t n = std::min({mdsl, to_send - off, burst_left});
    const bool last = off + n == to_send;
    burst_left -= n;
    TxItem& it = queue_pdu(Op::kDataIn);
    Bhs d(it.bhs.data());
    uint8_t flags = (last || burst_left == 0) ? 0x80 : 0;  // F ends each sequence (11.7.1)
    d.set_lun_field(c->lun_field);
    d.set_itt(c->itt);
    d.set_word(20, kReservedTag);
    if (last && collapse) {
      flags |= 0x01 | resid_flags;  // S: status in the last Data-In (phase collapse, 11.7.3)
      it.bhs[3] = t.status;
      d.set_word(24, stat_sn_++);
      d.set_word(44, residual);
    } else {
      d.set_word(24, stat_sn_);
    }
    d.set_flags(flags);
    d.set_word(28, sess_->exp_cmd_sn);
    d.set_word(32, max_cmd_sn());
    d.set_word(36, c->data_sn++);
    d.set_word(40, off);
    d.set_data_segment_len(n);
    it.data = t.data.data() + off;
    it.len = n;
    it.done_cmd = c;
    ++c->pending_tx;
    off += n;
    if (burst_left == 0) burst_left = mbl;
  }
  if (collapse) return;

  TxItem& it = queue_pdu(Op::kScsiResponse);
  Bhs r(it.bhs.data());
  r.set_flags(0x80 | resid_flags);
  it.bhs[2] = 0x00;  // command completed at target
  it.bhs[3] = t.status;
  r.set_itt(c->itt);
  queue_status_fields(it);
  r.set_word(36, c->is_read ? c->data_sn : c->r2t_sn);  // ExpDataSN
  r.set_word(44, residual);
  if (t.sense_len) {
    // RFC 7143 11.4.7: SenseLength, then the sense data.
    it.owned.resize(2 + t.sense_len);
    store_be16(it.owned.data(), t.sense_len);
    std::memcpy(it.owned.data() + 2, t.sense.data(), t.sense_len);
    it.data = it.owned.data();
    it.len = uint32_t(it.owned.size());
    r.set_data_segment_len(it.len);
  }
  it.done_cmd = c;
  ++c->pending_tx;
}

// ---------------------------------------------------------------------------------------
// NOP, Text, Logout, Task management

void Connection::handle_nop_out() {
  Bhs h(bhs_.data());
  const uint32_t itt = h.itt();
  if (itt == kReservedTag) {
    // Answer to our NOP-In ping (RFC 7143 11.18): TTT echoes ours; no reply.
    if (h.ttt() == ping_ttt_) ping_ttt_ = kReservedTag;
    return;
  }
  if (!h.immediate() && !take_cmd_sn(h.cmd_sn())) return;  // outside the window: ignored (4.2.2.1)
  TxItem& it = queue_pdu(Op::kNopIn);
  Bhs r(it.bhs.data());
  r.set_flags(0x80);
  r.set_lun_field(h.lun_field());
  r.set_itt(itt);
  r.set_word(20, kReservedTag);
  queue_status_fields(it);
  if (!rx_small_.empty()) {  // ping data is echoed (RFC 7143 11.19.2)
    it.owned = rx_small_;
    it.data = it.owned.data();
    it.len = uint32_t(it.owned.size());
    r.set_data_segment_len(it.len);
  }
}

void Connection::send_text_like(Op op, uint8_t flags, uint32_t itt, uint32_t ttt,
                                std::vector<uint8_t> data) {
  TxItem& it = queue_pdu(op);
  Bhs r(it.bhs.data());
  r.set_flags(flags);
  r.set_itt(itt);
  r.set_word(20, ttt);
  queue_status_fields(it);
  it.owned = std::move(data);
  it.data = it.owned.data();
  it.len = uint32_t(it.owned.size());
  r.set_data_segment_len(it.len);
}

void Connection::handle_text() {
  Bhs h(bhs_.data());
  const uint32_t itt = h.itt(), ttt = h.ttt();
  if (!h.immediate()) (void)take_cmd_sn(h.cmd_sn());
  if (ttt != kReservedTag) {
    // Continuation of a long response (RFC 7143 11.10.4).
    if (ttt != text_ttt_) return reject(RejectReason::kInvalidPduField, bhs_.data());
  } else {
    if (h.flags() & 0x40) {  // C: the request continues; ask for the rest
      login_text_.insert(login_text_.end(), rx_small_.begin(), rx_small_.end());
      if (login_text_.size() > 64 * 1024) return close("text request too long");
      return send_text_like(Op::kTextResponse, 0x00, itt, kReservedTag, {});
    }
    login_text_.insert(login_text_.end(), rx_small_.begin(), rx_small_.end());
    auto keys = parse_text(login_text_);
    login_text_.clear();
    if (!keys) return reject(RejectReason::kProtocolError, bhs_.data());
    std::vector<uint8_t> out;
    for (const KeyValue& kv : *keys) {
      if (kv.key == "SendTargets") {
        // RFC 7143 11.10.3 / appendix C: "All" in discovery sessions; a name; or empty
        // for the session's own target in a normal session.
        for (const auto& t : server_.targets()) {
          const bool want = (kv.value == "All" && discovery_) || kv.value == t->iqn ||
                            (kv.value.empty() && !discovery_ && target_ && t->iqn == target_->iqn);
          if (!want || !t->admit(initiator_name_, peer_)) continue;
          append_key(out, "TargetName", t->iqn);
          for (const PortalDef& p : server_.portals()) {
            std::string host = p.host;
            uint16_t port = p.port;
            if (is_wildcard(host)) {
              std::string local = addr_str(local_);  // the address this connection reached
              append_key(out, "TargetAddress", fmt::format("{},{}", local, p.tpgt));
              continue;
            }
            append_key(out, "TargetAddress", fmt::format("{},{}", host_port(host, port), p.tpgt));
          }
        }
      } else if (kv.key == "MaxRecvDataSegmentLength") {
        neg_.offer(kv, out);
      } else {
        append_key(out, kv.key, "NotUnderstood");
      }
    }
    text_pending_ = std::move(out);
    text_sent_ = 0;
  }
  const size_t chunk = std::min<size_t>(text_pending_.size() - text_sent_,
                                        neg_.conn.max_send_data_segment_length);
  std::vector<uint8_t> part(text_pending_.begin() + ptrdiff_t(text_sent_),
                            text_pending_.begin() + ptrdiff_t(text_sent_ + chunk));
  text_sent_ += chunk;
  if (text_sent_ < text_pending_.size()) {
    text_ttt_ = next_ttt_++;
    send_text_like(Op::kTextResponse, 0x40, itt, text_ttt_, std::move(part));  // C
  } else {
    text_ttt_ = kReservedTag;
    text_pending_.clear();
    send_text_like(Op::kTextResponse, 0x80, itt, kReservedTag, std::move(part));  // F
  }
}

void Connection::handle_logout() {
  Bhs h(bhs_.data());
  if (!h.immediate()) (void)take_cmd_sn(h.cmd_sn());
  const uint8_t reason = h.flags() & 0x7f;
  const uint16_t cid = load_be16(bhs_.data() + 20);
  if (reason == 1 && cid != cid_) {
    // RFC 7143 11.14.1: close another connection of the session; this one carries on and
    // answers (11.15.1: 0 closed, 1 CID not found).
    Connection* other = with_cid(cid);
    if (other) {
      spdlog::info("session {} {}: connection cid {} logged out through cid {}", id_,
                   initiator_name_, cid, cid_);
      other->end_for_logout();
    }
    queue_logout_response(h.itt(), other ? 0 : 1);
    return;
  }
  if (reason == 0 || (reason == 1 && sess_->conns.size() <= 1)) {
    // The session ends (11.14.1 reason 0; or its last connection logs out): every other
    // connection stops too, its commands terminated.
    sess_->closing = true;
    std::vector<Connection*> others;
    for (Connection* k : sess_->conns)
      if (k != this) others.push_back(k);
    for (Connection* k : others) k->end_for_logout();
  }
  logout_bhs_ = bhs_;
  logout_pending_ = true;
  // Stop reading: commands still waiting for Data-Out cannot finish and are dropped;
  // commands executing finish and get their responses before the Logout Response.
  reading_ = false;
  update_events();
  abort_commands(
      [this](Command& c) { return c.conn == this && c.state != Command::State::kExecuting; });
  check_drained();
}

void Connection::queue_logout_response(uint32_t itt, uint8_t response) {
  TxItem& it = queue_pdu(Op::kLogoutResponse);
  Bhs r(it.bhs.data());
  r.set_flags(0x80);
  it.bhs[2] = response;
  r.set_itt(itt);
  queue_status_fields(it);
  store_be16(it.bhs.data() + 40, uint16_t(sp().default_time2wait));
  store_be16(it.bhs.data() + 42, uint16_t(sp().default_time2retain));
}

void Connection::check_drained() {
  if (closed_ || executing_ != 0) return;
  if (logout_pending_ && !close_after_tx_) {
    Bhs h(logout_bhs_.data());
    const uint8_t reason = h.flags() & 0x7f;
    // The session ends with this logout: its I_T nexus is gone before the initiator hears
    // so (a RESERVE (6) is released, on every node of a cluster, before the Logout
    // Response: libiscsi's Reserve6.Logout reserves through another path right after it).
    if (sess_ && sess_->closing && in_session_) end_session(*sess_, server_);
    // RFC 7143 11.15.1: 0 closed, 2 recovery not supported (ErrorRecoveryLevel 0).
    queue_logout_response(h.itt(), reason == 2 ? 2 : 0);
    close_after_tx_ = true;
    spdlog::info("session {} {}: logout (reason {})", id_, initiator_name_, reason);
  } else if (draining_ && !reading_) {
    close_after_tx_ = true;
    reactor_.defer(this);
  }
}

void Connection::abort_commands(const std::function<bool(Command&)>& match) {
  std::vector<Command*> victims;
  sess_->by_itt.for_each([&](Command* c) {
    if (!c->aborted && c->state != Command::State::kResponding && match(*c)) victims.push_back(c);
  });
  for (Command* c : victims) {
    c->aborted = true;
    switch (c->state) {
      case Command::State::kQueued:
        break;  // released when its CmdSN comes up, so ExpCmdSN still advances
      case Command::State::kCollecting:
        if (!c->immediate && c->sequenced) --sess_->window_used;
        sess_->by_itt.erase(c->itt);
        c->conn->release(c);  // a TMF reaches every connection of the session
        break;
      case Command::State::kExecuting:
        // Released when the device server completes it; no response is sent. Not started
        // yet (waiting in its task set): it ends without running.
        scsi::abort_task(c->task);
        break;
      case Command::State::kResponding:
        break;
    }
  }
}

void Connection::finish_tmfs() {
  if (!in_session_) return maybe_finish_tmf();
  const std::vector<Connection*> all = sess_->conns;  // a response may close one
  for (Connection* k : all) k->maybe_finish_tmf();
}

void Connection::maybe_finish_tmf() {
  if (pending_tmf_.empty() || tmf_waits_ > 0) return;
  // RFC 7143 11.5.1: the response comes after every task the function aborted has ended
  // (their responses, TASK ABORTED where TAS asks for it, are queued before it).
  bool waiting = false;
  sess_->by_itt.for_each([&](Command* c) {
    if (c->aborted && c->state == Command::State::kExecuting) waiting = true;
  });
  if (waiting) return;
  auto done = std::move(pending_tmf_);
  pending_tmf_.clear();
  if (closed_) return;
  for (auto& p : done) {
    TxItem& it = queue_pdu(Op::kTaskMgmtResponse);
    Bhs r(it.bhs.data());
    r.set_flags(0x80);
    it.bhs[2] = uint8_t(p.response);
    r.set_itt(Bhs(p.bhs.data()).itt());
    queue_status_fields(it);
    if (p.after) p.after();
  }
}

std::function<void()> Connection::tmf_waiter() {
  ++tmf_waits_;
  ++executing_;
  // Runs on whatever thread completes the last aborted task (or inline when there was none):
  // back to this reactor, never inline (Reactor::post).
  return [this] {
    reactor_.post([this] {
      --tmf_waits_;
      --executing_;
      finish_tmfs();
      check_drained();
      notify_finished();
    });
  };
}

void Connection::handle_task_mgmt() {
  Bhs h(bhs_.data());
  if (!h.immediate()) (void)take_cmd_sn(h.cmd_sn());
  const auto fn = TmfFunction(h.flags() & 0x7f);
  const uint32_t rtt = h.word(20);
  const uint32_t ref_cmd_sn = h.word(32);
  const uint64_t lun = decode_lun(h.lun_field());
  PendingTmf p{bhs_, TmfResponse::kFunctionComplete, nullptr};
  const auto& luns = luns_->luns;
  auto lu_of = [&](uint64_t n) -> std::shared_ptr<scsi::LogicalUnit> {
    auto f = luns.find(n);
    return f == luns.end() ? nullptr : f->second;
  };
  switch (fn) {
    case TmfFunction::kAbortTask: {
      Command* f = sess_->by_itt.find(rtt);
      if (!f || f->state == Command::State::kResponding) {
        // RFC 7143 11.5.1 b/c: not found, but RefCmdSN is inside the current window
        // [ExpCmdSN, MaxCmdSN] and before the TMF's own CmdSN: the command has not arrived
        // yet, and counts as received (and aborted): "function complete". A completed
        // command's CmdSN lies below ExpCmdSN: "task does not exist".
        const bool in_window = sn_le(sess_->exp_cmd_sn, ref_cmd_sn) &&
                               sn_le(ref_cmd_sn, max_cmd_sn()) && sn_lt(ref_cmd_sn, h.cmd_sn());
        p.response = in_window ? TmfResponse::kFunctionComplete : TmfResponse::kTaskDoesNotExist;
      } else {
        // An executing task is aborted in the device server too (abort_commands), so one
        // still waiting in its task set ends without running (SAM-5 ABORT TASK).
        abort_commands([&](Command& c) { return c.itt == rtt; });
      }
      break;
    }
    case TmfFunction::kAbortTaskSet:
    case TmfFunction::kClearTaskSet: {
      auto lu = lu_of(lun);
      if (!lu) {
        p.response = TmfResponse::kLunDoesNotExist;
        break;
      }
      // Task set type 001b (a task set per I_T nexus, control mode page TST): both functions
      // concern only this nexus's tasks (SAM-5 ABORT TASK SET, CLEAR TASK SET).
      abort_commands([&](Command& c) { return c.task.lun == lun; });
      scsi::abort_task_set(*lu, &sess_->nexus, sess_->nexus, tmf_waiter());
      break;
    }
    case TmfFunction::kLogicalUnitReset: {
      auto lu = lu_of(lun);
      if (!lu) {
        p.response = TmfResponse::kLunDoesNotExist;
        break;
      }
      // SAM-5 LOGICAL UNIT RESET: every nexus's tasks on the LU end (others report TASK
      // ABORTED when TAS=1), then 29h/03h for every nexus; the response waits for them.
      abort_commands([&](Command& c) { return c.task.lun == lun; });
      scsi::reset_logical_unit(*lu, sess_->nexus, tmf_waiter());
      break;
    }
    case TmfFunction::kTargetWarmReset:
    case TmfFunction::kTargetColdReset: {
      // RFC 7143 11.5.1: a logical unit reset of every LU this session can reach (other
      // sessions learn of it through 29h/03h); a cold reset then closes every connection
      // to the target, this one after its response.
      abort_commands([](Command&) { return true; });
      for (const auto& [n, lu] : luns) {
        if (lu) scsi::reset_logical_unit(*lu, sess_->nexus, tmf_waiter());
      }
      if (fn == TmfFunction::kTargetColdReset) {
        // RFC 7143 11.5.1: after the response, the target terminates all of its TCP
        // connections to all initiators; this one closes once its response is out.
        p.after = [this] {
          close_after_tx_ = true;
          reading_ = false;
          if (!discovery_) server_.close_target_connections(target_name_, id_);
        };
      }
      break;
    }
    case TmfFunction::kClearAca:
      p.response = TmfResponse::kNotSupported;  // NACA is refused at the CDB, no ACA exists
      break;
    case TmfFunction::kTaskReassign:
      p.response = TmfResponse::kReassignmentNotSupported;  // ErrorRecoveryLevel 0
      break;
    default:
      p.response = TmfResponse::kRejected;
      break;
  }
  pending_tmf_.push_back(std::move(p));
  maybe_finish_tmf();
}

// ---------------------------------------------------------------------------------------
// Life cycle

void Connection::drain() {
  if (closed_ || draining_) return;
  draining_ = true;
  if (phase_ == Phase::kFullFeature && !discovery_ && !logout_pending_) {
    // RFC 7143 11.9.1, AsyncEvent 1: the target asks for a logout within Parameter3
    // seconds; meanwhile commands keep flowing, so the initiator ends cleanly.
    constexpr uint16_t kLogoutWithin = 3;
    TxItem& it = queue_pdu(Op::kAsyncMessage);
    Bhs r(it.bhs.data());
    r.set_flags(0x80);
    r.set_itt(kReservedTag);
    queue_status_fields(it);
    it.bhs[36] = 1;  // AsyncEvent: logout requested
    store_be16(it.bhs.data() + 42, kLogoutWithin);
    drain_deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(kLogoutWithin);
    spdlog::info("session {} {}: asking for logout (shutdown)", id_, initiator_name_);
    return;
  }
  stop_reading_and_finish();
}

void Connection::stop_reading_and_finish() {
  if (reading_) {
    reading_ = false;
    update_events();
  }
  abort_commands(
      [this](Command& c) { return c.conn == this && c.state != Command::State::kExecuting; });
  check_drained();
}

void Connection::close(const char* why) {
  if (closed_) return;
  closed_ = true;
  reading_ = false;
  if (phase_ == Phase::kFullFeature && !discovery_)
    spdlog::info("session {} {} closed: {}", id_, initiator_name_, why);
  else
    spdlog::debug("connection {} from {} closed: {}", id_, peer_str_, why);
  reactor_.remove(fd_.get());
  fd_.reset();
  // Commands already answered are out of the ITT table; the queued PDUs that never left
  // are what still holds them.
  for (size_t k = 0; k < tx_.size(); ++k) {
    Command* c = tx_[k].done_cmd;
    tx_[k].done_cmd = nullptr;
    if (c && --c->pending_tx == 0 && c->state == Command::State::kResponding) release(c);
  }
  tx_.clear();
  tx_offset_ = 0;
  // This connection's commands end (RFC 7143 6.3.4: below ErrorRecoveryLevel 2 without
  // notice); those still waiting for their CmdSN leave the number behind, so the session's
  // other connections are not stuck behind it.
  for (auto& [sn, c] : sess_->out_of_order)
    if (c && c->conn == this) c = nullptr;
  std::vector<Command*> idle;
  sess_->by_itt.for_each([&](Command* c) {
    if (c->conn == this && c->state != Command::State::kExecuting) idle.push_back(c);
  });
  for (Command* c : idle) {
    if (!c->immediate && c->sequenced && c->state != Command::State::kResponding)
      --sess_->window_used;
    sess_->by_itt.erase(c->itt);
    release(c);
  }
  leave_session();
  notify_finished();
}

void Connection::leave_session() {
  if (!in_session_) return;
  in_session_ = false;
  Session& s = *sess_;
  std::erase(s.conns, this);
  if (!s.conns.empty()) {
    s.conns.front()->finish_tmfs();  // a TMF there may have waited for this one's tasks
    return;
  }
  if (s.closing || draining_ || discovery_ || s.params.default_time2retain == 0) {
    end_session(s, server_);
    return;
  }
  // RFC 7143 13.15/13.16: after a connection failure the session's state is kept for
  // DefaultTime2Wait + DefaultTime2Retain, so the initiator can continue it by logging in
  // with its TSIH (6.3.6); reservations and unit attentions stay with the nexus meanwhile.
  const uint32_t secs = s.params.default_time2wait + s.params.default_time2retain;
  s.retain_until = std::chrono::steady_clock::now() + std::chrono::seconds(secs);
  spdlog::info("session tsih {} {}: no connection left; kept {} s for the initiator to continue it",
               s.tsih, s.initiator_name, secs);
  server_.retain_session(sess_);
}

void Connection::tick(std::chrono::steady_clock::time_point now) {
  if (closed_) return;
  if (draining_ && reading_ && !logout_pending_ && now >= drain_deadline_) {
    spdlog::info("session {} {}: no logout within the time asked; closing", id_, initiator_name_);
    return stop_reading_and_finish();
  }
  const auto& lim = server_.limits();
  if (phase_ == Phase::kLogin) {
    if (now - created_ > std::chrono::seconds(lim.login_timeout)) close("login timeout");
    return;
  }
  if (lim.nop_in_interval == 0 || draining_ || logout_pending_) return;
  if (ping_ttt_ != kReservedTag) {
    if (now - ping_sent_ > std::chrono::seconds(lim.nop_in_timeout)) close("NOP-In timeout");
    return;
  }
  if (now - last_rx_ >= std::chrono::seconds(lim.nop_in_interval)) {
    // RFC 7143 11.19: a ping the initiator must answer with a NOP-Out echoing the TTT.
    ping_ttt_ = next_ttt_++;
    ping_sent_ = now;
    TxItem& it = queue_pdu(Op::kNopIn);
    Bhs r(it.bhs.data());
    r.set_flags(0x80);
    r.set_itt(kReservedTag);
    r.set_word(20, ping_ttt_);
    r.set_word(24, stat_sn_);  // not advanced (11.19.2)
    r.set_word(28, sess_->exp_cmd_sn);
    r.set_word(32, max_cmd_sn());
  }
}

}  // namespace zuma::target
