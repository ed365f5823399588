// What the fuzz targets that talk to a replication peer over 127.0.0.1 TCP share
// (fuzz_replica_stream, fuzz_site_link): a scratch directory, blocking sends that give up
// when the peer closes, and reading until the peer closes.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <spdlog/spdlog.h>

namespace zuma::fuzz {

// The harness's own invariant failed: a finding (libFuzzer saves the input).
[[noreturn]] inline void fail(const char* target, const char* what) {
  std::fprintf(stderr, "%s: invariant broken: %s\n", target, what);
  std::abort();
}

// A directory made once (on /dev/shm when there is one: the replication files are synced
// at every write), removed at exit. The path lives on the heap: atexit handlers run after
// the destructors of statics made before them.
inline const std::filesystem::path& work_dir(const char* target) {
  static const std::filesystem::path* dir = [target] {
    std::error_code ec;
    const std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec)
                                           ? std::filesystem::path("/dev/shm")
                                           : std::filesystem::temp_directory_path();
    std::string t = (base / (std::string("zuma-") + target + "-XXXXXX")).string();
    if (!::mkdtemp(t.data())) fail(target, "mkdtemp");
    auto* p = new std::filesystem::path(t);
    std::atexit([] {
      std::error_code e;
      std::filesystem::remove_all(*dir, e);
    });
    return p;
  }();
  return *dir;
}

// All of p[0..n), unless the peer closed first: what it read so far is the input.
inline void write_all(int fd, const uint8_t* p, size_t n) {
  while (n) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    p += r;
    n -= size_t(r);
  }
}

// Reads (and drops) what the peer sends until it closes the connection: false if it has
// not within `limit`.
inline bool drain_until_closed(int fd, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::vector<uint8_t> buf(1 << 16);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) return true;
  }
  return false;
}

// The code under test logs nothing unless ZUMA_FUZZ_LOG names a level (debug, info...).
inline void log_level_from_env() {
  const char* lvl = std::getenv("ZUMA_FUZZ_LOG");
  spdlog::set_level(lvl ? spdlog::level::from_str(lvl) : spdlog::level::off);
}

}  // namespace zuma::fuzz
