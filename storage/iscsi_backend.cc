// IscsiBackend (iscsi_backend.hh): a remote iSCSI LUN through libiscsi's async API, driven
// by one service thread per backend (docs/ARCHITECTURE.md explains the choice).
#include "storage/iscsi_backend.hh"
#include "storage/op_pool.hh"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

// libiscsi's headers are C and need these first.
#include <cstddef>
#include <cstdint>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "storage/io_context.hh"
#include "storage/thread_name.hh"
#include "storage/unique_fd.hh"

namespace zuma::storage {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kBackoffMin{100};
constexpr milliseconds kBackoffMax{5000};
constexpr int kUnitAttentionRetries = 3;  // a remote zumad reports 29h/01h once per nexus

// One request on its way through the service thread. Pooled by the backend.
struct Op {
  IscsiBackend::Impl* impl = nullptr;
  IoRequest* req = nullptr;
  IoContext* ctx = nullptr;  // where to post the completion; nullptr: the submitter waits
  PostedWork work;
  int result = 0;
  int attempts = 0;
  scsi_task* task = nullptr;
  Clock::time_point deadline;
  std::vector<scsi_iovec> iov;    // the request's buffers, as libiscsi wants them
  std::vector<unmap_list> unmap;  // kDiscard descriptors
  std::atomic<bool> sync_done{false};
  Op* next = nullptr;  // the submission queue, the in-flight list or the free list
  Op* prev = nullptr;  // the in-flight list
};

// libiscsi's last error, one line (some of its messages end in a newline).
std::string error_of(iscsi_context* ctx) {
  std::string s = iscsi_get_error(ctx);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

struct IscsiBackend::Impl {
  IscsiSpec spec;
  std::string portal, target;
  int lun = 0;
  uint64_t size = 0;
  std::atomic<uint32_t> remote_block{512};
  std::atomic<bool> can_unmap{false};
  uint32_t max_unmap_blocks = 0;  // 0: no limit (VPD B0h)
  uint32_t max_unmap_descriptors = 0;

  std::atomic<bool> up{false};
  std::atomic<bool> stopping{false};
  UniqueFd wake;
  std::thread thread;
  std::function<void()> on_connect;

  // Shared between submitters and the service thread.
  std::mutex mu;
  Op* queue_head = nullptr;
  Op* queue_tail = nullptr;
  OpPool<Op, Impl> ops{this};
  // open() waits for the first login's outcome.
  std::condition_variable first_cv;
  int first_result = 1;  // 1: pending, 0: logged in, <0: failed
  std::string first_error;

  // Service thread only.
  iscsi_context* ctx = nullptr;
  enum class State { kDown, kConnecting, kProbing, kUp } state = State::kDown;
  Clock::time_point next_attempt{};
  Clock::time_point attempt_deadline{};
  milliseconds backoff = kBackoffMin;
  Op* inflight_head = nullptr;
  Op* inflight_tail = nullptr;
  bool broken = false;  // set inside libiscsi callbacks; the loop tears down afterwards
  std::string broken_reason;
  int probe_step = 0;
  int probe_attempts = 0;
  scsi_task* probe_task = nullptr;
  bool logged_warning = false;

  // --- pool (any thread) ---
  Op* get_op() { return ops.get(); }
  void put_op(Op* op) { ops.put(op); }

  // --- completion (service thread, or inline) ---
  static void run_posted(void* arg) {
    Op* op = static_cast<Op*>(arg);
    IoRequest* req = op->req;
    const int result = op->result;
    op->impl->put_op(op);  // before done(), which may submit again
    req->done(*req, result);
  }
  void finish(Op* op, int result) {
    op->result = result;
    if (op->ctx != nullptr) {
      op->work.run = &run_posted;
      op->work.arg = op;
      op->ctx->post(op->work);
    } else {
      op->sync_done.store(true, std::memory_order_release);
      op->sync_done.notify_one();
    }
  }

  // --- the in-flight list (service thread) ---
  void link(Op* op) {
    op->next = nullptr;
    op->prev = inflight_tail;
    (inflight_tail ? inflight_tail->next : inflight_head) = op;
    inflight_tail = op;
  }
  void unlink(Op* op) {
    (op->prev ? op->prev->next : inflight_head) = op->next;
    (op->next ? op->next->prev : inflight_tail) = op->prev;
    op->next = op->prev = nullptr;
  }

  void mark_broken(std::string reason) {
    if (!broken) broken_reason = std::move(reason);
    broken = true;
  }

  // --- the session (service thread) ---
  void start_login() {
    ctx = iscsi_create_context(spec.initiator.c_str());
    if (ctx == nullptr) return login_failed("cannot create a libiscsi context");
    iscsi_set_targetname(ctx, target.c_str());
    iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    iscsi_set_noautoreconnect(ctx, 1);  // this thread reconnects, with its own backoff
    if (!spec.user.empty()) {
      iscsi_set_initiator_username_pwd(ctx, spec.user.c_str(), spec.secret.c_str());
      if (!spec.mutual_user.empty())
        iscsi_set_target_username_pwd(ctx, spec.mutual_user.c_str(), spec.mutual_secret.c_str());
    }
    state = State::kConnecting;
    attempt_deadline = Clock::now() + std::chrono::seconds(spec.timeout_s);
    // Connect and log in step by step rather than with iscsi_full_connect_async: that one
    // mallocs a connect_task it frees only in its callbacks, which a context destroyed
    // mid-login (attempt timeout, stop) never calls, so it leaked. probe() then does the
    // TEST UNIT READY part itself.
    if (iscsi_connect_async(ctx, portal.c_str(), &on_connected, this) != 0)
      login_failed(fmt::format("connect: {}", error_of(ctx)));
  }

  static void on_connected(iscsi_context* ctx, int status, void*, void* priv) {
    auto* self = static_cast<Impl*>(priv);
    if (status != 0) {
      self->mark_broken(fmt::format("connect: {}", error_of(ctx)));
      return;
    }
    if (iscsi_login_async(ctx, &on_login, self) != 0)
      self->mark_broken(fmt::format("login: {}", error_of(ctx)));
  }

  static void on_login(iscsi_context* ctx, int status, void*, void* priv) {
    auto* self = static_cast<Impl*>(priv);
    if (status != SCSI_STATUS_GOOD) {
      self->mark_broken(fmt::format("login: {}", error_of(ctx)));
      return;
    }
    self->state = State::kProbing;
    self->probe_step = 0;
    self->probe_attempts = 0;
    self->probe();
  }

  // After login: TEST UNIT READY until the unit attentions of a new nexus are consumed,
  // READ CAPACITY(16), then VPD B0h and B2h when the LUN is thin (SBC-4 6.6.4, 6.6.6).
  void probe() {
    switch (probe_step) {
      case 0:
        probe_task = iscsi_testunitready_task(ctx, lun, &on_probe, this);
        break;
      case 1:
        probe_task = iscsi_readcapacity16_task(ctx, lun, &on_probe, this);
        break;
      case 2:
        probe_task = iscsi_inquiry_task(ctx, lun, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 64,
                                        &on_probe, this);
        break;
      case 3:
        probe_task = iscsi_inquiry_task(
            ctx, lun, 1, SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING, 64, &on_probe, this);
        break;
      default:
        return logged_in();
    }
    if (probe_task == nullptr) mark_broken(fmt::format("probe: {}", error_of(ctx)));
  }

  static void on_probe(iscsi_context*, int status, void*, void* priv) {
    auto* self = static_cast<Impl*>(priv);
    scsi_task* task = std::exchange(self->probe_task, nullptr);
    self->probe_done(task, status);
    if (task != nullptr) scsi_free_scsi_task(task);
  }

  void probe_done(scsi_task* task, int status) {
    if (status == SCSI_STATUS_CANCELLED || task == nullptr) return mark_broken("session lost");
    if (status == SCSI_STATUS_CHECK_CONDITION && task->sense.key == SCSI_SENSE_UNIT_ATTENTION &&
        ++probe_attempts < 8) {
      return probe();  // the same step again: each report consumes one attention
    }
    if (status != SCSI_STATUS_GOOD) {
      // VPD pages are optional: a LUN without them simply gets no UNMAP.
      if (probe_step >= 2 && status == SCSI_STATUS_CHECK_CONDITION) {
        ++probe_step;
        return probe();
      }
      return mark_broken(fmt::format("{} failed: {}",
                                     probe_step == 0 ? "TEST UNIT READY" : "READ CAPACITY(16)",
                                     error_of(ctx)));
    }
    switch (probe_step) {
      case 1: {
        auto* rc = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(task));
        if (rc == nullptr) return mark_broken("READ CAPACITY(16): malformed data");
        const uint64_t capacity = (rc->returned_lba + 1) * rc->block_length;
        if (rc->block_length == 0 || spec.block_size % rc->block_length != 0) {
          return fatal(fmt::format("the remote block size {} does not divide the LU's {}",
                                   rc->block_length, spec.block_size));
        }
        if (capacity < size) {
          return fatal(
              fmt::format("the remote LUN holds {} bytes, the sub-unit needs {}", capacity, size));
        }
        remote_block.store(rc->block_length, std::memory_order_relaxed);
        if (!rc->lbpme) {
          can_unmap.store(false, std::memory_order_relaxed);
          probe_step = 4;  // fully provisioned: no UNMAP, no VPD pages needed
          return probe();
        }
        break;
      }
      case 2: {
        auto* bl = static_cast<scsi_inquiry_block_limits*>(scsi_datain_unmarshall(task));
        if (bl != nullptr) {
          max_unmap_blocks = bl->max_unmap == 0xFFFFFFFFu ? 0 : bl->max_unmap;
          max_unmap_descriptors = bl->max_unmap_bdc == 0xFFFFFFFFu ? 0 : bl->max_unmap_bdc;
        }
        break;
      }
      case 3: {
        auto* lbp =
            static_cast<scsi_inquiry_logical_block_provisioning*>(scsi_datain_unmarshall(task));
        can_unmap.store(lbp != nullptr && lbp->lbpu, std::memory_order_relaxed);
        break;
      }
      default:
        break;
    }
    ++probe_step;
    probe_attempts = 0;
    probe();
  }

  // A remote that can never serve this sub-unit (too small, wrong block size): logged,
  // retried at the longest backoff in case the administrator fixes it.
  void fatal(std::string why) {
    backoff = kBackoffMax;
    mark_broken(std::move(why));
  }

  void logged_in() {
    state = State::kUp;
    backoff = kBackoffMin;
    up.store(true, std::memory_order_release);
    if (logged_warning) spdlog::info("iscsi {}: logged in again", spec.url);
    logged_warning = false;
    {
      std::lock_guard lock(mu);
      if (first_result == 1) first_result = 0;
    }
    first_cv.notify_all();
    if (on_connect) on_connect();
  }

  void login_failed(std::string why) { mark_broken(std::move(why)); }

  // Ends the session: every command in flight completes with kUnreachable; the next login
  // attempt waits for the backoff.
  void teardown() {
    const bool was_up = state == State::kUp;
    up.store(false, std::memory_order_release);
    state = State::kDown;
    if (ctx != nullptr) {
      // Cancelled commands call back (on_command, kUnreachable) from inside.
      iscsi_destroy_context(std::exchange(ctx, nullptr));
    }
    if (probe_task != nullptr) scsi_free_scsi_task(std::exchange(probe_task, nullptr));
    while (Op* op = inflight_head) {
      unlink(op);
      if (op->task != nullptr) scsi_free_scsi_task(std::exchange(op->task, nullptr));
      finish(op, kUnreachable);
    }
    if (was_up || !logged_warning) {
      spdlog::warn("iscsi {}: {}; I/O fails with NOT READY, logging in again in {} ms", spec.url,
                   broken_reason, backoff.count());
      logged_warning = true;
    }
    {
      std::lock_guard lock(mu);
      if (first_result == 1) {
        first_result = -1;
        first_error = broken_reason;
      }
    }
    first_cv.notify_all();
    next_attempt = Clock::now() + backoff;
    backoff = std::min(backoff * 2, kBackoffMax);
    broken = false;
  }

  // --- commands (service thread) ---
  void issue(Op* op) {
    const IoRequest& r = *op->req;
    const uint32_t bs = remote_block.load(std::memory_order_relaxed);
    const uint64_t lba = r.offset / bs;
    switch (r.op) {
      case IoOp::kRead:
        op->task = iscsi_read16_iov_task(ctx, lun, lba, static_cast<uint32_t>(r.length), bs, 0, 0,
                                         0, 0, 0, &on_command, op, op->iov.data(),
                                         static_cast<int>(op->iov.size()));
        break;
      case IoOp::kWrite:
        op->task = iscsi_write16_iov_task(ctx, lun, lba, nullptr, static_cast<uint32_t>(r.length),
                                          bs, 0, 0, r.fua ? 1 : 0, 0, 0, &on_command, op,
                                          op->iov.data(), static_cast<int>(op->iov.size()));
        break;
      case IoOp::kFlush:  // SBC-4 5.27: LBA 0, NUMBER OF LOGICAL BLOCKS 0 = to the end
        op->task = iscsi_synchronizecache16_task(ctx, lun, 0, 0, 0, 0, &on_command, op);
        break;
      case IoOp::kDiscard: {
        op->unmap.clear();
        const uint64_t step = max_unmap_blocks ? max_unmap_blocks : 0xFFFFFFFFu;
        for (uint64_t at = lba, left = r.length / bs; left > 0;) {
          const uint64_t n = std::min(left, step);
          op->unmap.push_back({at, static_cast<uint32_t>(n)});
          at += n;
          left -= n;
        }
        if (max_unmap_descriptors != 0 && op->unmap.size() > max_unmap_descriptors)
          return finish(op, -EINVAL);  // larger than the LU's own UNMAP limits allow
        op->task = iscsi_unmap_task(ctx, lun, 0, 0, op->unmap.data(),
                                    static_cast<int>(op->unmap.size()), &on_command, op);
        break;
      }
      default:
        return finish(op, -EOPNOTSUPP);
    }
    if (op->task == nullptr) {
      mark_broken(fmt::format("queueing a command: {}", error_of(ctx)));
      return finish(op, kUnreachable);
    }
    op->deadline = Clock::now() + std::chrono::seconds(spec.timeout_s);
    link(op);
  }

  static void on_command(iscsi_context*, int status, void*, void* priv) {
    Op* op = static_cast<Op*>(priv);
    Impl* self = op->impl;
    self->unlink(op);
    scsi_task* task = std::exchange(op->task, nullptr);
    int result = 0;
    switch (status) {
      case SCSI_STATUS_GOOD:
        break;
      case SCSI_STATUS_CHECK_CONDITION:
        result = sense_to_errno(task);
        if (task->sense.key == SCSI_SENSE_UNIT_ATTENTION &&
            ++op->attempts <= kUnitAttentionRetries && self->state == State::kUp && !self->broken) {
          scsi_free_scsi_task(task);
          return self->issue(op);  // SAM-5 5.14: the command was not run; send it again
        }
        break;
      case SCSI_STATUS_BUSY:
      case SCSI_STATUS_TASK_SET_FULL:
        result = -EBUSY;
        break;
      case SCSI_STATUS_CANCELLED:
        result = kUnreachable;
        break;
      case SCSI_STATUS_ERROR:
      case SCSI_STATUS_TIMEOUT:
        result = kUnreachable;
        self->mark_broken("session lost");
        break;
      default:
        result = -EIO;
        break;
    }
    if (task != nullptr) scsi_free_scsi_task(task);
    self->finish(op, result);
  }

  static int sense_to_errno(const scsi_task* task) {
    switch (task->sense.key) {
      case SCSI_SENSE_NOT_READY:
        return kUnreachable;  // the remote LU is itself not ready: so is this one
      case SCSI_SENSE_UNIT_ATTENTION:
        return -EAGAIN;  // retries exhausted: BUSY, the initiator retries
      case SCSI_SENSE_ILLEGAL_REQUEST:
        return -EINVAL;
      case SCSI_SENSE_DATA_PROTECTION:
        return task->sense.ascq == 0x2707 ? -ENOSPC : -EIO;  // SPC-5: 27h/07h
      default:
        return -EIO;
    }
  }

  // Takes the submission queue; starts or refuses each request.
  void drain_queue() {
    Op* list;
    {
      std::lock_guard lock(mu);
      list = std::exchange(queue_head, nullptr);
      queue_tail = nullptr;
    }
    while (Op* op = list) {
      list = op->next;
      op->next = nullptr;
      if (state != State::kUp || broken) {
        finish(op, kUnreachable);
      } else {
        issue(op);
      }
    }
  }

  void run() {
    while (!stopping.load(std::memory_order_acquire)) {
      const auto now = Clock::now();
      if (state == State::kDown && now >= next_attempt) start_login();
      if (state != State::kUp && state != State::kDown && now > attempt_deadline)
        mark_broken(fmt::format("no login within {} s", spec.timeout_s));
      // Per-command timeout: the oldest command is at the head of the list.
      if (inflight_head != nullptr && now > inflight_head->deadline)
        mark_broken(fmt::format("a command took longer than {} s", spec.timeout_s));
      if (broken) teardown();

      pollfd fds[2] = {{wake.get(), POLLIN, 0}, {-1, 0, 0}};
      if (ctx != nullptr) {
        fds[1].fd = iscsi_get_fd(ctx);
        fds[1].events = static_cast<short>(iscsi_which_events(ctx));
      }
      int timeout_ms = 100;  // timeouts and the backoff are checked at least this often
      if (state == State::kDown) {
        const auto wait = std::chrono::duration_cast<milliseconds>(next_attempt - Clock::now());
        timeout_ms = static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 100));
      }
      const int n = ::poll(fds, ctx != nullptr && fds[1].fd >= 0 ? 2 : 1, timeout_ms);
      if (n < 0 && errno != EINTR) {
        spdlog::error("iscsi {}: poll: {}", spec.url, std::strerror(errno));
        std::this_thread::sleep_for(milliseconds(10));
        continue;
      }
      if (fds[0].revents & POLLIN) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(wake.get(), &v, sizeof v);
      }
      if (ctx != nullptr && fds[1].revents != 0) {
        if (iscsi_service(ctx, fds[1].revents) < 0)
          mark_broken(fmt::format("connection: {}", error_of(ctx)));
      }
      if (broken) teardown();
      drain_queue();
    }
    // Stopping: log out politely when we can, then fail what is left.
    if (ctx != nullptr && state == State::kUp && inflight_head == nullptr) {
      iscsi_logout_sync(ctx);
    }
    broken_reason = "stopping";
    if (ctx != nullptr || inflight_head != nullptr) {
      logged_warning = true;  // no warning for a clean stop
      teardown();
    }
    drain_queue();
  }

  void enqueue(Op* op) {
    bool was_empty;
    {
      std::lock_guard lock(mu);
      was_empty = queue_head == nullptr;
      op->next = nullptr;
      (queue_tail ? queue_tail->next : queue_head) = op;
      queue_tail = op;
    }
    if (was_empty) {
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t r = ::write(wake.get(), &one, sizeof one);
    }
  }
};

