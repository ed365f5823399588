// execute(): the front of the device server. Checks, in order, for every command:
//   1. Operation code (and service action) known? Else INVALID COMMAND OPERATION CODE,
//      or LOGICAL UNIT NOT SUPPORTED for a LUN that does not exist.
//   2. LUN exists, or the command is one served on any LUN (INQUIRY, REQUEST SENSE,
//      REPORT LUNS; SAM-5, incorrect logical unit selection)? Else LOGICAL UNIT NOT
//      SUPPORTED.
//   3. CDB long enough, no bit set outside the usage mask? Else INVALID FIELD IN CDB.
//   4. The task enters its nexus's task set on the LU (task_set.hh) and waits there while
//      its task attribute says so. When it starts:
//   5. Aborted while it waited? It ends without running.
//   6. Unit attention pending for this I_T nexus? Reported (and cleared) instead of
//      running the command, except for INQUIRY, REPORT LUNS, REQUEST SENSE (SAM-5, unit
//      attention condition).
//   7. A reservation held by another I_T nexus that the command conflicts with? RESERVATION
//      CONFLICT (persistent_reservation.hh).
//   8. A command that writes the medium (cmd_flag::kWritesMedium) to a write-protected LU?
//      DATA PROTECT, WRITE PROTECTED (SBC-4 write protection).
//   9. The handler.

#include <atomic>
#include <new>

#include "scsi/command.hh"
#include "scsi/device_server.hh"
#include "scsi/logical_unit.hh"
#include "storage/sync_io.hh"

