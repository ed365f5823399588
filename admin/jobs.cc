#include "admin/jobs.hh"
#include "storage/thread_name.hh"

#include <algorithm>

namespace zuma::admin {

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kRunning:
      return "running";
    case JobState::kDone:
      return "done";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "?";
}

Jobs::~Jobs() { stop_all(); }

uint64_t Jobs::start(std::string kind, std::string what, uint64_t total, Work work) {
  auto job = std::make_unique<Job>();
  Job* j = job.get();
  j->kind_ = std::move(kind);
  j->what_ = std::move(what);
  j->total_ = total;
  j->started_ = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  j->id_ = next_id_++;
  // Forget the oldest finished jobs beyond the ones kept (their threads have ended).
  size_t finished = 0;
  for (const auto& o : jobs_) finished += o->state_.load() != JobState::kRunning;
  for (auto it = jobs_.begin(); it != jobs_.end() && finished > kKeepFinished;) {
    if ((*it)->state_.load() != JobState::kRunning) {
      if ((*it)->thread_.joinable()) (*it)->thread_.join();
      it = jobs_.erase(it);
      --finished;
    } else {
      ++it;
    }
  }
  j->thread_ = std::thread([j, work = std::move(work)] {
    storage::name_this_thread("job");
    std::expected<void, std::string> r;
    try {
      r = work(*j);
    } catch (const std::exception& e) {
      r = std::unexpected(std::string("internal error: ") + e.what());
    }
    j->ended_ = std::chrono::steady_clock::now();
    if (!r) {
      j->error_ = r.error();
      j->state_.store(JobState::kFailed);
    } else {
      // A cancel that came after the last byte was copied did not stop anything.
      const bool stopped = j->cancelled() && j->done_.load() < j->total_;
      j->state_.store(stopped ? JobState::kCancelled : JobState::kDone);
    }
  });
  jobs_.push_back(std::move(job));
  return j->id_;
}

JobInfo Jobs::info(const Job& j) {
  JobInfo i;
  i.id = j.id_;
  i.kind = j.kind_;
  i.what = j.what_;
  i.state = j.state_.load();  // acquire: error_ and ended_ are set before it changes
  i.done = std::min(j.done_.load(std::memory_order_relaxed), j.total_);
  i.total = j.total_;
  const auto end = i.state == JobState::kRunning ? std::chrono::steady_clock::now() : j.ended_;
  i.seconds = std::chrono::duration<double>(end - j.started_).count();
  if (i.state == JobState::kFailed) i.error = j.error_;
  return i;
}

std::vector<JobInfo> Jobs::list() const {
  std::lock_guard lock(mu_);
  std::vector<JobInfo> out;
  for (const auto& j : jobs_) out.push_back(info(*j));
  return out;
}

std::optional<JobInfo> Jobs::find(uint64_t id) const {
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_)
    if (j->id_ == id) return info(*j);
  return std::nullopt;
}

bool Jobs::cancel(uint64_t id) {
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_)
    if (j->id_ == id && j->state_.load() == JobState::kRunning) {
      j->cancel_.store(true);
      return true;
    }
  return false;
}

void Jobs::stop_all() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (const auto& j : jobs_) {
      j->cancel_.store(true);
      if (j->thread_.joinable()) threads.push_back(std::move(j->thread_));
    }
  }
  for (auto& t : threads) t.join();
}

}  // namespace zuma::admin
