// The mirror backend: one sub-unit kept on two member backends (DESIGN.md: DST-style
// members with an identity and an age; docs/DISTRIBUTED.md describes the formats).
//
// Writes go to both members and complete when both are done, or when one is done and the
// other has been marked out (its new state recorded first: the age is bumped on the
// member still in sync and in the state file before the write is acknowledged). Reads go
// to a member in sync; a failed read is retried on the other member.
//
// Each member holds, after the sub-unit's `size` bytes, a kHeaderBytes header: magic,
// the mirror's identity, the member's index and its age (the mirror generation it last
// had every write of). The mirror's identity, current age and the age a member went out
// at live in `<state>.state` in data_dir; the regions written while a member is out are a
// roaring bitmap, saved to `<state>.dirty` at a clean shutdown. A member that returns (a
// remote sub-unit logs in again, or is found at start) with the age it went out at is
// resynchronised from the regions in the bitmap; one with another identity, no header or
// an unknown age (replaced, or its bitmap lost) is copied whole. Resynchronisation runs
// on the mirror's own thread while I/O continues; writes meanwhile go to the member in
// sync and mark their regions, which the resync copies (again) until none is left.
//
// Threading: submit() from any reactor; completions on the submitting thread (posted
// back through IoContext::post when a completion was deferred to the mirror thread).
#pragma once

#include <array>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include "storage/backend.hh"

namespace zuma::storage {

class MirrorBackend final : public Backend {
 public:
  static constexpr uint64_t kHeaderBytes = 4096;       // reserved after the data, per member
  static constexpr uint64_t kRegionBytes = 256 << 10;  // dirty-region granularity

  enum class MemberState : uint8_t { kInSync, kOut, kResyncing };

  // `members` must each hold size + kHeaderBytes. `state` is the path prefix of the state
  // files (its directory is created). Reads the headers of the members that can be
  // reached now. Error: neither member holds the current data, or a file error.
  static std::expected<std::unique_ptr<MirrorBackend>, std::string> open(
      std::array<std::unique_ptr<Backend>, 2> members, uint64_t size, std::string state);
  ~MirrorBackend() override;  // stops the resync; saves the dirty regions and the state

  uint64_t size() const override;
  bool supports(IoOp op) const override;
  void submit(IoRequest& req) override;
  std::string describe() const override;

  MemberState member_state(int i) const;
  uint64_t age() const;
  // Regions a resync still has to copy.
  uint64_t dirty_regions() const;

  struct Impl;

 private:
  explicit MirrorBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zuma::storage
