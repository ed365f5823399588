#include "admin/progress.hh"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

namespace zuma::admin {

std::string human_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024 && u < 5) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[u]);
}

ProgressBar::ProgressBar(std::string label, uint64_t total, std::FILE* out,
                         std::chrono::milliseconds min_interval)
    : label_(std::move(label)),
      total_(total),
      out_(out),
      tty_(out && ::isatty(fileno(out))),
      min_interval_(min_interval),
      start_(std::chrono::steady_clock::now()) {}

std::string ProgressBar::line(uint64_t done, std::chrono::duration<double> elapsed) const {
  constexpr int kWidth = 24;
  const double frac = total_ ? std::min(1.0, double(done) / double(total_)) : 1.0;
  const int filled = int(frac * kWidth);
  std::string bar(size_t(filled), '#');
  bar.append(size_t(kWidth - filled), '.');
  const double secs = elapsed.count();
  const double rate = secs > 0 ? double(done) / secs : 0;
  std::string eta = "--:--";
  if (rate > 0 && done < total_) {
    const auto left = uint64_t(double(total_ - done) / rate);
    eta = left >= 3600 ? fmt::format("{}:{:02}:{:02}", left / 3600, left / 60 % 60, left % 60)
                       : fmt::format("{}:{:02}", left / 60, left % 60);
  } else if (done >= total_) {
    eta = "0:00";
  }
  return fmt::format("{}[{}] {:3.0f}%  {}/{}  {}/s  ETA {}", label_.empty() ? "" : label_ + " ",
                     bar, frac * 100, human_bytes(double(done)), human_bytes(double(total_)),
                     human_bytes(rate), eta);
}

void ProgressBar::update(uint64_t done) {
  done_ = done;
  if (!out_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < min_interval_) return;
  last_draw_ = now;
  if (tty_) {
    std::fprintf(out_, "\r\033[K%s", line(done, now - start_).c_str());
    std::fflush(out_);
  }
}

void ProgressBar::finish() {
  if (!out_) return;
  const auto s = line(done_, std::chrono::steady_clock::now() - start_);
  std::fprintf(out_, tty_ ? "\r\033[K%s\n" : "%s\n", s.c_str());
  std::fflush(out_);
}

}  // namespace zuma::admin