namespace zuma::scsi {

std::shared_ptr<LogicalUnit> make_logical_unit(LuParams params,
                                               std::unique_ptr<storage::Backend> backend) {
  return std::make_shared<LogicalUnit>(std::move(params), std::move(backend));
}

namespace {

// Steps 5 to 9 of the list above.
void run(LogicalUnit* lu, const LunTable& table, const CommandInfo& info, Task& task) {
  const bool d_sense = lu && lu->descriptor_sense();
  // Written under the set's lock by an abort on another thread (task_set.cc).
  if (std::atomic_ref<bool>(task.task_set.abort).load(std::memory_order_acquire)) {
    finish(task, Reason::kTaskAborted, d_sense);
    return;
  }
  if (lu) {
    const uint64_t nexus = task.nexus ? task.nexus->id : 0;
    if (!(info.flags & cmd_flag::kNoUnitAttention)) {
      if (auto ua = lu->unit_attentions().take(nexus)) {
        finish(task, *ua, d_sense);
        return;
      }
    }
    // ALUA: what this node's target port group may serve (alua.hh).
    if (const uint8_t st = lu->alua_state(); st > alua::kActiveNonOptimized) {
      Reason why;
      if (!alua_allows(st, task.cdb.data(), &why)) {
        finish(task, why, d_sense);
        return;
      }
    }
    Reservations& res = lu->reservations();
    if (task.nexus && res.any()) {
      // The nexus's standing is cached in its task set until the reservations change.
      uint8_t verdict;
      if (NexusTasks* set = task.task_set.set) {
        NexusTasks::PrVerdictCache& c = set->pr_cache();
        if (c.version != res.version()) c.verdict = res.verdict(*task.nexus, &c.version);
        verdict = c.verdict;
      } else {
        verdict = res.verdict(*task.nexus, nullptr);
      }
      if (Reservations::conflicts(verdict, info.flags, task.cdb.data())) {
        finish(task, Reason::kReservationConflict, d_sense);
        return;
      }
    }
    if ((info.flags & cmd_flag::kWritesMedium) && lu->write_protected()) {
      finish(task, Reason::kWriteProtected, d_sense);
      return;
    }
  }

  Cmd cmd{task, lu, table, info};
  CmdResult r;
  try {
    r = info.handler(cmd);
  } catch (const std::bad_alloc&) {
    // A buffer could not be had; nothing was started. Transient: BUSY.
    r = Reason::kBusy;
  }
  if (r.reason == Reason::kPending) return;  // the task may already be gone
  finish(task, r, lu && lu->descriptor_sense());
}

}  // namespace

void start_task(Task& task) {
  run(task.task_set.lu, *task.task_set.table, *task.task_set.info, task);
}

void execute(const LunTable& table, Task& task) {
  task.status = status::kGood;
  task.data_in_len = 0;
  task.transfer_len = 0;
  task.sense_len = 0;
  task.aborted = false;
  task.report_abort = false;
  task.task_set = Task::TaskSetLink{};

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
  if (!supported_on(*info, lu)) {
    finish(task, Reason::kInvalidOpcode, d_sense);  // UNMAP on a fully provisioned LU
    return;
  }
  if (CmdResult r = check_cdb(*info, task); !r.ok()) {
    finish(task, r, d_sense);
    return;
  }
  if (!lu || !task.nexus) {
    // No LU (INQUIRY, REQUEST SENSE, REPORT LUNS on a LUN without one): no task set.
    if (lu) lu->unit_attentions().touch(0);
    run(lu, table, *info, task);
    return;
  }
  NexusTasks& set = lu->task_set_of(*task.nexus);
  task.task_set.lu = lu;
  task.task_set.table = &table;
  task.task_set.info = info;
  if (set.enter(task)) run(lu, table, *info, task);
}

int flush_logical_unit(LogicalUnit& lu) {
  storage::IoRequest req;
  req.op = storage::IoOp::kFlush;
  return storage::submit_and_wait(lu.backend(), req);
}

void reset_logical_unit(LogicalUnit& lu, const Nexus& from, std::function<void()> done) {
  // SAM-5 (logical unit reset): every task of every I_T nexus is aborted, `from`'s included
  // (they end without a response: the TMF response answers for them); a RESERVE (6)/(10)
  // reservation is released (SPC-2), persistent reservations are not (SPC-5); BUS DEVICE
  // RESET FUNCTION OCCURRED is established for every I_T nexus, the one that asked for it
  // included (FreeBSD CTL and LIO do the same, and libiscsi's MultipathIO.Reset expects it
  // on every path). It goes first and replaces COMMANDS CLEARED BY ANOTHER INITIATOR (TAS=0).
  // Mode parameters persist. `done` waits for the aborted tasks.
  auto waiter = std::make_shared<AbortWaiter>(std::move(done));
  for (const auto& set : lu.nexuses().all()) abort_tasks_of(lu, *set, from.id, waiter);
  lu.reservations().reset();
  UnitAttentions& uas = lu.unit_attentions();
  uas.touch(from.id);
  uas.establish_all(Reason::kUaBusDeviceResetOccurred);
  // A LU that several nodes export is reset on every node before the reset completes
  // (libiscsi's MultipathIO.Reset expects 29h/03h on every path).
  if (LogicalUnit::Peers* peers = lu.peers()) peers->reset();
  waiter->release();
}

void nexus_lost(LogicalUnit& lu, const Nexus& nexus) {
  lu.unit_attentions().forget(nexus.id);
  // Only a nexus that used the LU had an I_T nexus with it to lose.
  if (lu.nexuses().detach(nexus.id)) lu.note_nexus_lost(nexus);
  lu.reservations().nexus_lost(nexus.id);
}

void abort_task_set(LogicalUnit& lu, const Nexus* only, const Nexus& from,
                    std::function<void()> done) {
  auto waiter = std::make_shared<AbortWaiter>(std::move(done));
  if (only) {
    if (auto set = lu.nexuses().find(only->id)) abort_tasks_of(lu, *set, from.id, waiter);
  } else {
    for (const auto& set : lu.nexuses().all()) abort_tasks_of(lu, *set, from.id, waiter);
  }
  waiter->release();
}

bool abort_task(Task& task) {
  NexusTasks* set = task.task_set.set;
  return set && set->abort_one(task, set->nexus_id());
}

void reported_luns_changed(const LunTable& table) {
  for (const auto& [lun, lu] : table.luns) {
    if (lu) lu->unit_attentions().establish_all(Reason::kUaReportedLunsDataChanged);
  }
}

}  // namespace zuma::scsi
