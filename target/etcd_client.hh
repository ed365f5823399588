// A small client of etcd's v3 API through its JSON gateway (HTTP/1.1 + JSON, the `/v3/...`
// endpoints of etcd 3.4, Debian etcd-server): the shared state of a zumad cluster (issue 9,
// docs/DISTRIBUTED.md). Keys and values are byte strings (base64 on the wire); 64-bit
// numbers travel as JSON strings.
//
// Endpoints are tried in order: a request that fails at the HTTP level (refused, timed out,
// 5xx) moves to the next one and is retried there once per endpoint, so a member of a
// three-member cluster can die without the client noticing more than a delay.
//
// Threading: one EtcdClient may be used from several threads (each request opens its own
// HTTP connection from a per-call client; requests are rare: registration, lease keepalive,
// reservation changes). watch() blocks its calling thread until cancel_watch().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace zuma::target {

struct EtcdKv {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0, lease = 0;
};

struct EtcdEvent {
  bool deleted = false;  // DELETE (a key removed, or its lease expired)
  EtcdKv kv;
};

class EtcdClient {
 public:
  // `endpoints`: "http://HOST:PORT" each. `timeout`: per HTTP request.
  EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds timeout);

  // Each returns std::nullopt (or false) when no endpoint answered; last_error() says why.
  std::optional<std::vector<EtcdKv>> get(const std::string& key, bool prefix = false,
                                         int64_t* revision = nullptr);
  bool put(const std::string& key, const std::string& value, int64_t lease = 0);
  bool del(const std::string& key, bool prefix = false);
  // Writes `value` if the key's mod revision is still `mod_revision` (0: the key does not
  // exist). Returns the new mod revision, 0 when the comparison failed, nullopt on error.
  std::optional<int64_t> put_if(const std::string& key, const std::string& value,
                                int64_t mod_revision, int64_t lease = 0);
  // Leases: grant returns the lease id; keepalive the remaining TTL (0: the lease is gone).
  std::optional<int64_t> grant(int64_t ttl_seconds);
  std::optional<int64_t> keepalive(int64_t lease);
  bool revoke(int64_t lease);

  // Watches the keys under `prefix` from `start_revision` on; calls `on_events` for each
  // batch (with the batch's header revision) until cancel_watch() or an error. Returns the
  // last revision seen (the caller resumes from it + 1), or nullopt when the watch could
  // not be set up. When etcd has compacted `start_revision` away, *compacted is set and
  // the caller reloads.
  std::optional<int64_t> watch(
      const std::string& prefix, int64_t start_revision,
      const std::function<void(int64_t, const std::vector<EtcdEvent>&)>& on_events,
      bool* compacted);
  void cancel_watch();

  std::string last_error() const;

 private:
  // POSTs `body` to `path` on the endpoints in turn; the response's body, or nullopt.
  std::optional<std::string> post(const std::string& path, const std::string& body);
  void set_error(std::string e);

  const std::vector<std::string> endpoints_;
  const std::chrono::milliseconds timeout_;
  std::atomic<size_t> preferred_{0};  // the endpoint that answered last
  std::atomic<bool> watch_cancelled_{false};
  std::mutex mu_;
  std::string error_;
  void* watch_client_ = nullptr;  // httplib::Client* of the running watch (under mu_)
};

// Base64 (RFC 4648, with padding) as the gateway wants bytes.
std::string base64_encode(const std::string& in);
std::optional<std::string> base64_decode(const std::string& in);
// The end of the range of keys that start with `prefix` (etcd's range_end convention).
std::string prefix_end(std::string prefix);

}  // namespace zuma::target
