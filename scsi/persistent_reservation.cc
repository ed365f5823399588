#include "scsi/persistent_reservation.hh"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "scsi/cdb.hh"
#include "scsi/command.hh"
#include "scsi/state_file.hh"
#include "scsi/task_set.hh"
#include "scsi/unit_attention.hh"

namespace zuma::scsi {
namespace {

// iSCSI names are compared without regard to case (RFC 3722 normalises them to lower case;
// not every initiator does), and so are the ",i,0x<ISID>" suffixes.
bool iequal(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool valid_type(uint8_t t) {
  switch (t) {
    case pr_type::kWriteExclusive:
    case pr_type::kExclusiveAccess:
    case pr_type::kWriteExclusiveRegistrantsOnly:
    case pr_type::kExclusiveAccessRegistrantsOnly:
    case pr_type::kWriteExclusiveAllRegistrants:
    case pr_type::kExclusiveAccessAllRegistrants:
      return true;
  }
  return false;
}

bool all_registrants(uint8_t t) {
  return t == pr_type::kWriteExclusiveAllRegistrants ||
         t == pr_type::kExclusiveAccessAllRegistrants;
}

bool registrants_only(uint8_t t) {
  return t == pr_type::kWriteExclusiveRegistrantsOnly ||
         t == pr_type::kExclusiveAccessRegistrantsOnly;
}

constexpr uint8_t kIscsiProtocolId = 0x5;  // SPC-5 PROTOCOL IDENTIFIER values
constexpr uint8_t kLuScope = 0x0;

// The TYPE/SCOPE checks of RESERVE, RELEASE, PREEMPT and PREEMPT AND ABORT (SPC-5
// PERSISTENT RESERVE OUT command): only LU_SCOPE and the six types exist.
CmdResult check_scope_type(uint8_t scope, uint8_t type) {
  if (scope != kLuScope) return CmdResult::invalid_cdb(2, 7);
  if (!valid_type(type)) return CmdResult::invalid_cdb(2, 3);
  return CmdResult::good();
}

Reason conflict() {
  return Reason::kReservationConflict;
}

}  // namespace

bool Registration::matches(const std::string& port, const std::string& name,
                           const std::string& target, uint16_t rel) const {
  if (!iequal(target_name, target)) return false;
  if (!all_tg_pt && relative_port_id != rel) return false;
  return port_specific ? iequal(initiator, port) : iequal(initiator, name);
}

bool Registration::matches(const Nexus& n) const {
  return matches(n.initiator_port, n.initiator_name, n.target_name, n.relative_port_id);
}

bool Registration::same_nexus(const Registration& o) const {
  return port_specific == o.port_specific && all_tg_pt == o.all_tg_pt &&
         iequal(initiator, o.initiator) && iequal(target_name, o.target_name) &&
         (all_tg_pt || relative_port_id == o.relative_port_id);
}

CmdResult parse_transport_id(const uint8_t* p, size_t avail, uint16_t base, TransportId* out) {
  // SPC-5 iSCSI TransportID: byte 0 FORMAT CODE (7:6) and PROTOCOL IDENTIFIER (3:0), bytes
  // 2-3 ADDITIONAL LENGTH (a multiple of 4, at least 20), then the null-terminated name,
  // with ",i,0x" and the ISID for format 01b.
  if (avail < 4) return Reason::kParameterListLengthError;
  if ((p[0] & 0x0F) != kIscsiProtocolId) return CmdResult::invalid_param(base, 3);
  const uint8_t format = p[0] >> 6;
  if (format > 1 || (p[0] & 0x30)) return CmdResult::invalid_param(base, 7);
  const size_t add = get_be16(p + 2);
  if (add < 20 || add % 4 != 0) return CmdResult::invalid_param(static_cast<uint16_t>(base + 2), 7);
  if (4 + add > avail) return Reason::kParameterListLengthError;
  const char* name = reinterpret_cast<const char*>(p + 4);
  const size_t len = strnlen(name, add);
  if (len == add || len == 0) return CmdResult::invalid_param(static_cast<uint16_t>(base + 4));
  std::string s(name, len);
  if (format == 1) {
    // "<name>,i,0x<ISID>", the ISID 12 hex digits.
    std::string lower = s;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
      return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    });
    const size_t sep = lower.find(",i,0x");
    const bool hex = sep != std::string::npos && s.size() - (sep + 5) == 12 &&
                     std::all_of(s.begin() + static_cast<long>(sep + 5), s.end(), [](char c) {
                       return std::isxdigit(static_cast<unsigned char>(c));
                     });
    if (sep == 0 || !hex) return CmdResult::invalid_param(static_cast<uint16_t>(base + 4));
  } else if (s.find(',') != std::string::npos) {
    return CmdResult::invalid_param(static_cast<uint16_t>(base + 4));
  }
  out->initiator = std::move(s);
  out->port_specific = format == 1;
  out->length = 4 + add;
  return CmdResult::good();
}

