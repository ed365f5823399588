// make_concat (factory.hh): one address space made of several backends in order.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "storage/backend.hh"
#include "storage/factory.hh"
#include "storage/iovec_util.hh"
#include "storage/split_op.hh"

namespace zuma::storage {

namespace {

using detail::SplitOp;

class ConcatBackend final : public Backend {
 public:
  explicit ConcatBackend(std::vector<std::unique_ptr<Backend>> parts) : parts_(std::move(parts)) {
    starts_.reserve(parts_.size() + 1);
    uint64_t at = 0;
    for (const auto& p : parts_) {
      starts_.push_back(at);
      at += p->size();
    }
    starts_.push_back(at);
  }

  uint64_t size() const override { return starts_.back(); }
  std::expected<void, std::string> resize(uint64_t, bool) override {
    return std::unexpected(describe() +
                           ": a LU of concatenated sub-units cannot be resized (each sub-unit's "
                           "size places the ones after it; change the configuration instead)");
  }

  bool supports(IoOp op) const override {
    return std::all_of(parts_.begin(), parts_.end(),
                       [op](const auto& p) { return p->supports(op); });
  }

  int extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const override {
    if (offset >= size()) {
      *out = ExtentStatus{0, true};
      return 0;
    }
    const size_t p = part_at(offset);
    const uint64_t within = offset - starts_[p];
    return parts_[p]->extent_status(within, std::min(max_len, starts_[p + 1] - offset), out);
  }

  // Allocated: the sum. Available: the sum of the parts' own pools plus the largest shared
  // pool (parts on one file system share it; counting it once per part would overstate).
  int space_usage(SpaceUsage* out) const override {
    SpaceUsage total{0, 0, false};
    uint64_t shared = 0;
    for (const auto& part : parts_) {
      SpaceUsage u;
      if (const int r = part->space_usage(&u); r < 0) return r;
      total.allocated_bytes += u.allocated_bytes;
      if (u.available_shared) {
        shared = std::max(shared, u.available_bytes);
        total.available_shared = true;
      } else {
        total.available_bytes += u.available_bytes;
      }
    }
    total.available_bytes += shared;
    *out = total;
    return 0;
  }

  std::string describe() const override {
    std::string s = "concat(";
    for (size_t i = 0; i < parts_.size(); ++i) {
      if (i > 0) s += ", ";
      s += parts_[i]->describe();
    }
    return s + ")";
  }

  void submit(IoRequest& req) override {
    if (req.op == IoOp::kFlush) {
      if (parts_.size() == 1) return parts_[0]->submit(req);
      SplitOp* op = detail::t_split_pool.get();
      op->subs.resize(parts_.size());
      for (size_t p = 0; p < parts_.size(); ++p) {
        op->subs[p] = SplitOp::Sub{};
        op->subs[p].req.op = IoOp::kFlush;
        op->subs[p].part = p;
      }
      return start(op, req);
    }

    const uint64_t end = req.offset + req.length;
    if (end < req.offset || end > size()) return req.done(req, -EINVAL);
    if (req.length == 0) return req.done(req, 0);
    const bool data = req.op == IoOp::kRead || req.op == IoOp::kWrite;
    if (data && iov_total(req.iov, req.iovcnt) < req.length) return req.done(req, -EINVAL);

    const size_t first = part_at(req.offset);
    const size_t last = part_at(end - 1);
    if (first == last && starts_[first] == 0) {
      return parts_[first]->submit(req);  // same offsets: hand the request on as it is
    }

    SplitOp* op = detail::t_split_pool.get();
    if (first == last) {
      // Wholly inside one part: only the offset changes; the iovecs stay the parent's.
      op->subs.resize(1);
      SplitOp::Sub& sub = op->subs[0];
      sub = SplitOp::Sub{};
      sub.req = req;
      sub.req.offset = req.offset - starts_[first];
      sub.part = first;
      return start(op, req);
    }
    op->subs.resize(last - first + 1);
    size_t n = 0;
    for (size_t p = first; p <= last; ++p) {
      const uint64_t lo = std::max(req.offset, starts_[p]);
      const uint64_t hi = std::min(end, starts_[p + 1]);
      if (hi <= lo) continue;  // an empty part inside the range
      SplitOp::Sub& sub = op->subs[n++];
      sub = SplitOp::Sub{};
      sub.req.op = req.op;
      sub.req.fua = req.fua;
      sub.req.offset = lo - starts_[p];
      sub.req.length = hi - lo;
      sub.part = p;
      if (data) {
        sub.iov_begin = op->iovs.size();
        iov_slice(req.iov, req.iovcnt, lo - req.offset, hi - lo, op->iovs);
        sub.req.iovcnt = static_cast<int>(op->iovs.size() - sub.iov_begin);
      }
    }
    op->subs.resize(n);
    if (data) op->bind_iovs();  // only now: op->iovs may have reallocated meanwhile
    start(op, req);
  }

 private:
  // The part holding byte `off` (< size()); empty parts hold nothing.
  size_t part_at(uint64_t off) const {
    const auto it = std::upper_bound(starts_.begin(), starts_.end(), off);
    return static_cast<size_t>(it - starts_.begin()) - 1;
  }

  void start(SplitOp* op, IoRequest& parent) { detail::split_start(op, parent, parts_); }

  std::vector<std::unique_ptr<Backend>> parts_;
  std::vector<uint64_t> starts_;  // starts_[i]: first byte of part i; back(): size()
};

}  // namespace

std::unique_ptr<Backend> make_concat(std::vector<std::unique_ptr<Backend>> parts) {
  std::erase_if(parts, [](const auto& p) { return p == nullptr; });
  if (parts.size() == 1) return std::move(parts[0]);  // nothing to concatenate
  return std::make_unique<ConcatBackend>(std::move(parts));
}

}  // namespace zuma::storage
