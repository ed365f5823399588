// Discovery, login and the first commands an initiator sends: TEST UNIT READY, INQUIRY,
// REPORT LUNS, READ CAPACITY 16, on LUs of both block sizes and every backend.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

using namespace zuma::test;

namespace {

const char* kLuns =
    "      - { id: 0, name: a, size: 64MiB, block_size: 512, subunits: [ {backend: file, path: "
    "@DIR@/a1.img, size: 32MiB}, {backend: file, path: @DIR@/a2.img} ] }\n"
    "      - { id: 1, name: b, size: 16MiB, block_size: 4096, backend: memory }\n"
    "      - { id: 2, name: c, size: 1GiB, block_size: 512, backend: null }\n";

struct LuInfo {
  int lun;
  uint64_t blocks;
  uint32_t block_size;
};
const LuInfo kLus[] = {
    {0, 64ull << 20 >> 9, 512}, {1, 16ull << 20 >> 12, 4096}, {2, 1ull << 30 >> 9, 512}};

}  // namespace

TEST_CASE("SendTargets lists the target on every portal") {
  Zumad z(make_config(kLuns, "", 2), 2);
  z.start();
  for (size_t i = 0; i < 2; ++i) {
    CAPTURE(z.portal(i));
    auto found = discover(z.portal(i));
    REQUIRE(!found.empty());
    for (size_t want = 0; want < 2; ++want) {
      bool seen = std::any_of(found.begin(), found.end(), [&](const auto& tp) {
        return tp.first == kTestIqn && tp.second.starts_with(z.portal(want) + ",");
      });
      CHECK_MESSAGE(seen, "SendTargets on " << z.portal(i) << " does not list " << kTestIqn
                                            << " at " << z.portal(want) << ",<tpgt>");
    }
    for (const auto& [t, p] : found) MESSAGE("SendTargets: " << t << " " << p);
  }
}

TEST_CASE("login to an unknown target fails, login to the target works") {
  Zumad z(make_config(kLuns));
  z.start();
  CHECK_THROWS(Session(z.portal(), "iqn.2026-11.org.zuma:no-such-target"));
  Session s(z.portal(), kTestIqn);
  CHECK(iscsi_is_logged_in(s.ctx()));
}

TEST_CASE("TEST UNIT READY, INQUIRY, REPORT LUNS, READ CAPACITY 16") {
  Zumad z(make_config(kLuns));
  z.start();
  Session s(z.portal(), kTestIqn);

  SUBCASE("REPORT LUNS lists 0, 1, 2") {
    Task t(iscsi_reportluns_sync(s.ctx(), 0, 512));
    REQUIRE_MESSAGE(is_good(t.get()), describe(s.ctx(), t.get()));
    auto* list = static_cast<scsi_reportluns_list*>(scsi_datain_unmarshall(t.get()));
    REQUIRE(list);
    std::vector<int> luns;
    for (uint32_t i = 0; i < list->num; ++i) luns.push_back(list->luns[i]);
    std::sort(luns.begin(), luns.end());
    CHECK(luns == std::vector<int>{0, 1, 2});
  }

  SUBCASE("each LU: TUR, INQUIRY, VPD 0x80 and 0x83, READ CAPACITY 16") {
    for (const LuInfo& lu : kLus) {
      CAPTURE(lu.lun);
      Task tur = s.tur(lu.lun);
      CHECK_MESSAGE(is_good(tur.get()), "TUR: " << describe(s.ctx(), tur.get()));

      Task inq = s.inquiry(lu.lun);
      REQUIRE_MESSAGE(is_good(inq.get()), "INQUIRY: " << describe(s.ctx(), inq.get()));
      auto* std_inq = static_cast<scsi_inquiry_standard*>(scsi_datain_unmarshall(inq.get()));
      REQUIRE(std_inq);
      CHECK(std_inq->qualifier == SCSI_INQUIRY_PERIPHERAL_QUALIFIER_CONNECTED);
      CHECK(std_inq->device_type == SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS);
      CHECK(std_inq->response_data_format == 2);
      CHECK(std::strlen(std_inq->vendor_identification) > 0);
      CHECK(std::strlen(std_inq->product_identification) > 0);
      MESSAGE("LUN " << lu.lun << " INQUIRY: '" << std_inq->vendor_identification << "' '"
                     << std_inq->product_identification << "' '" << std_inq->product_revision_level
                     << "' version " << std_inq->version);

      Task sn = s.inquiry(lu.lun, true, SCSI_INQUIRY_PAGECODE_UNIT_SERIAL_NUMBER);
      CHECK_MESSAGE(is_good(sn.get()), "VPD 0x80: " << describe(s.ctx(), sn.get()));
      Task di = s.inquiry(lu.lun, true, SCSI_INQUIRY_PAGECODE_DEVICE_IDENTIFICATION);
      REQUIRE_MESSAGE(is_good(di.get()), "VPD 0x83: " << describe(s.ctx(), di.get()));
      auto* id = static_cast<scsi_inquiry_device_identification*>(scsi_datain_unmarshall(di.get()));
      REQUIRE(id);
      bool naa = false;
      for (auto* d = id->designators; d; d = d->next)
        naa = naa || (d->designator_type == SCSI_DESIGNATOR_TYPE_NAA &&
                      d->association == SCSI_ASSOCIATION_LOGICAL_UNIT);
      CHECK_MESSAGE(naa, "VPD 0x83 has no NAA designator for the logical unit");

      auto [blocks, bs] = s.capacity(lu.lun);
      CHECK(blocks == lu.blocks);
      CHECK(bs == lu.block_size);
    }
  }

  SUBCASE("a LUN that does not exist") {
    Task inq = s.inquiry(7);
    REQUIRE_MESSAGE(is_good(inq.get()), "INQUIRY LUN 7: " << describe(s.ctx(), inq.get()));
    REQUIRE(inq->datain.size >= 1);
    // SPC-5 6.7.2: peripheral qualifier 011b, device type 1Fh for a LUN that is not there.
    CHECK(inq->datain.data[0] == 0x7f);
    Task tur = s.tur(7);
    CHECK_MESSAGE(is_sense(tur.get(), SCSI_SENSE_ILLEGAL_REQUEST, 0x2500),
                  "TUR LUN 7: " << describe(s.ctx(), tur.get()));
  }
}

TEST_CASE("distinct LUs have distinct identities") {
  Zumad z(make_config(kLuns));
  z.start();
  Session s(z.portal(), kTestIqn);
  std::vector<std::string> serials;
  for (const LuInfo& lu : kLus) {
    Task sn = s.inquiry(lu.lun, true, SCSI_INQUIRY_PAGECODE_UNIT_SERIAL_NUMBER);
    REQUIRE_MESSAGE(is_good(sn.get()), describe(s.ctx(), sn.get()));
    auto* u = static_cast<scsi_inquiry_unit_serial_number*>(scsi_datain_unmarshall(sn.get()));
    REQUIRE(u);
    serials.emplace_back(u->usn ? u->usn : "");
  }
  std::sort(serials.begin(), serials.end());
  CHECK(std::adjacent_find(serials.begin(), serials.end()) == serials.end());
}