IscsiBackend::IscsiBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::expected<std::unique_ptr<IscsiBackend>, std::string> IscsiBackend::open(
    const IscsiSpec& spec) {
  using R = std::expected<std::unique_ptr<IscsiBackend>, std::string>;
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  impl->size = spec.size;
  if (impl->spec.initiator.empty()) impl->spec.initiator = "iqn.2026-11.org.zuma:initiator";
  {
    iscsi_context* tmp = iscsi_create_context(impl->spec.initiator.c_str());
    if (tmp == nullptr)
      return R(std::unexpect, fmt::format("iscsi {}: no libiscsi context", spec.url));
    iscsi_url* url = iscsi_parse_full_url(tmp, spec.url.c_str());
    if (url == nullptr) {
      std::string err = error_of(tmp);
      iscsi_destroy_context(tmp);
      return R(std::unexpect, fmt::format("iscsi {}: bad URL: {}", spec.url, err));
    }
    impl->portal = url->portal;
    impl->target = url->target;
    impl->lun = url->lun;
    iscsi_destroy_url(url);
    iscsi_destroy_context(tmp);
  }
  if (spec.size == 0)
    return R(std::unexpect, fmt::format("iscsi {}: the sub-unit needs a size", spec.url));
  impl->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->wake) return R(std::unexpect, fmt::format("eventfd: {}", std::strerror(errno)));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    name_this_thread("iscsi-backend");
    raw->run();
  });
  std::unique_ptr<IscsiBackend> b(new IscsiBackend(std::move(impl)));
  if (!spec.allow_offline) {
    std::unique_lock lock(raw->mu);
    raw->first_cv.wait(lock, [raw] { return raw->first_result != 1; });
    if (raw->first_result < 0) {
      return R(std::unexpect, fmt::format("iscsi {}: {}", spec.url, raw->first_error));
    }
  }
  return R(std::move(b));
}

