#include "tests/integration/security/sec_client.hh"

#include <dirent.h>
#include <poll.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

namespace zuma::test::sec {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

void sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// ---- configs ---------------------------------------------------------------------------

std::string sec_config(const std::vector<TargetSpec>& targets, std::string_view iscsi_yaml,
                       std::string_view discovery_yaml) {
  std::string c = "node: { name: sec, data_dir: @DIR@/var, reactors: 2, log_level: info }\n";
  c += "portals: [ \"127.0.0.1:@PORT0@\" ]\n";
  if (!iscsi_yaml.empty()) c += "iscsi: " + std::string(iscsi_yaml) + "\n";
  if (!discovery_yaml.empty()) c += "discovery: " + std::string(discovery_yaml) + "\n";
  c += "targets:\n";
  int n = 0;
  for (const TargetSpec& t : targets) {
    c += "  - iqn: " + t.iqn + "\n";
    for (const std::string& e : t.extra_yaml) c += "    " + e + "\n";
    c += "    luns:\n";
    if (t.lun_yaml.empty())
      c += "      - { id: 0, name: lu" + std::to_string(n) + ", size: 16MiB, backend: memory }\n";
    else
      c += "      - " + t.lun_yaml + "\n";
    ++n;
  }
  return c;
}

// ---- primitives ------------------------------------------------------------------------

std::vector<uint8_t> chap_hash(int chap_a, uint8_t id, std::string_view secret,
                               std::span<const uint8_t> challenge) {
  const EVP_MD* md = chap_a == kChapMd5        ? EVP_md5()
                     : chap_a == kChapSha1     ? EVP_sha1()
                     : chap_a == kChapSha256   ? EVP_sha256()
                     : chap_a == kChapSha3_256 ? EVP_sha3_256()
                                               : nullptr;
  if (!md) return {};
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), &id, 1) != 1 ||
      EVP_DigestUpdate(ctx.get(), secret.data(), secret.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), challenge.data(), challenge.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1)
    return {};
  out.resize(len);
  return out;
}

Keys parse_keys(std::span<const uint8_t> data) {
  Keys out;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    auto eq = cur.find('=');
    if (eq == std::string::npos)
      out.emplace_back(cur, "");
    else
      out.emplace_back(cur.substr(0, eq), cur.substr(eq + 1));
    cur.clear();
  };
  for (uint8_t c : data) {
    if (c == 0)
      flush();
    else
      cur += char(c);
  }
  flush();
  return out;
}

std::string key_value(const Keys& keys, std::string_view key) {
  for (auto& [k, v] : keys)
    if (k == key) return v;
  return {};
}

bool has_key(const Keys& keys, std::string_view key) {
  for (auto& [k, v] : keys)
    if (k == key) return true;
  return false;
}

std::string keys_text(const Keys& keys) {
  std::string s;
  for (auto& [k, v] : keys) {
    s += k;
    s += '=';
    s += v;
    s += '\0';
  }
  return s;
}

std::string keys_str(const Keys& keys) {
  std::string s;
  for (auto& [k, v] : keys) s += (s.empty() ? "" : "; ") + k + "=" + v;
  return s;
}

// ---- results ---------------------------------------------------------------------------

int ScsiResult::sense_key() const {
  if (sense.size() < 3) return -1;
  const uint8_t code = sense[0] & 0x7f;
  if (code == 0x72 || code == 0x73) return sense[1] & 0x0f;
  return sense[2] & 0x0f;
}

int ScsiResult::asc() const {
  if (sense.size() < 3) return -1;
  const uint8_t code = sense[0] & 0x7f;
  if (code == 0x72 || code == 0x73) return sense[2];
  return sense.size() > 12 ? sense[12] : -1;
}

int ScsiResult::ascq() const {
  if (sense.size() < 3) return -1;
  const uint8_t code = sense[0] & 0x7f;
  if (code == 0x72 || code == 0x73) return sense.size() > 3 ? sense[3] : -1;
  return sense.size() > 13 ? sense[13] : -1;
}

