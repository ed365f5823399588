#include "replication/link_tls.hh"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace zuma::replication::tls {

struct PskKey {
  std::string identity;
  std::string key;
};

namespace {

using Clock = std::chrono::steady_clock;

// TLS_AES_128_GCM_SHA256 (RFC 8446 B.4): the cipher suite the PSK is declared for; its
// hash (SHA-256) is what both sides derive the binder with.
constexpr unsigned char kPskCipher[2] = {0x13, 0x01};

// Why the last PSK look-up on this thread found nothing (the server's callback).
thread_local std::string t_psk_note;

std::string take_openssl_error() {
  const unsigned long e = ERR_peek_last_error();
  std::string out;
  if (e) {
    const char* reason = ERR_reason_error_string(e);
    out = reason ? reason : fmt::format("error {:x}", e);
  }
  ERR_clear_error();
  return out;
}

SSL_SESSION* psk_session(SSL* ssl, const PskKey& k) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskCipher);
  if (!cipher) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (!s) return nullptr;
  if (!SSL_SESSION_set1_master_key(s, reinterpret_cast<const unsigned char*>(k.key.data()),
                                   k.key.size()) ||
      !SSL_SESSION_set_cipher(s, cipher) || !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

// Client: offer the configured identity and key (SSL_CTX_set_psk_use_session_callback(3)).
int use_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* idlen,
            SSL_SESSION** sess) {
  *id = nullptr, *idlen = 0, *sess = nullptr;
  const auto* k = static_cast<const PskKey*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskCipher);
  // Called again after a HelloRetryRequest with the hash chosen: the PSK must fit it.
  if (!k || !cipher || (md && SSL_CIPHER_get_handshake_digest(cipher) != md)) return 1;
  *sess = psk_session(ssl, *k);
  if (!*sess) return 0;
  *id = reinterpret_cast<const unsigned char*>(k->identity.data());
  *idlen = k->identity.size();
  return 1;
}

// Server: the key for the identity the client offers, if it is ours.
int find_psk(SSL* ssl, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  *sess = nullptr;
  const auto* k = static_cast<const PskKey*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!k) return 1;
  if (std::string_view(reinterpret_cast<const char*>(id), idlen) != k->identity) {
    t_psk_note = fmt::format(
        "the peer's PSK identity '{}' is not this side's ('{}')",
        std::string_view(reinterpret_cast<const char*>(id), std::min<size_t>(idlen, 128)),
        k->identity);
    return 1;  // no PSK: the handshake fails (there is no certificate either)
  }
  *sess = psk_session(ssl, *k);
  return *sess ? 1 : 0;
}

int wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, left < 0 ? 0 : int(left));
    if (r > 0) return 0;
    if (r == 0) return -ETIMEDOUT;
    if (errno != EINTR) return -errno;
  }
}

// What a failed handshake most likely means, from OpenSSL's reason.
std::string explain(SSL* ssl, int ret, bool server) {
  const int e = SSL_get_error(ssl, ret);
  const unsigned long err = ERR_peek_last_error();
  const int reason = ERR_GET_REASON(err);
  std::string what = take_openssl_error();
  if (e == SSL_ERROR_SYSCALL && what.empty())
    what = errno ? std::strerror(errno) : "unexpected EOF";
  if (what.empty()) what = "handshake failed";
  std::string hint;
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    const long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) what += fmt::format(": {}", X509_verify_cert_error_string(v));
    hint =
        server
            ? "the primary's certificate is not signed by this listener's ca, or names another peer"
            : "the secondary's certificate is not signed by this link's ca, or names another peer";
  } else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
             reason == SSL_R_UNEXPECTED_EOF_WHILE_READING || e == SSL_ERROR_SYSCALL ||
             reason == SSL_R_HTTP_REQUEST) {
    hint =
        server
            ? "the primary's link does not use TLS, or gave up"
            : "the peer's replication listener does not use TLS (node.replication_tls), or refused "
              "this side";
  } else if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
             reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
             reason == SSL_R_TLSV1_ALERT_DECRYPT_ERROR ||
             reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
             reason == SSL_R_TLSV1_ALERT_ACCESS_DENIED) {
    hint = "the peer refused this side's certificate or PSK";
  } else if (reason == SSL_R_BINDER_DOES_NOT_VERIFY) {
    hint = "the peer's PSK differs from this side's";
  } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    hint = "the primary's link presented no certificate (does it use a PSK?)";
  } else if (reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE || reason == SSL_R_NO_SHARED_CIPHER ||
             reason == SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM) {
    hint =
        "the two sides' TLS settings do not match (certificates on one side, a PSK on the other, "
        "or "
        "another PSK identity)";
  }
  if (!t_psk_note.empty()) hint = std::exchange(t_psk_note, "");
  return hint.empty() ? fmt::format("TLS handshake failed: {}", what)
                      : fmt::format("TLS handshake failed: {} ({})", what, hint);
}

}  // namespace

