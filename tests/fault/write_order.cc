#include "tests/fault/write_order.hh"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <stdexcept>

#include "replication/ring_log.hh"
#include "tests/integration/harness.hh"

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

namespace zuma::test::wo {
namespace {

constexpr uint64_t kMagic = 0x504d4154534f575aULL;  // "ZWOSTAMP"
constexpr size_t kSumAt = kBs - 8;

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::span<const uint8_t> b) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint8_t c : b) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

void put64(uint8_t* p, uint64_t v) {
  std::memcpy(p, &v, 8);
}
uint64_t get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

std::span<const uint8_t> block_of(const std::string& image, uint64_t lba) {
  return {reinterpret_cast<const uint8_t*>(image.data()) + lba * kBs, kBs};
}

// What a block that is neither its old value nor its write's stamp holds, for messages.
std::string describe_block(std::span<const uint8_t> b) {
  if (std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; })) return "zeros";
  if (get64(b.data()) != kMagic) return "no stamp";
  const std::string head = "a stamp of cycle " + std::to_string(get64(b.data() + 8)) + ", write " +
                           std::to_string(get64(b.data() + 16) & 0xffffffff);
  if (fnv1a(b.first(kSumAt)) != get64(b.data() + kSumAt)) return head + " with a bad checksum";
  return head;
}

}  // namespace

Plan::Plan(uint64_t cycle_, std::span<const uint64_t> blocks, size_t n, std::mt19937_64& rng)
    : cycle(cycle_), lun_blocks(blocks.begin(), blocks.end()), writes(new Write[n]), count(n) {
  // n distinct blocks out of all the LUs' blocks (a partial Fisher-Yates shuffle).
  const uint64_t total = std::accumulate(blocks.begin(), blocks.end(), uint64_t(0));
  if (n > total) throw std::invalid_argument("plan: more writes than blocks");
  std::vector<uint64_t> all(total);
  std::iota(all.begin(), all.end(), uint64_t(0));
  for (size_t i = 0; i < n; ++i) {
    std::swap(all[i], all[i + rng() % (total - i)]);
    uint64_t b = all[i];
    uint32_t lun = 0;
    while (b >= blocks[lun]) b -= blocks[lun++];
    writes[i].id = uint32_t(i);
    writes[i].lun = lun;
    writes[i].lba = b;
  }
}

void stamp(std::span<uint8_t> block, const Plan& plan, const Write& w) {
  uint8_t* p = block.data();
  put64(p, kMagic);
  put64(p + 8, plan.cycle);
  put64(p + 16, w.id);
  put64(p + 24, w.lun);
  put64(p + 32, w.lba);
  uint64_t x = plan.cycle << 32 ^ w.id;
  for (size_t off = 40; off < kSumAt; off += 8) put64(p + off, splitmix(x));
  put64(p + kSumAt, fnv1a(block.first(kSumAt)));
}

std::string Verdict::summary() const {
  return std::to_string(present) + " of " + std::to_string(issued) + " issued writes present, " +
         std::to_string(acked_present) + " of " + std::to_string(acked) + " acknowledged ones" +
         (in_log ? ", the first " + std::to_string(present) + " of " + std::to_string(in_log) +
                       " in the primary's log"
                 : std::string());
}

std::optional<GroupOrder> group_order(const Plan& plan, const std::string& log_path,
                                      const std::string& scratch_dir, uint64_t from_seq,
                                      std::string* error) {
  using namespace zuma::replication;
  GroupOrder order;
  order.tick = plan.tick.load();
  const std::string copy = scratch_dir + "/group-order.rlog";
  std::error_code ec;
  std::filesystem::copy_file(log_path, copy, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) {
    *error = "copying " + log_path + ": " + ec.message();
    return std::nullopt;
  }
  auto log = RingLog::open({copy, 0, false});
  std::filesystem::remove(copy, ec);
  if (!log) {
    *error = log.error();
    return std::nullopt;
  }
  if ((*log)->head_seq() > from_seq) {
    *error = "the log no longer has record " + std::to_string(from_seq);
    return std::nullopt;
  }
  std::vector<uint8_t> expect(kBs);
  int r = (*log)->read(from_seq, [&](const RecordView& v) {
    if (v.type != RecordType::kWrite || v.length != kBs || get64(v.payload.data()) != kMagic ||
        get64(v.payload.data() + 8) != plan.cycle)
      return true;
    const uint64_t id = get64(v.payload.data() + 16);
    if (id >= plan.count) return true;
    const Write& w = plan.writes[id];
    stamp(expect, plan, w);
    if (v.lu != w.lun || v.offset != w.lba * kBs ||
        !std::equal(expect.begin(), expect.end(), v.payload.begin())) {
      *error = "record " + std::to_string(v.seq) + " holds write " + std::to_string(id) +
               "'s stamp, but not as written";
      return false;
    }
    order.ids.push_back(uint32_t(id));
    return true;
  });
  if (r < 0) *error = "reading the log: " + std::string(std::strerror(-r));
  if (!error->empty()) return std::nullopt;
  return order;
}

