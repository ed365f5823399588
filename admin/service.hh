// zumad's implementation of the control verbs (issue 6): the running configuration, the
// LUs by name, and the live changes applied to target::Server.
//
// Every change, from a verb or from `config reload`, goes the same way: a new
// config::Config is built, written out and parsed again (so it passes exactly the checks a
// file does), compared with the running one (config::diff), and only the difference is
// applied: new LUs are opened, targets whose definition changed get a new TargetDef (their
// sessions follow it; other sessions are not touched), portals are bound or closed.
// Removing or replacing a LU or a target a session uses is refused unless forced.
//
// Threading: handlers run on the control thread; metrics_text() on the metrics thread.
// Both take mu_. Session and statistics queries are posted to the reactors by
// target::Server, never read across threads.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "admin/command_table.hh"
#include "admin/jobs.hh"
#include "config/config.hh"
#include "scsi/device_server.hh"
#include "target/server.hh"

namespace zuma::admin {

// Opens one LU as zumad does at startup (backends, sub-units, identity). Throws
// std::runtime_error with a one-line message.
using LuFactory =
    std::function<std::shared_ptr<scsi::LogicalUnit>(const config::Config&, const config::Lun&)>;

// The iSCSI side of a configured target: ACL rules, CHAP, LUN table (one target port group
// per portal group tag). `lus` maps LU names to LU objects and must hold every LU of `t`.
std::shared_ptr<const target::TargetDef> make_target_def(
    const config::Target& t, const std::vector<config::Portal>& portals,
    const std::map<std::string, std::shared_ptr<scsi::LogicalUnit>>& lus);
std::optional<target::ChapPolicy> chap_policy(const std::optional<config::Chap>& c);

class Service {
 public:
  // `running`: the configuration zumad started with (its `path` is what `config reload`
  // reads and `config save` writes); `lus`: the LUs zumad built from it, by name.
  Service(config::Config running, target::Server& server,
          std::map<std::string, std::shared_ptr<scsi::LogicalUnit>> lus, LuFactory factory);

  // Installs a handler for every verb of register_core_commands() in `table`.
  void bind(CommandTable& table);
  // The Prometheus text exposition (format 0.0.4) of the per-LU and per-session counters,
  // then what each added source renders (layers with metrics of their own: snapshots).
  std::string metrics_text();
  // Call before the metrics endpoint starts (the list is not locked).
  void add_metrics_source(std::function<std::string()> render);
  // Completion names for sources "KIND:ARG" (zumactl's TAB; command_table.hh NameSource):
  // `names(ARG)` lists them. Call before the control socket starts (the map is not locked).
  void add_name_source(const std::string& kind,
                       std::function<std::vector<std::string>(const std::string& arg)> names);

  // Sets a replication link's resync_rate (bytes per second, 0: no limit) when a config
  // change alters only that of a group: "" or why not. Without it such a change needs a
  // restart. Call before the control socket starts.
  using ResyncRateHook =
      std::function<std::string(const std::string& group, const std::string& link, uint64_t rate)>;
  void set_resync_rate_hook(ResyncRateHook hook) { resync_rate_hook_ = std::move(hook); }

  // Cancels the background jobs (copy lun) and waits for them: zumad's shutdown, before
  // the LUs are flushed.
  void stop_jobs() { jobs_.stop_all(); }

  // The LUs now in use, by name (for zumad's shutdown flush).
  std::map<std::string, std::shared_ptr<scsi::LogicalUnit>> lus();

 private:
  // Validates `next`, applies its difference from the running configuration. Returns the
  // result of the verb. Throws CommandError.
  Json apply(config::Config next, bool force);
  config::Config copy_running();

  Json show_node();
  Json show_portals();
  Json show_targets();
  Json show_luns(const Json& a);
  Json show_sessions(const Json& a);
  Json show_connections(const Json& a);
  Json show_stats(const Json& a);
  Json config_save(const Json& a);
  Json resize_lun(const Json& a);
  Json copy_lun(const Json& a);
  Json show_jobs();
  Json show_job(const Json& a);
  Json log_level(const Json& a);
  Json complete(const Json& a);

  std::mutex mu_;
  Jobs jobs_;  // copy lun
  std::vector<std::function<std::string()>> metrics_sources_;
  std::map<std::string, std::function<std::vector<std::string>(const std::string&)>> name_sources_;
  config::Config running_;
  target::Server& server_;
  std::map<std::string, std::shared_ptr<scsi::LogicalUnit>> lus_;
  LuFactory factory_;
  ResyncRateHook resync_rate_hook_;
  const std::chrono::steady_clock::time_point started_;
  // `show stats`: the previous sample, for rates.
  std::map<std::string, target::IoStats> last_stats_;
  std::chrono::steady_clock::time_point last_stats_at_;
};

}  // namespace zuma::admin