void append_transport_id(const Registration& r, std::vector<uint8_t>* out) {
  const size_t name = r.initiator.size() + 1;
  const size_t add = std::max<size_t>(20, (name + 3) / 4 * 4);
  const size_t at = out->size();
  out->resize(at + 4 + add, 0);
  uint8_t* p = out->data() + at;
  p[0] = static_cast<uint8_t>((r.port_specific ? 0x40 : 0x00) | kIscsiProtocolId);
  put_be16(p + 2, static_cast<uint16_t>(add));
  std::memcpy(p + 4, r.initiator.data(), r.initiator.size());
}

Reservations::Reservations(std::string state_path, UnitAttentions& uas, NexusRegistry& nexuses)
    : path_(std::move(state_path)), uas_(uas), nexuses_(nexuses) {
  if (!path_.empty()) load();
}

const Registration* Reservations::find_locked(const Nexus& n) const {
  // An exact (port-specific, one target port) registration wins over a wider one.
  const Registration* wide = nullptr;
  for (const Registration& r : st_.regs) {
    if (!r.matches(n)) continue;
    if (r.port_specific && !r.all_tg_pt) return &r;
    if (!wide) wide = &r;
  }
  return wide;
}

bool Reservations::is_holder_locked(const Registration* r) const {
  return r && st_.reserved && (r->holder || all_registrants(st_.type));
}

void Reservations::changed_locked() {
  version_.fetch_add(1, std::memory_order_acq_rel);
  any_.store(st_.reserved || spc2_holder_.has_value(), std::memory_order_release);
}

void Reservations::ua_locked(const std::vector<Registration>& regs, Reason ua, uint64_t except) {
  if (regs.empty()) return;
  for (const auto& set : nexuses_.all()) {
    if (set->nexus_id() == except) continue;
    const NexusIdentity& id = set->identity();
    for (const Registration& r : regs) {
      if (r.matches(id.initiator_port, id.initiator_name, id.target_name, id.relative_port_id)) {
        uas_.establish(set->nexus_id(), ua);
        break;
      }
    }
  }
}

uint8_t Reservations::verdict(const Nexus& n, uint64_t* version) const {
  std::lock_guard lock(mu_);
  if (version) *version = version_.load(std::memory_order_relaxed);
  uint8_t v = 0;
  // SPC-2 RESERVE: every command of another I_T nexus conflicts but INQUIRY, REQUEST SENSE,
  // REPORT LUNS and RELEASE (which then does nothing).
  if (spc2_holder_ && !spc2_is(n)) v |= kSpc2Blocked;
  if (!st_.reserved) return v;
  const Registration* r = find_locked(n);
  if (is_holder_locked(r)) return v;
  switch (st_.type) {
    case pr_type::kWriteExclusive:
      v |= kWriteConflict;
      break;
    case pr_type::kExclusiveAccess:
      v |= kWriteConflict | kReadConflict;
      break;
    case pr_type::kWriteExclusiveRegistrantsOnly:
    case pr_type::kWriteExclusiveAllRegistrants:
      if (!r) v |= kWriteConflict;
      break;
    default:  // EXCLUSIVE ACCESS - REGISTRANTS ONLY / ALL REGISTRANTS
      if (!r) v |= kWriteConflict | kReadConflict;
      break;
  }
  return v;
}

bool Reservations::conflicts(uint8_t v, uint16_t flags, const uint8_t* cdb) {
  if ((v & kSpc2Blocked) && !(flags & cmd_flag::kSpc2Allowed)) return true;
  if (flags & cmd_flag::kPrAllowed) return false;
  // SBC-4: START STOP UNIT with START=1 and POWER CONDITION 0h is allowed through every type.
  if (cdb[0] == op::kStartStopUnit && (cdb[4] & 0xF1) == 0x01) return false;
  return (flags & cmd_flag::kPrRead) ? (v & kReadConflict) : (v & kWriteConflict);
}

bool Reservations::conflicts(const Nexus& n, uint16_t flags, const uint8_t* cdb) const {
  return conflicts(verdict(n, nullptr), flags, cdb);
}

bool Reservations::spc2_is(const Nexus& n) const {
  // A holder on another node is never a nexus of this one.
  return spc2_holder_ && spc2_holder_->node == node_ && spc2_holder_->id == n.id;
}

std::optional<CmdResult> Reservations::crh_locked(const Nexus& n) const {
  // SPC-5 (exceptions to SPC-2 RESERVE and RELEASE behavior, CRH=1): a persistent
  // reservation holder, or a registrant while a registrants-only or all-registrants
  // reservation exists, gets GOOD and nothing changes; another registrant, or anyone while
  // a persistent reservation exists, gets RESERVATION CONFLICT.
  const Registration* r = find_locked(n);
  if (r) {
    if (is_holder_locked(r)) return CmdResult::good();
    if (st_.reserved && (registrants_only(st_.type) || all_registrants(st_.type)))
      return CmdResult::good();
    return conflict();
  }
  if (st_.reserved) return conflict();
  return std::nullopt;
}

CmdResult Reservations::reserve(const Nexus& n) {
  return change(
      n.id,
      [&](Change& c) -> CmdResult {
        if (auto crh = crh_locked(n)) return *crh;
        // SPC-2 RESERVE (6)/(10): the holder may reserve again; another nexus conflicts (the
        // execute() check already refused it).
        if (spc2_holder_) return spc2_is(n) ? CmdResult::good() : conflict();
        c.spc2 = Spc2Holder{node_, n.id, n.initiator_port, n.target_name, n.relative_port_id};
        c.changed = true;
        return CmdResult::good();
      },
      nullptr);
}

