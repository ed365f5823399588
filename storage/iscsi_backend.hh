// The iscsi backend: a sub-unit on a remote iSCSI LUN (another zumad, tgt, LIO) through
// libiscsi's async API (DESIGN.md: storage/, docs/DISTRIBUTED.md).
//
// Threading: one service thread per backend owns the libiscsi context (libiscsi is not
// thread-safe) and polls its socket. submit() runs on a reactor thread: it queues the
// request for the service thread (a mutex-guarded intrusive list and an eventfd write) and
// returns; the completion is posted back to the submitting thread's IoContext
// (IoContext::post), so done() runs on that thread (backend.hh). A thread without an
// IoContext blocks in submit() until the request is done (startup, tests).
//
// Failure handling: a lost connection, a command older than `timeout_s`, or a failed
// login tears the session down; every command in flight completes with kUnreachable, and
// the service thread logs in again with exponential backoff (100 ms doubling to 5 s).
// While it is down, submit() completes at once with kUnreachable (never a hang).
//
// Mapping: kRead/kWrite -> READ(16)/WRITE(16) (FUA passed), kFlush -> SYNCHRONIZE
// CACHE(16) of the whole LUN, kDiscard -> UNMAP when the remote reports LBPME and LBPU
// (READ CAPACITY(16), VPD B2h). kWriteZeroes is not supported (callers write zeros).
// No heap allocation per request in steady state (operation records are pooled).
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <string>

#include "storage/backend.hh"

namespace zuma::storage {

struct IscsiSpec {
  std::string url;                         // iscsi://HOST[:PORT]/TARGET-IQN/LUN
  std::string initiator;                   // our initiator name (RFC 7143 4.2.7)
  std::string user, secret;                // CHAP; empty user = none
  std::string mutual_user, mutual_secret;  // mutual CHAP: the target's name and secret
  uint64_t size = 0;          // bytes the sub-unit needs; the remote must hold at least this
  uint32_t block_size = 512;  // the LU's block size: the remote's must divide it
  uint32_t timeout_s = 10;    // per command, and for a login attempt
  // Start even when the remote cannot be reached now (a mirror member): the size is then
  // `size` and the capacity is checked at the first login.
  bool allow_offline = false;
};

class IscsiBackend final : public Backend {
 public:
  // Logs in (waiting up to timeout_s), reads the capacity (READ CAPACITY(16)) and the
  // provisioning support, and starts the service thread. Error: one line naming the URL:
  // unreachable, login refused, LUN smaller than `size`, block size mismatch.
  static std::expected<std::unique_ptr<IscsiBackend>, std::string> open(const IscsiSpec& spec);
  ~IscsiBackend() override;  // logs out; requests still queued complete with kUnreachable
  IscsiBackend(const IscsiBackend&) = delete;
  IscsiBackend& operator=(const IscsiBackend&) = delete;

  uint64_t size() const override;
  bool supports(IoOp op) const override;
  void submit(IoRequest& req) override;
  std::string describe() const override;
  // Refused: the remote LU's size belongs to the target that serves it.
  std::expected<void, std::string> resize(uint64_t bytes, bool reserve) override {
    (void)bytes;
    (void)reserve;
    return std::unexpected(describe() + ": a remote iSCSI LU's size is set by the target "
                                        "that serves it; resize it there");
  }

  // Logged in and usable now.
  bool connected() const;
  // Called on the service thread after every successful login (a mirror resynchronises a
  // member that came back). Set before I/O starts.
  void set_on_connect(std::function<void()> fn);

  struct Impl;

 private:
  explicit IscsiBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zuma::storage
