// make_striped (factory.hh): RAID-0 style round robin over equal parts.
//
// Byte `off` lies in stripe unit u = off / unit, on part u % n, at part offset
// (u / n) * unit + off % unit. The units a request touches on one part are consecutive
// there, so a request becomes at most one sub-request per part (more only when a part's
// slice of the caller's iovecs would exceed kMaxIov entries), each gathering its pieces of
// the caller's buffers without copying them.
#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "storage/backend.hh"
#include "storage/factory.hh"
#include "storage/iovec_util.hh"
#include "storage/split_op.hh"

namespace zuma::storage {

namespace {

using detail::SplitOp;

// readv/writev take at most IOV_MAX (1024) entries.
constexpr int kMaxIov = IOV_MAX;

class StripedBackend final : public Backend {
 public:
  StripedBackend(std::vector<std::unique_ptr<Backend>> parts, uint64_t unit, uint64_t size)
      : parts_(std::move(parts)), unit_(unit), shift_(std::countr_zero(unit)), size_(size) {}

  uint64_t size() const override { return size_; }
  std::expected<void, std::string> resize(uint64_t, bool) override {
    return std::unexpected(describe() +
                           ": a striped LU cannot be resized (every sub-unit would need to grow "
                           "at once)");
  }

  bool supports(IoOp op) const override {
    return std::all_of(parts_.begin(), parts_.end(),
                       [op](const auto& p) { return p->supports(op); });
  }

  std::string describe() const override {
    std::string s = fmt::format("striped({}", unit_);
    for (const auto& p : parts_) s += ", " + p->describe();
    return s + ")";
  }

  int extent_status(uint64_t offset, uint64_t max_len, ExtentStatus* out) const override {
    if (offset >= size_) {
      *out = ExtentStatus{0, true};
      return 0;
    }
    const uint64_t in_unit = offset & (unit_ - 1);
    const uint64_t len = std::min({max_len, unit_ - in_unit, size_ - offset});
    const auto [part, at] = locate(offset);
    return parts_[part]->extent_status(at, len, out);
  }

  int space_usage(SpaceUsage* out) const override {
    SpaceUsage total{0, 0, false};
    uint64_t shared = 0;
    for (const auto& part : parts_) {
      SpaceUsage u;
      if (const int r = part->space_usage(&u); r < 0) return r;
      total.allocated_bytes += u.allocated_bytes;
      if (u.available_shared) {
        shared = std::max(shared, u.available_bytes);  // one file system counted once
        total.available_shared = true;
      } else {
        total.available_bytes += u.available_bytes;
      }
    }
    total.available_bytes += shared;
    *out = total;
    return 0;
  }