CmdResult Reservations::release(const Nexus& n) {
  return change(
      n.id,
      [&](Change& c) -> CmdResult {
        if (auto crh = crh_locked(n)) return *crh;
        // SPC-2 RELEASE: releases the nexus's own reservation; from any other nexus it does
        // nothing.
        if (spc2_is(n)) {
          c.spc2.reset();
          c.changed = true;
        }
        return CmdResult::good();
      },
      nullptr);
}

void Reservations::nexus_lost(uint64_t nexus_id) {
  Nexus n;
  n.id = nexus_id;
  change(
      nexus_id,
      [&](Change& c) -> CmdResult {
        if (spc2_is(n)) {
          c.spc2.reset();
          c.changed = true;
        }
        return CmdResult::good();
      },
      nullptr);
}

void Reservations::node_lost(const std::string& node) {
  change(
      0,
      [&](Change& c) -> CmdResult {
        if (spc2_holder_ && spc2_holder_->node == node) {
          c.spc2.reset();
          c.changed = true;
        }
        return CmdResult::good();
      },
      nullptr);
}

void Reservations::reset() {
  // LOGICAL UNIT RESET releases a RESERVE (6)/(10) reservation, whichever node holds it.
  change(
      0,
      [&](Change& c) -> CmdResult {
        c.changed = spc2_holder_.has_value();
        c.spc2.reset();
        return CmdResult::good();
      },
      nullptr);
}

PrState Reservations::state() const {
  std::lock_guard lock(mu_);
  return st_;
}

std::optional<uint64_t> Reservations::spc2_holder() const {
  std::lock_guard lock(mu_);
  if (!spc2_holder_ || spc2_holder_->node != node_) return std::nullopt;
  return spc2_holder_->id;
}

uint64_t Reservations::shared_version() const {
  std::lock_guard lock(mu_);
  return shared_version_;
}

