// A step as the API and the view show it: one shape for step.status,
// run.show and the HTTP view, whether the step is live in memory or read
// back from the catalog, and the run-level additions built from it
// (exactness, notebook metrics, the steps a run planned but never ran).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "agent/catalog/catalog.h"
#include "common/error.h"

namespace stepsnap::agent {

// Labels on a post-snapshot that is not exact, and why (the step policy
// writes them). Labels are what a snapshot keeps in the catalog, so the
// verdict survives a restart.
inline constexpr const char* kExactLabel = "stepsnap.exact";
inline constexpr const char* kNotExactLabel = "stepsnap.not_exact";

// The step's record: identity, state, policy, cgroup, volumes, command, the
// times (RFC 3339 and *_ns, 0 when not yet), held_ns, exit status, error,
// its snapshot names, its labels and `after` (the dependencies runner
// pipeline recorded as the label stepsnap.after=a,b).
nlohmann::json step_record_json(const StepRecord& r);

// `exact` (and `not_exact_reason`) from the step's "snapshots": false when
// a post-snapshot is labelled not exact, true when it has post-snapshots
// and none is.
void add_exactness(nlohmann::json& step);

// A notebook step's pipeline-metrics, from the `metric.NAME` labels runner
// puts on its post-snapshots (docs/notebooks.md): into the step's own
// "metrics" and the run's.
void add_metrics(nlohmann::json& step, nlohmann::json& run_metrics);

// The run's steps by name, completed with the ones its plan has and the
// catalog has no record of: "restored" (not re-run, from an earlier run),
// "skipped" (a step it depends on failed or was skipped) or "pending" (not
// started yet). Each planned step gets its planned `after`.
void add_planned_steps(std::map<std::string, nlohmann::json>& steps, const RunPlanRecord& plan);

// step.status's answer from the catalog: the step's record (or `live`, its
// view from memory), its snapshots and exactness. ENOENT when the step has
// neither a record nor snapshots.
Result<nlohmann::json> read_step(Catalog& catalog, const std::string& pipeline,
                                 const std::string& run, const std::string& step,
                                 const std::optional<nlohmann::json>& live = std::nullopt,
                                 std::optional<std::int64_t> pool_id = std::nullopt);

// run.show's answer from the catalog: {pipeline, run, steps (by name, each
// with its snapshots, exactness and metrics), initial_snapshots, metrics}.
// `live`: the views of the run's live steps, which win over their rows
// (memory is never behind the catalog). `pool_id`: only that pool's
// snapshots. ENOENT when the run has no step, snapshot or plan.
Result<nlohmann::json> read_run(Catalog& catalog, const std::string& pipeline,
                                const std::string& run,
                                const std::map<std::string, nlohmann::json>& live = {},
                                std::optional<std::int64_t> pool_id = std::nullopt);

}  // namespace stepsnap::agent