IscsiBackend::~IscsiBackend() {
  impl_->stopping.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(impl_->wake.get(), &one, sizeof one);
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint64_t IscsiBackend::size() const {
  return impl_->size;
}

bool IscsiBackend::supports(IoOp op) const {
  switch (op) {
    case IoOp::kRead:
    case IoOp::kWrite:
    case IoOp::kFlush:
      return true;
    case IoOp::kDiscard:
      return impl_->can_unmap.load(std::memory_order_relaxed);
    default:
      return false;
  }
}

std::string IscsiBackend::describe() const {
  return "iscsi:" + impl_->spec.url;
}

bool IscsiBackend::connected() const {
  return impl_->up.load(std::memory_order_acquire);
}

void IscsiBackend::set_on_connect(std::function<void()> fn) {
  impl_->on_connect = std::move(fn);
}

void IscsiBackend::submit(IoRequest& req) {
  Impl& im = *impl_;
  if (!im.up.load(std::memory_order_acquire)) return req.done(req, kUnreachable);
  const uint64_t bs = im.remote_block.load(std::memory_order_relaxed);
  if (req.op != IoOp::kFlush) {
    const uint64_t end = req.offset + req.length;
    if (end < req.offset || end > im.size || req.offset % bs != 0 || req.length % bs != 0)
      return req.done(req, -EINVAL);
    if (req.length == 0) return req.done(req, 0);
    if (req.op == IoOp::kWriteZeroes) return req.done(req, -EOPNOTSUPP);
    if (req.op == IoOp::kDiscard && !im.can_unmap.load(std::memory_order_relaxed))
      return req.done(req, -EOPNOTSUPP);
    if (req.length > UINT32_MAX) return req.done(req, -EINVAL);  // READ(16) counts 32 bits
  }
  Op* op = im.get_op();
  op->req = &req;
  op->ctx = IoContext::current();
  op->attempts = 0;
  op->result = 0;
  op->task = nullptr;
  op->iov.clear();
  if (req.op == IoOp::kRead || req.op == IoOp::kWrite) {
    uint64_t left = req.length;
    for (int i = 0; i < req.iovcnt && left > 0; ++i) {
      const uint64_t n = std::min<uint64_t>(left, req.iov[i].iov_len);
      if (n > 0) op->iov.push_back(scsi_iovec{req.iov[i].iov_base, n});
      left -= n;
    }
    if (left > 0) {
      im.put_op(op);
      return req.done(req, -EINVAL);
    }
  }
  if (op->ctx != nullptr) return im.enqueue(op);
  // No reactor here: wait (bounded by the per-command timeout) and complete inline.
  op->sync_done.store(false, std::memory_order_relaxed);
  im.enqueue(op);
  op->sync_done.wait(false, std::memory_order_acquire);
  const int result = op->result;
  im.put_op(op);
  req.done(req, result);
}

}  // namespace zuma::storage
