// Integration-test harness: real zumad processes on 127.0.0.1, libiscsi clients, a raw
// iSCSI/TCP client for malformed input, and block data patterns.
//
// Contract: every object here cleans up after itself, also when the test fails or
// throws. A started zumad is sent SIGTERM by ~Zumad (SIGKILL after 10 s), its exit status
// must be 0 (checked with doctest CHECK), and its stderr is printed when the running test
// case has failed. zumad also gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the test
// process if that one crashes or is killed by ctest's TIMEOUT.
//
// Environment: ZUMA_ZUMAD overrides the compiled-in zumad path; ZUMA_TEST_KEEP=1 keeps
// the temporary directories (their paths are printed).
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

struct iscsi_context;
struct scsi_task;

namespace zuma::test {

// The zumad binary under test.
std::string zumad_path();

// A fresh directory under $TMPDIR (or /tmp), removed recursively by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read, close), and not
// returned before in this process.
uint16_t free_port();

std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view text);
// Replaces every occurrence of `from` by `to`.
std::string replace_all(std::string text, std::string_view from, std::string_view to);

// GET http://127.0.0.1:PORT/PATH (HTTP/1.0, 10 s at most); the whole response with its
// headers, or "" when nothing listens there.
std::string http_get(uint16_t port, const std::string& path);
// The value of one sample line "NAME{LABELS} VALUE" of a Prometheus text page, or nullopt.
std::optional<double> metric_sample(const std::string& page, const std::string& series);

// Result of running a program to completion.
struct RunResult {
  int exit_code = -1;  // -signal if killed by a signal
  std::string output;  // stdout and stderr interleaved
};
// Runs argv[0] (a path) with a timeout; SIGKILLs it when the timeout expires.
RunResult run_program(const std::vector<std::string>& argv,
                      std::chrono::seconds timeout = std::chrono::seconds(60));

// One zumad process and its directory.
//
// The config is a YAML template in which @DIR@ is replaced by the temporary directory and
// @PORT0@, @PORT1@, ... by free ports (as many as `nports`). The directory and the ports
// stay the same across stop()/start(), so a restarted daemon sees the same files.
class Zumad {
 public:
  explicit Zumad(std::string config_template, int nports = 1);
  ~Zumad();
  Zumad(const Zumad&) = delete;
  Zumad& operator=(const Zumad&) = delete;

  // Starts zumad --config and waits (10 s at most) until every portal accepts TCP
  // connections. Throws std::runtime_error, with zumad's stderr, if it exits or times out.
  void start();
  // SIGTERM, then waits up to `grace` before SIGKILL. Returns the exit code, or -signal if
  // zumad was killed by a signal (-9 when the grace time ran out).
  int stop(std::chrono::seconds grace = std::chrono::seconds(10));
  // Sends a signal without waiting.
  void signal(int sig);
  // Waits up to `timeout` for zumad to exit by itself; returns its exit code as stop()
  // does, or nullopt if it is still running.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // True while the process has not exited (reaps it if it has).
  bool running();
  pid_t pid() const { return pid_; }

  const std::string& dir() const { return dir_.path(); }
  std::string file(std::string_view name) const { return dir_.file(name); }
  const std::string& config_path() const { return config_path_; }
  const std::string& config_text() const { return config_text_; }
  uint16_t port(size_t i = 0) const { return ports_.at(i); }
  std::string portal(size_t i = 0) const;  // "127.0.0.1:PORT"
  std::string url(std::string_view iqn, int lun, size_t portal_index = 0) const;
  // zumad's stdout+stderr so far (all runs, appended).
  std::string log() const;
  // The last `max_bytes` of log(), for messages.
  std::string log_tail(size_t max_bytes = 16384) const;

 private:
  TempDir dir_;
  std::vector<uint16_t> ports_;
  std::string config_path_;
  std::string config_text_;
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_code_ = 0;
};