namespace {

// The checks a GroupOrder adds; an error message or "".
std::string check_order(const Plan& plan, const std::vector<bool>& present, size_t npresent,
                        const GroupOrder& order) {
  std::vector<int64_t> pos(plan.count, -1);
  uint64_t max_issued = 0;
  size_t max_issued_id = 0;
  for (size_t i = 0; i < order.ids.size(); ++i) {
    const uint32_t id = order.ids[i];
    if (pos[id] >= 0) return "write " + std::to_string(id) + " is twice in the primary's log";
    pos[id] = int64_t(i);
    // Acknowledged before an earlier one in the log was issued: the log broke the rule.
    const uint64_t acked = plan.writes[id].acked.load();
    if (acked && acked < max_issued)
      return "the primary's log has write " + std::to_string(id) + " after write " +
             std::to_string(max_issued_id) + ", which was issued after it was acknowledged";
    if (plan.writes[id].issued.load() > max_issued) {
      max_issued = plan.writes[id].issued.load();
      max_issued_id = id;
    }
  }
  for (size_t i = 0; i < plan.count; ++i) {
    const uint64_t acked = plan.writes[i].acked.load();
    if (acked && acked <= order.tick && pos[i] < 0)
      return "write " + std::to_string(i) + " was acknowledged but is not in the primary's log";
    if (present[i] && pos[i] < 0)
      return "write " + std::to_string(i) + " is on the secondary but not in the primary's log";
  }
  // The present writes are the log's first `npresent`.
  for (size_t i = 0; i < order.ids.size() && i < npresent; ++i)
    if (!present[order.ids[i]])
      return "not a prefix of the primary's log: write " + std::to_string(order.ids[i]) +
             " (position " + std::to_string(i) + ") is missing, but " + std::to_string(npresent) +
             " writes are present";
  if (npresent > order.ids.size())
    return std::to_string(npresent) + " writes are present, the primary's log has " +
           std::to_string(order.ids.size());
  return "";
}

}  // namespace

Verdict check_prefix(const Plan& plan, std::span<const std::string> before,
                     std::span<const std::string> now, bool all_acked, const GroupOrder* order) {
  Verdict v;
  const size_t nluns = plan.lun_blocks.size();
  if (before.size() != nluns || now.size() != nluns) {
    v.error = "expected the images of " + std::to_string(nluns) + " LUs";
    return v;
  }
  for (size_t l = 0; l < nluns; ++l) {
    const uint64_t bytes = plan.lun_blocks[l] * kBs;
    if (before[l].size() != bytes || now[l].size() != bytes) {
      v.error = "LU " + std::to_string(l) + ": an image of " + std::to_string(now[l].size()) +
                " bytes, expected " + std::to_string(bytes);
      return v;
    }
  }
  // Which write (if any) each block belongs to.
  std::vector<std::vector<int64_t>> owner(nluns);
  for (size_t l = 0; l < nluns; ++l) owner[l].assign(plan.lun_blocks[l], -1);
  for (size_t i = 0; i < plan.count; ++i)
    owner[plan.writes[i].lun][plan.writes[i].lba] = int64_t(i);

  std::vector<bool> present(plan.count, false);
  std::vector<uint8_t> expect(kBs);
  for (size_t l = 0; l < nluns; ++l) {
    for (uint64_t b = 0; b < plan.lun_blocks[l]; ++b) {
      const auto got = block_of(now[l], b), old = block_of(before[l], b);
      const bool unchanged = std::equal(got.begin(), got.end(), old.begin());
      const std::string where = "LU " + std::to_string(l) + " block " + std::to_string(b);
      if (owner[l][b] < 0) {
        if (!unchanged) {
          v.error = where + " changed (" + describe_block(got) + ") but no write went there";
          return v;
        }
        continue;
      }
      const Write& w = plan.writes[size_t(owner[l][b])];
      stamp(expect, plan, w);
      if (std::equal(got.begin(), got.end(), expect.begin())) {
        present[w.id] = true;
      } else if (!unchanged) {
        v.error = where + " holds " + describe_block(got) + ", neither its old value nor write " +
                  std::to_string(w.id);
        return v;
      }
    }
  }
  // The absent acknowledged write acknowledged first: every write issued after that
  // follows it in the group's order, so none of them may be present.
  uint64_t first_missing_ack = UINT64_MAX;
  size_t missing = 0;
  for (size_t i = 0; i < plan.count; ++i) {
    const Write& w = plan.writes[i];
    const uint64_t issued = w.issued.load(), acked = w.acked.load();
    v.issued += issued != 0;
    v.acked += acked != 0;
    if (present[i]) {
      ++v.present;
      v.acked_present += acked != 0;
      if (!issued) {
        v.error = "write " + std::to_string(i) + " is present but was never issued";
        return v;
      }
    } else if (acked && acked < first_missing_ack) {
      first_missing_ack = acked;
      missing = i;
    }
  }
  if (all_acked && v.acked_present != v.acked) {
    v.error = "write " + std::to_string(missing) +
              " was acknowledged but is missing (every acknowledged write must be there)";
    return v;
  }
  for (size_t i = 0; i < plan.count; ++i) {
    if (present[i] && plan.writes[i].issued.load() > first_missing_ack) {
      v.error =
          "a hole: write " + std::to_string(i) + " (LU " + std::to_string(plan.writes[i].lun) +
          " block " + std::to_string(plan.writes[i].lba) + ") is present, but write " +
          std::to_string(missing) + " (LU " + std::to_string(plan.writes[missing].lun) + " block " +
          std::to_string(plan.writes[missing].lba) + "), acknowledged before it was issued, is not";
      return v;
    }
  }
  if (order) {
    v.in_log = order->ids.size();
    v.error = check_order(plan, present, v.present, *order);
  }
  return v;
}

