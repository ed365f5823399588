// Asymmetric logical unit access (SPC-5 5.16, ALUA) for a LU that several zumad nodes
// export (issue 9, docs/DISTRIBUTED.md): each node is one target port group; the group's
// access state decides which commands its ports serve. The cluster layer (target/cluster.*)
// implements AluaView from the shared membership; without one a LU has implicit ALUA only,
// every group active/optimized (handle_report_target_port_groups).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "scsi/sense.hh"

namespace zuma::scsi {

// SPC-5 ASYMMETRIC ACCESS STATE values.
namespace alua {
inline constexpr uint8_t kActiveOptimized = 0x0;
inline constexpr uint8_t kActiveNonOptimized = 0x1;
inline constexpr uint8_t kStandby = 0x2;
inline constexpr uint8_t kUnavailable = 0x3;
inline constexpr uint8_t kOffline = 0xE;
inline constexpr uint8_t kTransitioning = 0xF;
}  // namespace alua

struct AluaGroup {
  uint16_t id = 0;
  uint8_t state = alua::kActiveOptimized;
  bool preferred = false;
  std::vector<uint16_t> relative_port_ids;
};

class AluaView {
 public:
  virtual ~AluaView() = default;
  // Every target port group of the LU, this node's included, with its state now.
  virtual std::vector<AluaGroup> groups() const = 0;
  // SET TARGET PORT GROUPS: (group, state) pairs, states among 0h..3h. Invalid groups
  // were checked by the caller against groups(). Returns GOOD once the change is shared.
  virtual CmdResult set_states(const std::vector<std::pair<uint16_t, uint8_t>>& states) = 0;
};

// Whether a command may run through a target port group in `state` (SPC-5 5.16.2.4: the
// commands each state allows); when not, *why is the NOT READY reason.
bool alua_allows(uint8_t state, const uint8_t* cdb, Reason* why);

}  // namespace zuma::scsi