  void submit(IoRequest& req) override {
    SplitOp* op = nullptr;
    if (req.op == IoOp::kFlush) {
      op = detail::t_split_pool.get();
      op->subs.resize(parts_.size());
      for (size_t p = 0; p < parts_.size(); ++p) {
        op->subs[p] = SplitOp::Sub{};
        op->subs[p].req.op = IoOp::kFlush;
        op->subs[p].part = p;
      }
      return detail::split_start(op, req, parts_);
    }
    const uint64_t end = req.offset + req.length;
    if (end < req.offset || end > size_) return req.done(req, -EINVAL);
    if (req.length == 0) return req.done(req, 0);
    const bool data = req.op == IoOp::kRead || req.op == IoOp::kWrite;
    if (data && iov_total(req.iov, req.iovcnt) < req.length) return req.done(req, -EINVAL);

    op = detail::t_split_pool.get();
    const uint64_t first_unit = req.offset >> shift_;
    const uint64_t last_unit = (end - 1) >> shift_;
    if (first_unit == last_unit) {
      // Inside one stripe unit: only the offset changes; the iovecs stay the caller's.
      const auto [part, at] = locate(req.offset);
      SplitOp::Sub& sub = op->subs.emplace_back();
      sub.req = req;
      sub.req.offset = at;
      sub.part = part;
      return detail::split_start(op, req, parts_);
    }
    const uint64_t n = parts_.size();
    const uint64_t parts_touched = std::min<uint64_t>(n, last_unit - first_unit + 1);
    for (uint64_t k = 0; k < parts_touched; ++k) {
      // Part p's units among [first_unit, last_unit]: first_unit + k, then every n-th.
      const uint64_t u0 = first_unit + k;
      const size_t part = static_cast<size_t>(u0 % n);
      IovCursor cursor(req.iov, req.iovcnt);
      uint64_t consumed = 0;  // parent bytes the cursor has passed
      SplitOp::Sub* sub = nullptr;
      for (uint64_t u = u0; u <= last_unit; u += n) {
        const uint64_t lo = std::max(req.offset, u << shift_);
        const uint64_t hi = std::min(end, (u + 1) << shift_);
        const bool full = sub != nullptr && data &&
                          op->iovs.size() - sub->iov_begin +
                                  iov_pieces(cursor, lo - req.offset - consumed, hi - lo) >
                              static_cast<size_t>(kMaxIov);
        if (sub == nullptr || full) {
          sub = &op->subs.emplace_back();
          sub->req.op = req.op;
          sub->req.fua = req.fua;
          sub->req.offset = locate(lo).second;
          sub->part = part;
          sub->iov_begin = op->iovs.size();
        }
        sub->req.length += hi - lo;
        if (data) {
          consumed += cursor.advance(lo - req.offset - consumed);
          consumed += cursor.for_each(hi - lo, [&](uint8_t* ptr, size_t len) {
            op->iovs.push_back(iovec{ptr, len});
          });
          sub->req.iovcnt = static_cast<int>(op->iovs.size() - sub->iov_begin);
        }
      }
    }
    if (data) op->bind_iovs();
    detail::split_start(op, req, parts_);
  }

 private:
  // (part, offset in the part) of byte `off`.
  std::pair<size_t, uint64_t> locate(uint64_t off) const {
    const uint64_t u = off >> shift_;
    const uint64_t n = parts_.size();
    return {static_cast<size_t>(u % n), ((u / n) << shift_) | (off & (unit_ - 1))};
  }

  // How many iovec pieces `len` bytes take after skipping `skip` from the cursor (a copy).
  static size_t iov_pieces(IovCursor c, uint64_t skip, uint64_t len) {
    c.advance(skip);
    size_t pieces = 0;
    c.for_each(len, [&](uint8_t*, size_t) { ++pieces; });
    return pieces;
  }

  std::vector<std::unique_ptr<Backend>> parts_;
  uint64_t unit_;
  int shift_;
  uint64_t size_;
};

}  // namespace

std::expected<std::unique_ptr<Backend>, std::string> make_striped(
    std::vector<std::unique_ptr<Backend>> parts, uint64_t stripe_unit, uint64_t size) {
  using R = std::expected<std::unique_ptr<Backend>, std::string>;
  if (parts.empty()) return R(std::unexpect, "a striped layout needs at least one sub-unit");
  if (stripe_unit == 0 || (stripe_unit & (stripe_unit - 1)) != 0)
    return R(std::unexpect, fmt::format("stripe unit {} is not a power of two", stripe_unit));
  if (std::any_of(parts.begin(), parts.end(), [](const auto& p) { return p == nullptr; }))
    return R(std::unexpect, "a striped layout cannot have an empty sub-unit");
  const uint64_t n = parts.size();
  const uint64_t stripes = size / (n * stripe_unit) + (size % (n * stripe_unit) != 0 ? 1 : 0);
  const uint64_t need = stripes * stripe_unit;
  for (const auto& p : parts) {
    if (p->size() < need)
      return R(std::unexpect,
               fmt::format("striped sub-unit {} holds {} bytes; {} x {} bytes need {} bytes each",
                           p->describe(), p->size(), n, stripe_unit, need));
  }
  return R(std::make_unique<StripedBackend>(std::move(parts), stripe_unit, size));
}

}  // namespace zuma::storage
