// Long operations zumad runs in the background for zumactl (copy lun; replication resyncs
// later): each job has a thread of its own, a byte count done out of a total, and a state.
// zumactl shows a progress bar (admin/progress.hh) by polling `show job`, and can leave a
// job running (`--background`, or Ctrl-C while watching) and come back to it.
//
// Threading: every member may be called from any thread. A job's work runs on its own
// thread (no IoContext, so backends complete its I/O inline); it checks cancelled()
// between steps.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace zuma::admin {

enum class JobState { kRunning, kDone, kFailed, kCancelled };
const char* job_state_name(JobState s);

struct JobInfo {
  uint64_t id = 0;
  std::string kind;  // "copy lun"
  std::string what;  // "data -> data-copy"
  JobState state = JobState::kRunning;
  uint64_t done = 0, total = 0;  // bytes
  double seconds = 0;            // running time so far, or in all
  std::string error;             // kFailed: why, one line
};

class Job {
 public:
  uint64_t total() const { return total_; }
  void add_done(uint64_t bytes) { done_.fetch_add(bytes, std::memory_order_relaxed); }
  bool cancelled() const { return cancel_.load(std::memory_order_relaxed); }

 private:
  friend class Jobs;
  uint64_t id_ = 0;
  std::string kind_, what_;
  uint64_t total_ = 0;
  std::atomic<uint64_t> done_{0};
  std::atomic<bool> cancel_{false};
  std::atomic<JobState> state_{JobState::kRunning};
  std::string error_;  // written by the job's thread before state_ leaves kRunning
  std::chrono::steady_clock::time_point started_, ended_;
  std::thread thread_;
};

class Jobs {
 public:
  // Finished jobs kept for `show jobs` (the oldest finished ones are forgotten first).
  static constexpr size_t kKeepFinished = 32;

  Jobs() = default;
  Jobs(const Jobs&) = delete;
  Jobs& operator=(const Jobs&) = delete;
  ~Jobs();  // cancels every running job and waits for it

  // Starts `work` on a new thread. It returns an error (one line) or nothing; a job that
  // returns after cancelled() counts as cancelled.
  using Work = std::function<std::expected<void, std::string>(Job&)>;
  uint64_t start(std::string kind, std::string what, uint64_t total, Work work);
  std::vector<JobInfo> list() const;
  std::optional<JobInfo> find(uint64_t id) const;
  // Asks a running job to stop. False when there is no such running job.
  bool cancel(uint64_t id);
  // Cancels every running job and waits for them (zumad's shutdown).
  void stop_all();

 private:
  static JobInfo info(const Job& j);
  mutable std::mutex mu_;
  uint64_t next_id_ = 1;
  std::vector<std::unique_ptr<Job>> jobs_;  // in start order
};

}  // namespace zuma::admin
