// The daemon's life: data persists across a restart (file backend), SIGTERM with I/O in
// flight exits 0 with every acknowledged write in the backing file, and --check-config
// accepts good files and names file:line for bad ones.
#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>

#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;
using namespace std::chrono_literals;

namespace {

const char* kLuns =
    "      - { id: 0, name: a, size: 64MiB, block_size: 512, subunits: [ {backend: file, path: "
    "@DIR@/a1.img, size: 32MiB}, {backend: file, path: @DIR@/a2.img} ] }\n"
    "      - { id: 1, name: b, size: 16MiB, block_size: 4096, subunits: [ {backend: file, path: "
    "@DIR@/b.img} ] }\n";

std::string designators(Session& s, int lun) {
  Task di = s.inquiry(lun, true, 0x83, 255);
  if (!is_good(di.get())) return "VPD 0x83 failed: " + describe(s.ctx(), di.get());
  return std::string(reinterpret_cast<const char*>(di->datain.data),
                     static_cast<size_t>(di->datain.size));
}

}  // namespace

TEST_CASE("data written before a restart is read back after it") {
  Zumad z(make_config(kLuns));
  z.start();
  std::string id0, id1;
  {
    Session s(z.portal(), kTestIqn);
    for (auto [lun, lba, n, bs, seed] :
         std::initializer_list<std::tuple<int, uint64_t, uint64_t, uint32_t, uint64_t>>{
             {0, 0, 64, 512, 1},
             {0, 65536 - 32, 64, 512, 2},
             {0, 131072 - 8, 8, 512, 3},
             {1, 0, 16, 4096, 4},
             {1, 4096 - 1, 1, 4096, 5}}) {
      auto data = make_pattern(n, bs, lba, seed);
      Task w = s.write16(lun, lba, data, bs);
      REQUIRE_MESSAGE(is_good(w.get()), describe(s.ctx(), w.get()));
    }
    id0 = designators(s, 0);
    id1 = designators(s, 1);
  }
  REQUIRE(z.stop() == 0);
  z.start();
  Session s(z.portal(), kTestIqn);
  for (auto [lun, lba, n, bs, seed] :
       std::initializer_list<std::tuple<int, uint64_t, uint64_t, uint32_t, uint64_t>>{
           {0, 0, 64, 512, 1},
           {0, 65536 - 32, 64, 512, 2},
           {0, 131072 - 8, 8, 512, 3},
           {1, 0, 16, 4096, 4},
           {1, 4096 - 1, 1, 4096, 5}}) {
    CAPTURE(lun);
    CAPTURE(lba);
    Task r = s.read16(lun, lba, static_cast<uint32_t>(n * bs), bs);
    REQUIRE_MESSAGE(is_good(r.get()), describe(s.ctx(), r.get()));
    CHECK(check_pattern({r->datain.data, static_cast<size_t>(r->datain.size)}, bs, lba, seed) ==
          "");
  }
  // The LU identity (VPD 0x83) survives the restart too.
  CHECK(designators(s, 0) == id0);
  CHECK(designators(s, 1) == id1);
}

namespace {

struct Write {
  uint64_t lba;
  std::vector<uint8_t> data;
  int status = -1;  // -1 = no answer
};

struct Flight {
  int inflight = 0;
  uint64_t good = 0;
};

struct CbCtx {
  Flight* f;
  Write* w;
};

void write_cb(iscsi_context*, int status, void* command_data, void* private_data) {
  auto* c = static_cast<CbCtx*>(private_data);
  c->w->status = status;
  --c->f->inflight;
  if (status == SCSI_STATUS_GOOD) ++c->f->good;
  if (command_data) scsi_free_scsi_task(static_cast<scsi_task*>(command_data));
  delete c;
}

}  // namespace

