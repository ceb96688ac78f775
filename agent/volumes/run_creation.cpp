// run.create: a pipeline run's initial snapshots and clones as one operation
// (see Volumes::create_run in volumes.h).
#include <cerrno>
#include <ctime>
#include <set>

#include "agent/volumes/run_clones.h"
#include "agent/volumes/volumes.h"
#include "common/log.h"
#include "dm/dm_task.h"

namespace stepsnap::agent {

using json = nlohmann::json;

json run_created_json(const RunCreated& made) {
  json snaps = json::array();
  for (const auto& d : made.initial_snapshots) snaps.push_back(device_json(d));
  json clones = json::array();
  for (const auto& d : made.clones) clones.push_back(device_json(d));
  return {{"pipeline", made.pipeline},
          {"run", made.run},
          {"initial_snapshots", snaps},
          {"clones", clones},
          {"pause_ns", made.pause.count()}};
}

namespace {

// "run-YYYYMMDD-HHMMSS" in UTC: sorts by start time and says when.
std::string run_id_for_now() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "run-%Y%m%d-%H%M%S", &utc);
  return buf;
}

// One volume of the run and what it needs.
struct RunPart {
  DeviceRecord volume;
  std::optional<DeviceRecord> source;  // given: clone from it, no initial snapshot
  std::string clone_name;
  std::string snapshot_name;  // empty: named from its thin id
};

}  // namespace

