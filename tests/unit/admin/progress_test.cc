// admin/progress.cc: the progress line (rate, ETA) and human sizes.
#include "admin/progress.hh"

#include <doctest/doctest.h>

using namespace zuma::admin;

TEST_CASE("human_bytes") {
  CHECK(human_bytes(512) == "512 B");
  CHECK(human_bytes(1536) == "1.5 KiB");
  CHECK(human_bytes(3.0 * 1024 * 1024 * 1024) == "3.0 GiB");
}

TEST_CASE("ProgressBar::line: fraction, rate and ETA") {
  ProgressBar bar("resync", 100u << 20, nullptr);
  CHECK(bar.line(25u << 20, std::chrono::seconds(5)) ==
        "resync [######..................]  25%  25.0 MiB/100.0 MiB  5.0 MiB/s  ETA 0:15");
  CHECK(bar.line(100u << 20, std::chrono::seconds(20)) ==
        "resync [########################] 100%  100.0 MiB/100.0 MiB  5.0 MiB/s  ETA 0:00");
  CHECK(bar.line(0, std::chrono::seconds(0)).ends_with("ETA --:--"));
  ProgressBar slow("", 10000, nullptr);
  CHECK(slow.line(1, std::chrono::seconds(1)).ends_with("ETA 2:46:39"));
}