Context::Context() = default;
Context::~Context() {
  if (ctx_) SSL_CTX_free(ctx_);
}
Context::Context(Context&& o) noexcept
    : ctx_(std::exchange(o.ctx_, nullptr)), psk_(std::move(o.psk_)) {}
Context& Context::operator=(Context&& o) noexcept {
  if (this != &o) {
    if (ctx_) SSL_CTX_free(ctx_);
    ctx_ = std::exchange(o.ctx_, nullptr);
    psk_ = std::move(o.psk_);
  }
  return *this;
}

std::expected<Context, std::string> make_context(const config::ReplicationTls& t, bool server) {
  ERR_clear_error();
  Context c;
  c.ctx_ = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!c.ctx_) return std::unexpected(fmt::format("SSL_CTX_new: {}", take_openssl_error()));
  SSL_CTX* ctx = c.ctx_;
  // No resumption: each connection is a full handshake, and no session tickets arrive after
  // it (they would wake the link's poll() with nothing to read).
  if (server) SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (t.psk()) {
    auto key = config::read_secret_file(t.psk_file, 16);
    if (!key) return std::unexpected(key.error());
    c.psk_ = std::make_unique<PskKey>(PskKey{t.psk_identity, *key});
    SSL_CTX_set_app_data(ctx, c.psk_.get());
    // External PSKs in OpenSSL 3.0 are a TLS 1.3 feature (the callbacks below); TLS 1.2's
    // PSK cipher suites would lose forward secrecy without DHE-PSK, so 1.3 only.
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    // The server uses a PSK only with a cipher suite of the PSK's hash (SHA-256): the
    // default first choice, TLS_AES_256_GCM_SHA384, would make it ignore the PSK.
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
    if (server)
      SSL_CTX_set_psk_find_session_callback(ctx, find_psk);
    else
      SSL_CTX_set_psk_use_session_callback(ctx, use_psk);
    return c;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, t.cert.c_str()) != 1)
    return std::unexpected(fmt::format("cert '{}': {}", t.cert, take_openssl_error()));
  if (SSL_CTX_use_PrivateKey_file(ctx, t.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return std::unexpected(fmt::format("key '{}': {}", t.key, take_openssl_error()));
  if (SSL_CTX_check_private_key(ctx) != 1)
    return std::unexpected(fmt::format("key '{}' is not the key of '{}'", t.key, t.cert));
  if (SSL_CTX_load_verify_locations(ctx, t.ca.c_str(), nullptr) != 1)
    return std::unexpected(fmt::format("ca '{}': {}", t.ca, take_openssl_error()));
  // Mutual TLS: each side requires and verifies the other's certificate.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return c;
}

std::expected<proto::Conn, std::string> handshake(const Context& ctx,
                                                  const config::ReplicationTls& t, int fd,
                                                  bool server, int timeout_ms) {
  ERR_clear_error();
  t_psk_note.clear();
  proto::SslPtr ssl(SSL_new(ctx.get()));
  if (!ssl) return std::unexpected(fmt::format("SSL_new: {}", take_openssl_error()));
  SSL* s = ssl.get();
  SSL_set_fd(s, fd);
  // Writes behave like send(): a part may go, the rest is written again (protocol.cc).
  SSL_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (!t.psk() && !t.peer_name.empty()) {
    // The verification then also checks the name (DNS SAN, else CN), on either side: a
    // secondary checks the primary's client certificate the same way.
    SSL_set_hostflags(s, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(s, t.peer_name.c_str()) != 1)
      return std::unexpected(fmt::format("peer_name '{}': {}", t.peer_name, take_openssl_error()));
    if (!server) SSL_set_tlsext_host_name(s, t.peer_name.c_str());
  }
  if (server)
    SSL_set_accept_state(s);
  else
    SSL_set_connect_state(s);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(s);
    if (r == 1) break;
    const int e = SSL_get_error(s, r);
    short events = 0;
    if (e == SSL_ERROR_WANT_READ) events = POLLIN;
    if (e == SSL_ERROR_WANT_WRITE) events = POLLOUT;
    if (!events) return std::unexpected(explain(s, r, server));
    if (int w = wait_fd(fd, events, deadline); w < 0)
      return std::unexpected(w == -ETIMEDOUT ? std::string("TLS handshake timed out")
                                             : fmt::format("TLS handshake: {}", std::strerror(-w)));
  }
  return proto::Conn(fd, std::move(ssl));
}

