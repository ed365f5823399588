// libFuzzer target: the whole receive path of a connection, as an initiator drives it.
//
// One target::Server (one reactor, no portal) lives for the whole run, with three targets:
// "fuzz" (a 1 MiB memory LU at LUN 0 and a 4096-byte-block one at LUN 1), "fuzz-chap"
// (CHAP required) and "fuzz-acl" (an ACL that excludes the fuzz initiator). Each input is
// written into one end of a socketpair whose other end the server adopts
// (Server::adopt_connection), as if accepted on a portal.
//
// Byte 0 of the input chooses what comes before the rest (mode = byte0 & 3):
//   0  nothing: the rest starts at login (raw bytes, hand-made login PDUs, CHAP...)
//   1  a valid login of a normal session to "fuzz" (AuthMethod=None, no digests,
//      ImmediateData=Yes, InitialR2T=No, FirstBurstLength 1024, MaxBurstLength 2048,
//      MaxOutstandingR2T 2: R2Ts are cheap to reach; CmdSN starts at 1, TTTs at 1)
//   2  a valid login of a discovery session
//   3  as 1 with HeaderDigest=CRC32C and DataDigest=CRC32C; the rest is then read as PDUs
//      (BHS, AHS, data as its DataSegmentLength says, cut to what is there) and sent
//      framed with correct digests, except: byte0 & 0x10 corrupts the header digest of
//      the last PDU, byte0 & 0x20 the data digests of odd-numbered PDUs.
// After the rest, an immediate Logout Request (so a session that got that far ends
// cleanly), then the harness half-closes its end and reads until the server closes the
// connection. Then it waits until the server has released the connection
// (connection_count() back to 0): a connection that is closed but never finishes (leaked
// commands, buffers) aborts the run, unless ZUMA_FUZZ_NO_LEAK_CHECK=1.
// Nothing leaks: the harness's fd is closed every time; the server's is owned by the
// connection. ZUMA_FUZZ_LOG=debug prints the server's log (to reproduce a finding).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <spdlog/spdlog.h>

#include "scsi/device_server.hh"
#include "storage/memory_backend.hh"
#include "storage/unique_fd.hh"
#include "target/server.hh"

using namespace zuma;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kTarget = "iqn.2026-11.org.zuma:fuzz";
constexpr const char* kInitiator = "iqn.2026-11.org.zuma:fuzz-initiator";

std::shared_ptr<scsi::LogicalUnit> memory_lu(const std::string& name, uint32_t block_size,
                                             uint64_t bytes) {
  scsi::LuParams p;
  p.name = name;
  p.uuid = "5a0f0f00-0000-4000-8000-00000000000" + std::to_string(block_size % 10);
  p.block_size = block_size;
  p.num_blocks = bytes / block_size;
  p.thin = block_size == 4096;
  return scsi::make_logical_unit(std::move(p), std::make_unique<storage::MemoryBackend>(bytes));
}

// TargetDef::acl holds initiator names, or rules naming one (whichever this tree has).
template <typename Acl>
void add_acl_entry(Acl& acl, const std::string& initiator) {
  if constexpr (std::is_same_v<typename Acl::value_type, std::string>) {
    acl.push_back(initiator);
  } else {
    typename Acl::value_type rule{};
    rule.initiator = initiator;
    acl.push_back(rule);
  }
}

struct Env {
  std::unique_ptr<target::Server> server;
  bool leak_check = true;

