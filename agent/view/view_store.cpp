#include "agent/view/view_store.h"

#include <algorithm>
#include <cerrno>
#include <limits>
#include <map>
#include <set>

#include "agent/volumes/step_json.h"
#include "agent/volumes/volumes.h"
#include "common/time.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

// ok: finished with status 0; failed: failed, or finished non-zero;
// skipped, restored, pending: planned and not run (step_json.h); running:
// anything else not over.
std::string outcome(const json& step) {
  std::string state = step.value("state", "");
  if (state == "failed") return "failed";
  if (state == "finished") {
    auto s = step.find("exit_status");
    return s != step.end() && s->is_number() && s->get<int>() != 0 ? "failed" : "ok";
  }
  if (state == "unknown" || state == "skipped" || state == "restored" || state == "pending")
    return state;
  return "running";
}

std::int64_t ns_or_zero(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

}  // namespace

json run_summary(const json& run) {
  json s = {{"pipeline", run["pipeline"]}, {"run", run["run"]}};
  std::map<std::string, int> by;
  std::int64_t first = 0, last = 0;
  for (const auto& step : run["steps"]) {
    ++by[outcome(step)];
    std::int64_t started = ns_or_zero(step, "started_ns");
    if (!started) started = ns_or_zero(step, "registered_ns");
    std::int64_t finished = ns_or_zero(step, "finished_ns");
    if (started && (!first || started < first)) first = started;
    if (finished > last) last = finished;
  }
  s["steps_total"] = run["steps"].size();
  for (const char* o : {"ok", "failed", "skipped", "restored", "running", "pending"})
    s[std::string("steps_") + o] = by[o];
  if (by["unknown"]) s["steps_unknown"] = by["unknown"];
  // A run whose runner has steps left to start is still running; one that
  // failed says so even while others run.
  bool open = by["running"] || (by["pending"] && !by["failed"]);
  s["state"] = by["failed"] ? "failed" : open ? "running" : "succeeded";
  s["started_ns"] = first;
  if (first) s["started"] = format_rfc3339_ns(first);
  if (first && last && !open) {
    s["finished"] = format_rfc3339_ns(last);
    s["duration_ns"] = last - first;
  }
  return s;
}

Result<std::unique_ptr<ViewStore>> ViewStore::open(const std::string& catalog_path) {
  auto db = Database::open_read_only(catalog_path);
  if (!db) return tl::unexpected(db.error());
  auto catalog = Catalog::open_read_only(*db);
  if (!catalog) return tl::unexpected(catalog.error());
  return std::unique_ptr<ViewStore>(new ViewStore(*db, std::move(*catalog)));
}

Result<std::optional<PoolRecord>> ViewStore::pool() {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare("SELECT name FROM pools ORDER BY id LIMIT 1");
  if (!st) return tl::unexpected(st.error());
  auto row = st->step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<PoolRecord>{};
  std::string name = st->text(0);
  return catalog_.find_pool(name);
}

Result<std::vector<DeviceRecord>> ViewStore::devices(const DeviceFilter& filter) {
  return catalog_.list_devices(filter);
}

Result<json> ViewStore::runs() {
  auto keys = catalog_.list_runs();
  if (!keys) return tl::unexpected(keys.error());
  json out = json::array();
  for (const auto& k : *keys) {
    auto steps = catalog_.list_steps(k.pipeline, k.run);
    if (!steps) return tl::unexpected(steps.error());
    std::map<std::string, json> by_name;
    for (const auto& s : *steps) by_name[s.step] = step_record_json(s);
    auto plan = catalog_.find_run_plan(k.pipeline, k.run);
    if (!plan) return tl::unexpected(plan.error());
    if (*plan) add_planned_steps(by_name, **plan);
    json run = {{"pipeline", k.pipeline}, {"run", k.run}, {"steps", json::array()}};
    for (auto& [name, s] : by_name) run["steps"].push_back(std::move(s));
    json summary = run_summary(run);
    if (!summary.contains("started")) {
      summary["started"] = format_rfc3339_ns(k.first_ns);
      summary["started_ns"] = k.first_ns;
    }
    out.push_back(summary);
  }
  return out;
}

Result<json> ViewStore::pipelines() {
  auto all = runs();
  if (!all) return all;
  std::map<std::string, json> by_name;
  for (auto& r : *all) {
    auto& p = by_name[r["pipeline"].get<std::string>()];
    if (p.is_null()) p = {{"name", r["pipeline"]}, {"runs", json::array()}};
    p["runs"].push_back(r);
  }
  json out = json::array();
  for (auto& [name, p] : by_name) out.push_back(std::move(p));
  return json{{"pipelines", out}};
}