std::string peer_identity(const proto::Conn& c) {
  if (!c.tls()) return "";
  SSL* s = c.ssl();
  if (X509* x = SSL_get0_peer_certificate(s)) {
    char buf[256] = "";
    X509_NAME_oneline(X509_get_subject_name(x), buf, sizeof(buf));
    return fmt::format("certificate {}", buf);
  }
  const auto* k = static_cast<const PskKey*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(s)));
  return k ? fmt::format("PSK identity '{}'", k->identity) : "no certificate";
}

std::string describe(const proto::Conn& c) {
  if (!c.tls()) return "plaintext";
  return fmt::format("{} {}", SSL_get_version(c.ssl()),
                     SSL_CIPHER_get_name(SSL_get_current_cipher(c.ssl())));
}

std::vector<uint8_t> channel_binding(const proto::Conn& c) {
  if (!c.tls()) return {};
  static constexpr char kLabel[] = "EXPORTER-zuma-replication-auth";
  std::vector<uint8_t> out(32);
  if (SSL_export_keying_material(c.ssl(), out.data(), out.size(), kLabel, sizeof(kLabel) - 1,
                                 nullptr, 0, 0) != 1) {
    ERR_clear_error();
    return {};
  }
  return out;
}

FirstBytes peek_first_bytes(int fd, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  uint8_t b[4];
  for (;;) {
    const ssize_t n = ::recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return FirstBytes::kNothing;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return FirstBytes::kNothing;
    // A TLS record: content type 22 (handshake), version 3.x (RFC 8446 5.1).
    if (n >= 2 && b[0] == 0x16 && b[1] == 0x03) return FirstBytes::kTls;
    if (n == 4) {
      uint32_t m;
      std::memcpy(&m, b, 4);
      return m == proto::kMagic ? FirstBytes::kFrame : FirstBytes::kOther;
    }
    if (n > 0 && b[0] != 0x16 && b[0] != uint8_t(proto::kMagic)) return FirstBytes::kOther;
    if (wait_fd(fd, POLLIN, deadline) < 0) return FirstBytes::kNothing;
    if (n > 0) {
      // Some bytes but not enough to tell: they stay readable, so wait a little for more.
      ::poll(nullptr, 0, 5);
      if (Clock::now() >= deadline) return FirstBytes::kNothing;
    }
  }
}

}  // namespace zuma::replication::tls
