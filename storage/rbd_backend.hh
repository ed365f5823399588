// The rbd backend: a sub-unit on a Ceph RADOS block device image through librbd's async C
// API (DESIGN.md: storage/, docs/DISTRIBUTED.md "Ceph RBD sub-units").
//
// Threading: librbd runs its own threads. submit() starts the operation on the calling
// reactor thread (rbd_aio_*: no blocking); librbd calls back on one of its threads, which
// posts the completion to the submitting thread's IoContext (IoContext::post), so done()
// runs on that thread (backend.hh). A thread without an IoContext blocks in submit() until
// the request is done (startup, tests).
//
// Failure handling: every operation is bounded by `timeout_s` (librados
// rados_osd_op_timeout; the connection by client_mount_timeout and rados_mon_op_timeout). An
// operation that times out or finds the cluster gone (ETIMEDOUT, ENOTCONN, ESHUTDOWN: this
// client blocklisted) completes with kUnreachable (the LU reports NOT READY); librados keeps
// reconnecting by itself, and later operations succeed once the OSDs answer again. Other
// librbd errors complete as they are (-errno).
//
// Mapping: kRead/kWrite -> rbd_aio_readv/rbd_aio_writev, kFlush -> rbd_aio_flush, kDiscard
// -> rbd_aio_discard, kWriteZeroes -> rbd_aio_write_zeroes. librbd's cache is off
// (rbd_cache=false), so a write is on every replica when it completes (RADOS acknowledges
// after the commit) and FUA needs nothing more; rbd_skip_partial_discard=false, so a
// discard of part of an object zeroes that part (backend.hh: discarded bytes read as zeros).
// Operation records are pooled (librbd itself allocates its completion and request state).
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include "storage/backend.hh"

namespace zuma::storage {

struct RbdSpec {
  std::string pool;
  std::string image;           // must exist (created by the Ceph administrator: rbd create)
  std::string user = "admin";  // the cephx client id (client.<user>)
  std::string keyring;         // empty: as ceph.conf says (or librados' default paths)
  std::string ceph_conf;       // empty: librados' search ($CEPH_CONF, /etc/ceph/ceph.conf)
  std::string mon_host;        // empty: ceph.conf's
  uint64_t size = 0;           // bytes the sub-unit needs; the image must hold at least this
  uint32_t timeout_s = 10;     // connecting, and each operation
};

class RbdBackend final : public Backend {
 public:
  // Connects (bounded by timeout_s), opens the image and checks its size. Error: one line
  // naming pool/image: cluster unreachable, authentication refused, no such pool or image,
  // image smaller than `size`.
  static std::expected<std::unique_ptr<RbdBackend>, std::string> open(const RbdSpec& spec);
  // Waits for the operations in flight (each bounded by the timeout), then closes the image
  // and the cluster connection.
  ~RbdBackend() override;
  RbdBackend(const RbdBackend&) = delete;
  RbdBackend& operator=(const RbdBackend&) = delete;

  uint64_t size() const override;
  bool supports(IoOp op) const override;
  void submit(IoRequest& req) override;
  std::string describe() const override;  // "rbd:POOL/IMAGE"
  // Refused: the image's size belongs to the Ceph administrator (rbd resize).
  std::expected<void, std::string> resize(uint64_t bytes, bool reserve) override {
    (void)bytes;
    (void)reserve;
    return std::unexpected(describe() +
                           ": an RBD image is resized by its Ceph administrator (rbd resize), "
                           "then the LU's size in the config");
  }

  struct Impl;

 private:
  explicit RbdBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zuma::storage
