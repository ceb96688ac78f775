// agent/daemon/: stepsnapd itself (options, start-up, recovery, main).
// Uses agent/api and so all of agent/.
//
// stepsnapd's pieces and their order. start(): open the catalog and event
// log, open the pool (or create it: on loop files for development, on the
// given devices otherwise), recover (reconcile the catalog with the pool),
// start the step policy (tracer + snapshot worker) and the API server.
// stop(): stop serving, stop the step policy (a held step is released),
// close the event log. Volumes stay active: they outlive the daemon.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "agent/api/api_server.h"
#include "agent/api/handler.h"
#include "agent/catalog/catalog.h"
#include "agent/daemon/options.h"
#include "agent/events/event_log.h"
#include "agent/policy/step_policy.h"
#include "agent/retention/retention_sweep.h"
#include "agent/view/view_server.h"
#include "agent/volumes/volumes.h"
#include "common/error.h"
#include "dm/loop_device.h"
#include "dm/thin_pool.h"

namespace stepsnap::agent {

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> start(const DaemonOptions& options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  void stop();

 private:
  Daemon() = default;
  Status open_pool(const DaemonOptions& options);
  // The pool's transaction id against the one the catalog recorded (see
  // open_pool); pool_ and pool_record_ are set.
  Status check_transaction_id(const DaemonOptions& options);

  std::shared_ptr<Database> db_;
  std::optional<Catalog> catalog_;
  std::unique_ptr<EventLog> events_;
  std::vector<dm::LoopDevice> loops_;
  std::optional<dm::ThinPool> pool_;
  std::optional<PoolRecord> pool_record_;
  std::unique_ptr<Volumes> volumes_;
  std::unique_ptr<StepPolicy> policy_;
  std::unique_ptr<RetentionSweeper> retention_;
  std::unique_ptr<DaemonHandler> handler_;
  std::unique_ptr<ApiServer> server_;
  std::unique_ptr<ViewServer> view_;
  bool stopped_ = false;
};

}  // namespace stepsnap::agent
