#include "replication/seq_state.hh"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace zuma::replication {
namespace {

constexpr uint64_t kMagic = 0x5154535141525a5aULL;  // "ZZRAQSTQ"
constexpr size_t kSlot = 4096;

struct Slot {
  uint64_t magic;
  uint64_t generation;
  uint64_t seq;
  uint64_t log_id;
  uint64_t checksum;  // XXH3-64 of the first 32 bytes
};

uint64_t sum(const Slot& s) { return XXH3_64bits(&s, offsetof(Slot, checksum)); }

}  // namespace

std::expected<SeqStateFile, std::string> SeqStateFile::open(const std::string& path) {
  SeqStateFile f;
  f.path_ = path;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return std::unexpected(fmt::format("{}: {}", path, std::strerror(errno)));
  f.fd_.reset(fd);
  Slot best{};
  bool found = false;
  bool damaged = false;
  for (int i = 0; i < 2; ++i) {
    Slot s{};
    ssize_t r = ::pread(fd, &s, sizeof(s), off_t(i * kSlot));
    if (r != ssize_t(sizeof(s))) continue;  // a new (short) file
    if (s.magic != kMagic) {
      damaged |= s.magic != 0;
      continue;
    }
    if (s.checksum != sum(s)) {
      damaged = true;
      continue;
    }
    if (!found || s.generation > best.generation) best = s, found = true;
  }
  if (!found && damaged)
    return std::unexpected(fmt::format("{}: replication state is damaged (both slots fail their checksum)", path));
  if (found) {
    f.generation_ = best.generation;
    f.value_ = SeqState{best.seq, best.log_id};
  }
  return f;
}

int SeqStateFile::store(const SeqState& v) {
  Slot s{kMagic, generation_ + 1, v.seq, v.log_id, 0};
  s.checksum = sum(s);
  uint8_t buf[kSlot] = {};
  std::memcpy(buf, &s, sizeof(s));
  const off_t off = off_t((s.generation % 2) * kSlot);
  for (size_t done = 0; done < kSlot;) {
    ssize_t r = ::pwrite(fd_.get(), buf + done, kSlot - done, off + off_t(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    done += size_t(r);
  }
  if (::fdatasync(fd_.get()) != 0) return -errno;
  generation_ = s.generation;
  value_ = v;
  return 0;
}

}  // namespace zuma::replication
