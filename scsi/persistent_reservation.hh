// Reservations of one logical unit: persistent reservations (SPC-5 persistent reservations,
// PERSISTENT RESERVE IN/OUT) and the older RESERVE/RELEASE (6)/(10) reservations (SPC-2),
// with the SPC-5 compatible reservation handling rules between the two (CRH=1).
//
// Registrations belong to I_T nexuses, named by initiator port and target port (SPC-5 I_T
// nexus): they survive the session that made them (an initiator that logs in again with the
// same ISID through the same portal group is the same I_T nexus). A registration made
// through a TransportID without an ISID covers every port of that initiator, one made with
// ALL_TG_PT=1 every target port of the target; both are kept as one registration.
//
// APTPL (activate persist through power loss): while the most recent REGISTER, REGISTER AND
// IGNORE EXISTING KEY or REGISTER AND MOVE asked for it, every change is written to the
// state file (temporary file, fsync, rename, fsync of the directory) before the command
// completes, and the state is restored from it at start; APTPL=0 removes the file. The write
// is synchronous on the calling (reactor) thread: PERSISTENT RESERVE OUT is rare.
//
// Threading: every member may be called from any thread (one mutex). any() is lock-free so
// the READ/WRITE path pays one atomic load while no reservation exists.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "scsi/sense.hh"
#include "scsi/task.hh"

namespace zuma::scsi {

class UnitAttentions;
class NexusRegistry;

// PERSISTENT RESERVE OUT service actions (SPC-5 PERSISTENT RESERVE OUT service action codes).
namespace prout_sa {
inline constexpr uint8_t kRegister = 0x00;
inline constexpr uint8_t kReserve = 0x01;
inline constexpr uint8_t kRelease = 0x02;
inline constexpr uint8_t kClear = 0x03;
inline constexpr uint8_t kPreempt = 0x04;
inline constexpr uint8_t kPreemptAndAbort = 0x05;
inline constexpr uint8_t kRegisterAndIgnore = 0x06;
inline constexpr uint8_t kRegisterAndMove = 0x07;
}  // namespace prout_sa

// PERSISTENT RESERVE IN service actions.
namespace prin_sa {
inline constexpr uint8_t kReadKeys = 0x00;
inline constexpr uint8_t kReadReservation = 0x01;
inline constexpr uint8_t kReportCapabilities = 0x02;
inline constexpr uint8_t kReadFullStatus = 0x03;
}  // namespace prin_sa

// Persistent reservation types (SPC-5 Persistent reservation type codes).
namespace pr_type {
inline constexpr uint8_t kWriteExclusive = 0x1;
inline constexpr uint8_t kExclusiveAccess = 0x3;
inline constexpr uint8_t kWriteExclusiveRegistrantsOnly = 0x5;
inline constexpr uint8_t kExclusiveAccessRegistrantsOnly = 0x6;
inline constexpr uint8_t kWriteExclusiveAllRegistrants = 0x7;
inline constexpr uint8_t kExclusiveAccessAllRegistrants = 0x8;
}  // namespace pr_type

struct Registration {
  uint64_t key = 0;
  // The initiator port name ("iqn...,i,0x<ISID>"), or when !port_specific the initiator
  // name alone (a TransportID without ISID): every port of that initiator.
  std::string initiator;
  bool port_specific = true;
  std::string target_name;        // the SCSI target device
  uint16_t relative_port_id = 0;  // the target port; with all_tg_pt the one it was made through
  bool all_tg_pt = false;
  bool holder = false;  // holds the reservation (types other than all registrants)