CmdResult Reservations::persistent_reserve_in(const Nexus& n, uint8_t sa,
                                              std::vector<uint8_t>* out) const {
  std::lock_guard lock(mu_);
  // SPC-2 (5.5.1): while a RESERVE (6)/(10) reservation exists, PERSISTENT RESERVE IN and OUT
  // conflict, whoever sends them.
  if (spc2_holder_) return conflict();
  (void)n;
  out->assign(8, 0);
  uint8_t* p = out->data();
  switch (sa) {
    case prin_sa::kReadKeys: {  // SPC-5 READ KEYS parameter data
      put_be32(p, st_.generation);
      for (const Registration& r : st_.regs) {
        const size_t at = out->size();
        out->resize(at + 8);
        put_be64(out->data() + at, r.key);
      }
      put_be32(out->data() + 4, static_cast<uint32_t>(out->size() - 8));
      return CmdResult::good();
    }
    case prin_sa::kReadReservation: {  // SPC-5 READ RESERVATION parameter data
      put_be32(p, st_.generation);
      if (!st_.reserved) return CmdResult::good();
      out->resize(24, 0);
      p = out->data();
      put_be32(p + 4, 16);
      // All registrants types: RESERVATION KEY 0 (SPC-5 READ RESERVATION).
      uint64_t key = 0;
      if (!all_registrants(st_.type)) {
        for (const Registration& r : st_.regs)
          if (r.holder) key = r.key;
      }
      put_be64(p + 8, key);
      p[21] = static_cast<uint8_t>(st_.scope << 4 | st_.type);
      return CmdResult::good();
    }
    case prin_sa::kReportCapabilities: {  // SPC-5 REPORT CAPABILITIES parameter data
      put_be16(p, 8);
      // CRH, SIP_C, ATP_C, PTPL_C (PTPL_C only when there is somewhere to keep the state).
      p[2] = static_cast<uint8_t>(0x10 | 0x08 | 0x04 | (can_persist() ? 0x01 : 0x00));
      // TMV; ALLOW COMMANDS 001b (TEST UNIT READY allowed through WE and EA); PTPL_A.
      p[3] = static_cast<uint8_t>(0x80 | 0x10 | (st_.aptpl ? 0x01 : 0x00));
      p[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;  // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
      p[5] = 0x01;                              // EX_AC_AR
      return CmdResult::good();
    }
    case prin_sa::kReadFullStatus: {  // SPC-5 READ FULL STATUS parameter data
      put_be32(p, st_.generation);
      for (const Registration& r : st_.regs) {
        const size_t at = out->size();
        out->resize(at + 24, 0);
        uint8_t* d = out->data() + at;
        put_be64(d, r.key);
        const bool holder = st_.reserved && (r.holder || all_registrants(st_.type));
        d[12] = static_cast<uint8_t>((r.all_tg_pt ? 0x02 : 0x00) | (holder ? 0x01 : 0x00));
        if (holder) d[13] = static_cast<uint8_t>(st_.scope << 4 | st_.type);
        put_be16(d + 18, r.relative_port_id);
        append_transport_id(r, out);
        put_be32(out->data() + at + 20, static_cast<uint32_t>(out->size() - at - 24));
      }
      put_be32(out->data() + 4, static_cast<uint32_t>(out->size() - 8));
      return CmdResult::good();
    }
  }
  return CmdResult::invalid_cdb(1, 4);
}

CmdResult Reservations::persistent_reserve_out(const Nexus& n, const uint8_t* cdb,
                                               std::span<const uint8_t> p,
                                               std::span<const uint16_t> ports,
                                               std::vector<uint64_t>* abort) {
  // SPC-5 PERSISTENT RESERVE OUT. The service action is checked by the caller (0..7).
  const uint8_t sa = cdb[1] & 0x1F;
  const uint8_t scope = cdb[2] >> 4;
  const uint8_t type = cdb[2] & 0x0F;
  return change(
      n.id,
      [&](Change& c) -> CmdResult {
        if (spc2_holder_) return conflict();  // SPC-2 5.5.1, see persistent_reserve_in

        if (sa != prout_sa::kRegisterAndMove) {
          // The basic parameter list: 24 bytes, longer only with SPEC_I_PT (SPC-5 PERSISTENT
          // RESERVE OUT parameter list).
          if (p.size() < 24) return Reason::kParameterListLengthError;
          if (p[20] & 0xF2)
            return CmdResult::invalid_param(20, 7 - std::countl_zero<uint8_t>(p[20] & 0xF2));
          const bool spec_i_pt = p[20] & 0x08;
          if (spec_i_pt && sa != prout_sa::kRegister) return CmdResult::invalid_param(20, 3);
          if (!spec_i_pt && p.size() != 24) return Reason::kParameterListLengthError;
        } else if (p.size() < 24) {
          return Reason::kParameterListLengthError;
        }
        const uint64_t key = get_be64(p.data());
        const uint64_t sark = get_be64(p.data() + 8);

        PrState& next = c.next;
        CmdResult r;
        bool bump = true;  // PRGENERATION counts REGISTER*, CLEAR, PREEMPT*, REGISTER AND MOVE
        switch (sa) {
          case prout_sa::kRegister:
          case prout_sa::kRegisterAndIgnore:
            r = do_register(n, sa, p, next, &c.released_to);
            if (r.reason == Reason::kNoSense) {  // nothing to do
              return CmdResult::good();
            }
            break;
          case prout_sa::kReserve:
            r = do_reserve(n, scope, type, key, next);
            bump = false;
            break;
          case prout_sa::kRelease:
            r = do_release(n, scope, type, key, next, &c.released_to);
            bump = false;
            break;
          case prout_sa::kClear: {
            // SPC-5 CLEAR: the sender must be registered with that key; every registration and
            // the reservation go; RESERVATIONS PREEMPTED for every other registered nexus.
            const Registration* me = find_locked(n);
            if (!me || me->key != key) return conflict();
            c.cleared = next.regs;
            next.regs.clear();
            next.reserved = false;
            next.type = next.scope = 0;
            r = CmdResult::good();
            break;
          }
          case prout_sa::kPreempt:
          case prout_sa::kPreemptAndAbort:
            r = do_preempt(n, scope, type, key, sark, next, &c.preempted, &c.released_to);
            c.abort = sa == prout_sa::kPreemptAndAbort;
            break;
          case prout_sa::kRegisterAndMove:
            r = do_register_and_move(n, p, ports, next);
            break;
          default:
            return CmdResult::invalid_cdb(1, 4);
        }
        if (!r.ok()) return r;
        if (bump) ++next.generation;
        c.changed = true;
        c.persist = true;
        return CmdResult::good();
      },
      abort);
}

template <class F>
CmdResult Reservations::change(uint64_t sender, F&& compute, std::vector<uint64_t>* abort) {
  for (int attempt = 0;; ++attempt) {
    std::unique_lock lock(mu_);
    Change c;
    c.next = st_;
    c.spc2 = spc2_holder_;
    const CmdResult r = compute(c);
    if (!r.ok() || !c.changed) return r;
    if (!store_) {
      if (c.persist && !persist(c.next)) return Reason::kInsufficientRegistrationResources;
      st_ = std::move(c.next);
      spc2_holder_ = c.spc2;
      changed_locked();
      install_events_locked(c, sender, abort);
      return r;
    }
    // Shared: the store decides the order of changes. Committed against the version this
    // state came from; another node's change in between makes it stale: reload, recompute.
    const std::string doc = document(c);
    const uint64_t base = shared_version_;
    lock.unlock();
    uint64_t now = 0;
    const PrStore::Commit done = store_->commit(doc, base, &now);
    if (done == PrStore::Commit::kDone) {
      lock.lock();
      if (now >= shared_version_) {  // the watch may have brought this very version already
        st_ = std::move(c.next);
        spc2_holder_ = c.spc2;
        shared_version_ = now;
        changed_locked();
      }
      events_version_ = std::max(events_version_, now);
      install_events_locked(c, sender, abort);
      lock.unlock();
      store_->wait_applied(now);
      return r;
    }
    // Unreachable store, or a store that keeps changing under us: the target port cannot
    // serve the change (SPC-5 target port in unavailable state).
    if (done == PrStore::Commit::kUnavailable || attempt >= 50 || !refresh())
      return Reason::kNotReadyPortUnavailable;
  }
}

void Reservations::install_events_locked(const Change& c, uint64_t sender,
                                         std::vector<uint64_t>* abort) {
  // Unit attentions (SPC-5 5.14.11: preempting, clearing, releasing).
  ua_locked(c.cleared, Reason::kUaReservationsPreempted, sender);
  ua_locked(c.preempted, Reason::kUaRegistrationsPreempted, sender);
  ua_locked(c.released_to, Reason::kUaReservationsReleased, sender);
  if (c.abort && abort) {
    for (const auto& set : nexuses_.all()) {
      if (set->nexus_id() == sender) continue;
      const NexusIdentity& id = set->identity();
      for (const Registration& pr : c.preempted) {
        if (pr.matches(id.initiator_port, id.initiator_name, id.target_name, id.relative_port_id)) {
          abort->push_back(set->nexus_id());
          break;
        }
      }
    }
  }
}

CmdResult Reservations::do_register(const Nexus& n, uint8_t sa, std::span<const uint8_t> p,
                                    PrState& next, std::vector<Registration>* released_to) {
  // SPC-5 Registering (REGISTER, REGISTER AND IGNORE EXISTING KEY).
  const uint64_t key = get_be64(p.data());
  const uint64_t sark = get_be64(p.data() + 8);
  const bool spec_i_pt = p[20] & 0x08;
  const bool all_tg_pt = p[20] & 0x04;
  const bool aptpl = p[20] & 0x01;
  if (aptpl && !can_persist()) return Reason::kInsufficientRegistrationResources;
  const bool ignore = sa == prout_sa::kRegisterAndIgnore;

  auto mine = std::find_if(next.regs.begin(), next.regs.end(), [&](const Registration& r) {
    return r.matches(n) && r.port_specific && !r.all_tg_pt;
  });
  if (mine == next.regs.end()) {
    mine = std::find_if(next.regs.begin(), next.regs.end(),
                        [&](const Registration& r) { return r.matches(n); });
  }
  if (mine == next.regs.end()) {
    // Not registered: a non-zero RESERVATION KEY conflicts (REGISTER only); SARK 0 does
    // nothing.
    if (!ignore && key != 0) return conflict();
    if (sark == 0) return Reason::kNoSense;
    std::vector<Registration> add;
    Registration me{sark, n.initiator_port, true, n.target_name, n.relative_port_id, all_tg_pt,
                    false};
    add.push_back(me);
    if (spec_i_pt) {
      // The TransportIDs (SPC-5 PERSISTENT RESERVE OUT parameter list with SPEC_I_PT=1):
      // TRANSPORTID PARAMETER DATA LENGTH at bytes 24-27, then the TransportIDs. I_T nexuses
      // already registered are skipped.
      if (p.size() < 28) return Reason::kParameterListLengthError;
      const size_t tid_len = get_be32(p.data() + 24);
      if (28 + tid_len != p.size()) return Reason::kParameterListLengthError;
      size_t off = 28;
      while (off < p.size()) {
        TransportId tid;
        const CmdResult e =
            parse_transport_id(p.data() + off, p.size() - off, static_cast<uint16_t>(off), &tid);
        if (!e.ok()) return e;
        off += tid.length;
        Registration r{sark,          tid.initiator,      tid.port_specific,
                       n.target_name, n.relative_port_id, all_tg_pt,
                       false};
        const auto same = [&](const Registration& o) { return o.same_nexus(r); };
        if (std::any_of(next.regs.begin(), next.regs.end(), same) ||
            std::any_of(add.begin(), add.end(), same))
          continue;
        add.push_back(std::move(r));
      }
    }
    next.regs.insert(next.regs.end(), add.begin(), add.end());
    next.aptpl = aptpl;
    return CmdResult::good();
  }
  // Registered.
  if (!ignore && mine->key != key) return conflict();
  if (spec_i_pt) return CmdResult::invalid_param(20, 3);
  next.aptpl = aptpl;
  if (sark != 0) {
    mine->key = sark;
    return CmdResult::good();
  }
  // Unregister (SPC-5 Releasing persistent reservations and removing registrations): the holder's
  // reservation is released, unless it is an all-registrants one and other registrants remain;
  // releasing a registrants-only one tells the other registrants (RESERVATIONS RELEASED).
  const bool was_holder = next.reserved && mine->holder;
  next.regs.erase(mine);
  if (next.reserved) {
    if (all_registrants(next.type)) {
      if (next.regs.empty()) next.reserved = false;
    } else if (was_holder) {
      if (registrants_only(next.type)) *released_to = next.regs;
      next.reserved = false;
    }
    if (!next.reserved) next.type = next.scope = 0;
  }
  return CmdResult::good();
}

CmdResult Reservations::do_reserve(const Nexus& n, uint8_t scope, uint8_t type, uint64_t key,
                                   PrState& next) {
  // SPC-5 Reserving.
  if (const CmdResult e = check_scope_type(scope, type); !e.ok()) return e;
  const Registration* cur = find_locked(n);
  if (!cur || cur->key != key) return conflict();
  Registration& me = next.regs[static_cast<size_t>(cur - st_.regs.data())];
  if (next.reserved) {
    // The holder may repeat its reservation; anything else conflicts.
    const bool holder = me.holder || all_registrants(next.type);
    if (holder && next.type == type && next.scope == scope) return CmdResult::good();
    return conflict();
  }
  next.reserved = true;
  next.type = type;
  next.scope = scope;
  if (!all_registrants(type)) me.holder = true;
  return CmdResult::good();
}

CmdResult Reservations::do_release(const Nexus& n, uint8_t scope, uint8_t type, uint64_t key,
                                   PrState& next, std::vector<Registration>* released_to) {
  // SPC-5 Releasing.
  const Registration* cur = find_locked(n);
  if (!cur || cur->key != key) return conflict();
  if (!next.reserved) return CmdResult::good();
  const Registration& me = next.regs[static_cast<size_t>(cur - st_.regs.data())];
  if (!me.holder && !all_registrants(next.type)) return CmdResult::good();  // not the holder
  if (next.scope != scope || next.type != type) return Reason::kInvalidReleaseOfPr;
  if (const CmdResult e = check_scope_type(scope, type); !e.ok()) return e;
  if (registrants_only(next.type) || all_registrants(next.type)) *released_to = next.regs;
  for (Registration& r : next.regs) r.holder = false;
  next.reserved = false;
  next.type = next.scope = 0;
  return CmdResult::good();
}

CmdResult Reservations::do_preempt(const Nexus& n, uint8_t scope, uint8_t type, uint64_t key,
                                   uint64_t sark, PrState& next,
                                   std::vector<Registration>* preempted,
                                   std::vector<Registration>* released_to) {
  // SPC-5 Preempting.
  const Registration* cur = find_locked(n);
  if (!cur || cur->key != key) return conflict();
  if (const CmdResult e = check_scope_type(scope, type); !e.ok()) return e;
  const size_t my_index = static_cast<size_t>(cur - st_.regs.data());
  // Removes the registrations (but the sender's) whose key is `k`, or all but the sender's
  // when `all`; returns how many matched `k` (the sender's included).
  const auto remove = [&](uint64_t k, bool all) {
    size_t matched = 0;
    std::vector<Registration> keep;
    for (size_t i = 0; i < next.regs.size(); ++i) {
      Registration& r = next.regs[i];
      const bool hit = all || r.key == k;
      if (r.key == k) ++matched;
      if (hit && i != my_index) {
        preempted->push_back(r);
      } else {
        keep.push_back(r);
      }
    }
    next.regs = std::move(keep);
    return matched;
  };
  if (!next.reserved) {
    // No reservation: remove the registrations with SARK (SARK 0 is invalid here).
    if (sark == 0) return CmdResult::invalid_param(8);
    if (remove(sark, false) == 0) return conflict();
    return CmdResult::good();
  }
  if (all_registrants(next.type)) {
    if (sark != 0) {
      if (remove(sark, false) == 0) return conflict();
      return CmdResult::good();
    }
    // SARK 0: every other registration goes, and the sender holds a new reservation.
    remove(0, true);
    for (Registration& r : next.regs) r.holder = false;
    next.type = type;
    next.scope = scope;
    if (!all_registrants(type) && !next.regs.empty()) next.regs.front().holder = true;
    return CmdResult::good();
  }
  uint64_t holder_key = 0;
  for (const Registration& r : next.regs)
    if (r.holder) holder_key = r.key;
  if (sark != holder_key) {
    // Not the holder's key: only registrations go (SARK 0 is invalid).
    if (sark == 0) return CmdResult::invalid_param(8);
    if (remove(sark, false) == 0) return conflict();
    return CmdResult::good();
  }
  // Preempt the holder: its registrations (and every other with that key) go, the sender
  // holds the reservation with the new type and scope; if they changed, the remaining
  // registrants learn that the reservation was released.
  const bool changed = next.type != type || next.scope != scope;
  remove(sark, false);
  for (Registration& r : next.regs) r.holder = false;
  if (changed) {
    for (const Registration& r : next.regs) released_to->push_back(r);
  }
  next.type = type;
  next.scope = scope;
  for (Registration& r : next.regs) {
    if (r.matches(n)) {
      if (!all_registrants(type)) r.holder = true;
      break;
    }
  }
  return CmdResult::good();
}

CmdResult Reservations::do_register_and_move(const Nexus& n, std::span<const uint8_t> p,
                                             std::span<const uint16_t> ports, PrState& next) {
  // SPC-5 REGISTER AND MOVE: parameter list RESERVATION KEY, SERVICE ACTION RESERVATION KEY,
  // byte 17 UNREG (1) APTPL (0), RELATIVE TARGET PORT IDENTIFIER (18-19), TRANSPORTID
  // PARAMETER DATA LENGTH (20-23), TransportID.
  const uint64_t key = get_be64(p.data());
  const uint64_t sark = get_be64(p.data() + 8);
  const Registration* cur = find_locked(n);
  if (!cur || cur->key != key) return conflict();
  if (!next.reserved || all_registrants(next.type) || !cur->holder) return conflict();
  if (sark == 0) return CmdResult::invalid_param(8);
  if (p[17] & 0xFC)
    return CmdResult::invalid_param(17, 7 - std::countl_zero<uint8_t>(p[17] & 0xFC));
  const bool unreg = p[17] & 0x02;
  const bool aptpl = p[17] & 0x01;
  if (aptpl && !can_persist()) return Reason::kInsufficientRegistrationResources;
  const uint16_t rel = get_be16(p.data() + 18);
  const size_t tid_len = get_be32(p.data() + 20);
  if (24 + tid_len != p.size()) return Reason::kParameterListLengthError;
  TransportId tid;
  if (const CmdResult e = parse_transport_id(p.data() + 24, p.size() - 24, 24, &tid); !e.ok())
    return e;
  if (std::find(ports.begin(), ports.end(), rel) == ports.end())
    return CmdResult::invalid_param(18);
  Registration dest{sark, tid.initiator, tid.port_specific, n.target_name, rel, false, false};
  // The destination may not be the sending I_T nexus itself.
  if (dest.matches(n)) return CmdResult::invalid_param(24);
  const size_t my_index = static_cast<size_t>(cur - st_.regs.data());
  next.regs[my_index].holder = false;
  auto it = std::find_if(next.regs.begin(), next.regs.end(),
                         [&](const Registration& r) { return r.same_nexus(dest); });
  if (it == next.regs.end()) {
    dest.holder = true;
    next.regs.push_back(dest);
  } else {
    it->holder = true;
  }
  if (unreg) next.regs.erase(next.regs.begin() + static_cast<long>(my_index));
  next.aptpl = aptpl;
  return CmdResult::good();
}

// --- persistence ---------------------------------------------------------------------------
//
// Text, one record a line (the APTPL state file, and the shared document of a cluster):
//   zuma-persistent-reservations 1
//   generation <PRgeneration>                       (shared document)
//   reservation <type> <scope>                      (when reserved)
//   reg <key hex> <relative port> <all_tg_pt> <holder> <port_specific> <target> <initiator>
// The shared document adds the RESERVE (6)/(10) holder and the change's events, which every
// node applies to its own nexuses:
//   spc2 <node> <nexus id> <relative port> <target> <initiator port>
//   from <node>
//   ua <code> <reg fields as above>                 (1 preempted, 2 registrations preempted,
//   abort <reg fields>                               3 released)
// iSCSI names hold no white space (RFC 3722).

namespace {

void put_reg(std::ostringstream& o, const Registration& r) {
  char key[17];
  std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(r.key));
  o << key << ' ' << r.relative_port_id << ' ' << int(r.all_tg_pt) << ' ' << int(r.holder) << ' '
    << int(r.port_specific) << ' ' << r.target_name << ' ' << r.initiator;
}

bool get_reg(std::istringstream& l, Registration* r) {
  std::string key;
  int rel = 0, all = 0, holder = 0, port = 0;
  if (!(l >> key >> rel >> all >> holder >> port >> r->target_name >> r->initiator) ||
      key.size() != 16 || rel < 0 || rel > 0xFFFF)
    return false;
  char* end = nullptr;
  r->key = std::strtoull(key.c_str(), &end, 16);
  if (*end != '\0') return false;
  r->relative_port_id = static_cast<uint16_t>(rel);
  r->all_tg_pt = all != 0;
  r->holder = holder != 0;
  r->port_specific = port != 0;
  return true;
}

std::string state_text(const PrState& s) {
  std::ostringstream o;
  o << "zuma-persistent-reservations 1\n";
  o << "generation " << s.generation << "\naptpl " << int(s.aptpl) << '\n';
  if (s.reserved) o << "reservation " << int(s.type) << ' ' << int(s.scope) << '\n';
  for (const Registration& r : s.regs) {
    o << "reg ";
    put_reg(o, r);
    o << '\n';
  }
  return o.str();
}

struct Parsed {
  PrState st;
  bool has_aptpl = false;
  std::optional<Spc2Holder> spc2;
  std::string from;
  std::vector<Registration> cleared, preempted, released_to, abort;
};

// Parses a state file or shared document; the line number of the first bad line, or 0.
size_t parse_text(const std::string& text, Parsed* out) {
  std::istringstream in(text);
  std::string line;
  size_t no = 0;
  while (std::getline(in, line)) {
    ++no;
    std::istringstream l(line);
    std::string what;
    l >> what;
    if (no == 1) {
      int version = 0;
      if (what != "zuma-persistent-reservations" || !(l >> version) || version != 1) return no;
      continue;
    }
    if (what.empty()) continue;
    if (what == "reservation") {
      int type = 0, scope = 0;
      if (!(l >> type >> scope) || !valid_type(static_cast<uint8_t>(type)) || scope != 0) return no;
      out->st.reserved = true;
      out->st.type = static_cast<uint8_t>(type);
      out->st.scope = static_cast<uint8_t>(scope);
    } else if (what == "generation") {
      if (!(l >> out->st.generation)) return no;
    } else if (what == "aptpl") {
      int a = 0;
      if (!(l >> a)) return no;
      out->st.aptpl = a != 0;
      out->has_aptpl = true;
    } else if (what == "reg") {
      Registration r;
      if (!get_reg(l, &r)) return no;
      out->st.regs.push_back(std::move(r));
    } else if (what == "spc2") {
      Spc2Holder h;
      int rel = 0;
      if (!(l >> h.node >> h.id >> rel >> h.target_name >> h.initiator_port) || rel < 0 ||
          rel > 0xFFFF)
        return no;
      h.relative_port_id = static_cast<uint16_t>(rel);
      out->spc2 = std::move(h);
    } else if (what == "from") {
      if (!(l >> out->from)) return no;
    } else if (what == "ua") {
      int code = 0;
      Registration r;
      if (!(l >> code) || !get_reg(l, &r)) return no;
      if (code == 1)
        out->cleared.push_back(std::move(r));
      else if (code == 2)
        out->preempted.push_back(std::move(r));
      else if (code == 3)
        out->released_to.push_back(std::move(r));
      else
        return no;
    } else if (what == "abort") {
      Registration r;
      if (!get_reg(l, &r)) return no;
      out->abort.push_back(std::move(r));
    } else {
      return no;
    }
  }
  return no == 0 ? 1 : 0;
}

}  // namespace

