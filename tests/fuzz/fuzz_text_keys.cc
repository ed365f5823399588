// libFuzzer target: login/text key parsing and operational negotiation.
//
// Input: byte 0 chooses the target's limits (discovery or normal session, which digests
// are accepted, ImmediateData/InitialR2T, small or default burst lengths); the rest is a
// Login/Text data segment, parsed by parse_text() and offered key by key to a Negotiator,
// and to the CHAP helpers that read key values (chap_choose, decode_binary,
// parse_number). Checked: nothing crashes (ASan/UBSan), the answer parses back, and the
// negotiated values respect the target's limits and RFC 7143 13.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "target/chap.hh"
#include "target/negotiation.hh"
#include "target/text_keys.hh"

using namespace zuma::target;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_text_keys: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::span<const uint8_t> text(data + 1, size - 1);

  IscsiLimits lim;
  lim.header_digest_crc32c = flags & 0x02;
  lim.header_digest_none = !(flags & 0x02) || (flags & 0x04);
  lim.data_digest_crc32c = flags & 0x08;
  lim.data_digest_none = !(flags & 0x08) || (flags & 0x04);
  lim.immediate_data = flags & 0x10;
  lim.initial_r2t = flags & 0x20;
  if (flags & 0x40) {
    lim.max_recv_data_segment_length = 512;
    lim.max_burst_length = 4096;
    lim.first_burst_length = 1024;
    lim.max_outstanding_r2t = 1;
  }
  const bool discovery = flags & 0x01;

  auto keys = parse_text(text);
  if (!keys) return 0;
  for (const KeyValue& kv : *keys) {
    if (kv.key.empty() || kv.key.size() > kMaxKeyLen || kv.value.size() > kMaxValueLen)
      fail("parse_text returned a key or value outside its limits");
  }

  Negotiator neg(lim, discovery);
  std::vector<uint8_t> out;
  const std::vector<ChapAlgorithm> md5_only{ChapAlgorithm::kMd5};
  for (const KeyValue& kv : *keys) {
    (void)neg.offer(kv, out);
    (void)parse_number(kv.value, 16777215);
    if (auto a = chap_choose(kv.value, {})) {
      if (int(*a) < 5 || int(*a) > 8) fail("chap_choose picked an unknown algorithm");
    }
    if (auto a = chap_choose(kv.value, md5_only); a && *a != ChapAlgorithm::kMd5)
      fail("chap_choose picked an algorithm that is not allowed");
    if (auto b = decode_binary(kv.value)) {
      if (b->size() > kv.value.size()) fail("decode_binary produced more bytes than it read");
      // Round trip through hex.
      const std::string hex = encode_hex(*b);
      auto again = decode_binary(hex);
      if (!again || *again != *b) fail("hex round trip");
    }
    (void)chap_algorithm_from_name(kv.value);
  }
  // The target's own offers (RFC 7143 6.2), which this initiator accepts as they are.
  const size_t before = out.size();
  if (neg.propose(out)) {
    auto offers = parse_text(std::span(out).subspan(before));
    if (!offers || offers->empty()) fail("the target's offers do not parse");
    std::vector<uint8_t> none;
    for (const KeyValue& kv : *offers) {
      if (neg.offer(kv, none) != Negotiator::Outcome::kAnswered)
        fail("the answer to the target's offer was not taken");
      if (!none.empty()) fail("the target answered the answer to its own offer");
    }
  }
  const bool agreed = neg.finish(out);

  // The answer is well-formed text.
  auto back = parse_text(out);
  if (!back) fail("the Negotiator's answer does not parse");

  // When finish() agrees, every result respects the target's limits; otherwise the login
  // fails (an offer answered Reject, or a malformed value left a default it cannot take).
  if (!agreed) return 0;
  auto offered = [&](const char*) { return !discovery; };  // session keys: normal only
  const SessionParams& s = neg.session;
  const ConnParams& c = neg.conn;
  if (s.first_burst_length > s.max_burst_length) fail("FirstBurstLength > MaxBurstLength");
  if (offered("MaxBurstLength") && s.max_burst_length > lim.max_burst_length)
    fail("MaxBurstLength above the target's");
  if (offered("FirstBurstLength") && s.first_burst_length > lim.first_burst_length)
    fail("FirstBurstLength above the target's");
  if (s.max_outstanding_r2t == 0 || s.max_outstanding_r2t > 65535) fail("MaxOutstandingR2T range");
  if (offered("MaxOutstandingR2T") && s.max_outstanding_r2t > lim.max_outstanding_r2t)
    fail("MaxOutstandingR2T above the target's");
  if (s.max_connections == 0 || s.max_connections > lim.max_connections) fail("MaxConnections");
  if (s.error_recovery_level != 0) fail("ErrorRecoveryLevel != 0");
  if (offered("ImmediateData") && s.immediate_data && !lim.immediate_data)
    fail("ImmediateData=Yes not allowed");
  if (!s.initial_r2t && lim.initial_r2t) fail("InitialR2T=No not allowed");
  if (c.max_send_data_segment_length < 512 || c.max_send_data_segment_length > 16777215)
    fail("MaxRecvDataSegmentLength of the initiator out of range");
  if (c.header_digest && !lim.header_digest_crc32c) fail("HeaderDigest=CRC32C not allowed");
  if (c.data_digest && !lim.data_digest_crc32c) fail("DataDigest=CRC32C not allowed");
  return 0;
}
