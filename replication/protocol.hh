// The replication protocol between zumad peers (docs/REPLICATION.md "The protocol"):
// length-prefixed frames over one TCP connection per site link. The primary sends HELLO,
// then the log's batches exactly as they are on disk (each carries its own checksum); the
// secondary answers WELCOME (or ERROR), then ACK frames carrying the highest sequence
// number it has applied durably.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

struct ssl_st;  // OpenSSL's SSL

namespace zuma::replication::proto {

enum class Frame : uint16_t {
  // primary -> secondary: JSON {protocol, group, link, log_id, last, luns: [sizes],
  // lineage: [[log_id, end], ...]} (lineage: the generations before log_id, oldest first,
  // each with the last sequence number it had when the next one began)
  kHello = 1,
  // secondary -> primary: JSON {applied, log_id, resync: [[lu, offset, length], ...]}
  kWelcome = 2,
  kBatch = 3,  // primary -> secondary: one log batch, as on disk
  kAck = 4,    // secondary -> primary: u64 LE, highest sequence applied durably
  kError = 5,  // either way: a one-line message; the sender closes the connection
  // primary -> secondary, between WELCOME and the first BATCH when the WELCOME asked for a
  // resync: u32 LU, u32 flags, u64 offset, then the bytes of that range as the primary has
  // them; with flags kResyncZeros a u64 length instead: that many bytes read as zeros.
  kResync = 6,
  // primary -> secondary after the last RESYNC frame: u64 LE, the primary's last sequence
  // number when it had read every range; the secondary is consistent again once it has
  // applied up to it.
  kResyncDone = 7,
  // secondary -> primary, once it has applied a verify marker record (replication/verify.hh):
  // the region's checksum at that point (VerifyReply, 48 bytes). Protocol 4.
  kVerifyResult = 8,
  // primary -> secondary: as BATCH, from an async link that holds writes now (its
  // fall-behind policy `sync`): to be acknowledged at the next pause of the stream, as a
  // sync link's, not after the async acknowledgement delay. Protocol 5.
  kBatchHeld = 9,
  // Authentication (docs/REPLICATION.md "Authentication"), between HELLO and WELCOME when
  // the HELLO carries "auth": secondary -> primary, 32 random bytes (its nonce);
  kAuthChallenge = 16,
  // primary -> secondary, 32 bytes: HMAC-SHA256 proof of the link's secret (link_auth.hh);
  kAuthProof = 17,
  // secondary -> primary, 32 bytes: the secondary's proof, after it checked the primary's.
  kAuthOk = 18,
};
// Whether a frame header's type is one of the above.
bool known_frame(uint16_t type);
constexpr uint32_t kMaxAuthFrame = 64;  // an auth frame is read with this limit

constexpr uint32_t kResyncZeros = 1;            // RESYNC flag: a deallocated range, no data
constexpr uint32_t kMagic = 0x4650525a;         // "ZRPF"
constexpr uint32_t kMaxFrame = 64u << 20;        // above the largest batch the log writes
// 2: a BATCH frame holds one or more log batches; 3: generations (HELLO lineage), resync;
// 4: verify markers (record type 8), VERIFY_RESULT, the HELLO's "repair" ranges;
// 5: BATCH_HELD
constexpr int kProtocolVersion = 5;

struct FrameHeader {
  uint32_t magic;
  uint16_t type;
  uint16_t flags;
  uint32_t length;  // payload bytes
  uint32_t reserved;
};
static_assert(sizeof(FrameHeader) == 16);

struct SslFree {
  void operator()(ssl_st* s) const;
};
using SslPtr = std::unique_ptr<ssl_st, SslFree>;

// One end of a link's connection: the (non-blocking) socket, not owned, and the TLS session
// on it when the link uses TLS (link_tls.hh), owned. Without TLS, frames are the socket
// calls themselves. Used by one thread at a time; another thread may shutdown() the socket
// to end it (the TLS calls then fail like the socket ones).
class Conn {
 public:
  explicit Conn(int fd) : fd_(fd) {}
  Conn(int fd, SslPtr ssl) : fd_(fd), ssl_(std::move(ssl)) {}
  int fd() const { return fd_; }
  ssl_st* ssl() const { return ssl_.get(); }
  bool tls() const { return ssl_ != nullptr; }
  // TLS only: bytes already taken off the socket and not yet read (poll() cannot see them).
  bool buffered() const;
  // After poll() said the socket is readable: whether a frame has begun to arrive. TLS
  // handshake messages (a session ticket) make the socket readable with no frame; false
  // then. True on an error or EOF too, so that the next recv_frame reports it.
  bool frame_ready();

 private:
  int fd_;
  SslPtr ssl_;
};

// Blocking I/O with a timeout (milliseconds, for the whole frame). 0 or -errno:
// -ETIMEDOUT, -ECONNRESET (peer closed), -EPROTO (bad magic, unknown type, a payload
// longer than max_len, or a TLS error: see tls_error()).
int send_frame(Conn& c, Frame type, std::span<const uint8_t> payload, int timeout_ms);
int send_frame(Conn& c, Frame type, const std::string& payload, int timeout_ms);
int recv_frame(Conn& c, Frame* type, std::vector<uint8_t>* payload, int timeout_ms,
               uint32_t max_len = kMaxFrame);
// The same on a plain socket.
int send_frame(int fd, Frame type, std::span<const uint8_t> payload, int timeout_ms);
int send_frame(int fd, Frame type, const std::string& payload, int timeout_ms);
int recv_frame(int fd, Frame* type, std::vector<uint8_t>* payload, int timeout_ms);
// What the last failed TLS call on this thread said (OpenSSL's reason), or "".
std::string tls_error();

// A TCP connection to "host:port" (IPv4 or [IPv6]) within timeout_ms: fd or -errno.
int connect_to(const std::string& address, int timeout_ms);
// TCP_NODELAY, keepalive (a dead peer is noticed in about 11 s when idle) and
// TCP_USER_TIMEOUT (15 s of unacknowledged data) on a link's socket, either side.
void tune_socket(int fd);
// A listening socket on "host:port" (port 0: any); *port gets the bound port. fd or -errno.
int listen_on(const std::string& address, uint16_t* port);

}  // namespace zuma::replication::proto
