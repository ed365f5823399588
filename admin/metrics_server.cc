#include "admin/metrics_server.hh"
#include "storage/thread_name.hh"

#include <httplib.h>

#include <optional>
#include <stdexcept>

#include <fmt/format.h>

namespace zuma::admin {

std::optional<std::pair<std::string, uint16_t>> split_host_port(const std::string& address) {
  std::string host, port;
  if (address.starts_with("[")) {
    const size_t close = address.find("]:");
    if (close == std::string::npos) return std::nullopt;
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (host.empty() || port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535)
    return std::nullopt;
  return std::make_pair(host, uint16_t(std::stoul(port)));
}

MetricsServer::MetricsServer(std::string host, uint16_t port, std::function<std::string()> render)
    : host_(std::move(host)), port_(port), render_(std::move(render)) {}

MetricsServer::~MetricsServer() {
  stop();
}

void MetricsServer::start() {
  http_ = std::make_unique<httplib::Server>();
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http_->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("zumad metrics: see /metrics\n", "text/plain");
  });
  if (port_ == 0) {
    const int p = http_->bind_to_any_port(host_);
    if (p < 0) throw std::runtime_error(fmt::format("metrics {}:0: cannot bind", host_));
    port_ = uint16_t(p);
  } else if (!http_->bind_to_port(host_, port_)) {
    throw std::runtime_error(fmt::format(
        "metrics {}:{}: cannot bind (in use, or not an address of this host)", host_, port_));
  }
  thread_ = std::thread([this] {
    storage::name_this_thread("metrics");
    http_->listen_after_bind();
  });
}

void MetricsServer::stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
  http_.reset();
}

}  // namespace zuma::admin
