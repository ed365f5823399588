#include "storage/file_backend.hh"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "tests/unit/storage/test_util.hh"

using namespace zuma::storage;
using namespace zuma::storage::test;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// Runs one request to completion: inline without a context, through the ring with one.
// Checks done() ran exactly once and returns its result.
int run(Backend& b, IoRequest req, IoContext* ctx) {
  Done d;
  req.done = &record_done;
  req.user = &d;
  b.submit(req);
  if (ctx != nullptr) {
    REQUIRE(drive(*ctx, [&] { return d.calls > 0; }));
    CHECK(ctx->in_flight() == 0);
  }
  CHECK(d.calls == 1);
  return d.result;
}

IoRequest rw(IoOp op, uint64_t off, const iovec* iov, int cnt, uint64_t len, bool fua = false) {
  IoRequest r;
  r.op = op;
  r.offset = off;
  r.length = len;
  r.iov = iov;
  r.iovcnt = cnt;
  r.fua = fua;
  return r;
}

IoRequest range(IoOp op, uint64_t off, uint64_t len) {
  IoRequest r;
  r.op = op;
  r.offset = off;
  r.length = len;
  return r;
}

int write_bytes(Backend& b, uint64_t off, std::vector<uint8_t>& data, IoContext* ctx,
                bool fua = false) {
  iovec iov{data.data(), data.size()};
  return run(b, rw(IoOp::kWrite, off, &iov, 1, data.size(), fua), ctx);
}

std::vector<uint8_t> read_bytes(Backend& b, uint64_t off, size_t n, IoContext* ctx) {
  std::vector<uint8_t> v(n, 0xA5);
  iovec iov{v.data(), v.size()};
  CHECK(run(b, rw(IoOp::kRead, off, &iov, 1, n), ctx) == 0);
  return v;
}

bool all_zero(const std::vector<uint8_t>& v) {
  return std::all_of(v.begin(), v.end(), [](uint8_t x) { return x == 0; });
}

// Each test runs both ways: synchronously, and through a current IoContext.
struct Mode {
  explicit Mode(bool async) {
    if (async) cur.emplace(32);
  }
  IoContext* ctx() { return cur ? cur->get() : nullptr; }
  std::optional<CurrentContext> cur;
};

}  // namespace

TEST_CASE("FileBackend: a missing file is created sparse, 0600, with its parent directories") {
  TempDir dir;
  const std::string path = dir / "a/b/lu.img";
  auto b = FileBackend::open(path, 64 * kMiB);
  REQUIRE_MESSAGE(b.has_value(), b.error());
  CHECK((*b)->size() == 64 * kMiB);
  CHECK((*b)->describe() == "file:" + path);
  CHECK_FALSE((*b)->is_block_device());
  const struct stat st = stat_of(path);
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_size == static_cast<off_t>(64 * kMiB));
  CHECK(st.st_blocks * 512 < static_cast<blkcnt_t>(kMiB));  // sparse
  // /tmp is ext4 here; tmpfs would give PUNCH_HOLE only, still both true.
  CHECK((*b)->supports(IoOp::kRead));
  CHECK((*b)->supports(IoOp::kWrite));
  CHECK((*b)->supports(IoOp::kFlush));
  CHECK((*b)->supports(IoOp::kDiscard));
  CHECK((*b)->supports(IoOp::kWriteZeroes));
}

TEST_CASE("FileBackend: an existing file smaller than the LU is refused and left alone") {
  TempDir dir;
  const std::string path = dir / "small.img";
  write_file(path, 0, pattern(4096, 1));
  auto b = FileBackend::open(path, 8192);
  REQUIRE_FALSE(b.has_value());
  CHECK(b.error() == path + " is 4096 bytes, the LU needs 8192 (zuma never resizes existing data)");
  CHECK(stat_of(path).st_size == 4096);
  CHECK(read_file(path, 0, 4096) == pattern(4096, 1));
}

