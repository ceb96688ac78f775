#include "agent/volumes/step_json.h"

#include <algorithm>
#include <cerrno>

#include "agent/volumes/volumes.h"
#include "common/time.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

// runner pipeline records a step's dependencies as stepsnap.after=a,b.
json after_label(const Labels& labels) {
  json after = json::array();
  auto it = labels.find("stepsnap.after");
  if (it == labels.end()) return after;
  const std::string& v = it->second;
  std::size_t start = 0;
  while (start < v.size()) {
    auto comma = v.find(',', start);
    if (comma == std::string::npos) comma = v.size();
    if (comma > start) after.push_back(v.substr(start, comma - start));
    start = comma + 1;
  }
  return after;
}

// A step its dependants do not run after: failed, exited non-zero, or
// itself skipped.
bool stops_dependants(const json& step) {
  std::string state = step.value("state", "");
  if (state == "failed" || state == "skipped") return true;
  auto s = step.find("exit_status");
  return state == "finished" && s != step.end() && s->is_number() && s->get<int>() != 0;
}

}  // namespace

json step_record_json(const StepRecord& r) {
  json j = {{"pipeline", r.pipeline}, {"run", r.run}, {"step", r.step}};
  j["state"] = r.state;
  j["policy"] = r.policy;
  j["cgroup"] = r.cgroup;
  j["cgroup_id"] = r.cgroup_id;
  j["volumes"] = r.volumes;
  j["command"] = r.command;
  j["registered"] = format_rfc3339_ns(r.registered_ns);
  j["registered_ns"] = r.registered_ns;
  j["started_ns"] = r.started_ns;
  j["finished_ns"] = r.finished_ns;
  if (r.started_ns) j["started"] = format_rfc3339_ns(r.started_ns);
  if (r.finished_ns) j["finished"] = format_rfc3339_ns(r.finished_ns);
  if (r.started_ns && r.finished_ns) j["duration_ns"] = r.finished_ns - r.started_ns;
  j["held_ns"] = r.held_ns;
  if (r.exit_status) j["exit_status"] = *r.exit_status;
  if (!r.error.empty()) j["error"] = r.error;
  j["pre_snapshots"] = r.pre_snapshots;
  j["post_snapshots"] = r.post_snapshots;
  j["labels"] = r.labels;
  j["after"] = after_label(r.labels);
  return j;
}

namespace {

// step["snapshots"] and a snapshot's "labels", read in place: json::value()
// would copy each whole array and object, which for a run of 100 steps cost
// more than reading them from the catalog.
const json& snapshots_of(const json& step) {
  static const json none = json::array();
  auto it = step.find("snapshots");
  return it != step.end() && it->is_array() ? *it : none;
}

const json& labels_of(const json& snap) {
  static const json none = json::object();
  auto it = snap.find("labels");
  return it != snap.end() && it->is_object() ? *it : none;
}

}  // namespace

void add_exactness(json& step) {
  bool any_post = false;
  for (const auto& snap : snapshots_of(step)) {
    auto info = snap.find("step");
    if (info == snap.end() || info->value("phase", "") != "post") continue;
    any_post = true;
    const json& labels = labels_of(snap);
    if (labels.value(kExactLabel, "") == "false") {
      step["exact"] = false;
      step["not_exact_reason"] = labels.value(kNotExactLabel, "");
      return;
    }
  }
  if (any_post) step["exact"] = true;
}

void add_metrics(json& step, json& run_metrics) {
  constexpr std::string_view kPrefix = "metric.";
  json mine = json::object();
  for (const auto& snap : snapshots_of(step)) {
    const json& labels = labels_of(snap);
    for (const auto& [key, value] : labels.items()) {
      if (key.size() > kPrefix.size() && key.compare(0, kPrefix.size(), kPrefix) == 0)
        mine[key.substr(kPrefix.size())] = value;
    }
  }
  if (mine.empty()) return;
  for (const auto& [name, value] : mine.items()) run_metrics[name] = value;
  step["metrics"] = std::move(mine);
}

