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

// One page of a list: at most `limit` items after the one named `after`
// (a device's name; for runs "PIPELINE/RUN"), as the socket API pages
// (docs/api.md, Pages). The answer names its last item in `next_after` when
// more follow.
struct PageSpec {
  std::optional<std::string> after;
  std::size_t limit = 1000;
};

class ViewStore {
 public:
  static Result<std::unique_ptr<ViewStore>> open(const std::string& catalog_path);

  // {"pipelines":[{"name","runs":[run summary]}]}: one page of runs (as
  // runs()), grouped by pipeline; next_after as runs().
  Result<nlohmann::json> pipelines(const PageSpec& page);
  // {"runs":[run summary], "next_after"?}: one page of runs, newest first.
  // A run summary: pipeline, run, state, started, finished, duration_ns,
  // steps_total and steps by outcome (ok, failed, skipped, restored,
  // running, pending; the last four need the run's plan, step_json.h).
  // An `after` the catalog does not know: ENOENT.
  Result<nlohmann::json> runs(const PageSpec& page);
  // run.show's shape (read_run, step_json.h: steps with their snapshots,
  // labels, `after`, exactness and metrics; planned steps that never ran;
  // initial_snapshots; metrics) plus run_clones and the run's summary, steps
  // in execution order. ENOENT: unknown.
  Result<nlohmann::json> run(const std::string& pipeline, const std::string& run);
  // step.status's shape with the step's snapshots.
  Result<nlohmann::json> step(const std::string& pipeline, const std::string& run,
                              const std::string& step);
  // snapshot.show's shape plus children (snapshots and clones made from it,
  // at most kMaxChildren) and mapped_bytes_added (growth of the origin's
  // mapped bytes since the parent snapshot). ENOENT: unknown; EINVAL: the
  // name is not a snapshot.
  Result<nlohmann::json> snapshot(const std::string& name);
  // snapshot.list's shape, one page; filters as its args (empty: any).
  Result<nlohmann::json> snapshots(const DeviceFilter& filter, const std::string& volume,
                                   const PageSpec& page);
  // volume.list's devices (volumes and clones, each with its origin's
  // name), one page, without the live pool.
  Result<nlohmann::json> volumes(const PageSpec& page);
  // The pool's catalog record: name, block_bytes, dm name. none: no pool yet.
  Result<std::optional<PoolRecord>> pool();
  Result<EventBatch> events(std::uint64_t since, std::size_t max);

  Database& db() { return *db_; }

  // A snapshot page names at most this many devices made from it, and this
  // many earlier versions (as snapshot.show).
  static constexpr std::size_t kMaxChildren = 1000;
  static constexpr std::size_t kMaxLineage = 1000;

 private:
  ViewStore(std::shared_ptr<Database> db, Catalog catalog)
      : db_(std::move(db)), catalog_(std::move(catalog)) {}
  // One page of devices: `after` resolved to its id, one row more than
  // asked to know whether another page follows.
  Result<nlohmann::json> device_page(DeviceFilter filter, const PageSpec& page, const char* key,
                                     bool with_origin_names);

  std::shared_ptr<Database> db_;
  Catalog catalog_;
};

// A run's summary from its steps (run.show's shape): state is "failed" when a
// step failed or exited non-zero, "running" while a step is not over or one
// planned is still to start, else "succeeded".
nlohmann::json run_summary(const nlohmann::json& run);

}  // namespace stepsnap::agent
