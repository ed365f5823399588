// A progress bar for long operations (resync, initial sync, copy): percentage, bar, rate
// and ETA on one terminal line, redrawn in place.
//   [#########.........]  48%  1.2 GiB/2.5 GiB  310 MiB/s  ETA 0:04
// Redraws at most every `min_interval`; prints nothing when `out` is not a terminal
// unless forced (then one line per update, for logs).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace zuma::admin {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label, uint64_t total, std::FILE* out = stderr,
                       std::chrono::milliseconds min_interval = std::chrono::milliseconds(200));
  // `done` of `total` units (bytes) so far; draws if due.
  void update(uint64_t done);
  // Draws the final state and ends the line.
  void finish();
  // The line for `done` after `elapsed` (no terminal codes); public for tests.
  std::string line(uint64_t done, std::chrono::duration<double> elapsed) const;

 private:
  std::string label_;
  uint64_t total_;
  std::FILE* out_;
  bool tty_;
  std::chrono::milliseconds min_interval_;
  std::chrono::steady_clock::time_point start_, last_draw_{};
  uint64_t done_ = 0;
};

// "1.5 GiB", "512 B" (binary units).
std::string human_bytes(double bytes);

}  // namespace zuma::admin