TEST_CASE("FileBackend: an existing bigger file is used as is; size 0 means the whole file") {
  TempDir dir;
  const std::string path = dir / "big.img";
  write_file(path, 0, pattern(3 * 4096, 2));
  {
    auto b = FileBackend::open(path, 4096);
    REQUIRE(b.has_value());
    CHECK((*b)->size() == 4096);
    CHECK(read_bytes(**b, 0, 4096, nullptr) == pattern(4096, 2));
    // Past the LU's end: refused, nothing written.
    auto data = pattern(512, 3);
    CHECK(write_bytes(**b, 4096 - 256, data, nullptr) == -EINVAL);
  }
  auto whole = FileBackend::open(path, 0);
  REQUIRE(whole.has_value());
  CHECK((*whole)->size() == 3 * 4096);
  CHECK(stat_of(path).st_size == 3 * 4096);
  CHECK(read_file(path, 0, 3 * 4096) == pattern(3 * 4096, 2));
}

TEST_CASE("FileBackend: open errors name the path and the errno text") {
  TempDir dir;
  SUBCASE("missing file and no size") {
    auto b = FileBackend::open(dir / "nope.img", 0);
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error() ==
          dir / "nope.img" + ": No such file or directory (give the LU a size to create it)");
    CHECK(::access((dir / "nope.img").c_str(), F_OK) != 0);
  }
  SUBCASE("a directory") {
    auto b = FileBackend::open(dir.path(), 4096);
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error() == dir.path() + ": not a regular file or block device");
  }
  SUBCASE("parent is a file") {
    write_file(dir / "plain", 0, pattern(10, 1));
    auto b = FileBackend::open(dir / "plain/lu.img", 4096);
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error().starts_with(dir / "plain/lu.img: cannot"));
    CHECK(b.error().find("Not a directory") != std::string::npos);
  }
  SUBCASE("no permission") {
    if (::geteuid() == 0) return;  // root ignores modes
    write_file(dir / "ro.img", 0, pattern(4096, 1));
    ::chmod((dir / "ro.img").c_str(), 0400);
    auto b = FileBackend::open(dir / "ro.img", 4096);
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error() == dir / "ro.img" + ": cannot open: Permission denied");
  }
  SUBCASE("empty path") {
    auto b = FileBackend::open("", 4096);
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error() == "file backend: no path given");
  }
}

TEST_CASE("FileBackend: writes and reads land at the right bytes") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    Mode m(async);
    TempDir dir;
    const std::string path = dir / "lu.img";
    auto b = FileBackend::open(path, 4 * kMiB);
    REQUIRE(b.has_value());
    Backend& be = **b;

    // Scattered write: three iovecs of odd sizes at an unaligned offset.
    auto data = pattern(10000, 7);
    iovec iov[3] = {{data.data(), 1}, {data.data() + 1, 4999}, {data.data() + 5000, 5000}};
    CHECK(run(be, rw(IoOp::kWrite, 123457, iov, 3, 10000), m.ctx()) == 0);
    CHECK(read_file(path, 123457, 10000) == data);
    CHECK(read_file(path, 123456, 1) == std::vector<uint8_t>{0});
    CHECK(read_file(path, 133457, 1) == std::vector<uint8_t>{0});

    // Gathered read back through the backend into differently split buffers.
    std::vector<uint8_t> a(7000, 0xEE), c(3000, 0xEE);
    iovec riov[2] = {{a.data(), a.size()}, {c.data(), c.size()}};
    CHECK(run(be, rw(IoOp::kRead, 123457, riov, 2, 10000), m.ctx()) == 0);
    CHECK(std::equal(a.begin(), a.end(), data.begin()));
    CHECK(std::equal(c.begin(), c.end(), data.begin() + 7000));

    // A hole reads as zeros; the last byte of the LU is addressable.
    CHECK(all_zero(read_bytes(be, 2 * kMiB, 4096, m.ctx())));
    auto tail = pattern(4096, 8);
    CHECK(write_bytes(be, 4 * kMiB - 4096, tail, m.ctx()) == 0);
    CHECK(read_bytes(be, 4 * kMiB - 4096, 4096, m.ctx()) == tail);

    // FUA write and flush succeed and the bytes are there.
    auto fua = pattern(8192, 9);
    CHECK(write_bytes(be, kMiB, fua, m.ctx(), true) == 0);
    CHECK(read_file(path, kMiB, 8192) == fua);
    CHECK(run(be, range(IoOp::kFlush, 0, 0), m.ctx()) == 0);

    // Out of range, overflow and zero length.
    CHECK(write_bytes(be, 4 * kMiB - 100, fua, m.ctx()) == -EINVAL);
    CHECK(run(be, rw(IoOp::kRead, UINT64_MAX - 10, riov, 2, 100), m.ctx()) == -EINVAL);
    CHECK(run(be, rw(IoOp::kRead, 0, riov, 2, 0), m.ctx()) == 0);
    // iovecs too short for `length`.
    CHECK(run(be, rw(IoOp::kRead, 0, riov, 1, 10000), m.ctx()) == -EINVAL);
    CHECK(stat_of(path).st_size == static_cast<off_t>(4 * kMiB));
  }
}

