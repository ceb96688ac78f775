// The retention sweep (docs/retention.md): gathers every run of the pool
// from the catalog, asks plan_retention() which go, and deletes each run's
// devices through Volumes::remove, the path of volume.delete and
// snapshot.delete (each device in its own catalog intent: a crash leaves a
// run partly deleted, never a device half-deleted, and the next sweep
// deletes the rest). One retention.deleted event per device, one
// retention.swept per sweep that was not a dry run.
//
// It runs on demand (gc), every --gc-interval, and when the pool crosses
// its low-space threshold (a pool.low_space event in the log).
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agent/events/event_log.h"
#include "agent/retention/retention_plan.h"
#include "agent/retention/retention_store.h"
#include "agent/volumes/volumes.h"

namespace stepsnap::agent {

struct DeletedRun {
  RunRef ref;
  std::string reason;
  std::vector<std::string> devices;  // deleted (or, in a dry run, to delete), in order
  std::string error;                 // why the run is only partly deleted
};

struct SweepReport {
  bool dry_run = false;
  std::string trigger;  // "api", "timer", "low_space"
  std::vector<DeletedRun> deleted;
  std::vector<RunVerdict> kept;
};
nlohmann::json sweep_json(const SweepReport& report);

class RetentionSweeper {
 public:
  RetentionSweeper(Volumes& volumes, EventLog& events, RetentionStore store)
      : volumes_(volumes), events_(events), store_(std::move(store)) {}
  ~RetentionSweeper() { stop(); }
  RetentionSweeper(const RetentionSweeper&) = delete;
  RetentionSweeper& operator=(const RetentionSweeper&) = delete;

  RetentionStore& store() { return store_; }

  // One sweep now (one at a time: a second caller waits for the first).
  // A dry run plans the same and deletes nothing. `only` limits it to one
  // pipeline's runs.
  Result<SweepReport> sweep(bool dry_run, const std::string& trigger,
                            const std::optional<std::string>& only = std::nullopt);

  // The thread that sweeps every `interval` (0: never on a timer) and on
  // every pool.low_space event.
  void start(std::chrono::seconds interval);
  void stop();

 private:
  Result<std::vector<RunFacts>> gather(std::map<RunRef, std::vector<DeviceRecord>>& devices,
                                       const std::optional<std::string>& only);
  // The run's busy reason now (a step registered since the plan), or empty.
  std::string busy_now(const RunRef& ref);
  DeletedRun delete_run(const RunVerdict& verdict, std::vector<DeviceRecord> devices);
  void loop(std::chrono::seconds interval);

  Volumes& volumes_;
  EventLog& events_;
  RetentionStore store_;
  std::mutex sweep_mutex_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace stepsnap::agent
