// A log-linear latency histogram (the HdrHistogram layout, simplified) for zuma-bench.
//
// Values are unsigned 64-bit integers (zuma-bench records nanoseconds). Values below
// kSub are counted exactly; above that, every power-of-two range [2^e, 2^(e+1)) is split
// into kSub equal buckets, so a reported percentile is within 1/kSub (1.6%) of the true
// value. The bucket array is fixed (no allocation after construction, none per record()),
// which keeps the I/O path free of heap traffic.
//
// Threading: not thread-safe; each load thread owns one and the results are merged after
// the threads are joined.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace zuma::bench {

class LatencyHistogram {
 public:
  static constexpr unsigned kSubBits = 6;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;  // buckets per power of two
  // Exact buckets [0, kSub) plus kSub buckets for each exponent kSubBits..63.
  static constexpr size_t kBuckets = kSub + (64 - kSubBits) * kSub;

  void record(uint64_t v) {
    ++counts_[index_of(v)];
    ++count_;
    sum_ += v;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
  }

  void merge(const LatencyHistogram& o) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    sum_ += o.sum_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
  }

  void reset() { *this = LatencyHistogram{}; }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0.0; }

  // The value at percentile p (0..100): the midpoint of the bucket holding the sample of
  // rank ceil(p/100 * count), clamped to [min, max] so p0 and p100 are exact.
  uint64_t percentile(double p) const {
    if (count_ == 0) return 0;
    p = std::clamp(p, 0.0, 100.0);
    uint64_t rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(count_) + 0.999999);
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        const uint64_t mid = lower_bound_of(i) + (width_of(i) - 1) / 2;
        return std::clamp(mid, min(), max_);
      }
    }
    return max_;
  }

  // Bucket layout, public for tests.
  static constexpr size_t index_of(uint64_t v) {
    if (v < kSub) return static_cast<size_t>(v);
    const unsigned e = 63 - static_cast<unsigned>(std::countl_zero(v));  // e >= kSubBits
    const unsigned shift = e - kSubBits;
    return static_cast<size_t>(kSub + shift * kSub + ((v >> shift) - kSub));
  }
  static constexpr uint64_t lower_bound_of(size_t i) {
    if (i < kSub) return i;
    const uint64_t shift = (i - kSub) / kSub;
    const uint64_t sub = (i - kSub) % kSub;
    return (kSub + sub) << shift;
  }
  static constexpr uint64_t width_of(size_t i) {
    return i < kSub ? 1 : uint64_t{1} << ((i - kSub) / kSub);
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

static_assert(LatencyHistogram::index_of(LatencyHistogram::kSub - 1) == LatencyHistogram::kSub - 1);
static_assert(LatencyHistogram::index_of(LatencyHistogram::kSub) == LatencyHistogram::kSub);
static_assert(LatencyHistogram::index_of(~uint64_t{0}) == LatencyHistogram::kBuckets - 1);
static_assert(LatencyHistogram::lower_bound_of(LatencyHistogram::index_of(1000)) <= 1000);
static_assert(LatencyHistogram::lower_bound_of(LatencyHistogram::index_of(1000)) +
                  LatencyHistogram::width_of(LatencyHistogram::index_of(1000)) >
              1000);

}  // namespace zuma::bench