std::string ScsiResult::describe() const {
  if (!error.empty()) return "error: " + error;
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "response 0x%02x status 0x%02x sense key 0x%x ASC 0x%02x ASCQ 0x%02x "
                "(%zu sense bytes), %zu data bytes",
                response, status, unsigned(sense_key()), unsigned(asc()), unsigned(ascq()),
                sense.size(), data.size());
  return buf;
}

// ---- SecConnection ---------------------------------------------------------------------

void SecConnection::note_status(const Pdu& p) {
  const uint8_t op = p.opcode();
  const bool carries = op == 0x21 || op == 0x22 || op == 0x23 || op == 0x24 || op == 0x26 ||
                       op == 0x3f || op == 0x32 || (op == 0x20 && p.itt() != 0xffffffff) ||
                       (op == 0x25 && (p.bhs[1] & 0x01));
  if (carries) exp_statsn_ = get_be32(&p.bhs[24]) + 1;
}

SecConnection::Step SecConnection::login_round(const LoginOptions& o, uint8_t csg, uint8_t nsg,
                                               bool transit, const std::string& keys) {
  Step s;
  // RFC 7143 11.12: Login Request; NSG is reserved unless T is set. The ITT "LOG1" is the
  // same for every PDU of this login.
  std::vector<uint8_t> b = login_request(csg, transit ? nsg : 0, transit, 0x4c4f4731, cmdsn_,
                                         exp_statsn_, tsih_, "");
  std::copy(o.isid.begin(), o.isid.end(), b.begin() + 8);
  b[20] = uint8_t(o.cid >> 8);
  b[21] = uint8_t(o.cid);
  if (!send_pdu(b, {reinterpret_cast<const uint8_t*>(keys.data()), keys.size()})) {
    s.error = "send failed during login";
    return s;
  }
  Received r = recv(10s);
  if (r.status != RecvStatus::kPdu) {
    s.error = "login: " + r.what();
    return s;
  }
  if (r.pdu.opcode() != 0x23) {
    s.error = "login: unexpected " + r.what();
    return s;
  }
  s.pdu = r.pdu;
  exp_statsn_ = get_be32(&r.pdu.bhs[24]) + 1;
  cmdsn_ = get_be32(&r.pdu.bhs[28]);
  if (r.pdu.bhs[36] == 0) tsih_ = uint16_t(r.pdu.bhs[14] << 8 | r.pdu.bhs[15]);
  s.keys = parse_keys(r.pdu.data);
  s.ok = true;
  return s;
}