TEST_CASE("FileBackend: discard reads back zeros and frees the blocks") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    Mode m(async);
    TempDir dir;
    const std::string path = dir / "lu.img";
    auto b = FileBackend::open(path, 8 * kMiB);
    REQUIRE(b.has_value());
    Backend& be = **b;

    auto data = pattern(2 * kMiB, 10);
    CHECK(write_bytes(be, kMiB, data, m.ctx()) == 0);
    CHECK(run(be, range(IoOp::kFlush, 0, 0), m.ctx()) == 0);
    const blkcnt_t before = stat_of(path).st_blocks;
    CHECK(before * 512 >= static_cast<blkcnt_t>(2 * kMiB));

    // Discard the middle MiB (block aligned).
    CHECK(run(be, range(IoOp::kDiscard, kMiB + kMiB / 2, kMiB), m.ctx()) == 0);
    const blkcnt_t after = stat_of(path).st_blocks;
    CHECK(after * 512 <= before * 512 - static_cast<blkcnt_t>(kMiB) + 8192);
    CHECK(all_zero(read_bytes(be, kMiB + kMiB / 2, kMiB, m.ctx())));
    // Neighbours untouched.
    auto left = read_bytes(be, kMiB, kMiB / 2, m.ctx());
    CHECK(std::equal(left.begin(), left.end(), data.begin()));
    auto right = read_bytes(be, 2 * kMiB + kMiB / 2, kMiB / 2, m.ctx());
    CHECK(std::equal(right.begin(), right.end(), data.begin() + kMiB + kMiB / 2));
    CHECK(stat_of(path).st_size == static_cast<off_t>(8 * kMiB));  // KEEP_SIZE
  }
}

TEST_CASE("FileBackend: write zeroes makes an unaligned range read as zeros") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    Mode m(async);
    TempDir dir;
    const std::string path = dir / "lu.img";
    auto b = FileBackend::open(path, kMiB);
    REQUIRE(b.has_value());
    Backend& be = **b;
    auto data = pattern(65536, 11);
    CHECK(write_bytes(be, 0, data, m.ctx()) == 0);
    CHECK(run(be, range(IoOp::kWriteZeroes, 1000, 30000), m.ctx()) == 0);
    auto back = read_file(path, 0, 65536);
    std::vector<uint8_t> want = data;
    std::fill(want.begin() + 1000, want.begin() + 31000, 0);
    CHECK(back == want);
    CHECK(stat_of(path).st_size == static_cast<off_t>(kMiB));
  }
}

TEST_CASE("FileBackend: a file that shrank under the LU reads zeros past its end") {
  for (bool async : {false, true}) {
    CAPTURE(async);
    Mode m(async);
    TempDir dir;
    const std::string path = dir / "lu.img";
    auto b = FileBackend::open(path, 65536);
    REQUIRE(b.has_value());
    auto data = pattern(65536, 12);
    CHECK(write_bytes(**b, 0, data, m.ctx()) == 0);
    REQUIRE(::truncate(path.c_str(), 10000) == 0);
    auto back = read_bytes(**b, 8192, 8192, m.ctx());
    CHECK(std::equal(back.begin(), back.begin() + 1808, data.begin() + 8192));
    CHECK(std::all_of(back.begin() + 1808, back.end(), [](uint8_t x) { return x == 0; }));
  }
}