  // True when the registration covers the I_T nexus.
  bool matches(const Nexus& n) const;
  bool matches(const std::string& initiator_port, const std::string& initiator_name,
               const std::string& target, uint16_t rel_port) const;
  // Same I_T nexus (or set of nexuses) as `o`.
  bool same_nexus(const Registration& o) const;
};

struct PrState {
  uint32_t generation = 0;
  bool aptpl = false;
  std::vector<Registration> regs;
  bool reserved = false;
  uint8_t type = 0;
  uint8_t scope = 0;
};

// A parsed iSCSI TransportID (SPC-5 iSCSI TransportID).
struct TransportId {
  std::string initiator;  // port name ("iqn...,i,0x<ISID>") or initiator name
  bool port_specific = false;
  size_t length = 0;  // bytes it occupies in the parameter list
};
// Parses the TransportID at `p` (`avail` bytes available). Errors name the byte of the
// parameter list (`base` = offset of `p` in it): INVALID FIELD IN PARAMETER LIST, or
// PARAMETER LIST LENGTH ERROR when it does not fit.
CmdResult parse_transport_id(const uint8_t* p, size_t avail, uint16_t base, TransportId* out);
// Appends the TransportID of a registration (format 01b with an ISID, 00b without).
void append_transport_id(const Registration& r, std::vector<uint8_t>* out);

// A RESERVE (6)/(10) reservation's holder. `node` is the zumad that holds its I_T nexus
// ("" without a cluster); `id` the nexus id there (meaningful on that node only).
struct Spc2Holder {
  std::string node;
  uint64_t id = 0;
  std::string initiator_port, target_name;
  uint16_t relative_port_id = 0;
};

// Where the reservations of a LU that several zumad nodes export live (issue 9: etcd,
// target/cluster.*; docs/DISTRIBUTED.md "Reservations across nodes"). The store keeps one
// versioned document per LU (Reservations writes and reads it; the store does not look
// inside), and tells every node of each new version (Reservations::apply_shared).
class PrStore {
 public:
  virtual ~PrStore() = default;
  enum class Commit { kDone, kStale, kUnavailable };
  // Replaces the document if it is still at `version` (0: there is none yet); *now receives
  // the new version. kStale: another node changed it first.
  virtual Commit commit(const std::string& doc, uint64_t version, uint64_t* now) = 0;
  // The newest document and its version ("" and 0: none yet). false: unreachable.
  virtual bool load(std::string* doc, uint64_t* version) = 0;
  // Returns once every other live node has applied `version`, or once the store gives up
  // on a node that does not answer (its lease runs out: it stops serving; DISTRIBUTED.md).
  virtual void wait_applied(uint64_t version) = 0;
  // This node's name, unique in the cluster, and different at each start.
  virtual const std::string& node() const = 0;
};

class Reservations {
 public:
  // `state_path`: where an APTPL state is kept ("" = nowhere; APTPL is then refused with
  // INSUFFICIENT REGISTRATION RESOURCES). Loads it when present. Throws std::runtime_error
  // when the file exists but cannot be read or parsed (startup only).
  Reservations(std::string state_path, UnitAttentions& uas, NexusRegistry& nexuses);

  // True while a persistent reservation or a RESERVE (6)/(10) reservation exists.
  bool any() const { return any_.load(std::memory_order_acquire); }

  // RESERVATION CONFLICT check for a command about to start (SPC-5 Table "SPC commands that
  // are allowed in the presence of various reservations", SBC-4 Table "SBC commands that are
  // allowed in the presence of various reservations", SPC-2 RESERVE). `flags` are the command
  // table's (cmd_flag::kPrAllowed, kPrRead, kSpc2Allowed).
  bool conflicts(const Nexus& n, uint16_t flags, const uint8_t* cdb) const;

  // The same in two steps, so a nexus can cache the first (the READ/WRITE path then takes no
  // lock while reservations exist): what the current state means for `n`, as bits, with the
  // state's version (bumped by every change); then the decision for one command.
  static constexpr uint8_t kSpc2Blocked = 1;    // another nexus holds a RESERVE (6)/(10)
  static constexpr uint8_t kReadConflict = 2;   // "reads" conflict
  static constexpr uint8_t kWriteConflict = 4;  // "writes" conflict
  uint8_t verdict(const Nexus& n, uint64_t* version) const;
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  static bool conflicts(uint8_t verdict, uint16_t flags, const uint8_t* cdb);

  // RESERVE (6)/(10), RELEASE (6)/(10) (SPC-2, with SPC-5 compatible reservation handling).
  CmdResult reserve(const Nexus& n);
  CmdResult release(const Nexus& n);

  // PERSISTENT RESERVE IN: the parameter data of service action `sa` in *out.
  CmdResult persistent_reserve_in(const Nexus& n, uint8_t sa, std::vector<uint8_t>* out) const;

  // PERSISTENT RESERVE OUT. `params`: the parameter list (PARAMETER LIST LENGTH bytes).
  // `ports`: the relative port ids of the target's ports (REGISTER AND MOVE destinations).
  // *abort receives the nexuses whose tasks a PREEMPT AND ABORT aborts (known nexuses only,
  // the sender excluded). Unit attentions for other nexuses are established here.
  CmdResult persistent_reserve_out(const Nexus& n, const uint8_t* cdb,
                                   std::span<const uint8_t> params, std::span<const uint16_t> ports,
                                   std::vector<uint64_t>* abort);

