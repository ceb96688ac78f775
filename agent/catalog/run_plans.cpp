// Catalog: a run's plan (catalog.h, RunPlanRecord), one row per run.
#include <nlohmann/json.hpp>

#include "agent/catalog/catalog.h"
#include "common/time.h"

namespace stepsnap::agent {

using json = nlohmann::json;

Status Catalog::save_run_plan(const RunPlanRecord& plan) {
  json steps = json::array();
  for (const auto& s : plan.steps) steps.push_back({{"step", s.step}, {"after", s.after}});
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(
      "INSERT INTO run_plans (pipeline, run, steps, restored, restored_from, created_ns)"
      " VALUES (?, ?, ?, ?, ?, ?)");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, plan.pipeline)
      .bind(2, plan.run)
      .bind(3, steps.dump())
      .bind(4, json(plan.restored).dump())
      .bind(5, plan.restored_from)
      .bind(6, now_ns());
  if (auto r = st->run(); !r)
    return tl::unexpected(
        Error(r.error()).context("save the plan of run " + plan.pipeline + "/" + plan.run));
  return {};
}

Result<std::optional<RunPlanRecord>> Catalog::find_run_plan(const std::string& pipeline,
                                                            const std::string& run) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(
      "SELECT steps, restored, restored_from FROM run_plans WHERE pipeline = ? AND run = ?");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pipeline).bind(2, run);
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<RunPlanRecord>();
  RunPlanRecord plan{.pipeline = pipeline, .run = run};
  // Written only by save_run_plan; a row that does not parse reads as no
  // plan rather than failing the run's readers.
  json steps = json::parse(st->text(0), nullptr, false);
  json restored = json::parse(st->text(1), nullptr, false);
  if (steps.is_array()) {
    for (const auto& s : steps) {
      if (!s.is_object() || !s.contains("step") || !s["step"].is_string()) continue;
      PlannedStep p{.step = s["step"].get<std::string>()};
      for (const auto& a : s.value("after", json::array()))
        if (a.is_string()) p.after.push_back(a.get<std::string>());
      plan.steps.push_back(std::move(p));
    }
  }
  if (restored.is_array()) {
    for (const auto& r : restored)
      if (r.is_string()) plan.restored.push_back(r.get<std::string>());
  }
  plan.restored_from = st->text(2);
  return std::optional<RunPlanRecord>(std::move(plan));
}

}  // namespace stepsnap::agent
