// A logical unit: a block device (SBC-4) on a storage::Backend, its identity, its mode
// parameters and unit attention conditions (DESIGN.md: these belong to the LU).
//
// Threading: one LogicalUnit is used from several reactor threads at once. Everything
// here is immutable after construction except the mode parameters (atomics, changed
// under mode_mu_), the capacity (an atomic, changed by resize()) and the unit attentions
// (see unit_attention.hh).
// Lifetime: the LU must outlive every task executing on it; the transport keeps the
// LunTable (and so the LU) alive until its tasks complete.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <expected>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "scsi/alua.hh"
#include "scsi/device_server.hh"
#include "scsi/mode_pages.hh"
#include "scsi/persistent_reservation.hh"
#include "scsi/range_lock.hh"  // SBC: COMPARE AND WRITE / atomic writes
#include "scsi/task_set.hh"
#include "scsi/unit_attention.hh"
#include "storage/backend.hh"

namespace zuma::scsi {

// Block limits we advertise (VPD page B0h, SBC-4 Block Limits VPD page) and enforce in
// READ/WRITE/VERIFY.
inline constexpr uint32_t kMaxTransferBytes = 8u << 20;      // MAXIMUM TRANSFER LENGTH
inline constexpr uint32_t kOptimalTransferBytes = 1u << 20;  // OPTIMAL TRANSFER LENGTH
inline constexpr uint32_t kOptimalGranularityBytes = 4096;   // OPTIMAL TRANSFER LENGTH GRANULARITY

// The IEEE company identifier in our NAA-6 designators: 5A554Dh ("ZUM"), a value in CID
// format (ZYXM bits of the first octet = 1010b, SPC-5 NAA IEEE Registered Extended designator) that
// is NOT registered with the IEEE. Replace it with a registered OUI/CID before Zuma ships to
// customers.
inline constexpr uint32_t kIeeeCompanyId = 0x5A554D;

// Parses RFC 4122 text ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", hex in either case).
std::optional<std::array<uint8_t, 16>> parse_uuid(std::string_view text);

// The NAA IEEE Registered Extended designator (NAA 6, SPC-5 NAA IEEE Registered Extended
// designator) of a LU: the company id above, then the UUID's 122 variable bits (version nibble and
// variant bits removed, the last 22 XORed into the first 22) as VENDOR SPECIFIC IDENTIFIER (36
// bits) and VENDOR SPECIFIC IDENTIFIER EXTENSION (64 bits). Deterministic: the same UUID always
// gives the same designator, on every node that exports the LU.
std::array<uint8_t, 16> naa6_from_uuid(const std::array<uint8_t, 16>& uuid);

class LogicalUnit {
 public:
  // Throws std::invalid_argument when the parameters are unusable (block size not a
  // power of two in 512..4096, no blocks, an invalid UUID, a backend smaller than the
  // LU). Construction happens at startup or reload, where exceptions are allowed.
  LogicalUnit(LuParams params, std::unique_ptr<storage::Backend> backend);

  const LuParams& params() const { return params_; }
  // Write protected now: params().read_only, or set_write_protected(true) (a LU of a
  // secondary replication group). SBC-4 4.11: medium-changing commands get DATA PROTECT,
  // WRITE PROTECTED (27h/00h), MODE SENSE reports WP=1.
  bool write_protected() const {
    return params_.read_only || write_protected_.load(std::memory_order_acquire);
  }
  // Changes the protection at run time (a replication group's role change; any thread).
  // A change that takes effect gives every known I_T nexus MODE PARAMETERS CHANGED
  // (2Ah/01h): the WP bit of the mode parameter header changed (SPC-5 6.14).
  void set_write_protected(bool on);
  // ALUA (alua.hh; issue 9): the access state of the target port group that this node's
  // ports form for the LU, and the view of every group. Without a view: active/optimized,
  // implicit ALUA. set_alua_state() gives every known I_T nexus ASYMMETRIC ACCESS STATE
  // CHANGED (2Ah/06h) when the state changes (SPC-5 5.16.2.5).
  void set_alua(std::shared_ptr<AluaView> view) { alua_ = std::move(view); }
  AluaView* alua() const { return alua_.get(); }
  uint8_t alua_state() const { return alua_state_.load(std::memory_order_acquire); }
  void set_alua_state(uint8_t state);
  // The other nodes that export this LU (issue 9, target/cluster.hh), or nullptr.
  class Peers {
   public:
    virtual ~Peers() = default;
    // A LOGICAL UNIT RESET happened here: the other nodes abort their nexuses' tasks and
    // establish 29h/03h too. Returns once they have (or have left the cluster).
    virtual void reset() = 0;
  };
  void set_peers(std::shared_ptr<Peers> p) { peers_ = std::move(p); }
  Peers* peers() const { return peers_.get(); }
  storage::Backend& backend() { return *backend_; }
  uint32_t block_size() const { return params_.block_size; }
  // The capacity now (params().num_blocks is the one it was created with). A command
  // reads it once for its range check; see resize().
  uint64_t num_blocks() const { return num_blocks_.load(std::memory_order_acquire); }
  BlockGeometry geometry() const { return {num_blocks(), params_.block_size}; }
  // Changes the capacity to `blocks` while commands run on other threads (zumactl resize
  // lun; control thread, one resize at a time). Growing resizes the backend first (full
  // provisioning reserves the new blocks) and then publishes the capacity, so a command
  // that sees the new capacity finds the backend grown; shrinking publishes first, so new
  // commands beyond the end get LBA OUT OF RANGE, and a command already past its range
  // check fails in the backend. Every known I_T nexus then gets CAPACITY DATA HAS CHANGED
  // (2Ah/09h). Refused: a shrink while a reservation exists (its holder may use the
  // blocks), a backend that cannot resize. Error: one line.
  std::expected<void, std::string> resize(uint64_t blocks);
  // Largest READ/WRITE/VERIFY transfer length, in logical blocks.
  uint32_t max_transfer_blocks() const { return kMaxTransferBytes / params_.block_size; }

