// A SCSI task as the device server sees it (SAM-5 4.x), independent of the transport.
//
// The transport (target/) embeds a Task in its own command object (STYLE.md 3), fills
// the "in" fields, and calls scsi::execute(). The device server fills the "out" fields
// and calls on_complete exactly once, on the thread that called execute() (possibly
// before execute() returns). After on_complete the device server never touches the Task.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "storage/buffer.hh"

namespace zuma::scsi {

enum class TaskAttr : uint8_t { kSimple = 0, kOrdered = 1, kHeadOfQueue = 2, kAca = 3 };
enum class DataDir : uint8_t { kNone, kIn /* device -> initiator */, kOut, kBidi };

// SAM status codes (SAM-5 5.3).
namespace status {
inline constexpr uint8_t kGood = 0x00;
inline constexpr uint8_t kCheckCondition = 0x02;
inline constexpr uint8_t kConditionMet = 0x04;
inline constexpr uint8_t kBusy = 0x08;
inline constexpr uint8_t kReservationConflict = 0x18;
inline constexpr uint8_t kTaskSetFull = 0x28;
inline constexpr uint8_t kAcaActive = 0x30;
inline constexpr uint8_t kTaskAborted = 0x40;
}  // namespace status

// The I_T nexus a task arrives on (SAM-5 4.7). Owned by the transport's session; lives
// longer than every task that points to it.
class NexusTasks;
class LogicalUnit;
struct LunTable;
struct CommandInfo;

struct Nexus {
  uint64_t id = 0;               // unique per I_T nexus for the life of the process
  std::string initiator_port;    // SCSI initiator port name, "iqn...,i,0x<ISID>"
  std::string initiator_name;    // "iqn..."
  std::string target_port;       // SCSI target port name, "iqn...,t,0x<TPGT>"
  std::string target_name;       // "iqn..."
  uint16_t relative_port_id = 1;  // SPC-5 7.7.6.8, >= 1
  uint16_t target_port_group = 1;

  // Runs `fn` on the thread that executes this nexus's tasks, after the caller returns
  // (never inline). Set by the transport; the device server calls it from any thread to
  // complete a task that waited for work on other nexuses (PREEMPT AND ABORT waiting for
  // the aborted tasks). Empty: the device server calls `fn` on whatever thread it is on.
  std::function<void(std::function<void()>)> post{};
  // EXTENDED COPY across targets (SPC-5 third-party copy: a copy manager may reach copy
  // targets beyond the addressed one): the LU whose NAA designator is `naa` (16 bytes) in
  // another target of this SCSI target device that this nexus's initiator may address
  // there (its ACL, networks, LUN mapping and CHAP), or nullptr. Set by the transport; any
  // thread. Empty: copies stay within the nexus's LunTable. The LU is kept alive by the
  // returned pointer for as long as the copy holds it.
  std::function<std::shared_ptr<LogicalUnit>(const uint8_t* naa)> find_copy_target{};

  // --- private to the device server ---
  // This nexus's task set on each LU it has used (keyed by LU instance), reached without a
  // lock: execute() is never called for two tasks of one nexus at the same time (the
  // transport runs a session on one thread). The transport never touches it.
  mutable std::vector<std::pair<uint64_t, std::shared_ptr<NexusTasks>>> task_sets{};
};

struct Task {
  // --- in: set by the transport before execute() ---
  uint64_t lun = 0;               // SAM-5 LUN, already decoded to a flat number (0..16383)
  std::array<uint8_t, 260> cdb{};  // 16 bytes from the BHS plus an extended CDB AHS
  uint16_t cdb_len = 0;
  TaskAttr attr = TaskAttr::kSimple;
  DataDir dir = DataDir::kNone;
  uint32_t expected_len = 0;      // Expected Data Transfer Length from the transport
  const Nexus* nexus = nullptr;
  // Data-Out (dir kOut): data.size() == bytes the initiator sent (<= expected_len). The
  // transport collects all of it before execute().
  // Data-In (dir kIn): the device server resizes `data` and fills it; the transport sends
  // data_in_len bytes of it.
  storage::Buffer data;

  // --- out: set by the device server before on_complete ---
  uint8_t status = status::kGood;
  uint32_t data_in_len = 0;   // bytes of `data` to send, <= expected_len
  // Bytes the command would have transferred had expected_len been large enough (the
  // transfer length in the CDB, or min(allocation length, available)). The transport
  // derives the residual: overflow when > expected_len, underflow when < expected_len.
  uint32_t transfer_len = 0;
  std::array<uint8_t, 252> sense{};  // sense data when status is CHECK CONDITION
  uint8_t sense_len = 0;
  // True when a task management function or a PREEMPT AND ABORT aborted the task (SAM-5
  // task management functions, SPC-5 PREEMPT AND ABORT). status is then TASK ABORTED, with no
  // sense and no Data-In. The transport sends that status only when report_abort is set (the
  // control mode page's TAS bit is set and another I_T nexus caused the abort: SPC-5 Control
  // mode page); otherwise it sends nothing at all for the task. Either way the command is over
  // for CmdSN accounting (a transport that ignores these fields sends TASK ABORTED: truthful,
  // though not what TAS=0 asks for).
  bool aborted = false;
  bool report_abort = false;

  // --- completion ---
  void (*on_complete)(Task& task) = nullptr;
  void* owner = nullptr;  // the transport's context

  // --- private to the device server ---
  // Scratch space for the device server while the task executes (it holds the backend
  // request and iovec of a READ/WRITE so the data path allocates nothing). The transport
  // never reads or writes it; its content is meaningless before execute() and after
  // on_complete.
  // SBC: 256 bytes hold a multi-step command's state (sbc_op.hh: backend request, range
  // lock holder, a second buffer).
  alignas(16) std::array<std::byte, 256> device_scratch;
  // The task's place in its nexus's task set (task_set.hh), from execute() to on_complete.
  struct TaskSetLink {
    NexusTasks* set = nullptr;  // nullptr: not in a task set
    Task* prev = nullptr;       // in-flight list, oldest first
    Task* next = nullptr;
    Task* ready_next = nullptr;  // list of tasks allowed to start
    uint64_t seq = 0;
    LogicalUnit* lu = nullptr;  // what a task that waited needs to start
    const LunTable* table = nullptr;
    const CommandInfo* info = nullptr;
    bool started = false;
    // Aborted; completes without running or without a response. Written under the set's
    // lock, read without it through std::atomic_ref when the task starts.
    bool abort = false;
    bool abort_by_other = false;  // by another I_T nexus (TAS applies)
  } task_set;
};

}  // namespace zuma::scsi
