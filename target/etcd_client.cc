#include "target/etcd_client.hh"

#include <httplib.h>

#include <nlohmann/json.hpp>

namespace zuma::target {
namespace {

using json = nlohmann::json;

int64_t num(const json& j, const char* k) {
  auto it = j.find(k);
  if (it == j.end()) return 0;
  if (it->is_string()) return std::stoll(it->get<std::string>());
  if (it->is_number_integer()) return it->get<int64_t>();
  return 0;
}

EtcdKv parse_kv(const json& j) {
  EtcdKv kv;
  kv.key = base64_decode(j.value("key", "")).value_or("");
  kv.value = base64_decode(j.value("value", "")).value_or("");
  kv.create_revision = num(j, "create_revision");
  kv.mod_revision = num(j, "mod_revision");
  kv.lease = num(j, "lease");
  return kv;
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

std::string base64_encode(const std::string& in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v =
        uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(const std::string& in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + size_t(k)];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else if (pad || (v[k] = val(c)) < 0) {
        return std::nullopt;
      }
    }
    const uint32_t x =
        uint32_t(v[0]) << 18 | uint32_t(v[1]) << 12 | uint32_t(v[2]) << 6 | uint32_t(v[3]);
    out += char(x >> 16);
    if (pad < 2) out += char((x >> 8) & 0xFF);
    if (pad < 1) out += char(x & 0xFF);
  }
  return out;
}

std::string prefix_end(std::string p) {
  // The smallest key greater than every key with prefix p: the last byte below 0xFF + 1.
  while (!p.empty()) {
    if (uint8_t(p.back()) < 0xFF) {
      p.back() = char(uint8_t(p.back()) + 1);
      return p;
    }
    p.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
    : endpoints_(std::move(endpoints)), timeout_(timeout) {}

void EtcdClient::set_error(std::string e) {
  std::lock_guard lk(mu_);
  error_ = std::move(e);
}

std::string EtcdClient::last_error() const {
  std::lock_guard lk(const_cast<std::mutex&>(mu_));
  return error_;
}

std::optional<std::string> EtcdClient::post(const std::string& path, const std::string& body) {
  const size_t first = preferred_.load(std::memory_order_relaxed);
  std::string errors;
  for (size_t k = 0; k < endpoints_.size(); ++k) {
    const size_t i = (first + k) % endpoints_.size();
    httplib::Client cli(endpoints_[i]);
    const auto secs = timeout_.count() / 1000, usecs = (timeout_.count() % 1000) * 1000;
    cli.set_connection_timeout(secs, usecs);
    cli.set_read_timeout(secs, usecs);
    cli.set_write_timeout(secs, usecs);
    auto res = cli.Post(path.c_str(), body, "application/json");
    if (!res) {
      errors +=
          (errors.empty() ? "" : "; ") + endpoints_[i] + ": " + httplib::to_string(res.error());
      continue;
    }
    if (res->status >= 500 || res->status == 404) {
      errors += (errors.empty() ? "" : "; ") + endpoints_[i] + ": HTTP " +
                std::to_string(res->status) + " " + res->body.substr(0, 200);
      continue;
    }
    preferred_.store(i, std::memory_order_relaxed);
    if (res->status != 200) {
      set_error(endpoints_[i] + ": HTTP " + std::to_string(res->status) + " " +
                res->body.substr(0, 200));
      return std::nullopt;
    }
    return res->body;
  }
  set_error(errors.empty() ? "no etcd endpoint" : errors);
  return std::nullopt;
}

std::optional<std::vector<EtcdKv>> EtcdClient::get(const std::string& key, bool prefix,
                                                   int64_t* revision) {
  json req = {{"key", base64_encode(key)}};
  if (prefix) req["range_end"] = base64_encode(prefix_end(key));
  auto body = post("/v3/kv/range", req.dump());
  if (!body) return std::nullopt;
  try {
    const json j = json::parse(*body);
    std::vector<EtcdKv> out;
    if (j.contains("kvs"))
      for (const auto& kv : j["kvs"]) out.push_back(parse_kv(kv));
    if (revision) *revision = num(j.value("header", json::object()), "revision");
    return out;
  } catch (const std::exception& e) {
    set_error(std::string("bad etcd range response: ") + e.what());
    return std::nullopt;
  }
}

bool EtcdClient::put(const std::string& key, const std::string& value, int64_t lease) {
  json req = {{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease) req["lease"] = std::to_string(lease);
  return post("/v3/kv/put", req.dump()).has_value();
}

bool EtcdClient::del(const std::string& key, bool prefix) {
  json req = {{"key", base64_encode(key)}};
  if (prefix) req["range_end"] = base64_encode(prefix_end(key));
  return post("/v3/kv/deleterange", req.dump()).has_value();
}

std::optional<int64_t> EtcdClient::put_if(const std::string& key, const std::string& value,
                                          int64_t mod_revision, int64_t lease) {
  json put = {{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease) put["lease"] = std::to_string(lease);
  json cmp = {{"key", base64_encode(key)}, {"result", "EQUAL"}};
  if (mod_revision == 0) {
    cmp["target"] = "CREATE";
    cmp["create_revision"] = "0";
  } else {
    cmp["target"] = "MOD";
    cmp["mod_revision"] = std::to_string(mod_revision);
  }
  json req = {{"compare", json::array({cmp})},
              {"success", json::array({json{{"request_put", put}}})}};
  auto body = post("/v3/kv/txn", req.dump());
  if (!body) return std::nullopt;
  try {
    const json j = json::parse(*body);
    if (!j.value("succeeded", false)) return 0;
    // The put's revision is the transaction's header revision.
    return num(j.value("header", json::object()), "revision");
  } catch (const std::exception& e) {
    set_error(std::string("bad etcd txn response: ") + e.what());
    return std::nullopt;
  }
}

std::optional<int64_t> EtcdClient::grant(int64_t ttl) {
  auto body = post("/v3/lease/grant", json{{"TTL", std::to_string(ttl)}}.dump());
  if (!body) return std::nullopt;
  try {
    const json j = json::parse(*body);
    if (j.contains("error") && !j["error"].get<std::string>().empty()) {
      set_error("lease grant: " + j["error"].get<std::string>());
      return std::nullopt;
    }
    return num(j, "ID");
  } catch (const std::exception& e) {
    set_error(std::string("bad etcd lease response: ") + e.what());
    return std::nullopt;
  }
}

std::optional<int64_t> EtcdClient::keepalive(int64_t lease) {
  auto body = post("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}}.dump());
  if (!body) return std::nullopt;
  try {
    // A stream of one message: {"result":{"header":..,"ID":..,"TTL":..}}; TTL absent or 0
    // when the lease has expired.
    const json j = json::parse(body->substr(0, body->find('\n')));
    return num(j.value("result", json::object()), "TTL");
  } catch (const std::exception& e) {
    set_error(std::string("bad etcd keepalive response: ") + e.what());
    return std::nullopt;
  }
}

bool EtcdClient::revoke(int64_t lease) {
  return post("/v3/lease/revoke", json{{"ID", std::to_string(lease)}}.dump()).has_value();
}

std::optional<int64_t> EtcdClient::watch(
    const std::string& prefix, int64_t start_revision,
    const std::function<void(int64_t, const std::vector<EtcdEvent>&)>& on_events, bool* compacted) {
  *compacted = false;
  const size_t i = preferred_.load(std::memory_order_relaxed) % endpoints_.size();
  httplib::Client cli(endpoints_[i]);
  const auto secs = timeout_.count() / 1000, usecs = (timeout_.count() % 1000) * 1000;
  cli.set_connection_timeout(secs, usecs);
  // A watch is a long response: it may be quiet for a long time. etcd sends a progress
  // notification only on request, so the read timeout is long; cancel_watch() shuts the
  // socket down.
  cli.set_read_timeout(3600, 0);
  {
    std::lock_guard lk(mu_);
    if (watch_cancelled_) return std::nullopt;
    watch_client_ = &cli;
  }
  json create = {{"key", base64_encode(prefix)},
                 {"range_end", base64_encode(prefix_end(prefix))},
                 {"start_revision", std::to_string(start_revision)}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v3/watch";
  req.body = json{{"create_request", create}}.dump();
  req.set_header("Content-Type", "application/json");
  std::string buf;
  int64_t last = start_revision - 1;
  bool setup = false;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    buf.append(data, len);
    size_t nl;
    // The gateway writes one JSON object per message, separated by newlines.
    while ((nl = buf.find('\n')) != std::string::npos) {
      const std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (...) {
        set_error("bad etcd watch message");
        return false;
      }
      if (j.contains("error")) {
        set_error("etcd watch: " + j["error"].dump());
        return false;
      }
      const json r = j.value("result", json::object());
      if (num(r, "compact_revision") > 0) {
        *compacted = true;
        return false;
      }
      if (r.value("canceled", false)) {
        set_error("etcd watch cancelled: " + r.value("cancel_reason", std::string()));
        return false;
      }
      setup = true;
      const int64_t rev = num(r.value("header", json::object()), "revision");
      std::vector<EtcdEvent> evs;
      if (r.contains("events")) {
        for (const auto& e : r["events"]) {
          EtcdEvent ev;
          ev.deleted = e.value("type", std::string()) == "DELETE";
          ev.kv = parse_kv(e.value("kv", json::object()));
          if (ev.kv.mod_revision > last) last = ev.kv.mod_revision;
          evs.push_back(std::move(ev));
        }
      }
      if (!evs.empty()) on_events(rev, evs);
    }
    return !watch_cancelled_.load();
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  cli.send(req, res, err);
  {
    std::lock_guard lk(mu_);
    watch_client_ = nullptr;
  }
  if (!setup && !*compacted) {
    if (err != httplib::Error::Success && !watch_cancelled_)
      set_error(endpoints_[i] + ": watch: " + httplib::to_string(err));
    preferred_.store((i + 1) % endpoints_.size(), std::memory_order_relaxed);
    return std::nullopt;
  }
  if (err != httplib::Error::Success && !watch_cancelled_)
    preferred_.store((i + 1) % endpoints_.size(), std::memory_order_relaxed);
  return last;
}

void EtcdClient::cancel_watch() {
  std::lock_guard lk(mu_);
  watch_cancelled_ = true;
  if (watch_client_) static_cast<httplib::Client*>(watch_client_)->stop();
}

}  // namespace zuma::target
