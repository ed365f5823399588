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

// The answer of a fresh Negotiator to one key.
std::string answer1(const IscsiLimits& lim, const std::string& k, const std::string& v,
                    bool discovery = false) {
  Negotiator n(lim, discovery);
  return answer(n, k, v);
}

// Keys of a response, in order.
std::vector<KeyValue> keys_of(const std::vector<uint8_t>& out) {
  auto kv = parse_text(out);
  REQUIRE(kv);
  return *kv;
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
  CHECK(n.finish(out));  // the target always declares its MaxRecvDataSegmentLength
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
  CHECK(answer1(lim, "MaxBurstLength", "262144") == "65536");
  CHECK(answer1(lim, "MaxBurstLength", "4096") == "4096");
  CHECK(answer1(lim, "FirstBurstLength", "65536") == "16384");
  CHECK(answer1(lim, "MaxOutstandingR2T", "16") == "4");
  CHECK(answer1(lim, "MaxOutstandingR2T", "2") == "2");
  CHECK(answer1(lim, "MaxConnections", "8") == "1");
  CHECK(answer1(lim, "DefaultTime2Retain", "0") == "0");
  CHECK(answer1(lim, "DefaultTime2Retain", "3600") == "20");
  CHECK(answer1(lim, "ErrorRecoveryLevel", "2") == "0");
  Negotiator n(lim, false);
  CHECK(answer(n, "MaxBurstLength", "4096") == "4096");
  CHECK(n.session.max_burst_length == 4096);
  CHECK(answer(n, "FirstBurstLength", "65536") == "16384");
  // FirstBurstLength never exceeds MaxBurstLength (RFC 7143 13.14).
  std::vector<uint8_t> out;
  CHECK(n.finish(out));
  CHECK(n.session.first_burst_length == 4096);
}

TEST_CASE("numeric maximum: DefaultTime2Wait") {
  IscsiLimits lim;
  lim.default_time2wait = 2;
  CHECK(answer1(lim, "DefaultTime2Wait", "0") == "2");
  CHECK(answer1(lim, "DefaultTime2Wait", "10") == "10");
}

TEST_CASE("boolean OR and AND") {
  IscsiLimits lim;
  lim.initial_r2t = false;
  lim.immediate_data = true;
  Negotiator n(lim, false);
  CHECK(answer(n, "InitialR2T", "No") == "No");
  CHECK_FALSE(n.session.initial_r2t);
  CHECK(answer(n, "ImmediateData", "No") == "No");
  CHECK_FALSE(n.session.immediate_data);
  CHECK(answer1(lim, "InitialR2T", "Yes") == "Yes");
  CHECK(answer1(lim, "ImmediateData", "Yes") == "Yes");
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
  CHECK(n.finish(out));
  CHECK(out.empty());  // already declared
  // In full feature phase (Text requests) the initiator may declare a new value.
  n.end_login();
  n.offer({"MaxRecvDataSegmentLength", "32768"}, out);
  CHECK(out.empty());
  CHECK(n.conn.max_send_data_segment_length == 32768);
}

TEST_CASE("digests: the initiator's first value the target accepts") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  CHECK(answer(n, "HeaderDigest", "CRC32C,None") == "CRC32C");
  CHECK(n.conn.header_digest);
  CHECK(answer(n, "DataDigest", "CRC32C") == "CRC32C");
  CHECK(n.conn.data_digest);
  CHECK(answer1(lim, "HeaderDigest", "None,CRC32C") == "None");
  CHECK(answer1(lim, "DataDigest", "None") == "None");
  CHECK(answer1(lim, "DataDigest", "MD5,Foo") == "Reject");
  // Unknown values in a list are skipped (RFC 7143 6.2.1: the first one acceptable).
  CHECK(answer1(lim, "HeaderDigest", "X-com.example.Digest,CRC32C") == "CRC32C");
}

TEST_CASE("digests: the administrator can require or forbid CRC32C") {
  IscsiLimits lim;
  lim.header_digest_none = false;  // require header digests
  lim.data_digest_crc32c = false;  // never data digests
  CHECK(answer1(lim, "HeaderDigest", "None,CRC32C") == "CRC32C");
  CHECK(answer1(lim, "HeaderDigest", "None") == "Reject");
  CHECK(answer1(lim, "DataDigest", "CRC32C,None") == "None");
  CHECK(answer1(lim, "DataDigest", "CRC32C") == "Reject");
}

