#include "storage/null_backend.hh"

#include <cerrno>

#include <fmt/format.h>

#include "storage/iovec_util.hh"

namespace zuma::storage {

void NullBackend::submit(IoRequest& req) {
  if (req.op != IoOp::kFlush && (req.offset + req.length < req.offset ||
                                 req.offset + req.length > size_.load(std::memory_order_relaxed))) {
    req.done(req, -EINVAL);
    return;
  }
  if (req.op == IoOp::kRead) {
    if (iov_total(req.iov, req.iovcnt) < req.length) {
      req.done(req, -EINVAL);
      return;
    }
    iov_zero(req.iov, req.iovcnt, 0, req.length);
  }
  req.done(req, 0);
}

std::string NullBackend::describe() const {
  return fmt::format("null:{}", size());
}

std::expected<void, std::string> NullBackend::resize(uint64_t bytes, bool) {
  if (bytes == 0) return std::unexpected(describe() + ": the size must not be 0");
  size_.store(bytes, std::memory_order_relaxed);
  return {};
}

}  // namespace zuma::storage
