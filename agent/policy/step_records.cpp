#include "agent/policy/step_records.h"

#include <cerrno>

#include "common/time.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

// `exact` (and `not_exact_reason`) from the step's post-snapshots.
void add_exactness(json& step) {
  bool any_post = false;
  for (const auto& snap : step.value("snapshots", json::array())) {
    if (!snap.contains("step") || snap["step"].value("phase", "") != "post") continue;
    any_post = true;
    const json labels = snap.value("labels", json::object());
    if (labels.value(kExactLabel, "") == "false") {
      step["exact"] = false;
      step["not_exact_reason"] = labels.value(kNotExactLabel, "");
      return;
    }
  }
  if (any_post) step["exact"] = true;
}

std::string step_key(const std::string& pipeline, const std::string& run, const std::string& step) {
  return pipeline + "/" + run + "/" + step;
}

}  // namespace

json record_json(const StepRecord& r) {
  json j = {{"pipeline", r.pipeline}, {"run", r.run}, {"step", r.step}};
  j["state"] = r.state;
  j["policy"] = r.policy;
  j["cgroup"] = r.cgroup;
  j["cgroup_id"] = r.cgroup_id;
  j["volumes"] = r.volumes;
  j["command"] = r.command;
  j["registered"] = format_rfc3339_ns(r.registered_ns);
  if (r.started_ns) j["started"] = format_rfc3339_ns(r.started_ns);
  if (r.finished_ns) j["finished"] = format_rfc3339_ns(r.finished_ns);
  j["held_ns"] = r.held_ns;
  if (r.exit_status) j["exit_status"] = *r.exit_status;
  if (!r.error.empty()) j["error"] = r.error;
  j["pre_snapshots"] = r.pre_snapshots;
  j["post_snapshots"] = r.post_snapshots;
  return j;
}

Result<json> StepRecords::snapshots_json(const std::string& pipeline, const std::string& run,
                                         const std::string& step) {
  DeviceFilter f;
  f.kind = DeviceKind::snapshot;
  f.pipeline = pipeline;
  f.run = run;
  if (!step.empty()) f.step = step;
  auto list = volumes_.list(f);
  if (!list) return tl::unexpected(list.error());
  json out = json::array();
  for (const auto& d : *list) out.push_back(device_json(d));
  return out;
}

Result<json> StepRecords::status(const std::string& pipeline, const std::string& run,
                                 const std::string& step, const std::optional<json>& live) {
  auto snaps = snapshots_json(pipeline, run, step);
  if (!snaps) return snaps;
  json j;
  if (live) {
    j = *live;
  } else {
    // Not live: its last record tells.
    auto rec = catalog_.find_step(pipeline, run, step);
    if (!rec) return tl::unexpected(rec.error().context("step status"));
    if (*rec) {
      j = record_json(**rec);
    } else if (!snaps->empty()) {
      // Snapshots from before the catalog kept steps (schema version 1).
      j = {{"pipeline", pipeline}, {"run", run}, {"step", step}, {"state", "unknown"}};
    } else {
      return fail("step status", step_key(pipeline, run, step), ENOENT,
                  "no such step registered and no snapshots of it");
    }
  }
  j["snapshots"] = *snaps;
  add_exactness(j);
  return j;
}

namespace {

// A notebook step's pipeline-metrics, from the `metric.NAME` labels runner
// puts on its post-snapshots (docs/notebooks.md): into the step's own
// "metrics" and the run's.
void add_metrics(json& step, json& run_metrics) {
  constexpr std::string_view kPrefix = "metric.";
  json mine = json::object();
  for (const auto& snap : step["snapshots"]) {
    const json labels = snap.value("labels", json::object());
    for (const auto& [key, value] : labels.items()) {
      if (key.size() > kPrefix.size() && key.compare(0, kPrefix.size(), kPrefix) == 0)
        mine[key.substr(kPrefix.size())] = value;
    }
  }
  if (mine.empty()) return;
  for (const auto& [name, value] : mine.items()) run_metrics[name] = value;
  step["metrics"] = std::move(mine);
}

}  // namespace

Result<json> StepRecords::run(const std::string& pipeline, const std::string& run,
                              const std::map<std::string, json>& live) {
  auto snaps = snapshots_json(pipeline, run, "");
  if (!snaps) return snaps;
  std::map<std::string, json> steps;
  auto recorded = catalog_.list_steps(pipeline, run);
  if (!recorded) return tl::unexpected(recorded.error().context("run show"));
  for (const auto& r : *recorded) {
    steps[r.step] = record_json(r);
    steps[r.step]["snapshots"] = json::array();
  }
  // Live steps win over their rows: memory is never behind the catalog.
  for (const auto& [name, view] : live) {
    steps[name] = view;
    steps[name]["snapshots"] = json::array();
  }
  json initial = json::array();
  for (const auto& snap : *snaps) {
    // A run's initial snapshots belong to the run, not to a step.
    if (snap["step"].value("phase", "") == "initial") {
      initial.push_back(snap);
      continue;
    }
    std::string name = snap["step"]["step"];
    if (!steps.count(name)) {
      steps[name] = {{"pipeline", pipeline},
                     {"run", run},
                     {"step", name},
                     {"state", "unknown"},
                     {"snapshots", json::array()}};
    }
    steps[name]["snapshots"].push_back(snap);
  }
  if (steps.empty() && initial.empty()) {
    return fail("run show", pipeline + "/" + run, ENOENT, "no steps or snapshots for that run");
  }
  json out = {{"pipeline", pipeline},
              {"run", run},
              {"steps", json::array()},
              {"initial_snapshots", initial},
              {"metrics", json::object()}};
  for (auto& [name, s] : steps) {
    add_exactness(s);
    add_metrics(s, out["metrics"]);
    out["steps"].push_back(std::move(s));
  }
  return out;
}

}  // namespace stepsnap::agent