  Env() {
    // ZUMA_FUZZ_LOG=debug (or info, warn...) shows what the server did with an input.
    const char* lvl = std::getenv("ZUMA_FUZZ_LOG");
    spdlog::set_level(lvl && *lvl ? spdlog::level::from_str(lvl) : spdlog::level::off);
    const char* e = std::getenv("ZUMA_FUZZ_NO_LEAK_CHECK");
    leak_check = !(e && *e && std::string(e) != "0");
    target::ServerConfig cfg;
    cfg.reactors = 1;
    cfg.node_name = "fuzz";
    auto luns = std::make_shared<scsi::LunTable>();
    luns->luns.emplace(0, memory_lu("fuzz0", 512, 1 << 20));
    luns->luns.emplace(1, memory_lu("fuzz1", 4096, 1 << 20));
    target::TargetDef plain;
    plain.iqn = kTarget;
    plain.alias = "fuzz target";
    plain.luns = luns;
    target::TargetDef chap = plain;
    chap.iqn = std::string(kTarget) + "-chap";
    chap.chap = target::ChapPolicy{{"fuzz-user", "fuzz-secret-0123"},
                                   target::ChapSecret{"fuzz-target", "fuzz-target-secret"},
                                   {}};
    target::TargetDef acl = plain;
    acl.iqn = std::string(kTarget) + "-acl";
    add_acl_entry(acl.acl, "iqn.2026-11.org.zuma:someone-else");
    cfg.targets = {plain, chap, acl};
    server = std::make_unique<target::Server>(std::move(cfg));
    server->start();
  }
};

Env& env() {
  static Env* e = new Env;  // never destroyed: reactors run until the process exits
  return *e;
}

void put32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