Result<RunCreated> Volumes::create_run(const std::string& pipeline,
                                       const std::optional<std::string>& run,
                                       const std::vector<std::string>& volumes,
                                       const std::vector<std::string>& sources,
                                       const Ownership& who,
                                       const std::optional<RunPlanRecord>& plan) {
  const std::string op = "create run " + pipeline + "/" + run.value_or("(new)");
  if (!sources.empty() && sources.size() != volumes.size()) {
    return fail(op, "sources", EINVAL, "give one snapshot per volume, or none");
  }
  std::lock_guard lock(kernel_mutex_);

  // The run id. Checked and taken under the kernel mutex: two creations in
  // the same second get two ids.
  std::string run_id;
  if (run) {
    auto taken = catalog_.run_exists(record_.id, pipeline, *run);
    if (!taken) return tl::unexpected(taken.error());
    if (*taken) {
      return fail(op, pipeline + "/" + *run, EEXIST,
                  "that run exists (it has clones, snapshots or steps); pick another run id");
    }
    run_id = *run;
  } else {
    const std::string base = run_id_for_now();
    for (int n = 1; run_id.empty(); ++n) {
      std::string candidate = n == 1 ? base : base + "-" + std::to_string(n);
      auto taken = catalog_.run_exists(record_.id, pipeline, candidate);
      if (!taken) return tl::unexpected(taken.error());
      if (!*taken) run_id = candidate;
      if (n > 1000) return fail(op, pipeline, EEXIST, "no free run id for this second");
    }
  }

  // Everything checked before anything is made.
  std::vector<RunPart> parts;
  std::vector<dm::ThinVolume> active;
  for (std::size_t k = 0; k < volumes.size(); ++k) {
    RunPart part;
    auto v = origin_for(volumes[k], false, op);
    if (!v) return tl::unexpected(v.error());
    part.volume = *v;
    if (!sources.empty()) {
      auto s = origin_for(sources[k], true, op);
      if (!s) return tl::unexpected(s.error());
      part.source = *s;
    } else {
      if (v->dm_name.empty()) return fail(op, v->name, ENXIO, "it is not active");
      active.push_back(dm::ThinVolume{v->dm_name, v->thin_id, v->size_bytes / 512});
      std::string snap = run_id + "." + v->name + ".initial";
      auto taken = catalog_.find_device(record_.id, snap);
      if (!taken) return tl::unexpected(taken.error());
      if (is_valid_name(snap) && !*taken) part.snapshot_name = snap;
    }
    auto clone_name = run_clone_name(pipeline, run_id, v->name);
    if (!clone_name) return tl::unexpected(clone_name.error().context(op));
    if (auto free = name_is_free(op, *clone_name); !free) return tl::unexpected(free.error());
    part.clone_name = *clone_name;
    parts.push_back(std::move(part));
  }

  std::vector<Intent> snap_intents;
  std::vector<dm::ThinId> snap_ids;  // made by the kernel
  std::vector<Intent> clone_intents;
  std::vector<dm::ThinVolume> clones;  // made and active
  // Removes what the kernel made, newest first, and rolls back every intent;
  // a device that could not be removed keeps its row (marked faulty), so the
  // catalog never stops naming a thin device the pool has.
  auto roll_back = [&](Error why) -> tl::unexpected<Error> {
    std::set<std::int64_t> survived;
    for (std::size_t k = clones.size(); k-- > 0;) {
      Status r = pool_.deactivate(clones[k].name);
      if (r) r = pool_.delete_thin(clones[k].id);
      if (!r) {
        log::error(op + ": roll back clone " + clones[k].name + ": " + r.error().message());
        survived.insert(clone_intents.at(k).device_id);
      }
    }
    for (std::size_t k = snap_ids.size(); k-- > 0;) {
      if (auto r = pool_.delete_thin(snap_ids[k]); !r) {
        log::error(op + ": roll back initial snapshot: " + r.error().message());
        survived.insert(snap_intents.at(k).device_id);
      }
    }
    for (auto it = clone_intents.rbegin(); it != clone_intents.rend(); ++it)
      (void)catalog_.abort_create(*it, why, survived.count(it->device_id) > 0);
    for (auto it = snap_intents.rbegin(); it != snap_intents.rend(); ++it)
      (void)catalog_.abort_create(*it, why, survived.count(it->device_id) > 0);
    report_failure("run.create", why);
    return tl::unexpected(std::move(why));
  };

  const StepInfo initial{.pipeline = pipeline, .run = run_id, .phase = Phase::initial};
  std::chrono::nanoseconds pause{};
  if (!active.empty()) {
    std::size_t next = 0;
    auto before = [&](dm::ThinId id) -> Status {
      const RunPart& part = parts.at(next++);
      std::string name = part.snapshot_name.empty() ? part.volume.name.substr(0, 40) + ".s" +
                                                          std::to_string(id) + ".initial"
                                                    : part.snapshot_name;
      auto i = catalog_.begin_create(CreateSpec{.pool_id = record_.id,
                                                .name = name,
                                                .kind = DeviceKind::snapshot,
                                                .origin_id = part.volume.id,
                                                .step = initial,
                                                .thin_id = id,
                                                .owner_uid = who.uid});
      if (!i) return tl::unexpected(i.error());
      snap_intents.push_back(*i);
      return {};
    };
    auto t0 = std::chrono::steady_clock::now();
    // One suspend of every volume: the initial snapshots are one instant.
    auto ids = pool_.snapshot_group(active, before);
    pause =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
    // snapshot_group removed whatever part of the group it had made.
    if (!ids) return roll_back(ids.error().context(op));
    snap_ids = *ids;
  }

  for (std::size_t k = 0; k < parts.size(); ++k) {
    const RunPart& part = parts[k];
    const bool given = part.source.has_value();
    const std::int64_t origin_id = given ? part.source->id : snap_intents.at(k).device_id;
    const dm::ThinId source_id = given ? part.source->thin_id : snap_ids.at(k);
    const std::uint64_t size = given ? part.source->size_bytes : part.volume.size_bytes;
    const std::string dm_name = volume_dm_name(record_.name, part.clone_name);
    auto before = [&](dm::ThinId id) -> Status {
      // A retry with a fresh id (the kernel had the last one): that intent
      // never got a device.
      if (clone_intents.size() > k) {
        (void)catalog_.abort_create(
            clone_intents[k],
            Error{"clone", part.clone_name, EEXIST, "thin id taken; retried with a fresh one"},
            false);
        clone_intents.pop_back();
      }
      auto i = catalog_.begin_create(CreateSpec{
          .pool_id = record_.id,
          .name = part.clone_name,
          .kind = DeviceKind::clone,
          .origin_id = origin_id,
          .labels = {{"pipeline", pipeline}, {"run", run_id}, {"volume", part.volume.name}},
          .thin_id = id,
          .owner_uid = who.uid,
          .run_clone = RunCloneKey{pipeline, run_id, part.volume.name},
          .dm_name = dm_name,
          .origin_in_same_operation = !given});
      if (!i) return tl::unexpected(i.error());
      clone_intents.push_back(*i);
      return {};
    };
    auto clone = pool_.clone(source_id, dm_name, size, before);
    if (!clone) {
      // pool_.clone deleted its thin id when the activation failed.
      if (clone_intents.size() > k) {
        (void)catalog_.abort_create(clone_intents[k], clone.error(), false);
        clone_intents.pop_back();
      }
      return roll_back(clone.error().context(op + ": clone " + part.volume.name));
    }
    clones.push_back(*clone);
  }

  // One transaction: the whole run appears at once, with its events.
  RunCreated made{.pipeline = pipeline, .run = run_id, .pause = pause};
  auto committed = in_transaction(catalog_.db(), [&]() -> Status {
    for (std::size_t k = 0; k < snap_intents.size(); ++k) {
      if (auto r = catalog_.finish_create(snap_intents[k], ""); !r) return r;
      auto d = catalog_.get_device(snap_intents[k].device_id);
      if (!d) return tl::unexpected(d.error());
      json data = device_json(*d, parts[k].volume.name);
      data["pause_ns"] = pause.count();
      data["group_size"] = snap_intents.size();
      auto e = events_.append(EventType::snapshot_created, data);
      if (!e) return tl::unexpected(e.error());
      made.initial_snapshots.push_back(*d);
    }
    for (std::size_t k = 0; k < clone_intents.size(); ++k) {
      if (auto r = catalog_.finish_create(clone_intents[k], clones[k].name); !r) return r;
      auto d = catalog_.get_device(clone_intents[k].device_id);
      if (!d) return tl::unexpected(d.error());
      const std::string& source =
          parts[k].source ? parts[k].source->name : made.initial_snapshots.at(k).name;
      auto e = events_.append(EventType::clone_created, device_json(*d, source));
      if (!e) return tl::unexpected(e.error());
      made.clones.push_back(*d);
    }
    if (!plan) return {};
    RunPlanRecord kept = *plan;
    kept.pipeline = pipeline;
    kept.run = run_id;
    return catalog_.save_run_plan(kept);
  });
  if (!committed) return roll_back(committed.error().context(op));
  check_space();
  return made;
}

}  // namespace stepsnap::agent
