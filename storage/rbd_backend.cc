// RbdBackend (rbd_backend.hh): an RBD image through librbd's async C API.
#include "storage/rbd_backend.hh"
#include "storage/op_pool.hh"

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "storage/io_context.hh"

namespace zuma::storage {

namespace {

// One request on its way through librbd. Pooled by the backend.
struct Op {
  RbdBackend::Impl* impl = nullptr;
  IoRequest* req = nullptr;
  IoContext* ctx = nullptr;  // where to post the completion; nullptr: the submitter waits
  PostedWork work;
  int result = 0;
  std::vector<iovec> iov;  // the request's buffers cut to its length, when they are longer
  std::atomic<bool> sync_done{false};
  Op* next = nullptr;  // the free list
};

// librados/librbd errors that mean "the cluster cannot be reached now": the operation timed
// out (rados_osd_op_timeout), the connection is gone, or this client was blocklisted.
bool unreachable(int err) {
  switch (err) {
    case ETIMEDOUT:
    case ENOTCONN:
    case ESHUTDOWN:  // EBLOCKLISTED
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
      return true;
    default:
      return false;
  }
}

std::string error_text(int r) {
  return std::strerror(r < 0 ? -r : r);
}

// A connected librados handle, shared by every image opened with the same connection
// settings: each handle runs its own messenger, timer and completion threads and monitor
// session, which one zumad needs once per cluster and user, not once per sub-unit.
struct Cluster {
  rados_t handle = nullptr;
  ~Cluster() {
    if (handle != nullptr) rados_shutdown(handle);
  }
};

std::mutex g_clusters_mu;
std::map<std::string, std::weak_ptr<Cluster>> g_clusters;  // by connection settings

// Connects as spec.user with spec's settings, or returns the live connection made with the
// same ones. Error: what failed and its errno text.
std::expected<std::shared_ptr<Cluster>, std::string> connect(const RbdSpec& spec) {
  using R = std::expected<std::shared_ptr<Cluster>, std::string>;
  std::string user = spec.user.empty() ? "admin" : spec.user;
  if (user.starts_with("client.")) user.erase(0, 7);
  const std::string timeout = std::to_string(spec.timeout_s ? spec.timeout_s : 10);
  const std::string key =
      fmt::format("{}\n{}\n{}\n{}\n{}", spec.ceph_conf, user, spec.keyring, spec.mon_host, timeout);
  // Held while connecting: opens happen at startup or on a live LU change, one at a time.
  std::lock_guard lock(g_clusters_mu);
  if (auto live = g_clusters[key].lock()) return R(std::move(live));
  auto c = std::make_shared<Cluster>();
  const auto fail = [](std::string_view what, int r) {
    return R(std::unexpect, fmt::format("{}: {}", what, error_text(r)));
  };
  int r = rados_create(&c->handle, user.c_str());
  if (r < 0) return fail("cannot create a cluster handle", r);
  r = rados_conf_read_file(c->handle, spec.ceph_conf.empty() ? nullptr : spec.ceph_conf.c_str());
  // No ceph.conf is fine when mon_host says where the cluster is.
  if (r < 0 && !(r == -ENOENT && spec.ceph_conf.empty() && !spec.mon_host.empty()))
    return fail(spec.ceph_conf.empty() ? "ceph.conf" : spec.ceph_conf, r);
  const std::pair<const char*, std::string> options[] = {
      {"keyring", spec.keyring},
      {"mon_host", spec.mon_host},
      {"client_mount_timeout", timeout},
      {"rados_mon_op_timeout", timeout},
      {"rados_osd_op_timeout", timeout},
      {"rbd_cache", "false"},
      {"rbd_skip_partial_discard", "false"},
  };
  for (const auto& [k, value] : options) {
    if (value.empty()) continue;
    if ((r = rados_conf_set(c->handle, k, value.c_str())) < 0)
      return fail(fmt::format("setting {}", k), r);
  }
  if ((r = rados_connect(c->handle)) < 0) {
    return fail(r == -ETIMEDOUT ? fmt::format("no cluster answered within {} s", timeout)
                                : std::string("connecting to the cluster"),
                r);
  }
  g_clusters[key] = c;
  return R(std::move(c));
}

}  // namespace

struct RbdBackend::Impl {
  RbdSpec spec;
  uint64_t size = 0;
  std::shared_ptr<Cluster> cluster;  // released last (after the image and the pool context)
  rados_ioctx_t io = nullptr;
  rbd_image_t image = nullptr;

