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
#include <string>

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
struct Nexus {
  uint64_t id = 0;               // unique per I_T nexus for the life of the process
  std::string initiator_port;    // SCSI initiator port name, "iqn...,i,0x<ISID>"
  std::string initiator_name;    // "iqn..."
  std::string target_port;       // SCSI target port name, "iqn...,t,0x<TPGT>"
  std::string target_name;       // "iqn..."
  uint16_t relative_port_id = 1;  // SPC-5 7.7.6.8, >= 1
  uint16_t target_port_group = 1;
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

  // --- completion ---
  void (*on_complete)(Task& task) = nullptr;
  void* owner = nullptr;  // the transport's context

  // --- private to the device server ---
  // Scratch space for the device server while the task executes (it holds the backend
  // request and iovec of a READ/WRITE so the data path allocates nothing). The transport
  // never reads or writes it; its content is meaningless before execute() and after
  // on_complete.
  alignas(16) std::array<std::byte, 192> device_scratch;
};

}  // namespace zuma::scsi