bool Reservations::persist(const PrState& next) {
  if (path_.empty()) return !next.aptpl;
  if (!next.aptpl) {
    // APTPL off: what was saved must not come back at the next start.
    return !st_.aptpl || remove_state_file(path_) == 0;
  }
  return write_state_file(path_, state_text(next)) == 0;
}

void Reservations::load() {
  const std::optional<std::string> text = read_state_file(path_);
  if (!text) return;
  Parsed p;
  if (const size_t bad = parse_text(*text, &p))
    throw std::runtime_error(path_ + ":" + std::to_string(bad) +
                             ": not a persistent reservation state file");
  p.st.aptpl = true;
  st_ = std::move(p.st);
  changed_locked();
}

std::string Reservations::document(const Change& c) const {
  std::string doc = state_text(c.next);
  std::ostringstream o;
  if (c.spc2)
    o << "spc2 " << c.spc2->node << ' ' << c.spc2->id << ' ' << c.spc2->relative_port_id << ' '
      << c.spc2->target_name << ' ' << c.spc2->initiator_port << '\n';
  o << "from " << node_ << '\n';
  const auto ua = [&](const std::vector<Registration>& regs, int code) {
    for (const Registration& r : regs) {
      o << "ua " << code << ' ';
      put_reg(o, r);
      o << '\n';
    }
  };
  ua(c.cleared, 1);
  ua(c.preempted, 2);
  ua(c.released_to, 3);
  if (c.abort)
    for (const Registration& r : c.preempted) {
      o << "abort ";
      put_reg(o, r);
      o << '\n';
    }
  return doc + o.str();
}

