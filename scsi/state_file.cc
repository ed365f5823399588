#include "scsi/state_file.hh"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "storage/unique_fd.hh"

namespace zuma::scsi {
namespace {

int sync_dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  storage::UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return errno;
  return ::fsync(d.get()) == 0 ? 0 : errno;
}

}  // namespace

int write_state_file(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp";
  {
    storage::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return errno;
    size_t off = 0;
    while (off < content.size()) {
      const ssize_t w = ::write(fd.get(), content.data() + off, content.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        return e;
      }
      off += static_cast<size_t>(w);
    }
    if (::fsync(fd.get()) != 0) {
      const int e = errno;
      ::unlink(tmp.c_str());
      return e;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return e;
  }
  return sync_dir_of(path);
}

int remove_state_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return 0;
    return errno;
  }
  return sync_dir_of(path);
}

std::optional<std::string> read_state_file(const std::string& path) {
  storage::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw std::runtime_error(path + ": " + std::strerror(errno));
  }
  std::string s;
  char buf[4096];
  while (true) {
    const ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
    if (r == 0) break;
    s.append(buf, static_cast<size_t>(r));
    if (s.size() > (1u << 20)) throw std::runtime_error(path + ": too large for a state file");
  }
  return s;
}

}  // namespace zuma::scsi
