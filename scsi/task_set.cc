#include "scsi/task_set.hh"

#include <algorithm>
#include <atomic>

#include "scsi/logical_unit.hh"

namespace zuma::scsi {

bool NexusTasks::enter(Task& task) {
  std::lock_guard lock(mu_);
  Task::TaskSetLink& l = task.task_set;
  l.set = this;
  l.seq = next_seq_++;
  l.prev = tail_;
  l.next = nullptr;
  l.ready_next = nullptr;
  if (tail_) {
    tail_->task_set.next = &task;
  } else {
    head_ = &task;
  }
  tail_ = &task;
  ++count_;
  bool start;
  switch (task.attr) {
    case TaskAttr::kHeadOfQueue:
      start = true;
      break;
    case TaskAttr::kOrdered:
      start = count_ == 1;  // every older task has completed
      ++ordered_;
      break;
    default:
      start = ordered_ == 0;  // no older ORDERED task pending
      break;
  }
  l.started = start;
  if (!start) ++waiting_;
  return start;
}

void NexusTasks::unlink(Task& t) {
  Task::TaskSetLink& l = t.task_set;
  if (l.prev) {
    l.prev->task_set.next = l.next;
  } else {
    head_ = l.next;
  }
  if (l.next) {
    l.next->task_set.prev = l.prev;
  } else {
    tail_ = l.prev;
  }
  l.prev = l.next = nullptr;
}

void NexusTasks::queue_startable() {
  // Walk oldest first. A SIMPLE task may start when no ORDERED task precedes it, an ORDERED
  // one when nothing precedes it; nothing after an ORDERED task may start (HEAD OF QUEUE
  // tasks started when they arrived).
  for (Task* x = head_; x && waiting_ > 0; x = x->task_set.next) {
    Task::TaskSetLink& xl = x->task_set;
    const bool ordered = x->attr == TaskAttr::kOrdered;
    if (!xl.started && (!ordered || x == head_)) {
      xl.started = true;
      --waiting_;
      xl.ready_next = nullptr;
      if (ready_tail_) {
        ready_tail_->task_set.ready_next = x;
      } else {
        ready_head_ = x;
      }
      ready_tail_ = x;
    }
    if (ordered) break;
  }
}

bool NexusTasks::leave(Task& task, bool* aborted, bool* by_other,
                       std::vector<std::shared_ptr<AbortWaiter>>* fire) {
  std::lock_guard lock(mu_);
  Task::TaskSetLink& l = task.task_set;
  *aborted = l.abort;
  *by_other = l.abort_by_other;
  unlink(task);
  --count_;
  if (task.attr == TaskAttr::kOrdered) --ordered_;
  if (!l.started) --waiting_;  // completed without starting (cannot happen today)
  for (size_t i = 0; i < waiters_.size();) {
    WaiterReg& w = waiters_[i];
    if (l.seq < w.seq_limit) {
      fire->push_back(w.waiter);
      if (--w.count == 0) {
        waiters_[i] = std::move(waiters_.back());
        waiters_.pop_back();
        continue;
      }
    }
    ++i;
  }
  if (waiting_ > 0) queue_startable();
  return ready_head_ != nullptr;
}

Task* NexusTasks::take_ready(bool* outermost) {
  std::lock_guard lock(mu_);
  if (!*outermost) {
    if (draining_) return nullptr;
    draining_ = true;
    *outermost = true;
  }
  Task* t = ready_head_;
  if (t) {
    ready_head_ = t->task_set.ready_next;
    if (!ready_head_) ready_tail_ = nullptr;
    t->task_set.ready_next = nullptr;
  }
  return t;
}

void NexusTasks::end_drain() {
  std::lock_guard lock(mu_);
  draining_ = false;
}

size_t NexusTasks::abort_all(uint64_t by, const std::shared_ptr<AbortWaiter>& waiter) {
  std::lock_guard lock(mu_);
  for (Task* x = head_; x; x = x->task_set.next) {
    Task::TaskSetLink& xl = x->task_set;
    if (!xl.abort) xl.abort_by_other = by != id_;
    std::atomic_ref<bool>(xl.abort).store(true, std::memory_order_release);
  }
  if (waiter && count_ > 0) {
    waiters_.push_back({next_seq_, count_, waiter});
    waiter->add(count_);
  }
  return count_;
}

bool NexusTasks::abort_one(Task& task, uint64_t by) {
  std::lock_guard lock(mu_);
  for (Task* x = head_; x; x = x->task_set.next) {
    if (x != &task) continue;
    if (!x->task_set.abort) x->task_set.abort_by_other = by != id_;
    std::atomic_ref<bool>(x->task_set.abort).store(true, std::memory_order_release);
    return true;
  }
  return false;
}

size_t NexusTasks::size() const {
  std::lock_guard lock(mu_);
  return count_;
}

bool NexusTasks::copy_begin(uint8_t id, bool held) {
  std::lock_guard lock(mu_);
  for (auto it = copies_.begin(); it != copies_.end(); ++it) {
    if (it->list_id != id) continue;
    if (it->status == 0x00) return false;  // in progress
    copies_.erase(it);
    break;
  }
  if (copies_.size() >= kMaxCopyRecords) {
    // Forget the oldest finished copy; with every one in progress, the oldest.
    auto victim = std::find_if(copies_.begin(), copies_.end(),
                               [](const CopyRecord& r) { return r.status != 0x00; });
    copies_.erase(victim == copies_.end() ? copies_.begin() : victim);
  }
  copies_.push_back({id, 0x00, 0, 0, held});
  return true;
}

void NexusTasks::copy_update(const CopyRecord& r) {
  std::lock_guard lock(mu_);
  for (auto it = copies_.begin(); it != copies_.end(); ++it) {
    if (it->list_id != r.list_id) continue;
    if (r.status != 0x00 && !it->held) {
      copies_.erase(it);  // finished, and nobody asked to see its results
    } else {
      const bool held = it->held;
      *it = r;
      it->held = held;
    }
    return;
  }
}

std::optional<NexusTasks::CopyRecord> NexusTasks::copy_record(uint8_t id) const {
  std::lock_guard lock(mu_);
  for (const CopyRecord& r : copies_) {
    if (r.list_id == id && r.held) return r;
  }
  return std::nullopt;
}

std::shared_ptr<NexusTasks> NexusRegistry::attach(const Nexus& n, bool* created) {
  std::lock_guard lock(mu_);
  auto& slot = sets_[n.id];
  *created = !slot;
  if (!slot) slot = std::make_shared<NexusTasks>(n.id, NexusIdentity::of(n));
  return slot;
}

std::shared_ptr<NexusTasks> NexusRegistry::detach(uint64_t nexus_id) {
  std::lock_guard lock(mu_);
  auto it = sets_.find(nexus_id);
  if (it == sets_.end()) return nullptr;
  auto s = std::move(it->second);
  sets_.erase(it);
  s->detach();
  return s;
}

std::vector<std::shared_ptr<NexusTasks>> NexusRegistry::all() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<NexusTasks>> v;
  v.reserve(sets_.size());
  for (const auto& [id, s] : sets_) v.push_back(s);
  return v;
}

