// target/server.cc: find_copy_target, the rule for which other targets' LUs an EXTENDED
// COPY may name (an initiator reaches only what it could log in to and address itself).
#include "target/server.hh"

#include <arpa/inet.h>
#include <doctest/doctest.h>

#include <cstring>

#include "scsi/logical_unit.hh"
#include "storage/memory_backend.hh"

namespace zuma::target {
namespace {

constexpr const char* kHost1 = "iqn.1994-05.com.example:host1";
constexpr const char* kHost2 = "iqn.1994-05.com.example:host2";

// The targets are all this fake serves; the rest is never called by find_copy_target.
class FakeServer final : public ServerContext {
 public:
  std::vector<std::shared_ptr<const TargetDef>> defs;
  const IscsiLimits& limits() const override { return limits_; }
  std::shared_ptr<const TargetDef> find_target(const std::string& iqn) const override {
    for (const auto& t : defs)
      if (t->iqn == iqn) return t;
    return nullptr;
  }
  std::vector<std::shared_ptr<const TargetDef>> targets() const override { return defs; }
  std::vector<PortalDef> portals() const override { return {}; }
  const ChapPolicy* discovery_chap() const override { return nullptr; }
  uint16_t allocate_tsih() override { return 1; }
  uint64_t allocate_nexus_id() override { return 1; }
  bool session_started(const std::string&, uint16_t, std::function<void()>) override {
    return false;
  }
  void session_ended(const std::string&, uint16_t) override {}
  void close_target_connections(const std::string&, uint64_t) override {}

 private:
  IscsiLimits limits_;
};

std::shared_ptr<scsi::LogicalUnit> make_lu(const std::string& name, const std::string& uuid) {
  scsi::LuParams p;
  p.name = name;
  p.uuid = uuid;
  p.block_size = 512;
  p.num_blocks = 2048;
  return scsi::make_logical_unit(std::move(p),
                                 std::make_unique<storage::MemoryBackend>(2048 * 512));
}

std::shared_ptr<const TargetDef> target(const std::string& iqn,
                                        std::vector<std::shared_ptr<scsi::LogicalUnit>> lus,
                                        std::vector<AclRule> acl = {},
                                        std::optional<ChapPolicy> chap = std::nullopt) {
  auto t = std::make_shared<TargetDef>();
  t->iqn = iqn;
  auto table = std::make_shared<scsi::LunTable>();
  uint64_t lun = 0;
  for (auto& lu : lus) table->luns.emplace(lun++, std::move(lu));
  t->luns = std::move(table);
  t->acl = std::move(acl);
  t->chap = std::move(chap);
  return t;
}

sockaddr_storage loopback() {
  sockaddr_storage ss{};
  auto* in = reinterpret_cast<sockaddr_in*>(&ss);
  in->sin_family = AF_INET;
  in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ss;
}

TEST_CASE("find_copy_target: only LUs of targets the initiator could address itself") {
  auto own = make_lu("own", "10000000-0000-4000-8000-000000000001");
  auto open_lu = make_lu("open", "10000000-0000-4000-8000-000000000002");
  auto acl2 = make_lu("acl2", "10000000-0000-4000-8000-000000000003");
  auto chap_lu = make_lu("chap", "10000000-0000-4000-8000-000000000004");
  auto far = make_lu("far", "10000000-0000-4000-8000-000000000005");
  auto mapped = make_lu("mapped", "10000000-0000-4000-8000-000000000006");
  auto hidden = make_lu("hidden", "10000000-0000-4000-8000-000000000007");

  FakeServer s;
  s.defs.push_back(target("iqn.t:own", {own}));
  s.defs.push_back(target("iqn.t:open", {open_lu}));
  s.defs.push_back(target("iqn.t:acl2", {acl2}, {AclRule{kHost2, {}, nullptr}}));
  ChapPolicy chap;
  chap.initiator = {"u1", "a-secret-of-16b!"};
  s.defs.push_back(target("iqn.t:chap", {chap_lu}, {}, chap));
  s.defs.push_back(
      target("iqn.t:far", {far}, {AclRule{kHost1, {*Network::parse("192.0.2.0/24")}, nullptr}}));
  // host1 is mapped to `mapped` only; `hidden` is in the target but not in host1's table.
  auto host1_table = std::make_shared<scsi::LunTable>();
  host1_table->luns.emplace(0, mapped);
  s.defs.push_back(target("iqn.t:mapped", {mapped, hidden}, {AclRule{kHost1, {}, host1_table}}));

  const sockaddr_storage peer = loopback();
  auto find = [&](const std::shared_ptr<scsi::LogicalUnit>& lu, const char* ini,
                  std::optional<ChapSecret> proved = std::nullopt) {
    return find_copy_target(s, "iqn.t:own", ini, peer, proved, lu->naa().data());
  };
  CHECK(find(open_lu, kHost1) == open_lu);
  CHECK(find(acl2, kHost1) == nullptr);  // not in that target's ACL
  CHECK(find(acl2, kHost2) == acl2);
  CHECK(find(chap_lu, kHost1) == nullptr);  // CHAP there, none proved here
  CHECK(find(chap_lu, kHost1, ChapSecret{"u1", "another-secret!!"}) == nullptr);
  CHECK(find(chap_lu, kHost1, ChapSecret{"u2", "a-secret-of-16b!"}) == nullptr);
  CHECK(find(chap_lu, kHost1, ChapSecret{"u1", "a-secret-of-16b!"}) == chap_lu);
  CHECK(find(far, kHost1) == nullptr);  // admitted only from 192.0.2.0/24
  CHECK(find(mapped, kHost1) == mapped);
  CHECK(find(hidden, kHost1) == nullptr);  // outside host1's LUN mapping
  CHECK(find(own, kHost1) == nullptr);     // the own target is the nexus's table, not this
  const uint8_t unknown[16] = {0x60};
  CHECK(find_copy_target(s, "iqn.t:own", kHost1, peer, std::nullopt, unknown) == nullptr);
}

}  // namespace
}  // namespace zuma::target
