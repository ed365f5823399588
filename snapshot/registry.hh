// The snapshot stores of a zumad, by LU name, and the thread that takes scheduled
// snapshots and applies their retention (YAML `schedules: [{every: 15m, keep: 24}]`).
//
// Threading: add() at startup or from the control thread; find() from anywhere; the
// scheduler runs on its own thread and calls SnapshotStore operations (which serialise).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "snapshot/snapshot_store.hh"

namespace zuma::snapshot {

struct Schedule {
  std::string prefix;  // snapshots are "<prefix>-<YYYYmmddTHHMMSSZ>"
  uint64_t every_s = 0;
  uint32_t keep = 0;
};

class Registry {
 public:
  Registry() = default;
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Replaces any store of that LU (a reconfigured LU) and its schedules.
  void add(const std::string& lu, std::shared_ptr<SnapshotStore> store,
           std::vector<Schedule> schedules = {});
  std::shared_ptr<SnapshotStore> find(const std::string& lu) const;
  // Runs `fn` when a rollback changes the LU `lu` (clone empty) or its clone `clone`
  // (SnapshotStore::set_rollback_listener). False when there is no such store or clone.
  bool on_rollback(const std::string& lu, const std::string& clone, std::function<void()> fn);
  std::vector<std::string> names() const;
  // Whether `snapshot rollback` may change LU `lu` ("" yes, else why not): zumad refuses it
  // for a LU of a replication group, whose writes must all pass the group's log.
  void set_rollback_guard(std::function<std::string(const std::string& lu)> fn) {
    guard_ = std::move(fn);
  }
  std::string rollback_refused(const std::string& lu) const { return guard_ ? guard_(lu) : ""; }
  // Drops every store (shutdown: a store's backends may sit on layers, such as a
  // replication group's, that must be gone before what they use).
  void clear();

  // Starts / stops the scheduler thread.
  void start();
  void stop();
  // One scheduler pass at time `now` (tests): due schedules take a snapshot, then the
  // oldest snapshots of each schedule beyond `keep` are deleted. Returns snapshots taken.
  int run_due(std::chrono::system_clock::time_point now);

 private:
  std::function<std::string(const std::string&)> guard_;
  struct Entry {
    std::shared_ptr<SnapshotStore> store;
    std::vector<Schedule> schedules;
    std::vector<std::chrono::system_clock::time_point> next;  // per schedule
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry> stores_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// The name of a scheduled snapshot taken at `t`.
std::string scheduled_name(const std::string& prefix, std::chrono::system_clock::time_point t);

}  // namespace zuma::snapshot