uint32_t crc32c(const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

void append_digest(std::vector<uint8_t>& out, uint32_t crc, bool corrupt) {
  if (corrupt) crc ^= 0x00ff00ffu;
  for (int i = 0; i < 4; ++i) out.push_back(uint8_t(crc >> (8 * i)));
}

void append_login(std::vector<uint8_t>& out, uint8_t csg, uint8_t nsg, const std::string& keys) {
  uint8_t b[48] = {};
  b[0] = 0x40 | 0x03;
  b[1] = uint8_t(0x80 | csg << 2 | nsg);
  b[5] = uint8_t(keys.size() >> 16);
  b[6] = uint8_t(keys.size() >> 8);
  b[7] = uint8_t(keys.size());
  const uint8_t isid[6] = {0x80, 0x46, 0x55, 0x5a, 0x5a, 0x01};
  std::memcpy(b + 8, isid, 6);
  put32(b + 24, 1);  // CmdSN: the first command after login uses 1
  out.insert(out.end(), b, b + 48);
  out.insert(out.end(), keys.begin(), keys.end());
  out.resize(out.size() + ((4 - keys.size() % 4) % 4), 0);
}

std::string kv(const char* k, const std::string& v) {
  return std::string(k) + "=" + v + '\0';
}

std::vector<uint8_t> login_prefix(int mode) {
  std::vector<uint8_t> out;
  const bool discovery = mode == 2;
  std::string s = kv("InitiatorName", kInitiator) +
                  kv("SessionType", discovery ? "Discovery" : "Normal") +
                  (discovery ? "" : kv("TargetName", kTarget)) + kv("AuthMethod", "None");
  append_login(out, 0, 1, s);
  const std::string digest = mode == 3 ? "CRC32C" : "None";
  std::string o = kv("HeaderDigest", digest) + kv("DataDigest", digest) +
                  kv("MaxRecvDataSegmentLength", "262144");
  if (!discovery)
    o += kv("InitialR2T", "No") + kv("ImmediateData", "Yes") + kv("MaxBurstLength", "2048") +
         kv("FirstBurstLength", "1024") + kv("MaxOutstandingR2T", "2") +
         kv("ErrorRecoveryLevel", "0");
  append_login(out, 1, 3, o);
  return out;
}

// Mode 3: frames `rest` as PDUs with digests.
void append_framed(std::vector<uint8_t>& out, std::span<const uint8_t> rest, uint8_t flags) {
  size_t at = 0;
  size_t index = 0;
  while (rest.size() - at >= 48) {
    std::vector<uint8_t> hdr(rest.begin() + long(at), rest.begin() + long(at) + 48);
    at += 48;
    size_t ahs = std::min<size_t>(size_t(hdr[4]) * 4, rest.size() - at);
    ahs &= ~size_t(3);
    hdr[4] = uint8_t(ahs / 4);
    hdr.insert(hdr.end(), rest.begin() + long(at), rest.begin() + long(at + ahs));
    at += ahs;
    size_t dsl = size_t(hdr[5]) << 16 | size_t(hdr[6]) << 8 | hdr[7];
    dsl = std::min(dsl, rest.size() - at);
    hdr[5] = uint8_t(dsl >> 16);
    hdr[6] = uint8_t(dsl >> 8);
    hdr[7] = uint8_t(dsl);
    const bool last = rest.size() - at - dsl < 48;
    out.insert(out.end(), hdr.begin(), hdr.end());
    append_digest(out, crc32c(hdr.data(), hdr.size()), last && (flags & 0x10));
    if (dsl) {
      std::vector<uint8_t> d(rest.begin() + long(at), rest.begin() + long(at + dsl));
      d.resize(d.size() + (4 - dsl % 4) % 4, 0);
      out.insert(out.end(), d.begin(), d.end());
      append_digest(out, crc32c(d.data(), d.size()), (flags & 0x20) && (index % 2));
    }
    at += dsl;
    ++index;
  }
  out.insert(out.end(), rest.begin() + long(at), rest.end());
}

void append_logout(std::vector<uint8_t>& out, bool digests) {
  uint8_t b[48] = {};
  b[0] = 0x40 | 0x06;  // immediate Logout Request, close the session (RFC 7143 11.14)
  b[1] = 0x80;
  put32(b + 16, 0x7fffffff);
  out.insert(out.end(), b, b + 48);
  if (digests) append_digest(out, crc32c(b, 48), false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Env& e = env();
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const int mode = flags & 3;
  const std::span<const uint8_t> rest(data + 1, size - 1);

  std::vector<uint8_t> stream;
  if (mode != 0) stream = login_prefix(mode);
  if (mode == 3)
    append_framed(stream, rest, flags);
  else
    stream.insert(stream.end(), rest.begin(), rest.end());
  append_logout(stream, mode == 3);

  const size_t before = e.server->connection_count();  // > 0 only after a tolerated leak
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
    std::perror("socketpair");
    std::abort();
  }
  e.server->adopt_connection(storage::UniqueFd(sv[0]));
  const int fd = sv[1];

  // Write everything while draining what the server answers (so neither side blocks).
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  size_t off = 0;
  bool half_closed = false, peer_closed = false;
  uint8_t sink[65536];
  while (!peer_closed && Clock::now() < deadline) {
    if (off == stream.size() && !half_closed) {
      ::shutdown(fd, SHUT_WR);
      half_closed = true;
    }
    pollfd p{fd, short(POLLIN | (off < stream.size() ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(fd, sink, sizeof sink);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) peer_closed = true;
    }
    if (!peer_closed && off < stream.size() && (p.revents & POLLOUT)) {
      ssize_t n = ::send(fd, stream.data() + off, stream.size() - off, MSG_NOSIGNAL);
      if (n > 0)
        off += size_t(n);
      else if (n < 0 && errno != EAGAIN && errno != EINTR)
        off = stream.size();  // peer gone
    }
  }
  ::close(fd);

  // The server must release the connection (and everything it holds).
  const auto release_deadline = Clock::now() + (e.leak_check ? std::chrono::milliseconds(5000)
                                                             : std::chrono::milliseconds(100));
  while (e.server->connection_count() > before && Clock::now() < release_deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  if (e.server->connection_count() > before) {
    if (e.leak_check) {
      std::fprintf(stderr,
                   "fuzz_pdu_stream: the connection was closed 5 s ago but the server still "
                   "counts it: it never finished (leaked commands or buffers)\n");
      std::abort();
    }
    static size_t leaked = 0;
    ++leaked;
    if ((leaked & (leaked - 1)) == 0)
      std::fprintf(stderr, "fuzz_pdu_stream: %zu connection(s) never finished so far\n", leaked);
  }
  return 0;
}
