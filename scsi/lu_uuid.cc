// load_or_create_lu_uuid(): the LU's stable identity on disk.
//
// <data_dir>/lu/<name>.uuid holds one RFC 4122 UUID in text and a newline. A new one is
// a random version 4 UUID (getrandom), written to a temporary file that is fsynced and
// then renamed into place without replacing (RENAME_NOREPLACE, so two processes racing
// agree on the first one), and the directory is fsynced so the name survives a crash.
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "scsi/device_server.hh"
#include "scsi/logical_unit.hh"
#include "storage/unique_fd.hh"

namespace zuma::scsi {
namespace {

std::string errno_text(const std::string& what, const std::string& path, int err) {
  return what + " " + path + ": " + std::strerror(err);
}

// mkdir -p for one or two levels.
int make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return 0;
  return errno;
}

std::string format_uuid(const uint8_t* u) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += kHex[u[i] >> 4];
    s += kHex[u[i] & 0xF];
  }
  return s;
}

std::expected<std::string, std::string> read_uuid(const std::string& path) {
  storage::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::unexpected(errno_text("cannot open", path, errno));
  char buf[128];
  size_t n = 0;
  while (n < sizeof(buf)) {
    const ssize_t r = ::read(fd.get(), buf + n, sizeof(buf) - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::unexpected(errno_text("cannot read", path, errno));
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  std::string text(buf, n);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  const auto u = parse_uuid(text);
  if (!u)
    return std::unexpected(path + ": not a UUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
  return format_uuid(u->data());
}

int write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t r = ::write(fd, s.data() + off, s.size() - off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    off += static_cast<size_t>(r);
  }
  return 0;
}

}  // namespace

std::expected<std::string, std::string> load_or_create_lu_uuid(const std::string& data_dir,
                                                               const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return std::unexpected("invalid logical unit name '" + name + "' for a file name");
  }
  const std::string dir = data_dir + "/lu";
  const std::string path = dir + "/" + name + ".uuid";

  if (::access(path.c_str(), F_OK) == 0) return read_uuid(path);
  if (errno != ENOENT) return std::unexpected(errno_text("cannot access", path, errno));

  if (int e = make_dir(data_dir)) return std::unexpected(errno_text("cannot create", data_dir, e));
  if (int e = make_dir(dir)) return std::unexpected(errno_text("cannot create", dir, e));

  uint8_t u[16];
  size_t got = 0;
  while (got < sizeof(u)) {
    const ssize_t r = ::getrandom(u + got, sizeof(u) - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::unexpected(std::string("getrandom: ") + std::strerror(errno));
    got += static_cast<size_t>(r);
  }
  u[6] = static_cast<uint8_t>((u[6] & 0x0F) | 0x40);  // version 4 (RFC 4122 4.4)
  u[8] = static_cast<uint8_t>((u[8] & 0x3F) | 0x80);  // variant 10b
  const std::string uuid = format_uuid(u);

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    storage::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return std::unexpected(errno_text("cannot create", tmp, errno));
    int e = write_all(fd.get(), uuid + "\n");
    if (e == 0 && ::fsync(fd.get()) != 0) e = errno;
    if (e != 0) {
      ::unlink(tmp.c_str());
      return std::unexpected(errno_text("cannot write", tmp, e));
    }
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
    const int e = errno;
    if (e == EEXIST) {
      // Someone else created it first: theirs wins.
      ::unlink(tmp.c_str());
      return read_uuid(path);
    }
    if ((e != EINVAL && e != ENOSYS) || ::rename(tmp.c_str(), path.c_str()) != 0) {
      const int e2 = (e != EINVAL && e != ENOSYS) ? e : errno;
      ::unlink(tmp.c_str());
      return std::unexpected(errno_text("cannot rename into", path, e2));
    }
  }
  storage::UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd || ::fsync(dfd.get()) != 0) {
    return std::unexpected(errno_text("cannot fsync directory", dir, errno));
  }
  return uuid;
}

}  // namespace zuma::scsi
