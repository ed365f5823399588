// A fault-injecting TCP proxy for tests: listens on 127.0.0.1 (a free port) and forwards
// every connection to 127.0.0.1:`target`, byte for byte, from its own thread (poll-based).
// Faults, each until restore():
//   cut(kReset)    every current connection is closed with RST on both sides
//   cut(kClose)    every current connection is closed with FIN on both sides
//   cut(kClientOnly)  only the client's side is reset; the target's side stays open and
//                  silent, as a peer that never heard of the failure (a half-open connection)
//   refuse()       nothing listens: new connections get ECONNREFUSED
//   blackhole()    connections are accepted (and connected onward) but no byte moves in
//                  either direction; what was sent waits in the socket buffers, as in a
//                  network partition. restore() lets it through, nothing lost.
//   delay(d)       each byte is forwarded `d` after it was read
// Thread-safety: every method may be called from any thread. The destructor closes all.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

namespace zuma::test {

class FaultProxy {
 public:
  enum class Cut { kReset, kClose, kClientOnly };

  explicit FaultProxy(uint16_t target_port);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  uint16_t port() const;
  void cut(Cut how = Cut::kReset);
  void refuse();
  void blackhole();
  void delay(std::chrono::milliseconds d);
  // Back to plain forwarding (listening again, no blackhole, no delay). Connections cut
  // with kClientOnly keep their silent target side until the destructor.
  void restore();
  // Connections accepted so far, and those open now.
  uint64_t accepted() const;
  size_t open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zuma::test