// A YAML config template with one target `iqn` (default kTestIqn), node/portals filled in
// for the harness, `luns_yaml` pasted under `luns:` (each line indented by the caller
// with 6 spaces) and `iscsi_yaml` (a flow map such as "{ immediate_data: false }", or
// empty) as the iscsi: section.
inline constexpr const char* kTestIqn = "iqn.2026-11.org.zuma:test";
std::string make_config(std::string_view luns_yaml, std::string_view iscsi_yaml = "",
                        int nports = 1, std::string_view iqn = kTestIqn);

// ---- libiscsi ------------------------------------------------------------------------

struct TaskDeleter {
  void operator()(scsi_task* t) const;
};
using Task = std::unique_ptr<scsi_task, TaskDeleter>;

// "GOOD", "CHECK CONDITION ILLEGAL_REQUEST(0x5) ASC/ASCQ 0x2100", or "transport error:
// <libiscsi error>" when `task` is null.
std::string describe(iscsi_context* ctx, const scsi_task* task);
bool is_good(const scsi_task* task);
// CHECK CONDITION with this sense key and ASC/ASCQ (e.g. 0x05, 0x2100).
bool is_sense(const scsi_task* task, int key, int ascq);

struct SessionOptions {
  // Empty: a name unique to this session, so sessions never reinstate one another.
  std::string initiator;
  std::optional<bool> immediate_data;  // what libiscsi offers; nullopt = its default
  std::optional<bool> initial_r2t;
  int timeout_s = 30;  // per-command timeout of the sync calls
  // After login, TEST UNIT READY every reported LUN until its unit attentions (power on,
  // reset) are consumed, as initiators do. Off for tests that look at those attentions.
  bool clear_unit_attentions = true;
};