LoginOutcome SecConnection::login(const LoginOptions& o) {
  LoginOutcome out;
  tsih_ = o.tsih;
  cid_ = o.cid;
  auto take = [&](const Step& s) -> bool {
    if (!s.ok) {
      out.error = s.error;
      return false;
    }
    out.keys.insert(out.keys.end(), s.keys.begin(), s.keys.end());
    out.status_class = s.pdu.bhs[36];
    out.status_detail = s.pdu.bhs[37];
    if (out.status_class != 0) {
      char m[96];
      std::snprintf(m, sizeof m, "login refused: status 0x%02x%02x", out.status_class,
                    out.status_detail);
      out.error = m;
      return false;
    }
    return true;
  };
  auto transited_to = [](const Step& s, uint8_t nsg) {
    return (s.pdu.bhs[1] & 0x80) && (s.pdu.bhs[1] & 3) == nsg;
  };

  Keys k1 = {{"InitiatorName", o.initiator}};
  if (o.discovery) {
    k1.emplace_back("SessionType", "Discovery");
  } else {
    k1.emplace_back("SessionType", "Normal");
    k1.emplace_back("TargetName", o.target);
  }
  std::string methods = o.auth_methods.empty() ? (o.chap ? "CHAP,None" : "None") : o.auth_methods;
  k1.emplace_back("AuthMethod", methods);

  if (!o.chap) {
    Step s = login_round(o, 0, 1, true, keys_text(k1));
    if (!take(s)) return out;
    for (int i = 0; !transited_to(s, 1); ++i) {
      if (i == 3) return out.error = "target did not leave the security stage", out;
      s = login_round(o, 0, 1, true, "");
      if (!take(s)) return out;
    }
  } else {
    // RFC 7143 12.1.3: AuthMethod, then CHAP_A -> CHAP_A/CHAP_I/CHAP_C, then CHAP_N/CHAP_R.
    Step s = login_round(o, 0, 0, false, keys_text(k1));
    if (!take(s)) return out;
    if (key_value(s.keys, "AuthMethod") != "CHAP")
      return out.error = "target answered AuthMethod=" + key_value(s.keys, "AuthMethod"), out;
    s = login_round(o, 0, 0, false, keys_text({{"CHAP_A", o.chap_algorithms}}));
    if (!take(s)) return out;
    const std::string a = key_value(s.keys, "CHAP_A");
    out.chap_a = std::atoi(a.c_str());
    const std::string id_s = key_value(s.keys, "CHAP_I");
    auto challenge = decode_binary(key_value(s.keys, "CHAP_C"));
    if (id_s.empty() || !challenge || challenge->empty())
      return out.error = "target sent no usable CHAP_I/CHAP_C (got '" + id_s + "', '" +
                         key_value(s.keys, "CHAP_C") + "')",
             out;
    const uint8_t id = uint8_t(std::atoi(id_s.c_str()));
    auto resp = chap_hash(out.chap_a, id, o.chap->secret, *challenge);
    if (resp.empty()) return out.error = "cannot compute CHAP_A=" + a, out;
    Keys k3 = {{"CHAP_N", o.chap->user}, {"CHAP_R", encode_hex(resp)}};
    std::vector<uint8_t> my_challenge;
    uint8_t my_id = 0x42;
    if (o.mutual || o.reflect_challenge) {
      if (o.reflect_challenge) {
        my_challenge = *challenge;
        my_id = id;
      } else {
        for (int i = 0; i < 32; ++i) my_challenge.push_back(uint8_t(0x30 + i * 7));
      }
      k3.emplace_back("CHAP_I", std::to_string(my_id));
      k3.emplace_back("CHAP_C", encode_hex(my_challenge));
    }
    s = login_round(o, 0, 1, true, keys_text(k3));
    if (!take(s)) return out;
    if (o.mutual) {
      const std::string n = key_value(s.keys, "CHAP_N");
      auto r = decode_binary(key_value(s.keys, "CHAP_R"));
      if (n != o.mutual->user)
        return out.error = "mutual CHAP: target sent CHAP_N='" + n + "'", out;
      if (!r || *r != chap_hash(out.chap_a, my_id, o.mutual->secret, my_challenge))
        return out.error = "mutual CHAP: the target's CHAP_R is wrong", out;
    }
    for (int i = 0; !transited_to(s, 1); ++i) {
      if (i == 3) return out.error = "target did not leave the security stage", out;
      s = login_round(o, 0, 1, true, "");
      if (!take(s)) return out;
    }
  }

  Keys k2 = {{"MaxRecvDataSegmentLength", std::to_string(o.max_recv_data_segment_length)}};
  if (!o.header_digest.empty()) k2.emplace_back("HeaderDigest", o.header_digest);
  if (!o.data_digest.empty()) k2.emplace_back("DataDigest", o.data_digest);
  if (!o.discovery && o.offer_session_keys && o.tsih == 0) {
    k2.insert(k2.end(), {{"InitialR2T", o.initial_r2t ? "Yes" : "No"},
                         {"ImmediateData", o.immediate_data ? "Yes" : "No"},
                         {"MaxBurstLength", std::to_string(o.max_burst_length)},
                         {"FirstBurstLength", std::to_string(o.first_burst_length)},
                         {"MaxOutstandingR2T", "1"},
                         {"DataPDUInOrder", "Yes"},
                         {"DataSequenceInOrder", "Yes"},
                         {"ErrorRecoveryLevel", "0"},
                         {"MaxConnections", std::to_string(o.max_connections)},
                         {"DefaultTime2Wait", std::to_string(o.default_time2wait)},
                         {"DefaultTime2Retain", std::to_string(o.default_time2retain)}});
  }
  Step s = login_round(o, 1, 3, true, keys_text(k2));
  if (!take(s)) return out;
  for (int i = 0; !transited_to(s, 3); ++i) {
    if (i == 3) return out.error = "target did not reach full feature phase", out;
    // Keys the target proposed itself (RFC 7143 6.2): accept its values.
    Keys answer;
    for (auto& [k, v] : s.keys) {
      const bool ours = std::any_of(k2.begin(), k2.end(), [&](auto& kv) { return kv.first == k; });
      const bool declarative = k == "MaxRecvDataSegmentLength" || k == "TargetPortalGroupTag" ||
                               k == "TargetAlias" || k == "TargetAddress";
      if (ours || declarative) continue;
      auto own = std::find_if(o.proposal_answers.begin(), o.proposal_answers.end(),
                              [&](auto& kv) { return kv.first == k; });
      answer.emplace_back(k, own == o.proposal_answers.end() ? v : own->second);
    }
    s = login_round(o, 1, 3, true, keys_text(answer));
    if (!take(s)) return out;
  }
  raw_.set_digests(key_value(out.keys, "HeaderDigest") == "CRC32C",
                   key_value(out.keys, "DataDigest") == "CRC32C");
  if (auto v = key_value(out.keys, "MaxRecvDataSegmentLength"); !v.empty())
    peer_mrdsl_ = uint32_t(std::stoul(v));
  if (auto v = key_value(out.keys, "FirstBurstLength"); !v.empty())
    first_burst_ = uint32_t(std::stoul(v));
  if (auto v = key_value(out.keys, "MaxBurstLength"); !v.empty())
    max_burst_ = uint32_t(std::stoul(v));
  if (auto v = key_value(out.keys, "ImmediateData"); !v.empty()) immediate_data_ = v == "Yes";
  if (auto v = key_value(out.keys, "InitialR2T"); !v.empty()) initial_r2t_ = v == "Yes";
  out.ok = true;
  return out;
}