TEST_CASE("FileBackend: with an IoContext the request completes from reap(), not inline") {
  TempDir dir;
  auto b = FileBackend::open(dir / "lu.img", kMiB);
  REQUIRE(b.has_value());
  (*b)->set_try_inline(false);  // the ring path, also where the temp dir is on tmpfs
  CurrentContext ctx(8);
  auto data = pattern(4096, 13);
  iovec iov{data.data(), data.size()};
  Done d;
  IoRequest w = make_req(IoOp::kWrite, 4096, 4096, &iov, 1, &d);
  w.fua = true;
  (*b)->submit(w);
  CHECK(d.calls == 0);
  CHECK(ctx->in_flight() == 1);
  ctx->flush();
  pollfd p{ctx->event_fd(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  // The completion may need more than one wakeup in theory; drive() covers that.
  REQUIRE(drive(*ctx, [&] { return d.calls > 0; }));
  CHECK(d.calls == 1);
  CHECK(d.result == 0);
  CHECK(read_file(dir / "lu.img", 4096, 4096) == data);

  Done f;
  IoRequest fl = make_req(IoOp::kFlush, 0, 0, nullptr, 0, &f);
  (*b)->submit(fl);
  CHECK(f.calls == 0);
  REQUIRE(drive(*ctx, [&] { return f.calls > 0; }));
  CHECK(f.result == 0);
}

TEST_CASE("FileBackend: page-cache hits complete inline; FUA writes and misses use the ring") {
  TempDir dir;
  struct statfs fs {};
  REQUIRE(::statfs(dir.path().c_str(), &fs) == 0);
  if (fs.f_type == TMPFS_MAGIC) {
    MESSAGE("temp dir on tmpfs: every request completes inline there; see the tmpfs test");
    return;
  }
  auto b = FileBackend::open(dir / "lu.img", kMiB);
  REQUIRE(b.has_value());
  CurrentContext ctx(8);
  auto data = pattern(8192, 21);
  iovec iov{data.data(), data.size()};
  // A buffered write to a freshly created file is absorbed by the page cache: done()
  // runs inside submit(), nothing reaches the ring.
  Done w;
  IoRequest wr = make_req(IoOp::kWrite, 8192, 8192, &iov, 1, &w);
  (*b)->submit(wr);
  if (w.calls == 1) {  // file systems without nowait buffered writes fall back to the ring
    CHECK(w.result == 0);
    CHECK(ctx->in_flight() == 0);
  } else {
    REQUIRE(drive(*ctx, [&] { return w.calls > 0; }));
  }
  // Reading it back hits the page cache: inline, exact bytes.
  std::vector<uint8_t> back(8192, 0);
  iovec riov{back.data(), back.size()};
  Done r;
  IoRequest rd = make_req(IoOp::kRead, 8192, 8192, &riov, 1, &r);
  (*b)->submit(rd);
  CHECK(r.calls == 1);
  CHECK(r.result == 0);
  CHECK(ctx->in_flight() == 0);
  CHECK(back == data);
  // FUA never takes the inline path (RWF_DSYNC would block the reactor).
  Done f;
  IoRequest fw = make_req(IoOp::kWrite, 0, 8192, &iov, 1, &f);
  fw.fua = true;
  (*b)->submit(fw);
  CHECK(f.calls == 0);
  CHECK(ctx->in_flight() == 1);
  REQUIRE(drive(*ctx, [&] { return f.calls > 0; }));
  CHECK(f.result == 0);
  CHECK(read_file(dir / "lu.img", 0, 8192) == data);
}

TEST_CASE("FileBackend: on tmpfs every request completes inline, FUA and flush included") {
  struct statfs fs {};
  if (::statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC) {
    MESSAGE("no tmpfs at /dev/shm: nothing to test");
    return;
  }
  const std::string path = "/dev/shm/zuma-unit-" + std::to_string(::getpid()) + ".img";
  auto b = FileBackend::open(path, kMiB);
  REQUIRE(b.has_value());
  CurrentContext ctx(8);
  auto data = pattern(4096, 5);
  iovec iov{data.data(), data.size()};
  Done w;
  IoRequest wr = make_req(IoOp::kWrite, 4096, 4096, &iov, 1, &w);
  wr.fua = true;
  (*b)->submit(wr);
  CHECK(w.calls == 1);
  CHECK(w.result == 0);
  Done f;
  IoRequest fl = make_req(IoOp::kFlush, 0, 0, nullptr, 0, &f);
  (*b)->submit(fl);
  CHECK(f.calls == 1);
  CHECK(f.result == 0);
  CHECK(ctx->in_flight() == 0);
  std::vector<uint8_t> back(4096);
  iovec riov{back.data(), back.size()};
  Done r;
  IoRequest rd = make_req(IoOp::kRead, 4096, 4096, &riov, 1, &r);
  (*b)->submit(rd);
  CHECK(r.calls == 1);
  CHECK(back == data);
  b->reset();
  ::unlink(path.c_str());
}

// --- SBC: provisioning queries (extent_status, space_usage) ---

TEST_CASE("FileBackend: extent_status follows the file's holes") {
  TempDir dir;
  const std::string path = dir / "lu.img";
  auto b = FileBackend::open(path, 8 * kMiB);  // created sparse: one big hole
  REQUIRE(b.has_value());
  Backend& be = **b;
  ExtentStatus st;
  REQUIRE(be.extent_status(0, 8 * kMiB, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == 8 * kMiB);
  // Data in [1 MiB, 3 MiB), then a punched hole in its middle MiB.
  auto data = pattern(2 * kMiB, 3);
  CHECK(write_bytes(be, kMiB, data, nullptr) == 0);
  CHECK(run(be, range(IoOp::kDiscard, kMiB + kMiB / 2, kMiB), nullptr) == 0);
  REQUIRE(be.extent_status(0, 8 * kMiB, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == kMiB);
  REQUIRE(be.extent_status(kMiB, 8 * kMiB - kMiB, &st) == 0);
  CHECK(st.allocated);
  CHECK(st.length == kMiB / 2);
  REQUIRE(be.extent_status(kMiB + kMiB / 2, 100, &st) == 0);  // clipped to max_len
  CHECK_FALSE(st.allocated);
  CHECK(st.length == 100);
  REQUIRE(be.extent_status(kMiB + kMiB / 2, 8 * kMiB, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == kMiB);
  REQUIRE(be.extent_status(2 * kMiB + kMiB / 2, 8 * kMiB, &st) == 0);
  CHECK(st.allocated);
  CHECK(st.length == kMiB / 2);
  // The hole after the data runs to the end of the LU, not past it.
  REQUIRE(be.extent_status(3 * kMiB, 100 * kMiB, &st) == 0);
  CHECK_FALSE(st.allocated);
  CHECK(st.length == 5 * kMiB);
}

TEST_CASE("FileBackend: space_usage counts the file's blocks and the free space") {
  TempDir dir;
  const std::string path = dir / "lu.img";
  auto b = FileBackend::open(path, 8 * kMiB);
  REQUIRE(b.has_value());
  Backend& be = **b;
  SpaceUsage u;
  REQUIRE(be.space_usage(&u) == 0);
  CHECK(u.allocated_bytes == 0);
  CHECK(u.available_shared);
  CHECK(u.available_bytes > 0);
  auto data = pattern(kMiB, 4);
  CHECK(write_bytes(be, 0, data, nullptr) == 0);
  REQUIRE(be.space_usage(&u) == 0);
  CHECK(u.allocated_bytes >= kMiB);
  CHECK(u.allocated_bytes <= kMiB + 64 * 1024);
}

TEST_CASE("FileBackend::resize: thin grows sparse, full allocates, shrink truncates") {
  TempDir dir;
  const std::string path = dir / "lu.img";
  auto opened = FileBackend::open(path, 4 * kMiB);
  REQUIRE_MESSAGE(opened.has_value(), opened.error());
  FileBackend& b = **opened;
  auto head = pattern(8192, 1);
  REQUIRE(write_bytes(b, 0, head, nullptr) == 0);

  // Thin: the file grows, the new bytes are a hole that reads as zeros.
  const blkcnt_t before = stat_of(path).st_blocks;
  auto r = b.resize(8 * kMiB, false);
  REQUIRE_MESSAGE(r.has_value(), r.error());
  CHECK(b.size() == 8 * kMiB);
  CHECK(stat_of(path).st_size == static_cast<off_t>(8 * kMiB));
  CHECK(stat_of(path).st_blocks == before);
  CHECK(read_bytes(b, 0, 8192, nullptr) == head);
  CHECK(all_zero(read_bytes(b, 4 * kMiB, 4 * kMiB, nullptr)));
  auto far = pattern(4096, 2);
  CHECK(write_bytes(b, 8 * kMiB - 4096, far, nullptr) == 0);
  CHECK(read_bytes(b, 8 * kMiB - 4096, 4096, nullptr) == far);

  // Full provisioning: the grown range is allocated now (fallocate) and reads as zeros.
  r = b.resize(16 * kMiB, true);
  REQUIRE_MESSAGE(r.has_value(), r.error());
  CHECK(stat_of(path).st_blocks * 512 >= static_cast<blkcnt_t>(8 * kMiB));
  CHECK(all_zero(read_bytes(b, 8 * kMiB, 8 * kMiB, nullptr)));

  // Shrink: the file is cut; requests beyond the new end are refused.
  r = b.resize(2 * kMiB, false);
  REQUIRE_MESSAGE(r.has_value(), r.error());
  CHECK(b.size() == 2 * kMiB);
  CHECK(stat_of(path).st_size == static_cast<off_t>(2 * kMiB));
  std::vector<uint8_t> buf(4096);
  iovec iov{buf.data(), buf.size()};
  CHECK(run(b, rw(IoOp::kRead, 2 * kMiB, &iov, 1, 4096), nullptr) == -EINVAL);
  // Bytes written past the end meanwhile (a command that raced the shrink) do not come
  // back when the LU grows again.
  REQUIRE(::pwrite(b.fd(), far.data(), far.size(), 3 * kMiB) == ssize_t(far.size()));
  REQUIRE(b.resize(4 * kMiB, false));
  CHECK(all_zero(read_bytes(b, 2 * kMiB, 2 * kMiB, nullptr)));
  CHECK(read_bytes(b, 0, 8192, nullptr) == head);

  auto zero = b.resize(0, false);
  REQUIRE_FALSE(zero);
  CHECK(zero.error() == path + ": the size must not be 0");
  CHECK(b.size() == 4 * kMiB);
}

TEST_CASE("FileBackend: lock_for_update excludes another process's lock of the range") {
  TempDir dir;
  const std::string path = dir / "shared.img";
  auto b = FileBackend::open(path, 1 * kMiB);
  REQUIRE_MESSAGE(b.has_value(), b.error());
  // What another node's zumad would try: an OFD write lock of its own open of the file.
  const auto other_can_lock = [&](off_t start, off_t len) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const int fd = ::open(path.c_str(), O_RDWR);
      struct flock l {};
      l.l_type = F_WRLCK;
      l.l_whence = SEEK_SET;
      l.l_start = start;
      l.l_len = len;
      _exit(fd >= 0 && ::fcntl(fd, F_OFD_SETLK, &l) == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  };
  CHECK(other_can_lock(4096, 512));
  REQUIRE((*b)->lock_for_update(4096, 512, true) == 0);
  CHECK_FALSE(other_can_lock(4096, 512));
  CHECK_FALSE(other_can_lock(4000, 200));  // overlapping
  CHECK(other_can_lock(8192, 512));        // elsewhere
  REQUIRE((*b)->lock_for_update(4096, 512, false) == 0);
  CHECK(other_can_lock(4096, 512));
}