bool Reservations::set_store(PrStore* store, std::string* error) {
  std::string doc;
  uint64_t version = 0;
  if (!store->load(&doc, &version)) {
    *error = "cannot read the shared reservations";
    return false;
  }
  Parsed p;
  if (!doc.empty()) {
    if (const size_t bad = parse_text(doc, &p)) {
      *error = "the shared reservations are damaged (line " + std::to_string(bad) + ")";
      return false;
    }
  }
  std::lock_guard lock(mu_);
  store_ = store;
  node_ = store->node();
  if (!doc.empty()) apply_doc_locked(doc, version, false, nullptr);
  events_version_ = version;
  return true;
}

bool Reservations::refresh() {
  std::string doc;
  uint64_t version = 0;
  if (!store_->load(&doc, &version)) return false;
  std::lock_guard lock(mu_);
  if (!doc.empty()) apply_doc_locked(doc, version, false, nullptr);
  return true;
}

void Reservations::apply_shared(const std::string& doc, uint64_t version,
                                std::vector<uint64_t>* abort) {
  std::lock_guard lock(mu_);
  apply_doc_locked(doc, version, true, abort);
}

void Reservations::apply_doc_locked(const std::string& doc, uint64_t version, bool events,
                                    std::vector<uint64_t>* abort) {
  Parsed p;
  if (parse_text(doc, &p) != 0) return;  // written by a node: never damaged but by hand
  if (version > shared_version_) {
    st_ = std::move(p.st);
    spc2_holder_ = p.spc2;
    shared_version_ = version;
    changed_locked();
  }
  if (!events || version <= events_version_) return;
  events_version_ = version;
  if (p.from == node_) return;  // applied when this node committed it
  Change c;
  c.cleared = std::move(p.cleared);
  c.preempted = std::move(p.preempted);
  c.released_to = std::move(p.released_to);
  install_events_locked(c, 0, nullptr);
  if (abort) {
    for (const auto& set : nexuses_.all()) {
      const NexusIdentity& id = set->identity();
      for (const Registration& pr : p.abort) {
        if (pr.matches(id.initiator_port, id.initiator_name, id.target_name, id.relative_port_id)) {
          abort->push_back(set->nexus_id());
          break;
        }
      }
    }
  }
}

}  // namespace zuma::scsi