Received SecConnection::nop(std::span<const uint8_t> data, const SendOptions& so) {
  // RFC 7143 11.18: immediate NOP-Out asking for a NOP-In.
  std::vector<uint8_t> b(48, 0);
  const uint32_t itt = next_itt();
  b[0] = 0x40 | 0x00;
  b[1] = 0x80;
  put_be32(&b[16], itt);
  put_be32(&b[20], 0xffffffff);
  put_be32(&b[24], cmdsn_);
  put_be32(&b[28], exp_statsn_);
  Received r;
  if (!send_pdu(b, data, so)) {
    r.status = RecvStatus::kClosed;
    return r;
  }
  for (;;) {
    r = recv(5s);
    if (r.status != RecvStatus::kPdu) return r;
    note_status(r.pdu);
    if ((r.pdu.opcode() == 0x20 && r.pdu.itt() == itt) || r.pdu.opcode() == 0x3f) return r;
  }
}

namespace {

// A SCSI Command BHS with a 10-byte READ/WRITE CDB.
std::vector<uint8_t> scsi_cmd(bool write, uint32_t itt, uint32_t edtl, uint32_t cmdsn,
                              uint32_t exp_statsn, uint8_t opcode, uint32_t lba, uint16_t blocks) {
  uint8_t cdb[10] = {opcode, 0, 0, 0, 0, 0, 0, uint8_t(blocks >> 8), uint8_t(blocks), 0};
  put_be32(&cdb[2], lba);
  return scsi_command_bhs(uint8_t(0x80 | (write ? 0x20 : 0x40) | 0x01), itt, edtl, cmdsn,
                          exp_statsn, cdb);
}

std::vector<uint8_t> data_out(uint32_t itt, uint32_t ttt, uint32_t exp_statsn, uint32_t data_sn,
                              uint32_t offset, bool final) {
  return data_out_bhs(itt, ttt, exp_statsn, data_sn, offset, final);
}

void take_response(ScsiResult& res, const Pdu& p) {
  res.response = p.bhs[2];
  res.status = p.bhs[3];
  if (p.data.size() >= 2) {
    const size_t n = std::min<size_t>(size_t(p.data[0]) << 8 | p.data[1], p.data.size() - 2);
    res.sense.assign(p.data.begin() + 2, p.data.begin() + 2 + long(n));
  }
}

}  // namespace

