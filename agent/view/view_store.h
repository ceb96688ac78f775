// agent/view/: the HTTP view of stepsnapd (pages, JSON API, Server-Sent
// Events, Prometheus metrics). Uses agent/volumes (and so the catalog, the
// event log and dm/) for reading only.
//
// The view's read side: every answer the pages and the JSON API give, as
// JSON, from the view's own read-only connection to the catalog. The
// daemon's connection, whose mutex snapshot work holds across a step's
// hold, is never touched, so a slow page can not lengthen a hold; WAL lets
// this reader see every committed transaction without blocking the writer.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "agent/catalog/catalog.h"
#include "agent/events/event_log.h"
#include "common/error.h"

namespace stepsnap::agent {

class ViewStore {
 public:
  static Result<std::unique_ptr<ViewStore>> open(const std::string& catalog_path);

  // {"pipelines":[{"name","runs":[run summary]}]}
  Result<nlohmann::json> pipelines();
  // [run summary]: pipeline, run, state, started, finished, duration_ns,
  // steps_total and steps by outcome (ok, failed, skipped, restored,
  // running, pending; the last four need the run's plan, step_json.h).
  Result<nlohmann::json> runs();
  // run.show's shape (read_run, step_json.h: steps with their snapshots,
  // labels, `after`, exactness and metrics; planned steps that never ran;
  // initial_snapshots; metrics) plus run_clones and the run's summary, steps
  // in execution order. ENOENT: unknown.
  Result<nlohmann::json> run(const std::string& pipeline, const std::string& run);
  // step.status's shape with the step's snapshots.
  Result<nlohmann::json> step(const std::string& pipeline, const std::string& run,
                              const std::string& step);
  // snapshot.show's shape plus children (snapshots and clones made from it)
  // and mapped_bytes_added (growth of the origin's mapped bytes since the
  // parent snapshot). ENOENT: unknown; EINVAL: the name is not a snapshot.
  Result<nlohmann::json> snapshot(const std::string& name);
  // snapshot.list's shape; filters as its args (empty: any).
  Result<nlohmann::json> snapshots(const DeviceFilter& filter, const std::string& volume);
  // volume.list's devices (volumes and clones), without the live pool.
  Result<nlohmann::json> volumes();
  // The pool's catalog record: name, block_bytes, dm name. none: no pool yet.
  Result<std::optional<PoolRecord>> pool();
  Result<EventBatch> events(std::uint64_t since, std::size_t max);

  Database& db() { return *db_; }

 private:
  ViewStore(std::shared_ptr<Database> db, Catalog catalog)
      : db_(std::move(db)), catalog_(std::move(catalog)) {}
  Result<std::vector<DeviceRecord>> devices(const DeviceFilter& filter);

  std::shared_ptr<Database> db_;
  Catalog catalog_;
};

// A run's summary from its steps (run.show's shape): state is "failed" when a
// step failed or exited non-zero, "running" while a step is not over or one
// planned is still to start, else "succeeded".
nlohmann::json run_summary(const nlohmann::json& run);

}  // namespace stepsnap::agent
