#include "snapshot/registry.hh"

#include <algorithm>
#include <ctime>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace zuma::snapshot {

std::string scheduled_name(const std::string& prefix, std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return fmt::format("{}-{}", prefix, buf);
}

Registry::~Registry() {
  stop();
}

void Registry::add(const std::string& lu, std::shared_ptr<SnapshotStore> store,
                   std::vector<Schedule> schedules) {
  std::lock_guard lock(mu_);
  Entry e;
  e.store = std::move(store);
  const auto now = std::chrono::system_clock::now();
  for (const Schedule& s : schedules) e.next.push_back(now + std::chrono::seconds(s.every_s));
  e.schedules = std::move(schedules);
  stores_[lu] = std::move(e);
}

std::shared_ptr<SnapshotStore> Registry::find(const std::string& lu) const {
  std::lock_guard lock(mu_);
  auto it = stores_.find(lu);
  return it == stores_.end() ? nullptr : it->second.store;
}

std::vector<std::string> Registry::names() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, e] : stores_) out.push_back(name);
  return out;
}

void Registry::clear() {
  std::map<std::string, Entry> gone;
  {
    std::lock_guard lock(mu_);
    gone.swap(stores_);
  }
}

int Registry::run_due(std::chrono::system_clock::time_point now) {
  struct Due {
    std::string lu;
    std::shared_ptr<SnapshotStore> store;
    Schedule sched;
  };
  std::vector<Due> due;
  {
    std::lock_guard lock(mu_);
    for (auto& [lu, e] : stores_)
      for (size_t i = 0; i < e.schedules.size(); ++i)
        if (now >= e.next[i]) {
          due.push_back({lu, e.store, e.schedules[i]});
          e.next[i] = now + std::chrono::seconds(e.schedules[i].every_s);
        }
  }
  int taken = 0;
  for (const Due& d : due) {
    auto r = d.store->create(scheduled_name(d.sched.prefix, now));
    if (!r) {
      spdlog::warn("LU '{}': scheduled snapshot ({}) failed: {}", d.lu, d.sched.prefix, r.error());
      continue;
    }
    ++taken;
    // Retention: this schedule's snapshots, oldest first (epochs grow with time).
    std::vector<SnapshotListing> mine;
    for (auto& s : d.store->list(false))
      if (s.clone == 0 && s.name.starts_with(d.sched.prefix + "-")) mine.push_back(std::move(s));
    for (size_t i = 0; i + d.sched.keep < mine.size(); ++i) {
      if (auto del = d.store->remove(std::to_string(mine[i].id)); !del)
        spdlog::warn("LU '{}': retention of '{}': {}", d.lu, mine[i].name, del.error());
    }
  }
  return taken;
}

bool Registry::on_rollback(const std::string& lu, const std::string& clone,
                           std::function<void()> fn) {
  auto store = find(lu);
  if (!store) return false;
  uint64_t id = 0;
  if (!clone.empty()) {
    auto c = store->find_clone(clone);
    if (!c) return false;
    id = *c;
  }
  store->set_rollback_listener(id, std::move(fn));
  return true;
}

void Registry::start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::seconds(1));
      if (stop_) break;
      lock.unlock();
      run_due(std::chrono::system_clock::now());
      lock.lock();
    }
  });
}

void Registry::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace zuma::snapshot
