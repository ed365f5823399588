// execute(): the front of the device server. Checks, in order, for every command:
//   1. Operation code (and service action) known? Else INVALID COMMAND OPERATION CODE,
//      or LOGICAL UNIT NOT SUPPORTED for a LUN that does not exist.
//   2. LUN exists, or the command is one served on any LUN (INQUIRY, REQUEST SENSE,
//      REPORT LUNS; SAM-5, incorrect logical unit selection)? Else LOGICAL UNIT NOT
//      SUPPORTED.
//   3. CDB long enough, no bit set outside the usage mask? Else INVALID FIELD IN CDB.
//   4. Unit attention pending for this I_T nexus? Reported (and cleared) instead of
//      running the command, except for INQUIRY, REPORT LUNS, REQUEST SENSE (SAM-5, unit
//      attention condition).
//   5. The handler.
#include <poll.h>

#include <condition_variable>
#include <mutex>
#include <new>

#include "scsi/command.hh"
#include "scsi/device_server.hh"
#include "scsi/logical_unit.hh"
#include "storage/io_context.hh"

namespace zuma::scsi {

std::shared_ptr<LogicalUnit> make_logical_unit(LuParams params,
                                               std::unique_ptr<storage::Backend> backend) {
  return std::make_shared<LogicalUnit>(std::move(params), std::move(backend));
}

void execute(const LunTable& table, Task& task) {
  task.status = status::kGood;
  task.data_in_len = 0;
  task.transfer_len = 0;
  task.sense_len = 0;

  LogicalUnit* lu = nullptr;
  if (auto it = table.luns.find(task.lun); it != table.luns.end()) lu = it->second.get();
  const bool d_sense = lu && lu->descriptor_sense();

  CmdResult err;
  const CommandInfo* info = lookup_command(task, &err);
  if (!info) {
    finish(task, lu ? err : CmdResult(Reason::kLuNotSupported), d_sense);
    return;
  }
  if (!lu && !(info->flags & cmd_flag::kAnyLun)) {
    finish(task, Reason::kLuNotSupported, false);
    return;
  }
  if (CmdResult r = check_cdb(*info, task); !r.ok()) {
    finish(task, r, d_sense);
    return;
  }
  if (lu) {
    UnitAttentions& uas = lu->unit_attentions();
    const uint64_t nexus = task.nexus ? task.nexus->id : 0;
    uas.touch(nexus);
    if (!(info->flags & cmd_flag::kNoUnitAttention)) {
      if (auto ua = uas.take(nexus)) {
        finish(task, *ua, d_sense);
        return;
      }
    }
  }

  Cmd cmd{task, lu, table, *info};
  CmdResult r;
  try {
    r = info->handler(cmd);
  } catch (const std::bad_alloc&) {
    // A buffer could not be had; nothing was started. Transient: BUSY.
    r = Reason::kBusy;
  }
  if (r.reason == Reason::kPending) return;  // the task may already be gone
  finish(task, r, lu && lu->descriptor_sense());
}

int flush_logical_unit(LogicalUnit& lu) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int result = 0;
  } w;
  storage::IoRequest req;
  req.op = storage::IoOp::kFlush;
  req.user = &w;
  req.done = [](storage::IoRequest& r, int result) {
    auto* w = static_cast<Wait*>(r.user);
    std::lock_guard lock(w->mu);
    w->result = result;
    w->done = true;
    w->cv.notify_all();
  };
  lu.backend().submit(req);

  // Inline completion (a thread without IoContext) is the common case. On a reactor
  // thread the completion comes from its own ring, so drive the ring until it arrives;
  // otherwise another thread completes it.
  storage::IoContext* ctx = storage::IoContext::current();
  std::unique_lock lock(w.mu);
  while (!w.done) {
    if (ctx) {
      lock.unlock();
      ctx->flush();
      pollfd pfd{ctx->event_fd(), POLLIN, 0};
      ::poll(&pfd, 1, 100);
      ctx->reap();
      lock.lock();
    } else {
      w.cv.wait(lock);
    }
  }
  return w.result;
}

void reset_logical_unit(LogicalUnit& lu, const Nexus& from) {
  // SAM-5 (logical unit reset): a logical unit reset establishes BUS DEVICE RESET FUNCTION OCCURRED
  // for every I_T nexus, the one that asked for it included (FreeBSD CTL and LIO do the same, and
  // libiscsi's MultipathIO.Reset expects it on every path). We hold no other state a reset clears
  // yet (no reservations, no ACA; mode parameters persist).
  UnitAttentions& uas = lu.unit_attentions();
  uas.touch(from.id);
  uas.establish_all(Reason::kUaBusDeviceResetOccurred);
}

void nexus_lost(LogicalUnit& lu, const Nexus& nexus) {
  lu.unit_attentions().forget(nexus.id);
}

}  // namespace zuma::scsi
