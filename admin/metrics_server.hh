// The Prometheus text endpoint (node.metrics): GET /metrics answers with what `render`
// returns (text format 0.0.4). cpp-httplib, one listening thread of its own; the render
// function is called on that thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace zuma::admin {

class MetricsServer {
 public:
  MetricsServer(std::string host, uint16_t port, std::function<std::string()> render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds and starts serving. Throws std::runtime_error naming the address.
  void start();
  void stop();
  uint16_t port() const { return port_; }

 private:
  std::string host_;
  uint16_t port_;
  std::function<std::string()> render_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
};

// "HOST:PORT" / "[V6]:PORT" -> (host, port); nullopt when malformed.
std::optional<std::pair<std::string, uint16_t>> split_host_port(const std::string& address);

}  // namespace zuma::admin