void add_planned_steps(std::map<std::string, json>& steps, const RunPlanRecord& plan) {
  // The plan lists steps in runner's execution order, so a step's
  // dependencies are settled before it is looked at.
  for (const auto& p : plan.steps) {
    auto it = steps.find(p.step);
    if (it != steps.end()) {
      auto after = it->second.find("after");
      if (after == it->second.end() || after->empty()) it->second["after"] = p.after;
      continue;
    }
    json s = {{"pipeline", plan.pipeline},
              {"run", plan.run},
              {"step", p.step},
              {"after", p.after},
              {"snapshots", json::array()}};
    if (std::find(plan.restored.begin(), plan.restored.end(), p.step) != plan.restored.end()) {
      s["state"] = "restored";
      s["restored_from"] = plan.restored_from;
    } else {
      s["state"] = "pending";
      for (const auto& dep : p.after) {
        auto d = steps.find(dep);
        if (d != steps.end() && stops_dependants(d->second)) {
          s["state"] = "skipped";
          s["because"] = dep;
          break;
        }
      }
    }
    steps[p.step] = std::move(s);
  }
}

Result<json> read_step(Catalog& catalog, const std::string& pipeline, const std::string& run,
                       const std::string& step, const std::optional<json>& live,
                       std::optional<std::int64_t> pool_id) {
  DeviceFilter f{.pool_id = pool_id, .kind = DeviceKind::snapshot};
  f.pipeline = pipeline;
  f.run = run;
  f.step = step;
  auto snaps = catalog.list_devices(f);
  if (!snaps) return tl::unexpected(snaps.error().context("step status"));
  json j;
  if (live) {
    j = *live;
  } else {
    // Not live: its last record tells.
    auto rec = catalog.find_step(pipeline, run, step);
    if (!rec) return tl::unexpected(rec.error().context("step status"));
    if (*rec) {
      j = step_record_json(**rec);
    } else if (!snaps->empty()) {
      // Snapshots from before the catalog kept steps (schema version 1).
      j = {{"pipeline", pipeline}, {"run", run}, {"step", step}, {"state", "unknown"}};
    } else {
      return fail("step status", pipeline + "/" + run + "/" + step, ENOENT,
                  "no such step registered and no snapshots of it");
    }
  }
  j["snapshots"] = json::array();
  for (const auto& d : *snaps) j["snapshots"].push_back(device_json(d));
  add_exactness(j);
  return j;
}

Result<json> read_run(Catalog& catalog, const std::string& pipeline, const std::string& run,
                      const std::map<std::string, json>& live,
                      std::optional<std::int64_t> pool_id) {
  DeviceFilter f{.pool_id = pool_id, .kind = DeviceKind::snapshot};
  f.pipeline = pipeline;
  f.run = run;
  auto snaps = catalog.list_devices(f);
  if (!snaps) return tl::unexpected(snaps.error().context("run show"));
  std::map<std::string, json> steps;
  auto recorded = catalog.list_steps(pipeline, run);
  if (!recorded) return tl::unexpected(recorded.error().context("run show"));
  for (const auto& r : *recorded) steps[r.step] = step_record_json(r);
  for (const auto& [name, view] : live) steps[name] = view;
  for (auto& [name, s] : steps) s["snapshots"] = json::array();
  json initial = json::array();
  for (const auto& d : *snaps) {
    // A run's initial snapshots belong to the run, not to a step.
    if (d.step->phase == Phase::initial) {
      initial.push_back(device_json(d));
      continue;
    }
    auto& s = steps[d.step->step];
    if (s.is_null()) {
      // Snapshots from before the catalog kept steps (schema version 1).
      s = {{"pipeline", pipeline},   {"run", run},
           {"step", d.step->step},   {"state", "unknown"},
           {"after", json::array()}, {"snapshots", json::array()}};
    }
    s["snapshots"].push_back(device_json(d));
  }
  // Steps the run planned and never registered: skipped, restored, pending.
  auto plan = catalog.find_run_plan(pipeline, run);
  if (!plan) return tl::unexpected(plan.error().context("run show"));
  if (*plan) add_planned_steps(steps, **plan);
  if (steps.empty() && initial.empty())
    return fail("run show", pipeline + "/" + run, ENOENT, "no steps or snapshots for that run");
  json out = {{"pipeline", pipeline},
              {"run", run},
              {"steps", json::array()},
              {"initial_snapshots", initial},
              {"metrics", json::object()}};
  if (*plan && !(*plan)->restored_from.empty()) out["restored_from"] = (*plan)->restored_from;
  for (auto& [name, s] : steps) {
    add_exactness(s);
    add_metrics(s, out["metrics"]);
    out["steps"].push_back(std::move(s));
  }
  return out;
}

}  // namespace stepsnap::agent
