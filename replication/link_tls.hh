// TLS on replication links (docs/REPLICATION.md "TLS"), with OpenSSL 3: a link on the
// primary is a TLS client, the secondary's replication listener a TLS server. Either
// certificates, verified on both sides against the configured CA (mutual TLS, optionally
// with the peer's expected name), or a TLS 1.3 external pre-shared key (PSK, RFC 8446
// 2.2: psk_dhe_ke, so the session keys still have forward secrecy). TLS 1.2 at least with
// certificates, TLS 1.3 with a PSK.
//
// A context is built for each connection from the files as they are then, so a rotated
// certificate, key, CA or PSK is used by the next connection without a restart. Every
// call is on the connection's own thread; nothing here is shared between threads.
#pragma once
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hh"
#include "replication/protocol.hh"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace zuma::replication::tls {

struct PskKey;  // a PSK's identity and key, owned by its Context

// An SSL_CTX and what its callbacks need.
class Context {
 public:
  Context();
  ~Context();
  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  ssl_ctx_st* get() const { return ctx_; }

 private:
  friend std::expected<Context, std::string> make_context(const config::ReplicationTls&, bool);
  ssl_ctx_st* ctx_ = nullptr;
  std::unique_ptr<PskKey> psk_;
};

// A client (`server` false: a link) or server (a listener) context from `t`'s files as they
// are now. Error: one line naming the file.
std::expected<Context, std::string> make_context(const config::ReplicationTls& t, bool server);

// The TLS handshake on a connected non-blocking socket, within timeout_ms; `t.peer_name`,
// when set, is checked in the peer's certificate. The connection (the SSL session owned by
// it, the socket not), or why not: OpenSSL's reason with what it most likely means.
std::expected<proto::Conn, std::string> handshake(const Context& ctx,
                                                  const config::ReplicationTls& t, int fd,
                                                  bool server, int timeout_ms);

// Who the peer is, for log lines: its certificate's subject, or "PSK identity NAME".
std::string peer_identity(const proto::Conn& c);
// TLS version and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384".
std::string describe(const proto::Conn& c);

// 32 bytes only the two ends of this TLS connection know (the exporter, RFC 8446 7.5 /
// RFC 5705), binding authentication to it (link_auth.hh); empty without TLS.
std::vector<uint8_t> channel_binding(const proto::Conn& c);

// What a connection's first bytes are, waiting up to timeout_ms for them (MSG_PEEK: they
// stay to be read): a TLS handshake record, the protocol's frame magic, anything else, or
// nothing (closed or timed out).
enum class FirstBytes : uint8_t { kTls, kFrame, kOther, kNothing };
FirstBytes peek_first_bytes(int fd, int timeout_ms);

}  // namespace zuma::replication::tls