  OpPool<Op, Impl> ops{this};
  std::atomic<uint64_t> in_flight{0};
  std::atomic<bool> warned{false};  // one warning per outage, not one per failed I/O

  ~Impl() {
    if (image != nullptr) rbd_close(image);
    if (io != nullptr) rados_ioctx_destroy(io);
  }

  Op* get_op() { return ops.get(); }
  void put_op(Op* op) { ops.put(op); }

  static void run_posted(void* arg) {
    Op* op = static_cast<Op*>(arg);
    IoRequest* req = op->req;
    const int result = op->result;
    Impl* self = op->impl;
    self->put_op(op);  // before done(), which may submit again
    self->in_flight.fetch_sub(1, std::memory_order_release);
    req->done(*req, result);
  }

  // librbd's thread (or the submitter's, when librbd refused the operation).
  void finish(Op* op, int result) {
    if (result < 0 && unreachable(-result)) {
      if (!warned.exchange(true, std::memory_order_relaxed)) {
        spdlog::warn("rbd {}/{}: {}; I/O fails with NOT READY until the cluster answers", spec.pool,
                     spec.image, error_text(result));
      }
      result = kUnreachable;
    } else if (result >= 0 && warned.load(std::memory_order_relaxed)) {
      if (warned.exchange(false, std::memory_order_relaxed))
        spdlog::info("rbd {}/{}: the cluster answers again", spec.pool, spec.image);
    }
    op->result = result < 0 ? result : 0;
    if (op->ctx != nullptr) {
      op->work.run = &run_posted;
      op->work.arg = op;
      op->ctx->post(op->work);
    } else {
      op->sync_done.store(true, std::memory_order_release);
      op->sync_done.notify_one();
    }
  }

  static void on_complete(rbd_completion_t c, void* arg) {
    Op* op = static_cast<Op*>(arg);
    const ssize_t r = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    op->impl->finish(op, r < 0 ? static_cast<int>(r) : 0);
  }