std::shared_ptr<NexusTasks> NexusRegistry::find(uint64_t nexus_id) const {
  std::lock_guard lock(mu_);
  auto it = sets_.find(nexus_id);
  return it == sets_.end() ? nullptr : it->second;
}

size_t abort_tasks_of(LogicalUnit& lu, NexusTasks& set, uint64_t by,
                      const std::shared_ptr<AbortWaiter>& waiter) {
  const size_t n = set.abort_all(by, waiter);
  if (n > 0 && by != set.nexus_id() && !lu.mode_params().tas) {
    lu.unit_attentions().establish(set.nexus_id(), Reason::kUaCommandsClearedByAnotherInitiator);
  }
  return n;
}

void complete_in_task_set(Task& task) {
  NexusTasks* set = task.task_set.set;
  LogicalUnit* lu = task.task_set.lu;
  bool aborted = false, by_other = false;
  std::vector<std::shared_ptr<AbortWaiter>> fire;
  const bool ready = set->leave(task, &aborted, &by_other, &fire);
  // Starting the tasks this lets start touches the set after on_complete, when the transport
  // may free the nexus that owns it (once its last task is done): hold it meanwhile. The
  // common case (nothing waiting) touches nothing after on_complete.
  std::shared_ptr<NexusTasks> keep;
  if (ready) keep = set->shared_from_this();
  if (aborted) {
    // SPC-5 Control mode page, TAS: TASK ABORTED status reported for tasks aborted by another
    // I_T nexus's action; otherwise the task ends without a response (task.hh).
    task.aborted = true;
    task.report_abort = by_other && lu && lu->mode_params().tas;
    task.status = status::kTaskAborted;
    task.sense_len = 0;
    task.data_in_len = 0;
  }
  task.task_set = Task::TaskSetLink{};
  task.on_complete(task);  // the task may be gone from here on
  for (auto& w : fire) w->release();
  if (!ready) return;
  bool outermost = false;
  while (Task* next = set->take_ready(&outermost)) start_task(*next);
  if (outermost) set->end_drain();
}

}  // namespace zuma::scsi