  const std::array<uint8_t, 16>& naa() const { return naa_; }
  // Unit serial number (VPD page 80h): the UUID's 32 hex digits, upper case.
  const std::string& serial() const { return serial_; }

  // Current mode parameters; lock-free.
  bool descriptor_sense() const { return d_sense_.load(std::memory_order_relaxed); }
  bool write_cache() const { return wce_.load(std::memory_order_relaxed); }
  ModeParams mode_params() const {
    return {write_cache(), descriptor_sense(), tas_.load(std::memory_order_relaxed)};
  }
  ModeParams default_mode_params() const { return defaults_; }
  // Saved mode parameters (caller holds mode_mutex()); nullptr when the LU has no state
  // directory to keep them in.
  const ModeParams* saved_mode_params() const { return mode_path_.empty() ? nullptr : &saved_; }
  // Saves `v` (caller holds mode_mutex()): written to "<state_dir>/<name>.mode" atomically.
  // Returns 0 or an errno value.
  int save_mode_params(const ModeParams& v);
  // Serialises MODE SELECT: check and apply under this lock.
  std::mutex& mode_mutex() { return mode_mu_; }
  // Applies new values (caller holds mode_mutex()). When they differ from the current
  // ones, every other known I_T nexus gets MODE PARAMETERS CHANGED (SPC-5 (mode parameters)).
  void set_mode_params(const ModeParams& v, uint64_t from_nexus);

  UnitAttentions& unit_attentions() { return uas_; }

  // Reservations, task sets (persistent_reservation.hh, task_set.hh).
  Reservations& reservations() { return reservations_; }
  NexusRegistry& nexuses() { return nexuses_; }
  // The task set of `n` on this LU. The nexus's first command creates it, registers the
  // nexus for unit attentions and establishes I_T NEXUS LOSS OCCURRED for it when an
  // earlier nexus of the same initiator and target port names was lost (note_nexus_lost),
  // else POWER ON OCCURRED (when LuParams::power_on_unit_attention). Called on the thread
  // executing the nexus's tasks.
  NexusTasks& task_set_of(const Nexus& n);
  // The nexus `n`, which used this LU, is gone (session closed or reinstated): the next
  // nexus with its initiator and target port names is told so (SAM-5 I_T nexus loss: the
  // unit attention belongs to the I_T nexus, which the names identify, not the session).
  // At most kMaxLostNexuses names are kept, the oldest forgotten first.
  void note_nexus_lost(const Nexus& n);
  static constexpr size_t kMaxLostNexuses = 1024;
  // Unique per LU object for the life of the process (keys Nexus::task_sets).
  uint64_t instance() const { return instance_; }

  // SBC: the LBA range lock that write-type commands take (range_lock.hh).
  RangeLock& range_lock() { return range_lock_; }

 private:
  LuParams params_;
  std::unique_ptr<storage::Backend> backend_;
  std::atomic<uint64_t> num_blocks_;
  std::atomic<bool> write_protected_{false};
  std::shared_ptr<AluaView> alua_;
  std::shared_ptr<Peers> peers_;
  std::atomic<uint8_t> alua_state_{alua::kActiveOptimized};
  std::mutex resize_mu_;
  std::array<uint8_t, 16> naa_{};
  std::string serial_;
  ModeParams defaults_;
  std::atomic<bool> wce_;
  std::atomic<bool> d_sense_;
  std::atomic<bool> tas_;
  std::mutex mode_mu_;
  std::string mode_path_;  // saved mode pages; "" = none
  ModeParams saved_;
  UnitAttentions uas_;
  // Names of lost nexuses (lost_key()), oldest first. lost_mu_ also serialises the
  // creation of a nexus's task set with note_nexus_lost().
  std::mutex lost_mu_;
  std::deque<std::string> lost_;
  const uint64_t instance_;
  NexusRegistry nexuses_;
  Reservations reservations_;
  RangeLock range_lock_;  // SBC
};

}  // namespace zuma::scsi