ScsiResult SecConnection::write10(uint32_t lba, std::span<const uint8_t> data, uint32_t block_size,
                                  uint32_t immediate, int corrupt_pdu) {
  ScsiResult res;
  const uint32_t edtl = uint32_t(data.size());
  const uint32_t itt = next_itt();
  if (!immediate_data_) immediate = 0;
  immediate = std::min({immediate, edtl, first_burst_, peer_mrdsl_});
  auto cmd =
      scsi_cmd(true, itt, edtl, cmdsn_++, exp_statsn_, 0x2a, lba, uint16_t(edtl / block_size));
  int pdu_index = 0;
  SendOptions so;
  so.corrupt_data_digest = immediate > 0 && corrupt_pdu == 0;
  if (immediate > 0) ++pdu_index;
  if (!send_pdu(cmd, data.subspan(0, immediate), so)) return res.error = "send failed", res;
  // Unsolicited Data-Out up to FirstBurstLength (RFC 7143 4.2.5.2).
  if (!initial_r2t_) {
    const uint32_t end = std::min(edtl, first_burst_);
    uint32_t sn = 0;
    for (uint32_t off = immediate; off < end;) {
      const uint32_t n = std::min(peer_mrdsl_, end - off);
      auto b = data_out(itt, 0xffffffff, exp_statsn_, sn++, off, off + n == end);
      SendOptions s2;
      s2.corrupt_data_digest = corrupt_pdu == pdu_index++;
      if (!send_pdu(b, data.subspan(off, n), s2)) return res.error = "send failed", res;
      off += n;
    }
  }
  for (;;) {
    Received r = recv(10s);
    if (r.status != RecvStatus::kPdu) return res.error = "WRITE: " + r.what(), res;
    const Pdu& p = r.pdu;
    note_status(p);
    if (!p.header_digest_ok || !p.data_digest_ok)
      return res.error = "bad digest on " + r.what(), res;
    switch (p.opcode()) {
      case 0x31: {  // R2T
        const uint32_t ttt = get_be32(&p.bhs[20]), off = get_be32(&p.bhs[40]),
                       len = get_be32(&p.bhs[44]);
        if (uint64_t(off) + len > edtl) return res.error = "R2T beyond the EDTL: " + r.what(), res;
        uint32_t sn = 0;
        for (uint32_t o = off; o < off + len;) {
          const uint32_t n = std::min(peer_mrdsl_, off + len - o);
          auto b = data_out(itt, ttt, exp_statsn_, sn++, o, o + n == off + len);
          SendOptions s2;
          s2.corrupt_data_digest = corrupt_pdu == pdu_index++;
          if (!send_pdu(b, data.subspan(o, n), s2)) return res.error = "send failed", res;
          o += n;
        }
        break;
      }
      case 0x21:
        if (p.itt() != itt) break;
        take_response(res, p);
        return res;
      case 0x20:
        if (p.itt() == 0xffffffff && get_be32(&p.bhs[20]) != 0xffffffff) {
          // Answer the target's ping (RFC 7143 11.18).
          std::vector<uint8_t> b(48, 0);
          b[0] = 0x40;
          b[1] = 0x80;
          put_be32(&b[16], 0xffffffff);
          std::copy_n(p.bhs.begin() + 20, 4, b.begin() + 20);
          put_be32(&b[24], cmdsn_);
          put_be32(&b[28], exp_statsn_);
          send_pdu(b);
        }
        break;
      case 0x3f:
        return res.error = "Reject reason 0x" + std::to_string(p.bhs[2]) + ": " + r.what(), res;
      default:
        break;
    }
  }
}

