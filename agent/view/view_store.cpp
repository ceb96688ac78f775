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

Result<json> ViewStore::device_page(DeviceFilter f, const PageSpec& page, const char* key,
                                    bool with_origin_names) {
  auto p = pool();
  if (!p) return tl::unexpected(p.error());
  if (!*p) return json{{key, json::array()}};
  // With the pool's id the kind filters are a SEARCH of (pool_id, kind).
  f.pool_id = (*p)->id;
  if (page.after) {
    auto last = catalog_.find_device((*p)->id, *page.after);
    if (!last) return tl::unexpected(last.error());
    if (!*last)
      return fail("list", *page.after, ENOENT,
                  "after names no device (deleted since?); list from the start again without "
                  "after");
    f.after_id = (*last)->id;
  }
  f.limit = page.limit + 1;  // one more: does another page follow?
  auto rows = catalog_.list_devices(f);
  if (!rows) return tl::unexpected(rows.error());
  const bool more = rows->size() > page.limit;
  if (more) rows->resize(page.limit);
  std::map<std::int64_t, std::string> origins;
  if (with_origin_names) {
    std::vector<std::int64_t> ids;
    for (const auto& d : *rows)
      if (d.origin_id) ids.push_back(*d.origin_id);
    auto names = catalog_.device_names(ids);
    if (!names) return tl::unexpected(names.error());
    origins = std::move(*names);
  }
  json list = json::array();
  for (const auto& d : *rows) {
    auto o = d.origin_id ? origins.find(*d.origin_id) : origins.end();
    list.push_back(device_json(d, o != origins.end() ? o->second : std::string()));
  }
  json out = {{key, std::move(list)}};
  if (more) out["next_after"] = rows->back().name;
  return out;
}

Result<json> ViewStore::runs(const PageSpec& page) {
  RunFilter filter{.limit = page.limit + 1};
  if (page.after) {
    auto slash = page.after->find('/');
    if (slash == std::string::npos)
      return fail("list runs", *page.after, EINVAL, "after is PIPELINE/RUN, a run's next_after");
    auto key = catalog_.find_run_key(page.after->substr(0, slash), page.after->substr(slash + 1));
    if (!key) return tl::unexpected(key.error());
    if (!*key)
      return fail("list runs", *page.after, ENOENT,
                  "after names no run the catalog knows; list from the start again without after");
    filter.after = **key;
  }
  auto keys = catalog_.list_runs(filter);
  if (!keys) return tl::unexpected(keys.error());
  const bool more = keys->size() > page.limit;
  if (more) keys->resize(page.limit);
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
  json answer = {{"runs", std::move(out)}};
  if (more) answer["next_after"] = keys->back().pipeline + "/" + keys->back().run;
  return answer;
}

Result<json> ViewStore::pipelines(const PageSpec& page) {
  auto all = runs(page);
  if (!all) return all;
  std::map<std::string, json> by_name;
  for (auto& r : (*all)["runs"]) {
    auto& p = by_name[r["pipeline"].get<std::string>()];
    if (p.is_null()) p = {{"name", r["pipeline"]}, {"runs", json::array()}};
    p["runs"].push_back(r);
  }
  json out = json::array();
  for (auto& [name, p] : by_name) out.push_back(std::move(p));
  json answer = {{"pipelines", std::move(out)}};
  if (all->contains("next_after")) answer["next_after"] = (*all)["next_after"];
  return answer;
}

Result<json> ViewStore::run(const std::string& pipeline, const std::string& run) {
  auto read = read_run(catalog_, pipeline, run);
  if (!read) return read;
  json out = std::move(*read);
  // The run's clones through the run_clone index, not a list of every clone.
  auto clones = catalog_.list_run_clones(pipeline, run);
  if (!clones) return tl::unexpected(clones.error());
  out["run_clones"] = json::array();
  for (const auto& d : *clones) out["run_clones"].push_back(device_json(d));
  // Execution order: by start, steps that never started last, then by name.
  std::vector<json> ordered;
  ordered.reserve(out["steps"].size());
  for (auto& s : out["steps"]) ordered.push_back(std::move(s));
  std::stable_sort(ordered.begin(), ordered.end(), [](const json& a, const json& b) {
    auto key = [](const json& j) {
      std::int64_t t = j.value("started_ns", std::int64_t{0});
      return t ? t : std::numeric_limits<std::int64_t>::max();
    };
    return key(a) < key(b);
  });
  out["steps"] = std::move(ordered);
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
  // The lineage in one indexed walk (as snapshot.show), not a read per hop.
  auto lineage = snap.parent_id ? catalog_.lineage(snap.id, kMaxLineage)
                                : Result<std::vector<std::string>>(std::vector<std::string>{});
  if (!lineage) return tl::unexpected(lineage.error());
  j["lineage"] = *lineage;  // nearest first, as snapshot.show
  if (snap.parent_id) {
    if (auto parent = catalog_.get_device(*snap.parent_id)) {
      j["parent"] = parent->name;
      // Both snapshots record their origin's mapped bytes when they were
      // taken, so the difference is what the origin newly mapped in
      // between: a lower bound on what changed (a rewrite of an already
      // mapped block adds none).
      if (snap.mapped_bytes && parent->mapped_bytes)
        j["mapped_bytes_added"] = static_cast<std::int64_t>(snap.mapped_bytes) -
                                  static_cast<std::int64_t>(parent->mapped_bytes);
    }
  }
  json children = json::array();
  auto made =
      catalog_.list_devices({.pool_id = (*p)->id, .origin_id = snap.id, .limit = kMaxChildren});
  if (made) {
    for (const auto& c : *made) children.push_back({{"name", c.name}, {"kind", to_string(c.kind)}});
  }
  j["children"] = children;
  return j;
}

Result<json> ViewStore::snapshots(const DeviceFilter& filter, const std::string& volume,
                                  const PageSpec& page) {
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
  return device_page(f, page, "snapshots", false);
}

Result<json> ViewStore::volumes(const PageSpec& page) {
  return device_page({.kinds = {DeviceKind::volume, DeviceKind::clone}}, page, "volumes", true);
}

Result<EventBatch> ViewStore::events(std::uint64_t since, std::size_t max) {
  return read_committed_events(*db_, since, max);
}

}  // namespace stepsnap::agent