TEST_CASE("SIGTERM with writes in flight: exit 0, acknowledged writes are in the file") {
  const char* luns =
      "      - { id: 0, name: a, size: 64MiB, block_size: 512, subunits: [ {backend: file, "
      "path: @DIR@/a.img} ] }\n";
  Zumad z(make_config(luns));
  z.start();
  constexpr uint64_t kBlocks = 64;  // 32 KiB per write, each to its own LBA range
  constexpr size_t kWrites = 2048;
  constexpr int kDepth = 32;
  std::vector<Write> writes(kWrites);
  Flight f;
  uint64_t good_before_term = 0;
  size_t submitted = 0;
  bool terminated = false;
  {
    Session s(z.portal(), kTestIqn);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    std::chrono::steady_clock::time_point term_at;
    bool connection_lost = false;
    while (std::chrono::steady_clock::now() < deadline) {
      while (!terminated && f.inflight < kDepth && submitted < kWrites) {
        Write& w = writes[submitted];
        w.lba = submitted * kBlocks;
        w.data = make_pattern(kBlocks, 512, w.lba, 77);
        auto* c = new CbCtx{&f, &w};
        if (!iscsi_write16_task(s.ctx(), 0, w.lba, w.data.data(),
                                static_cast<uint32_t>(w.data.size()), 512, 0, 0, 0, 0, 0, write_cb,
                                c)) {
          delete c;
          FAIL("cannot queue WRITE16: " << iscsi_get_error(s.ctx()));
        }
        ++f.inflight;
        ++submitted;
      }
      if (!terminated && f.good >= 300) {
        good_before_term = f.good;
        z.signal(SIGTERM);
        terminated = true;
        term_at = std::chrono::steady_clock::now();
        MESSAGE("SIGTERM with " << f.inflight << " writes in flight, " << f.good
                                << " acknowledged");
      }
      if (terminated && f.inflight == 0) break;
      if (terminated && std::chrono::steady_clock::now() - term_at > 15s) break;
      pollfd p{iscsi_get_fd(s.ctx()), static_cast<short>(iscsi_which_events(s.ctx())), 0};
      int n = ::poll(&p, 1, 200);
      if (n < 0) continue;
      if (iscsi_service(s.ctx(), n > 0 ? p.revents : 0) < 0) {
        connection_lost = true;
        break;
      }
      if (!terminated && submitted == kWrites && f.inflight == 0) break;
    }
    REQUIRE_MESSAGE(terminated, "fewer than 300 writes acknowledged in 60 s (" << f.good << ")");
    uint64_t failed = 0;
    for (const Write& w : writes)
      if (w.status != -1 && w.status != SCSI_STATUS_GOOD) ++failed;
    MESSAGE("after SIGTERM: " << f.good - good_before_term << " more acknowledged, " << failed
                              << " failed, " << f.inflight << " without answer; connection "
                              << std::string(connection_lost ? "closed by zumad" : "open"));
    // Destroying the session cancels what is still queued (write_cb frees each).
  }
  auto code = z.wait_exit(15s);
  REQUIRE_MESSAGE(code.has_value(), "zumad still running 15 s after SIGTERM");
  CHECK_MESSAGE(*code == 0, "zumad exit status " << *code << " after SIGTERM");

  // Every write zumad acknowledged is in the file.
  std::ifstream in(z.file("a.img"), std::ios::binary);
  REQUIRE(in.good());
  uint64_t checked = 0;
  for (const Write& w : writes) {
    if (w.status != SCSI_STATUS_GOOD) continue;
    std::vector<uint8_t> buf(w.data.size());
    in.seekg(static_cast<std::streamoff>(w.lba * 512));
    in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
    REQUIRE(in.good());
    CAPTURE(w.lba);
    REQUIRE(check_pattern(buf, 512, w.lba, 77) == "");
    ++checked;
  }
  MESSAGE(checked << " acknowledged writes verified in the backing file");
  CHECK(checked >= good_before_term);
}

