// The control protocol between zumactl and zumad (DESIGN.md: admin/).
//
// Transport: a Unix stream socket (node.control_socket). Each message is one JSON object
// on one line (nlohmann::json::dump() never emits a raw newline), at most kMaxLine bytes.
//   request: {"cmd": "show luns", "args": {"target": "iqn..."}}
//   reply:   {"ok": true, "result": <any JSON>}  |  {"ok": false, "error": "one line"}
// A connection may carry any number of requests; replies come in request order.
#pragma once

#include <chrono>
#include <cstddef>
#include <expected>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "storage/unique_fd.hh"

namespace zuma::admin {

using Json = nlohmann::json;

inline constexpr size_t kMaxLine = 4u << 20;  // one request or reply

// Reads and writes newline-terminated lines on a blocking or non-blocking socket.
class LineChannel {
 public:
  LineChannel() = default;
  explicit LineChannel(storage::UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }

  // Writes `line` plus '\n' (blocking until all of it is sent, up to `timeout`).
  // Error: a one-line message.
  std::expected<void, std::string> write_line(const std::string& line,
                                              std::chrono::milliseconds timeout);
  // Waits up to `timeout` for one whole line (without the '\n'). Error: "closed",
  // "timeout", "line too long" or an errno message.
  std::expected<std::string, std::string> read_line(std::chrono::milliseconds timeout);
  // Non-blocking: takes whatever the socket has now into the buffer. Returns false when the
  // peer closed or an error happened. Then next_line() hands out complete lines.
  bool fill();
  // A complete buffered line, if any ("line too long" sets *too_long).
  std::optional<std::string> next_line(bool* too_long = nullptr);

 private:
  storage::UniqueFd fd_;
  std::string buf_;
};

// Client side of one control connection (zumactl, tests).
class Client {
 public:
  // Connects to the socket at `path`. Error: "cannot connect to PATH: reason".
  static std::expected<Client, std::string> connect(const std::string& path);

  struct Reply {
    bool ok = false;
    Json result;        // when ok
    std::string error;  // when !ok
  };
  // Sends one request and waits for its reply. Error (transport/protocol only; a command
  // that failed is a Reply with ok == false): a one-line message.
  std::expected<Reply, std::string> call(
      const std::string& cmd, const Json& args,
      std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  LineChannel ch_;
};

// Builds a request / reply line.
std::string make_request(const std::string& cmd, const Json& args);
std::string make_ok(const Json& result);
std::string make_error(const std::string& message);
// One line of JSON; invalid UTF-8 is replaced.
std::string dump_line(const Json& j);

}  // namespace zuma::admin