  // Starts `op` in librbd; a refusal completes it at once.
  void start(Op* op) {
    const IoRequest& r = *op->req;
    rbd_completion_t c = nullptr;
    int rc = rbd_aio_create_completion(op, &on_complete, &c);
    if (rc < 0) return finish(op, rc);
    const iovec* iov = op->iov.empty() ? r.iov : op->iov.data();
    const int iovcnt = op->iov.empty() ? r.iovcnt : static_cast<int>(op->iov.size());
    switch (r.op) {
      case IoOp::kRead:
        rc = rbd_aio_readv(image, iov, iovcnt, r.offset, c);
        break;
      case IoOp::kWrite:
        rc = rbd_aio_writev(image, iov, iovcnt, r.offset, c);
        break;
      case IoOp::kFlush:
        rc = rbd_aio_flush(image, c);
        break;
      case IoOp::kDiscard:
        rc = rbd_aio_discard(image, r.offset, r.length, c);
        break;
      case IoOp::kWriteZeroes:
        rc = rbd_aio_write_zeroes(image, r.offset, r.length, c, 0, 0);
        break;
    }
    if (rc < 0) {
      rbd_aio_release(c);
      finish(op, rc);
    }
  }
};

RbdBackend::RbdBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::expected<std::unique_ptr<RbdBackend>, std::string> RbdBackend::open(const RbdSpec& spec) {
  using R = std::expected<std::unique_ptr<RbdBackend>, std::string>;
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  Impl& im = *impl;
  const std::string name = fmt::format("rbd {}/{}", spec.pool, spec.image);
  const auto fail = [&](std::string_view what, int r) {
    return R(std::unexpect, fmt::format("{}: {}: {}", name, what, error_text(r)));
  };
  if (spec.pool.empty() || spec.image.empty())
    return R(std::unexpect, "rbd: the sub-unit needs a pool and an image");
  if (spec.size == 0) return R(std::unexpect, name + ": the sub-unit needs a size");

  auto cluster = connect(spec);
  if (!cluster) return R(std::unexpect, fmt::format("{}: {}", name, cluster.error()));
  im.cluster = std::move(*cluster);
  int r;
  if ((r = rados_ioctx_create(im.cluster->handle, spec.pool.c_str(), &im.io)) < 0)
    return fail(r == -ENOENT ? "no such pool" : "opening the pool", r);
  if ((r = rbd_open(im.io, spec.image.c_str(), &im.image, nullptr)) < 0) {
    if (r == -ENOENT) {
      return R(std::unexpect, fmt::format("{}: no such image (create it: rbd create --size {} "
                                          "{}/{})",
                                          name, spec.size, spec.pool, spec.image));
    }
    return fail("opening the image", r);
  }
  uint64_t bytes = 0;
  if ((r = rbd_get_size(im.image, &bytes)) < 0) return fail("reading the image size", r);
  if (bytes < spec.size) {
    return R(std::unexpect,
             fmt::format("{}: the image holds {} bytes, the sub-unit needs {} (grow it: rbd resize "
                         "--size {} {}/{})",
                         name, bytes, spec.size, spec.size, spec.pool, spec.image));
  }
  im.size = spec.size;
  return R(std::unique_ptr<RbdBackend>(new RbdBackend(std::move(impl))));
}

RbdBackend::~RbdBackend() {
  // Completions still to come would touch the pool; each is bounded by the op timeout.
  while (impl_->in_flight.load(std::memory_order_acquire) != 0) {
    if (IoContext* ctx = IoContext::current()) ctx->poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

uint64_t RbdBackend::size() const {
  return impl_->size;
}

bool RbdBackend::supports(IoOp op) const {
  (void)op;
  return true;  // read, write, flush, discard, write zeroes
}

std::string RbdBackend::describe() const {
  return fmt::format("rbd:{}/{}", impl_->spec.pool, impl_->spec.image);
}

void RbdBackend::submit(IoRequest& req) {
  Impl& im = *impl_;
  if (req.op != IoOp::kFlush) {
    const uint64_t end = req.offset + req.length;
    if (end < req.offset || end > im.size) return req.done(req, -EINVAL);
    if (req.length == 0) return req.done(req, 0);
  }
  Op* op = im.get_op();
  op->req = &req;
  op->ctx = IoContext::current();
  op->result = 0;
  op->iov.clear();
  if (req.op == IoOp::kRead || req.op == IoOp::kWrite) {
    // librbd transfers the iovecs' whole length: cut them to the request's.
    uint64_t total = 0;
    for (int i = 0; i < req.iovcnt; ++i) total += req.iov[i].iov_len;
    if (total < req.length || req.iovcnt > IOV_MAX) {
      im.put_op(op);
      return req.done(req, -EINVAL);
    }
    if (total > req.length) {
      uint64_t left = req.length;
      for (int i = 0; i < req.iovcnt && left > 0; ++i) {
        const uint64_t n = std::min<uint64_t>(left, req.iov[i].iov_len);
        if (n > 0) op->iov.push_back(iovec{req.iov[i].iov_base, n});
        left -= n;
      }
    }
  }
  im.in_flight.fetch_add(1, std::memory_order_relaxed);
  if (op->ctx != nullptr) return im.start(op);
  // No reactor here: wait (bounded by the operation timeout) and complete inline.
  op->sync_done.store(false, std::memory_order_relaxed);
  im.start(op);
  op->sync_done.wait(false, std::memory_order_acquire);
  const int result = op->result;
  im.put_op(op);
  im.in_flight.fetch_sub(1, std::memory_order_release);
  req.done(req, result);
}

}  // namespace zuma::storage