// A logged-in normal session (libiscsi sync API; auto-reconnect disabled so a dropped
// connection is seen as an error). Throws std::runtime_error if the login fails.
class Session {
 public:
  Session(const std::string& portal, std::string_view iqn, int lun = 0,
          const SessionOptions& opts = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  iscsi_context* ctx() const { return ctx_; }
  std::string error() const;

  Task tur(int lun);
  Task inquiry(int lun, bool evpd = false, int page = 0, int alloc = 255);
  Task read_capacity16(int lun);
  Task read16(int lun, uint64_t lba, uint32_t bytes, uint32_t block_size);
  Task write16(int lun, uint64_t lba, std::span<const uint8_t> data, uint32_t block_size);
  Task sync_cache(int lun);

  // (last LBA + 1, block length) from READ CAPACITY 16; throws on failure.
  std::pair<uint64_t, uint32_t> capacity(int lun);

 private:
  iscsi_context* ctx_ = nullptr;
};

// SendTargets=All over a discovery session to `portal`. Returns (target name, portal
// address) pairs; throws on failure.
std::vector<std::pair<std::string, std::string>> discover(const std::string& portal);

// ---- patterns --------------------------------------------------------------------------

// Fills `buf` (whole blocks) with the pattern of blocks first_lba.. for `seed`: each block
// begins with its LBA and the seed (little endian, 8 bytes each) followed by bytes that
// depend on both.
void fill_pattern(std::span<uint8_t> buf, uint32_t block_size, uint64_t first_lba, uint64_t seed);
std::vector<uint8_t> make_pattern(uint64_t nblocks, uint32_t block_size, uint64_t first_lba,
                                  uint64_t seed);
// Empty if `buf` holds exactly that pattern, else a description of the first bad block.
std::string check_pattern(std::span<const uint8_t> buf, uint32_t block_size, uint64_t first_lba,
                          uint64_t seed);

// `img` (a LU image file) holds, block by block, the pattern of seed `seeds[b]` for block b
// (fill_pattern), or zeros where the seed is 0. REQUIRE-fails naming the first bad block.
void check_image(const std::string& img, const std::vector<uint64_t>& seeds, uint32_t block_size);

// Polls `pred` every 20 ms until it holds (true) or `limit` has passed (false).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// ---- raw iSCSI over TCP (for malformed input) -----------------------------------------

inline constexpr size_t kBhsLen = 48;

struct RawPdu {
  std::vector<uint8_t> bhs;   // 48 bytes
  std::vector<uint8_t> data;  // data segment without padding
  std::vector<uint8_t> ahs;   // additional header segments, if any
  // Digests of a received PDU, checked when the connection has them in force.
  bool header_digest_ok = true;
  bool data_digest_ok = true;
  uint8_t opcode() const { return bhs[0] & 0x3f; }
  uint32_t itt() const;  // Initiator Task Tag (bytes 16..19)
};

// CRC32C (Castagnoli, RFC 3720 B.4) by a table here, independent of zumad's ISA-L code.
uint32_t crc32c(std::span<const uint8_t> data);
// The 4 digest bytes as they travel (least significant byte first, RFC 7143 11.1).
std::array<uint8_t, 4> digest_bytes(uint32_t crc);

// Corruptions RawConnection::send_pdu can make on purpose.
struct SendOptions {
  bool corrupt_header_digest = false;
  bool corrupt_data_digest = false;
};

enum class RecvStatus { kPdu, kClosed, kTimeout };

struct RecvResult {
  RecvStatus status = RecvStatus::kTimeout;
  RawPdu pdu;
  std::string what() const;  // for messages
};

// A plain TCP connection speaking hand-built PDUs, with CRC32C digests when set.
class RawConnection {
 public:
  explicit RawConnection(uint16_t port);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Returns false if the peer has closed the connection (EPIPE/ECONNRESET).
  bool send(std::span<const uint8_t> bytes);
  // Sends a BHS (its DataSegmentLength set here) and data segment, padded, with the
  // digests in force (set_digests); can corrupt them on purpose.
  bool send_pdu(std::span<const uint8_t> bhs, std::span<const uint8_t> data = {},
                const SendOptions& so = {});
  // Waits up to `timeout` for one whole PDU (AHS and data segment read; digests read and
  // checked when in force).
  RecvResult recv(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  // Reads and drops PDUs until the connection closes or `timeout` passes; true if closed.
  // `seen`, when given, collects the PDUs read.
  bool wait_closed(std::chrono::milliseconds timeout, std::vector<RawPdu>* seen = nullptr);
  void close();
  int fd() const { return fd_; }
  // Header/data digests (CRC32C) in force from now on, as a login negotiated them.
  void set_digests(bool header, bool data) {
    hd_ = header;
    dd_ = data;
  }
  bool header_digest() const { return hd_; }
  bool data_digest() const { return dd_; }
  // "127.0.0.1:PORT" of this end, as zumad logs the initiator's address.
  std::string local_address() const;

  // Security -> operational -> full feature login of a normal session to `iqn`.
  // Returns an empty string on success, else what went wrong.
  std::string login(std::string_view iqn,
                    std::string_view initiator = "iqn.2026-11.org.zuma:it-raw");
  // After login(): a NOP-Out ping; true if the matching NOP-In came back.
  bool ping(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  uint32_t next_itt() { return itt_++; }
  uint32_t cmdsn() const { return cmdsn_; }
  uint32_t exp_statsn() const { return exp_statsn_; }

 private:
  int fd_ = -1;
  std::vector<uint8_t> rbuf_;
  uint32_t itt_ = 1;
  uint32_t cmdsn_ = 1;
  uint32_t exp_statsn_ = 0;
  bool hd_ = false, dd_ = false;
};

// Builders for hand-made PDUs.
std::vector<uint8_t> login_request(uint8_t csg, uint8_t nsg, bool transit, uint32_t itt,
                                   uint32_t cmdsn, uint32_t exp_statsn, uint16_t tsih,
                                   std::string_view keys /* "k=v\0k=v\0" */);
void put_be32(uint8_t* p, uint32_t v);
void put_be24(uint8_t* p, uint32_t v);
uint32_t get_be32(const uint8_t* p);
uint32_t get_be24(const uint8_t* p);

}  // namespace zuma::test
