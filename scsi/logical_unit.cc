#include "scsi/logical_unit.hh"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>

#include "scsi/state_file.hh"

namespace zuma::scsi {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Appends `nbits` bits (most significant first) of `v` to a big-endian bit string.
struct BitWriter {
  uint8_t* out;
  size_t pos = 0;  // in bits
  void put(uint64_t v, int nbits) {
    for (int i = nbits - 1; i >= 0; --i, ++pos) {
      if ((v >> i) & 1) out[pos / 8] |= static_cast<uint8_t>(0x80 >> (pos % 8));
    }
  }
};

std::atomic<uint64_t> g_next_instance{1};

std::string state_path(const LuParams& p, const char* ext) {
  return p.state_dir.empty() ? std::string() : p.state_dir + "/" + p.name + ext;
}

}  // namespace

std::optional<std::array<uint8_t, 16>> parse_uuid(std::string_view t) {
  if (t.size() != 36) return std::nullopt;
  std::array<uint8_t, 16> u{};
  size_t j = 0;
  for (size_t i = 0; i < t.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (t[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    const int hi = hex_value(t[i]), lo = hex_value(t[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    u[j++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return u;
}

std::array<uint8_t, 16> naa6_from_uuid(const std::array<uint8_t, 16>& u) {
  // The UUID's 128 bits minus the version nibble (bits 48..51) and the two variant bits
  // (64, 65): 122 bits. The designator has room for 100: the last 22 are folded (XOR)
  // into the first 22, so every variable bit of the UUID counts.
  uint8_t v[122];
  size_t n = 0;
  for (size_t i = 0; i < 128; ++i) {
    if ((i >= 48 && i < 52) || i == 64 || i == 65) continue;
    v[n++] = (u[i / 8] >> (7 - i % 8)) & 1;
  }
  for (size_t i = 0; i < 22; ++i) v[i] ^= v[100 + i];
  std::array<uint8_t, 16> d{};
  BitWriter out{d.data()};
  out.put(0x6, 4);                                    // NAA: IEEE Registered Extended
  out.put(kIeeeCompanyId, 24);                        // IEEE COMPANY_ID
  for (size_t i = 0; i < 100; ++i) out.put(v[i], 1);  // VENDOR SPECIFIC IDENTIFIER (+ EXTENSION)
  return d;
}

LogicalUnit::LogicalUnit(LuParams params, std::unique_ptr<storage::Backend> backend)
    : params_(std::move(params)),
      backend_(std::move(backend)),
      num_blocks_(params_.num_blocks),
      instance_(g_next_instance.fetch_add(1)),
      reservations_(state_path(params_, ".pr"), uas_, nexuses_) {
  const uint32_t bs = params_.block_size;
  if (bs < 512 || bs > 4096 || (bs & (bs - 1)) != 0) {
    throw std::invalid_argument("logical unit " + params_.name + ": block size " +
                                std::to_string(bs) + " is not 512, 1024, 2048 or 4096");
  }
  if (params_.num_blocks == 0) {
    throw std::invalid_argument("logical unit " + params_.name + ": no blocks");
  }
  if (!backend_ || backend_->size() / bs < params_.num_blocks) {
    throw std::invalid_argument("logical unit " + params_.name +
                                ": backend is smaller than the logical unit");
  }
  const auto uuid = parse_uuid(params_.uuid);
  if (!uuid) {
    throw std::invalid_argument("logical unit " + params_.name + ": invalid uuid '" + params_.uuid +
                                "'");
  }
  naa_ = naa6_from_uuid(*uuid);
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (uint8_t b : *uuid) {
    serial_ += kHex[b >> 4];
    serial_ += kHex[b & 0xF];
  }
  // TAS=1 by default (as LIO): tasks another I_T nexus aborts end with TASK ABORTED rather
  // than silently, so their initiators need not wait for a timeout.
  defaults_ = ModeParams{params_.write_cache, false, true};
  saved_ = defaults_;
  mode_path_ = state_path(params_, ".mode");
  if (!mode_path_.empty()) {
    // SPC-5 (saved values): after power on the current values are the saved ones.
    if (auto text = read_state_file(mode_path_)) {
      auto v = parse_saved_mode_params(*text);
      if (!v) throw std::invalid_argument(mode_path_ + ": not a saved mode pages file");
      saved_ = *v;
    }
  }
  wce_.store(saved_.wce);
  d_sense_.store(saved_.d_sense);
  tas_.store(saved_.tas);
}

int LogicalUnit::save_mode_params(const ModeParams& v) {
  if (mode_path_.empty()) return EINVAL;
  if (v == saved_) return 0;
  const int e = write_state_file(mode_path_, format_saved_mode_params(v));
  if (e == 0) saved_ = v;
  return e;
}

namespace {
// What names an I_T nexus to the device server: the initiator port and the target port.
std::string lost_key(const NexusIdentity& id) {
  return id.initiator_port + '|' + id.target_name + '|' + std::to_string(id.relative_port_id);
}
}  // namespace

NexusTasks& LogicalUnit::task_set_of(const Nexus& n) {
  for (auto& [inst, set] : n.task_sets) {
    if (inst == instance_ && !set->detached()) return *set;
  }
  // The nexus's first command on this LU (rare: once per session and LU).
  std::lock_guard lock(lost_mu_);
  bool created = false;
  std::shared_ptr<NexusTasks> set = nexuses_.attach(n, &created);
  uas_.touch(n.id);
  if (created) {
    const auto it = std::find(lost_.begin(), lost_.end(), lost_key(set->identity()));
    // SAM-5 (I_T nexus loss): the condition belongs to the I_T nexus, which its names
    // identify, so a new session with the same names reports the loss; both conditions are
    // reset-class (29h): either replaces the other.
    // A condition established for the nexus before its first command (a LU reset
    // through another nexus) is newer than the loss: it stays.
    if (it != lost_.end()) {
      lost_.erase(it);
      if (!uas_.pending(n.id)) uas_.establish(n.id, Reason::kUaItNexusLossOccurred);
    } else if (params_.power_on_unit_attention) {
      uas_.establish(n.id, Reason::kUaPowerOnOccurred);
    }
  }
  // A detached set of this LU stays in the list: tasks may still be in it, and the nexus
  // (which outlives its tasks) is what keeps it alive.
  n.task_sets.emplace_back(instance_, set);
  return *set;
}

void LogicalUnit::note_nexus_lost(const Nexus& n) {
  const NexusIdentity id = NexusIdentity::of(n);
  std::lock_guard lock(lost_mu_);
  // A session that reinstated this one may have used the LU already: it is told now.
  bool told = false;
  for (const auto& set : nexuses_.all()) {
    const NexusIdentity& o = set->identity();
    if (set->nexus_id() != n.id && o.initiator_port == id.initiator_port &&
        o.target_name == id.target_name && o.relative_port_id == id.relative_port_id) {
      uas_.establish(set->nexus_id(), Reason::kUaItNexusLossOccurred);
      told = true;
    }
  }
  if (told) return;
  std::string key = lost_key(id);
  if (std::find(lost_.begin(), lost_.end(), key) != lost_.end()) return;
  if (lost_.size() >= kMaxLostNexuses) lost_.pop_front();
  lost_.push_back(std::move(key));
}

std::expected<void, std::string> LogicalUnit::resize(uint64_t blocks) {
  std::lock_guard lock(resize_mu_);
  const uint64_t old = num_blocks();
  const uint32_t bs = params_.block_size;
  if (blocks == 0) return std::unexpected("the capacity must be at least one block");
  if (blocks > UINT64_MAX / bs) return std::unexpected("the capacity is too large");
  if (blocks == old) return {};
  if (blocks < old) {
    if (reservations_.any())
      return std::unexpected(
          "a reservation is held on the LU; its holder may use the blocks a shrink removes "
          "(release it first)");
    num_blocks_.store(blocks, std::memory_order_release);
    if (auto r = backend_->resize(blocks * bs, !params_.thin); !r) {
      num_blocks_.store(old, std::memory_order_release);
      return r;
    }
  } else {
    if (auto r = backend_->resize(blocks * bs, !params_.thin); !r) return r;
    num_blocks_.store(blocks, std::memory_order_release);
  }
  // SBC-4: the READ CAPACITY data changed; initiators learn it from 2Ah/09h (SPC-5 unit
  // attention conditions).
  uas_.establish_all(Reason::kUaCapacityDataChanged);
  return {};
}

void LogicalUnit::set_write_protected(bool on) {
  if (write_protected_.exchange(on, std::memory_order_acq_rel) == on || params_.read_only) return;
  uas_.establish_all(Reason::kUaModeParametersChanged);
}

void LogicalUnit::set_alua_state(uint8_t state) {
  if (alua_state_.exchange(state, std::memory_order_acq_rel) == state) return;
  uas_.establish_all(Reason::kUaAsymmetricStateChanged);
}

void LogicalUnit::set_mode_params(const ModeParams& v, uint64_t from_nexus) {
  if (v == mode_params()) return;
  wce_.store(v.wce, std::memory_order_relaxed);
  d_sense_.store(v.d_sense, std::memory_order_relaxed);
  tas_.store(v.tas, std::memory_order_relaxed);
  uas_.establish_all(Reason::kUaModeParametersChanged, from_nexus);
}

}  // namespace zuma::scsi