TEST_CASE("SIGINT also shuts down cleanly") {
  Zumad z(make_config(kLuns));
  z.start();
  { Session s(z.portal(), kTestIqn); }
  z.signal(SIGINT);
  auto code = z.wait_exit(10s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
}

TEST_CASE("zumad --check-config") {
  TempDir d;
  const std::string head = "node: { name: t, data_dir: " + d.path() +
                           "/var }\n"                                                     // line 1
                           "portals: [ \"127.0.0.1:3260\" ]\n"                            // line 2
                           "targets:\n"                                                   // line 3
                           "  - iqn: iqn.2026-11.org.zuma:test\n"                         // line 4
                           "    luns:\n"                                                  // line 5
                           "      - { id: 0, name: a, size: 16MiB, backend: memory }\n";  // line 6

  SUBCASE("good files exit 0") {
    std::string good = head +
                       "      - { id: 1, name: b, size: 16MiB, block_size: 4096, subunits: [ "
                       "{backend: file, path: " +
                       d.path() +
                       "/b1.img, size: 8MiB}, {backend: "
                       "file, path: " +
                       d.path() +
                       "/b2.img} ] }\n"
                       "      - { id: 2, name: c, size: 1GiB, backend: null }\n";
    write_file(d.file("good.yaml"), good);
    auto r = run_program({zumad_path(), "--check-config", d.file("good.yaml")});
    CHECK_MESSAGE(r.exit_code == 0, r.output);
    std::string full =
        "node: { name: t, data_dir: " + d.path() +
        "/var, reactors: 2, log_level: debug }\n"
        "portals: [ \"127.0.0.1:3260\", { address: \"127.0.0.1:3261\", tpgt: 2 } ]\n"
        "iscsi: { max_burst_length: 262144, first_burst_length: 65536, immediate_data: true, "
        "initial_r2t: false, max_recv_data_segment_length: 65536, queue_depth: 128 }\n"
        "targets:\n"
        "  - iqn: iqn.2026-11.org.zuma:test\n"
        "    luns:\n"
        "      - { id: 0, name: a, size: 16MiB, backend: memory }\n";
    write_file(d.file("full.yaml"), full);
    r = run_program({zumad_path(), "--check-config", d.file("full.yaml")});
    CHECK_MESSAGE(r.exit_code == 0, r.output);
  }

  SUBCASE("bad files exit 1 and name file:line") {
    struct Bad {
      const char* what;
      std::string line7;  // the bad line, line 7 of the file
    };
    const Bad bads[] = {
        {"size that does not parse",
         "      - { id: 1, name: b, size: 12 potatoes, backend: memory }"},
        {"size not a multiple of the block size",
         "      - { id: 1, name: b, size: 1000, backend: memory }"},
        {"block size not a power of two",
         "      - { id: 1, name: b, size: 16MiB, block_size: 1000, backend: memory }"},
        {"duplicate LU name", "      - { id: 1, name: a, size: 16MiB, backend: memory }"},
        {"duplicate LUN id", "      - { id: 0, name: b, size: 16MiB, backend: memory }"},
        {"unknown backend", "      - { id: 1, name: b, size: 16MiB, backend: tape }"},
        {"LUN id too large", "      - { id: 99999, name: b, size: 16MiB, backend: memory }"},
        {"sub-units larger than the LU",
         "      - { id: 1, name: b, size: 16MiB, subunits: [ {backend: memory, size: 32MiB} ] }"},
        {"file backend without a path", "      - { id: 1, name: b, size: 16MiB, backend: file }"},
        {"unknown key", "      - { id: 1, name: b, size: 16MiB, backend: memory, colour: red }"},
    };
    int i = 0;
    for (const Bad& b : bads) {
      CAPTURE(b.what);
      std::string path = d.file("bad" + std::to_string(i++) + ".yaml");
      write_file(path, head + b.line7 + "\n");
      auto r = run_program({zumad_path(), "--check-config", path});
      CHECK_MESSAGE(r.exit_code == 1, r.output);
      CHECK_MESSAGE(r.output.find(path + ":7") != std::string::npos,
                    "expected '" << path << ":7' in: " << r.output);
    }

    // Portal errors on line 2, a YAML syntax error somewhere, a missing file.
    std::string bad_portal = head;
    bad_portal.replace(bad_portal.find("127.0.0.1:3260"), 14, "127.0.0.1:99999");
    write_file(d.file("portal.yaml"), bad_portal);
    auto r = run_program({zumad_path(), "--check-config", d.file("portal.yaml")});
    CHECK_MESSAGE(r.exit_code == 1, r.output);
    CHECK_MESSAGE(r.output.find(d.file("portal.yaml") + ":2") != std::string::npos, r.output);

    write_file(d.file("syntax.yaml"), head + "      - { id: 1, name: b, size: [ 16MiB\n");
    r = run_program({zumad_path(), "--check-config", d.file("syntax.yaml")});
    CHECK_MESSAGE(r.exit_code == 1, r.output);
    // "path:LINE" (std::regex trips a GCC 12 -Wmaybe-uninitialized false positive under ASAN).
    const std::string syntax_at = d.file("syntax.yaml") + ":";
    const size_t at = r.output.find(syntax_at);
    CHECK_MESSAGE((at != std::string::npos && at + syntax_at.size() < r.output.size() &&
                   std::isdigit(static_cast<unsigned char>(r.output[at + syntax_at.size()]))),
                  r.output);

    r = run_program({zumad_path(), "--check-config", d.file("missing.yaml")});
    CHECK_MESSAGE(r.exit_code == 1, r.output);
    CHECK_MESSAGE(r.output.find(d.file("missing.yaml")) != std::string::npos, r.output);
  }
}