  // The I_T nexus is gone: its RESERVE (6)/(10) reservation is released (SPC-2).
  void nexus_lost(uint64_t nexus_id);
  // LOGICAL UNIT RESET: releases a RESERVE (6)/(10) reservation; persistent reservations
  // are not affected (SPC-5).
  void reset();

  // For tests and diagnostics.
  PrState state() const;
  std::optional<uint64_t> spc2_holder() const;

  // Shared reservations (PrStore). From then on every change is committed to the store
  // before it takes effect here (the command waits for the other nodes to apply it), and
  // the state comes from the store. Call before the LU is used. False (with *error) when
  // the store cannot be read.
  bool set_store(PrStore* store, std::string* error);
  // A version of the shared document (from the store's watch, any node's): the state
  // when newer than the copy here; its unit attentions and, for a PREEMPT AND ABORT, the
  // nexuses here whose tasks are to be aborted (*abort) when another node made it.
  void apply_shared(const std::string& doc, uint64_t version, std::vector<uint64_t>* abort);
  // A node is gone (its lease ran out): a RESERVE (6)/(10) held through it is released.
  void node_lost(const std::string& node);
  uint64_t shared_version() const;

 private:
  // One change of the state, computed under mu_ from the current state.
  struct Change {
    PrState next;
    std::optional<Spc2Holder> spc2;
    bool changed = false;
    bool persist = false;  // APTPL file (local mode)
    std::vector<Registration> cleared, preempted, released_to;
    bool abort = false;  // PREEMPT AND ABORT: abort the preempted nexuses' tasks
  };
  // Computes (`compute` under mu_), commits (store or APTPL file) and installs a change;
  // the unit attentions go to the nexuses here but `sender`; *abort receives the nexuses
  // whose tasks to abort.
  template <class F>
  CmdResult change(uint64_t sender, F&& compute, std::vector<uint64_t>* abort);
  void install_events_locked(const Change& c, uint64_t sender, std::vector<uint64_t>* abort);
  bool spc2_is(const Nexus& n) const;  // under mu_
  // RESERVE/RELEASE (6)/(10) when persistent reservations decide them (CRH=1); nullopt when
  // the SPC-2 rules apply. Under mu_.
  std::optional<CmdResult> crh_locked(const Nexus& n) const;
  std::string document(const Change& c) const;
  bool refresh();  // the store's newest state (no events)
  void apply_doc_locked(const std::string& doc, uint64_t version, bool events,
                        std::vector<uint64_t>* abort);
  bool can_persist() const { return !path_.empty() || store_; }

  const Registration* find_locked(const Nexus& n) const;
  bool is_holder_locked(const Registration* r) const;
  void changed_locked();  // after every change: version and any()
  // Unit attention `ua` for every known nexus that `regs` cover, but `except`.
  void ua_locked(const std::vector<Registration>& regs, Reason ua, uint64_t except);
  // Writes (or removes) the state file for `next`; false on failure.
  bool persist(const PrState& next);
  void load();

  CmdResult do_register(const Nexus& n, uint8_t sa, std::span<const uint8_t> p, PrState& next,
                        std::vector<Registration>* released_to);
  CmdResult do_reserve(const Nexus& n, uint8_t scope, uint8_t type, uint64_t key, PrState& next);
  CmdResult do_release(const Nexus& n, uint8_t scope, uint8_t type, uint64_t key, PrState& next,
                       std::vector<Registration>* released_to);
  CmdResult do_preempt(const Nexus& n, uint8_t scope, uint8_t type, uint64_t key, uint64_t sark,
                       PrState& next, std::vector<Registration>* preempted,
                       std::vector<Registration>* released_to);
  CmdResult do_register_and_move(const Nexus& n, std::span<const uint8_t> p,
                                 std::span<const uint16_t> ports, PrState& next);

  const std::string path_;
  UnitAttentions& uas_;
  NexusRegistry& nexuses_;
  mutable std::mutex mu_;
  PrState st_;
  std::optional<Spc2Holder> spc2_holder_;
  PrStore* store_ = nullptr;
  std::string node_;             // store_->node(), or ""
  uint64_t shared_version_ = 0;  // of the state in st_ (under mu_)
  uint64_t events_version_ = 0;  // the last version whose events were applied here
  std::atomic<bool> any_{false};
  std::atomic<uint64_t> version_{0};
};

}  // namespace zuma::scsi