TEST_CASE("bad values are rejected") {
  IscsiLimits lim;
  CHECK(answer1(lim, "MaxBurstLength", "511") == "Reject");
  CHECK(answer1(lim, "MaxBurstLength", "16777216") == "Reject");
  CHECK(answer1(lim, "MaxBurstLength", "abc") == "Reject");
  CHECK(answer1(lim, "MaxBurstLength", "65536,8192") == "Reject");  // not a list-valued key
  CHECK(answer1(lim, "MaxRecvDataSegmentLength", "100") == "Reject");
  CHECK(answer1(lim, "InitialR2T", "yes") == "Reject");
  CHECK(answer1(lim, "ImmediateData", "Yes,No") == "Reject");
  CHECK(answer1(lim, "MaxConnections", "0") == "Reject");
  CHECK(answer1(lim, "MaxOutstandingR2T", "0") == "Reject");
  CHECK(answer1(lim, "DefaultTime2Wait", "3601") == "Reject");
  CHECK(answer1(lim, "ErrorRecoveryLevel", "3") == "Reject");
  Negotiator n(lim, false);
  CHECK(answer(n, "MaxBurstLength", "abc") == "Reject");
  CHECK(n.session.max_burst_length == 262144);  // unchanged
}

TEST_CASE("session keys are irrelevant in discovery sessions") {
  IscsiLimits lim;
  Negotiator n(lim, true);
  CHECK(answer(n, "MaxBurstLength", "262144") == "Irrelevant");
  std::vector<uint8_t> none;
  CHECK_FALSE(n.propose(none));  // session keys are not offered in discovery sessions
  CHECK(none.empty());
  CHECK(answer(n, "InitialR2T", "No") == "Irrelevant");
  CHECK(answer(n, "MaxConnections", "1") == "Irrelevant");
  CHECK(answer(n, "MaxRecvDataSegmentLength", "8192") == std::to_string(lim.max_recv_data_segment_length));
  CHECK(answer(n, "ErrorRecoveryLevel", "0") == "0");
}

TEST_CASE("unknown and security keys are not operational") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  std::vector<uint8_t> out;
  CHECK(n.offer({"com.example.Foo", "1"}, out) == Negotiator::Outcome::kNotOperational);
  CHECK(n.offer({"InitiatorName", "iqn.x"}, out) == Negotiator::Outcome::kNotOperational);
  CHECK(n.offer({"AuthMethod", "None"}, out) == Negotiator::Outcome::kNotOperational);
  CHECK(out.empty());
}

TEST_CASE("X- and X# extension keys are ignored: no answer") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  std::vector<uint8_t> out;
  CHECK(n.offer({"X-com.microsoft.SomeFeature", "Yes"}, out) == Negotiator::Outcome::kAnswered);
  CHECK(n.offer({"X#RegisteredKey", "1"}, out) == Negotiator::Outcome::kAnswered);
  CHECK(n.offer({"X-", ""}, out) == Negotiator::Outcome::kAnswered);
  CHECK(out.empty());
}

TEST_CASE("a key repeated during login: same value ignored, another value fails") {
  IscsiLimits lim;
  Negotiator n(lim, false);
  CHECK(answer(n, "MaxBurstLength", "131072") == "131072");
  // As when an initiator resends its keys in the next PDU (C bit, or another round).
  std::vector<uint8_t> out;
  CHECK(n.offer({"MaxBurstLength", "131072"}, out) == Negotiator::Outcome::kAnswered);
  CHECK(out.empty());  // answered once only
  CHECK(n.offer({"MaxBurstLength", "65536"}, out) == Negotiator::Outcome::kRenegotiated);
  CHECK(n.session.max_burst_length == 131072);
  CHECK(n.offer({"HeaderDigest", "None"}, out) == Negotiator::Outcome::kAnswered);
  out.clear();
  CHECK(n.offer({"HeaderDigest", "CRC32C"}, out) == Negotiator::Outcome::kRenegotiated);
  CHECK(out.empty());
}

