// Small state files of a LU (persistent reservations with APTPL, saved mode pages): replaced
// atomically so a crash leaves the old or the new content, never a mix.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace zuma::scsi {

// Writes `content` to `path`: a temporary file beside it, fsync, rename over `path`, fsync of
// the directory. Returns 0 or an errno value.
int write_state_file(const std::string& path, std::string_view content);

// Removes `path` (absent is fine) and fsyncs the directory. Returns 0 or an errno value.
int remove_state_file(const std::string& path);

// The content of `path`; std::nullopt when it does not exist. Throws std::runtime_error when
// it exists but cannot be read (startup only).
std::optional<std::string> read_state_file(const std::string& path);

}  // namespace zuma::scsi
