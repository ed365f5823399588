#include "target/negotiation.hh"

#include <doctest/doctest.h>

#include <string>

using namespace zuma::target;

namespace {

std::string answer(Negotiator& n, const std::string& k, const std::string& v) {
  std::vector<uint8_t> out;
  REQUIRE(n.offer({k, v}, out) == Negotiator::Outcome::kAnswered);
  auto kv = parse_text(out);
  REQUIRE(kv);
  REQUIRE(kv->size() == 1);
  CHECK((*kv)[0].key == k);
  return (*kv)[0].value;
}

}  // namespace

TEST_CASE("defaults are RFC 7143 13's when nothing is negotiated") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  CHECK(n.session.max_burst_length == 262144);
  CHECK(n.session.first_burst_length == 65536);
  CHECK(n.session.initial_r2t);
  CHECK(n.session.immediate_data);
  CHECK(n.session.max_outstanding_r2t == 1);
  CHECK(n.session.max_connections == 1);
  CHECK(n.session.error_recovery_level == 0);
  CHECK(n.conn.max_send_data_segment_length == 8192);
  std::vector<uint8_t> out;
  n.finish(out);  // the target always declares its MaxRecvDataSegmentLength
  auto kv = parse_text(out);
  REQUIRE(kv);
  REQUIRE(kv->size() == 1);
  CHECK((*kv)[0].key == "MaxRecvDataSegmentLength");
  CHECK((*kv)[0].value == std::to_string(lim.max_recv_data_segment_length));
}

TEST_CASE("numeric minimum keys") {
  IscsiLimits lim;
  lim.max_burst_length = 65536;
  lim.first_burst_length = 16384;
  lim.max_outstanding_r2t = 4;
  lim.max_connections = 1;
  lim.default_time2retain = 20;
  Negotiator n(lim, false);
  CHECK(answer(n, "MaxBurstLength", "262144") == "65536");
  CHECK(n.session.max_burst_length == 65536);
  CHECK(answer(n, "MaxBurstLength", "4096") == "4096");
  CHECK(n.session.max_burst_length == 4096);
  CHECK(answer(n, "FirstBurstLength", "65536") == "16384");
  CHECK(answer(n, "MaxOutstandingR2T", "16") == "4");
  CHECK(answer(n, "MaxOutstandingR2T", "2") == "2");
  CHECK(answer(n, "MaxConnections", "8") == "1");
  CHECK(answer(n, "DefaultTime2Retain", "0") == "0");
  CHECK(answer(n, "DefaultTime2Retain", "3600") == "20");
  CHECK(answer(n, "ErrorRecoveryLevel", "2") == "0");
  // FirstBurstLength never exceeds MaxBurstLength (RFC 7143 13.14).
  std::vector<uint8_t> out;
  n.finish(out);
  CHECK(n.session.first_burst_length == 4096);
}

TEST_CASE("numeric maximum: DefaultTime2Wait") {
  IscsiLimits lim;
  lim.default_time2wait = 2;
  Negotiator n(lim, false);
  CHECK(answer(n, "DefaultTime2Wait", "0") == "2");
  CHECK(answer(n, "DefaultTime2Wait", "10") == "10");
}

TEST_CASE("boolean OR and AND") {
  IscsiLimits lim;
  lim.initial_r2t = false;
  lim.immediate_data = true;
  Negotiator n(lim, false);
  CHECK(answer(n, "InitialR2T", "No") == "No");
  CHECK_FALSE(n.session.initial_r2t);
  CHECK(answer(n, "InitialR2T", "Yes") == "Yes");
  CHECK(answer(n, "ImmediateData", "Yes") == "Yes");
  CHECK(answer(n, "ImmediateData", "No") == "No");
  CHECK_FALSE(n.session.immediate_data);
  lim.initial_r2t = true;
  lim.immediate_data = false;
  Negotiator m(lim, false);
  CHECK(answer(m, "InitialR2T", "No") == "Yes");
  CHECK(answer(m, "ImmediateData", "Yes") == "No");
  CHECK(answer(m, "DataPDUInOrder", "No") == "Yes");
  CHECK(answer(m, "DataSequenceInOrder", "No") == "Yes");
}