ScsiResult SecConnection::read10(uint32_t lba, uint32_t blocks, uint32_t block_size) {
  ScsiResult res;
  const uint32_t edtl = blocks * block_size;
  const uint32_t itt = next_itt();
  auto cmd = scsi_cmd(false, itt, edtl, cmdsn_++, exp_statsn_, 0x28, lba, uint16_t(blocks));
  if (!send_pdu(cmd)) return res.error = "send failed", res;
  res.data.assign(edtl, 0);
  for (;;) {
    Received r = recv(10s);
    if (r.status != RecvStatus::kPdu) return res.error = "READ: " + r.what(), res;
    const Pdu& p = r.pdu;
    note_status(p);
    if (!p.header_digest_ok || !p.data_digest_ok)
      return res.error = "bad digest on " + r.what(), res;
    if (p.opcode() == 0x25 && p.itt() == itt) {
      const uint32_t off = get_be32(&p.bhs[40]);
      if (uint64_t(off) + p.data.size() > edtl) return res.error = "Data-In beyond the EDTL", res;
      std::copy(p.data.begin(), p.data.end(), res.data.begin() + off);
      if (p.bhs[1] & 0x01) {  // S: status here (RFC 7143 11.7.3)
        res.response = 0;
        res.status = p.bhs[3];
        return res;
      }
    } else if (p.opcode() == 0x21 && p.itt() == itt) {
      take_response(res, p);
      return res;
    } else if (p.opcode() == 0x3f) {
      return res.error = "Reject: " + r.what(), res;
    }
  }
}

std::vector<uint8_t> scsi_command_bhs(uint8_t flags, uint32_t itt, uint32_t edtl, uint32_t cmdsn,
                                      uint32_t exp_statsn, std::span<const uint8_t> cdb) {
  std::vector<uint8_t> b(48, 0);
  b[0] = 0x01;
  b[1] = flags;
  put_be32(&b[16], itt);
  put_be32(&b[20], edtl);
  put_be32(&b[24], cmdsn);
  put_be32(&b[28], exp_statsn);
  std::copy_n(cdb.begin(), std::min<size_t>(cdb.size(), 16), b.begin() + 32);
  return b;
}

std::vector<uint8_t> data_out_bhs(uint32_t itt, uint32_t ttt, uint32_t exp_statsn, uint32_t data_sn,
                                  uint32_t offset, bool final) {
  std::vector<uint8_t> b(48, 0);
  b[0] = 0x05;
  b[1] = final ? 0x80 : 0x00;
  put_be32(&b[16], itt);
  put_be32(&b[20], ttt);
  put_be32(&b[28], exp_statsn);
  put_be32(&b[36], data_sn);
  put_be32(&b[40], offset);
  return b;
}

std::string SecConnection::clear_unit_attentions() {
  ScsiResult last;
  for (int i = 0; i < 4; ++i) {
    const uint8_t cdb[6] = {0x00, 0, 0, 0, 0, 0};
    const uint32_t itt = next_itt();
    last = ScsiResult{};
    if (!send_pdu(scsi_command_bhs(0x80 | 0x01, itt, 0, cmdsn_++, exp_statsn_, cdb)))
      return "send failed";
    for (;;) {
      Received r = recv(10s);
      if (r.status != RecvStatus::kPdu) return "TEST UNIT READY: " + r.what();
      note_status(r.pdu);
      if (r.pdu.opcode() == 0x21 && r.pdu.itt() == itt) {
        take_response(last, r.pdu);
        break;
      }
    }
    if (last.good()) return {};
  }
  return "TEST UNIT READY: " + last.describe();
}

// ---- libiscsi ---------------------------------------------------------------------------