TEST_CASE("the target proposes its values for keys left at defaults it cannot take") {
  IscsiLimits lim;
  lim.immediate_data = false;
  lim.max_burst_length = 65536;
  lim.first_burst_length = 16384;
  lim.header_digest_none = false;  // [CRC32C]: header digests required
  Negotiator n(lim, false);
  // The initiator offers only its MaxRecvDataSegmentLength and FirstBurstLength.
  CHECK(answer(n, "MaxRecvDataSegmentLength", "65536") == std::to_string(lim.max_recv_data_segment_length));
  CHECK(answer(n, "FirstBurstLength", "8192") == "8192");
  std::vector<uint8_t> out;
  REQUIRE(n.propose(out));
  auto offers = keys_of(out);
  REQUIRE(offers.size() == 3);
  CHECK(offers[0].key == "HeaderDigest");
  CHECK(offers[0].value == "CRC32C");
  CHECK(offers[1].key == "ImmediateData");
  CHECK(offers[1].value == "No");
  CHECK(offers[2].key == "MaxBurstLength");
  CHECK(offers[2].value == "65536");
  // Once per login.
  std::vector<uint8_t> again;
  CHECK_FALSE(n.propose(again));
  CHECK(again.empty());
  // The initiator's answers are taken, not answered.
  std::vector<uint8_t> reply;
  CHECK(n.offer({"HeaderDigest", "CRC32C"}, reply) == Negotiator::Outcome::kAnswered);
  CHECK(n.offer({"ImmediateData", "No"}, reply) == Negotiator::Outcome::kAnswered);
  CHECK(n.offer({"MaxBurstLength", "32768"}, reply) == Negotiator::Outcome::kAnswered);
  CHECK(reply.empty());
  CHECK(n.finish(reply));
  CHECK(n.conn.header_digest);
  CHECK_FALSE(n.session.immediate_data);
  CHECK(n.session.max_burst_length == 32768);  // min(its answer, ours) (13.13)
  CHECK(n.session.first_burst_length == 8192);
}

TEST_CASE("nothing to propose when the RFC defaults suit the target") {
  IscsiLimits lim;  // defaults: every RFC 7143 13 default is within them
  Negotiator n(lim, false);
  std::vector<uint8_t> out;
  CHECK_FALSE(n.propose(out));
  CHECK(out.empty());
  CHECK(n.finish(out));
}

TEST_CASE("the initiator rejects the target's offer: the session cannot start") {
  IscsiLimits lim;
  lim.max_burst_length = 65536;
  Negotiator n(lim, false);
  std::vector<uint8_t> out;
  REQUIRE(n.propose(out));
  CHECK(keys_of(out).at(0).key == "MaxBurstLength");
  std::vector<uint8_t> reply;
  CHECK(n.offer({"MaxBurstLength", "Reject"}, reply) == Negotiator::Outcome::kAnswered);
  CHECK(reply.empty());
  CHECK_FALSE(n.finish(reply));  // the default 262144 is above the target's 65536
}

TEST_CASE("a malformed offer keeps a default beyond the limits: finish refuses") {
  IscsiLimits lim;
  lim.immediate_data = false;
  Negotiator n(lim, false);
  CHECK(answer(n, "ImmediateData", "maybe") == "Reject");
  std::vector<uint8_t> out;
  CHECK_FALSE(n.propose(out));  // offered (badly): not proposed again
  CHECK_FALSE(n.finish(out));
}

TEST_CASE("a connection added to a session: leading-only keys are Irrelevant, none proposed") {
  // RFC 7143 6.3.6 / 13.2-13.20: session-wide keys were settled on the leading connection.
  IscsiLimits lim;
  lim.immediate_data = false;  // a leading login would propose ImmediateData=No
  lim.max_connections = 4;
  Negotiator n(lim, false);
  n.set_leading(false);
  CHECK(answer(n, "MaxConnections", "4") == "Irrelevant");
  CHECK(answer(n, "MaxBurstLength", "4096") == "Irrelevant");
  CHECK(answer(n, "ImmediateData", "Yes") == "Irrelevant");
  CHECK(answer(n, "ErrorRecoveryLevel", "0") == "Irrelevant");
  CHECK(n.session.max_connections == 1);  // untouched
  CHECK(n.session.max_burst_length == 262144);
  // Connection keys are negotiated as on any connection.
  CHECK(answer(n, "HeaderDigest", "CRC32C,None") == "CRC32C");
  CHECK(n.conn.header_digest);
  std::vector<uint8_t> out;
  CHECK_FALSE(n.propose(out));
  CHECK(out.empty());
  CHECK(n.finish(out));  // only MaxRecvDataSegmentLength is declared
  auto kv = keys_of(out);
  REQUIRE(kv.size() == 1);
  CHECK(kv[0].key == "MaxRecvDataSegmentLength");
}