TEST_CASE("declarative MaxRecvDataSegmentLength is answered with ours, once") {
  IscsiLimits lim;
  lim.max_recv_data_segment_length = 131072;
  Negotiator n(lim, false);
  CHECK(answer(n, "MaxRecvDataSegmentLength", "65536") == "131072");
  CHECK(n.conn.max_send_data_segment_length == 65536);
  CHECK(n.conn.max_recv_data_segment_length == 131072);
  std::vector<uint8_t> out;
  n.offer({"MaxRecvDataSegmentLength", "32768"}, out);
  CHECK(out.empty());  // already declared
  CHECK(n.conn.max_send_data_segment_length == 32768);
  n.finish(out);
  CHECK(out.empty());
}

TEST_CASE("digests: the initiator's first value the target accepts") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  CHECK(answer(n, "HeaderDigest", "CRC32C,None") == "CRC32C");
  CHECK(n.conn.header_digest);
  CHECK(answer(n, "HeaderDigest", "None,CRC32C") == "None");
  CHECK_FALSE(n.conn.header_digest);
  CHECK(answer(n, "DataDigest", "None") == "None");
  CHECK(answer(n, "DataDigest", "CRC32C") == "CRC32C");
  CHECK(n.conn.data_digest);
  CHECK(answer(n, "DataDigest", "MD5,Foo") == "Reject");
}

TEST_CASE("digests: the administrator can require or forbid CRC32C") {
  IscsiLimits lim;
  lim.header_digest_none = false;  // require header digests
  lim.data_digest_crc32c = false;  // never data digests
  Negotiator n(lim, false);
  CHECK(answer(n, "HeaderDigest", "None,CRC32C") == "CRC32C");
  CHECK(answer(n, "HeaderDigest", "None") == "Reject");
  CHECK(answer(n, "DataDigest", "CRC32C,None") == "None");
  CHECK(answer(n, "DataDigest", "CRC32C") == "Reject");
}

TEST_CASE("bad values are rejected") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  CHECK(answer(n, "MaxBurstLength", "511") == "Reject");
  CHECK(answer(n, "MaxBurstLength", "16777216") == "Reject");
  CHECK(answer(n, "MaxBurstLength", "abc") == "Reject");
  CHECK(answer(n, "MaxRecvDataSegmentLength", "100") == "Reject");
  CHECK(answer(n, "InitialR2T", "yes") == "Reject");
  CHECK(answer(n, "MaxConnections", "0") == "Reject");
  CHECK(answer(n, "MaxOutstandingR2T", "0") == "Reject");
  CHECK(answer(n, "DefaultTime2Wait", "3601") == "Reject");
  CHECK(answer(n, "ErrorRecoveryLevel", "3") == "Reject");
  CHECK(n.session.max_burst_length == 262144);  // unchanged
}

TEST_CASE("session keys are irrelevant in discovery sessions") {
  IscsiLimits lim;
  Negotiator n(lim, true);
  CHECK(answer(n, "MaxBurstLength", "262144") == "Irrelevant");
  CHECK(answer(n, "InitialR2T", "No") == "Irrelevant");
  CHECK(answer(n, "MaxConnections", "1") == "Irrelevant");
  CHECK(answer(n, "MaxRecvDataSegmentLength", "8192") == std::to_string(lim.max_recv_data_segment_length));
  CHECK(answer(n, "ErrorRecoveryLevel", "0") == "0");
}

TEST_CASE("unknown and security keys are not operational") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  std::vector<uint8_t> out;
  CHECK(n.offer({"X-com.example.Foo", "1"}, out) == Negotiator::Outcome::kNotOperational);
  CHECK(n.offer({"InitiatorName", "iqn.x"}, out) == Negotiator::Outcome::kNotOperational);
  CHECK(n.offer({"AuthMethod", "None"}, out) == Negotiator::Outcome::kNotOperational);
  CHECK(out.empty());
}