Load::Load(std::string portal, std::string iqn, Plan& plan, int writers, int depth)
    : portal_(std::move(portal)), iqn_(std::move(iqn)), plan_(plan), depth_(depth) {
  errors_.resize(size_t(writers));
  running_.store(writers);
  for (int i = 0; i < writers; ++i) threads_.emplace_back([this, i] { writer(i); });
}

Load::~Load() {
  stop();
}

std::string Load::stop() {
  stop_.store(true);
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  for (auto& e : errors_)
    if (!e.empty()) return e;
  return "";
}

uint64_t Load::wait_acked(uint64_t n, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (acked_.load() < n && running_.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return acked_.load();
}

namespace {

struct WriterState;
struct Slot {
  WriterState* ws = nullptr;
  Write* w = nullptr;
  bool busy = false;
  std::vector<uint8_t> buf = std::vector<uint8_t>(kBs);
};
struct WriterState {
  Plan* plan = nullptr;
  std::atomic<uint64_t>* acked = nullptr;
  int inflight = 0;
  std::string error;
};

void write_done(iscsi_context* ctx, int status, void* data, void* priv) {
  auto* slot = static_cast<Slot*>(priv);
  auto* task = static_cast<scsi_task*>(data);
  WriterState& ws = *slot->ws;
  if (status == SCSI_STATUS_GOOD) {
    slot->w->acked.store(++ws.plan->tick);
    ++*ws.acked;
  } else if (ws.error.empty()) {
    ws.error = "WRITE LU " + std::to_string(slot->w->lun) + " block " +
               std::to_string(slot->w->lba) + ": " + describe(ctx, task);
  }
  slot->busy = false;
  --ws.inflight;
  if (task) scsi_free_scsi_task(task);
}

}  // namespace

void Load::writer(int index) {
  WriterState ws;  // before the session: its destructor may still complete tasks
  ws.plan = &plan_;
  ws.acked = &acked_;
  std::vector<Slot> slots(static_cast<size_t>(depth_));
  for (auto& s : slots) s.ws = &ws;
  try {
    Session s(portal_, iqn_);
    iscsi_context* ctx = s.ctx();
    bool exhausted = false;
    const auto drain_until = [&] {
      return std::chrono::steady_clock::now() + std::chrono::seconds(60);
    };
    auto deadline = drain_until();
    auto next_submit = std::chrono::steady_clock::now();
    while (ws.error.empty()) {
      const bool stopping = stop_.load() || exhausted;
      if (!stopping) deadline = drain_until();
      for (auto& slot : slots) {
        if (slot.busy || stopping || exhausted) continue;
        const auto now = std::chrono::steady_clock::now();
        if (now < next_submit) break;
        next_submit = std::max(next_submit, now - std::chrono::milliseconds(5)) +
                      std::chrono::microseconds(pace_us_.load());
        const size_t i = plan_.next.fetch_add(1);
        if (i >= plan_.count) {
          exhausted = true;
          break;
        }
        Write& w = plan_.writes[i];
        stamp(slot.buf, plan_, w);
        slot.w = &w;
        w.issued.store(++plan_.tick);
        if (!iscsi_write16_task(ctx, int(w.lun), w.lba, slot.buf.data(), kBs, kBs, 0, 0, 0, 0, 0,
                                write_done, &slot)) {
          ws.error = std::string("cannot queue a WRITE: ") + iscsi_get_error(ctx);
          break;
        }
        slot.busy = true;
        ++ws.inflight;
      }
      if (ws.inflight == 0 && (stop_.load() || exhausted)) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ws.error = std::to_string(ws.inflight) + " writes still in flight after 60 s";
        break;
      }
      pollfd p{iscsi_get_fd(ctx), short(iscsi_which_events(ctx)), 0};
      const int n = ::poll(&p, 1, pace_us_.load() ? 1 : 100);
      if (n < 0) continue;
      if (iscsi_service(ctx, n > 0 ? p.revents : 0) < 0 && ws.error.empty())
        ws.error = std::string("iscsi_service: ") + iscsi_get_error(ctx);
    }
  } catch (const std::exception& e) {
    if (ws.error.empty()) ws.error = e.what();
  }
  if (!ws.error.empty() && !failures_ok_.load())
    errors_[size_t(index)] = "writer " + std::to_string(index) + ": " + ws.error;
  --running_;
}

}  // namespace zuma::test::wo