Result<json> ViewStore::run(const std::string& pipeline, const std::string& run) {
  auto read = read_run(catalog_, pipeline, run);
  if (!read) return read;
  json out = std::move(*read);
  json clones = json::array();
  auto all_clones = devices({.kind = DeviceKind::clone});
  if (!all_clones) return tl::unexpected(all_clones.error());
  for (const auto& d : *all_clones) {
    if (d.run_clone && d.run_clone->pipeline == pipeline && d.run_clone->run == run)
      clones.push_back(device_json(d));
  }
  out["run_clones"] = clones;
  // Execution order: by start, steps that never started last, then by name.
  std::vector<json> ordered(out["steps"].begin(), out["steps"].end());
  std::stable_sort(ordered.begin(), ordered.end(), [](const json& a, const json& b) {
    auto key = [](const json& j) {
      std::int64_t t = j.value("started_ns", std::int64_t{0});
      return t ? t : std::numeric_limits<std::int64_t>::max();
    };
    return key(a) < key(b);
  });
  out["steps"] = ordered;
  out["summary"] = run_summary(out);
  return out;
}

Result<json> ViewStore::step(const std::string& pipeline, const std::string& run,
                             const std::string& step) {
  return read_step(catalog_, pipeline, run, step);
}

Result<json> ViewStore::snapshot(const std::string& name) {
  auto p = pool();
  if (!p) return tl::unexpected(p.error());
  if (!*p) return fail("show snapshot", name, ENOENT, "the catalog has no pool yet");
  auto d = catalog_.find_device((*p)->id, name);
  if (!d) return tl::unexpected(d.error());
  if (!*d) return fail("show snapshot", name, ENOENT, "no snapshot of that name");
  if ((*d)->kind != DeviceKind::snapshot)
    return fail("show snapshot", name, EINVAL,
                "it is a " + std::string(to_string((*d)->kind)) + ", not a snapshot");
  const DeviceRecord& snap = **d;
  std::string origin;
  std::optional<std::int64_t> origin_source;
  if (snap.origin_id) {
    if (auto o = catalog_.get_device(*snap.origin_id)) {
      origin = o->name;
      origin_source = o->origin_id;
    }
  }
  json j = device_json(snap, origin);
  if (origin_source) {
    if (auto o = catalog_.get_device(*origin_source)) j["origin_snapshot"] = o->name;
  }
  json lineage = json::array();
  auto parent = snap.parent_id;
  std::optional<DeviceRecord> parent_record;
  for (int hops = 0; parent && hops < 1000; ++hops) {
    auto x = catalog_.get_device(*parent);
    if (!x) break;
    if (hops == 0) {
      j["parent"] = x->name;
      parent_record = *x;
    }
    lineage.push_back(x->name);
    parent = x->parent_id;
  }
  j["lineage"] = lineage;  // nearest first, as snapshot.show
  // Both snapshots record their origin's mapped bytes when they were taken,
  // so the difference is what the origin newly mapped in between: a lower
  // bound on what changed (a rewrite of an already mapped block adds none).
  if (parent_record && snap.mapped_bytes && parent_record->mapped_bytes) {
    j["mapped_bytes_added"] = static_cast<std::int64_t>(snap.mapped_bytes) -
                              static_cast<std::int64_t>(parent_record->mapped_bytes);
  }
  json children = json::array();
  auto made = devices({.origin_id = snap.id});
  if (made) {
    for (const auto& c : *made) children.push_back({{"name", c.name}, {"kind", to_string(c.kind)}});
  }
  j["children"] = children;
  return j;
}

Result<json> ViewStore::snapshots(const DeviceFilter& filter, const std::string& volume) {
  DeviceFilter f = filter;
  f.kind = DeviceKind::snapshot;
  if (!volume.empty()) {
    auto p = pool();
    if (!p) return tl::unexpected(p.error());
    std::optional<DeviceRecord> v;
    if (*p) {
      auto found = catalog_.find_device((*p)->id, volume);
      if (!found) return tl::unexpected(found.error());
      v = *found;
    }
    if (!v) return fail("list snapshots", volume, ENOENT, "no volume of that name");
    f.origin_id = v->id;
  }
  auto list = devices(f);
  if (!list) return tl::unexpected(list.error());
  json out = json::array();
  for (const auto& d : *list) out.push_back(device_json(d));
  return json{{"snapshots", out}};
}

Result<json> ViewStore::volumes() {
  auto all = devices({});
  if (!all) return tl::unexpected(all.error());
  std::map<std::int64_t, std::string> names;
  for (const auto& d : *all) names[d.id] = d.name;
  json out = json::array();
  for (const auto& d : *all) {
    if (d.kind == DeviceKind::snapshot) continue;
    out.push_back(device_json(
        d, d.origin_id && names.count(*d.origin_id) ? names[*d.origin_id] : std::string()));
  }
  return json{{"volumes", out}};
}

Result<EventBatch> ViewStore::events(std::uint64_t since, std::size_t max) {
  return read_committed_events(*db_, since, max);
}

}  // namespace stepsnap::agent