LibiscsiSession::LibiscsiSession(const std::string& portal, const LibiscsiLogin& l, int lun) {
  ctx_ = iscsi_create_context(l.initiator.c_str());
  if (!ctx_) {
    error_ = "iscsi_create_context failed";
    return;
  }
  iscsi_set_targetname(ctx_, l.target.c_str());
  iscsi_set_session_type(ctx_, ISCSI_SESSION_NORMAL);
  iscsi_set_noautoreconnect(ctx_, 1);
  iscsi_set_timeout(ctx_, l.timeout_s);
  if (l.isid) iscsi_set_isid_random(ctx_, l.isid->first, l.isid->second);
  if (l.header_digest_crc32c)
    iscsi_set_header_digest(ctx_, ISCSI_HEADER_DIGEST_CRC32C);
  else
    iscsi_set_header_digest(ctx_, ISCSI_HEADER_DIGEST_NONE);
  if (l.chap) iscsi_set_initiator_username_pwd(ctx_, l.chap->user.c_str(), l.chap->secret.c_str());
  if (l.mutual)
    iscsi_set_target_username_pwd(ctx_, l.mutual->user.c_str(), l.mutual->secret.c_str());
  if (iscsi_full_connect_sync(ctx_, portal.c_str(), lun) != 0) {
    error_ = iscsi_get_error(ctx_);
    return;
  }
  ok_ = true;
}

LibiscsiSession::~LibiscsiSession() {
  if (!ctx_) return;
  if (iscsi_is_logged_in(ctx_)) {
    iscsi_set_timeout(ctx_, 5);
    (void)iscsi_logout_sync(ctx_);
  }
  iscsi_destroy_context(ctx_);
}

std::string LibiscsiSession::write_read_verify(uint64_t lba, uint32_t blocks, uint32_t block_size,
                                               uint64_t seed) {
  if (!ok_) return "not logged in: " + error_;
  auto data = make_pattern(blocks, block_size, lba, seed);
  Task w(iscsi_write16_sync(ctx_, 0, lba, data.data(), uint32_t(data.size()), int(block_size), 0, 0,
                            0, 0, 0));
  if (!is_good(w.get())) return "WRITE16: " + describe(ctx_, w.get());
  Task r(iscsi_read16_sync(ctx_, 0, lba, uint32_t(data.size()), int(block_size), 0, 0, 0, 0, 0));
  if (!is_good(r.get())) return "READ16: " + describe(ctx_, r.get());
  if (size_t(r->datain.size) != data.size())
    return "READ16 returned " + std::to_string(r->datain.size) + " bytes";
  return check_pattern({r->datain.data, size_t(r->datain.size)}, block_size, lba, seed);
}

bool LibiscsiSession::service_for(std::chrono::milliseconds d) {
  if (!ok_) return false;
  const auto deadline = Clock::now() + d;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return true;
    pollfd p{iscsi_get_fd(ctx_), short(iscsi_which_events(ctx_)), 0};
    int n = ::poll(&p, 1, int(std::min<long>(left.count(), 100)));
    if (n < 0 && errno != EINTR) return false;
    if (iscsi_service(ctx_, n > 0 ? p.revents : 0) < 0) return false;
  }
}

DiscoveryResult discover_as(const std::string& portal, const std::string& initiator,
                            const std::optional<Creds>& chap) {
  DiscoveryResult res;
  iscsi_context* ctx = iscsi_create_context(initiator.c_str());
  if (!ctx) return res.error = "iscsi_create_context failed", res;
  std::unique_ptr<iscsi_context, int (*)(iscsi_context*)> guard(ctx, iscsi_destroy_context);
  iscsi_set_session_type(ctx, ISCSI_SESSION_DISCOVERY);
  iscsi_set_noautoreconnect(ctx, 1);
  iscsi_set_timeout(ctx, 20);
  if (chap) iscsi_set_initiator_username_pwd(ctx, chap->user.c_str(), chap->secret.c_str());
  if (iscsi_connect_sync(ctx, portal.c_str()) != 0)
    return res.error = std::string("connect: ") + iscsi_get_error(ctx), res;
  if (iscsi_login_sync(ctx) != 0)
    return res.error = std::string("login: ") + iscsi_get_error(ctx), res;
  iscsi_discovery_address* da = iscsi_discovery_sync(ctx);
  if (!da) return res.error = std::string("SendTargets: ") + iscsi_get_error(ctx), res;
  for (auto* a = da; a; a = a->next) res.targets.emplace_back(a->target_name ? a->target_name : "");
  iscsi_free_discovery_data(ctx, da);
  (void)iscsi_logout_sync(ctx);
  return res;
}

// ---- process utilities -----------------------------------------------------------------

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

int open_fds(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

}  // namespace zuma::test::sec
