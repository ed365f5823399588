#include "replication/seq_state.hh"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

using namespace zuma::replication;

TEST_CASE("sequence state: new, stored, reopened, one slot torn, both damaged") {
  char tmpl[] = "/tmp/zuma-seqstate-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string path = std::string(tmpl) + "/link.state";
  {
    auto f = SeqStateFile::open(path);
    REQUIRE(f);
    CHECK(f->value().seq == 0);
    CHECK(f->value().log_id == 0);
    REQUIRE(f->store({41, 0xabc}) == 0);
    REQUIRE(f->store({42, 0xabc}) == 0);
  }
  auto f = SeqStateFile::open(path);
  REQUIRE(f);
  CHECK(f->value().seq == 42);
  CHECK(f->value().log_id == 0xabc);
  // Tear the newest slot (generation 2 is in slot 0): the previous value comes back.
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  const uint8_t junk[4] = {1, 2, 3, 4};
  REQUIRE(::pwrite(fd, junk, 4, 16) == 4);
  auto g = SeqStateFile::open(path);
  REQUIRE(g);
  CHECK(g->value().seq == 41);
  REQUIRE(::pwrite(fd, junk, 4, 4096 + 16) == 4);
  ::close(fd);
  auto h = SeqStateFile::open(path);
  REQUIRE_FALSE(h);
  CHECK(h.error() == path + ": replication state is damaged (both slots fail their checksum)");
  std::filesystem::remove_all(tmpl);
}
