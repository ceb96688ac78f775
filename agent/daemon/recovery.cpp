#include "agent/daemon/recovery.h"

#include <sys/stat.h>

#include <map>
#include <optional>
#include <set>

#include "agent/catalog/reconcile.h"
#include "agent/policy/step_cgroup.h"
#include "agent/volumes/volumes.h"
#include "common/log.h"
#include "dm/dm_task.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

// Whether the pool has thin id `id`: a read-only device mapping it loads
// only if the id exists.
bool thin_exists(dm::ThinPool& pool, dm::ThinId id, const std::set<dm::ThinId>& active) {
  if (active.count(id)) return true;
  std::string probe = pool.name() + "-probe";
  (void)pool.deactivate(probe, {.attempts = 1});
  auto v = pool.activate(id, probe, 512, {.read_only = true});
  if (!v) return false;
  if (auto r = pool.deactivate(probe); !r) log::warn("recovery: " + r.error().message());
  return true;
}

Result<ReconcileInput> gather(Catalog& catalog, dm::ThinPool& pool, const PoolRecord& record,
                              std::set<dm::ThinId>* active_ids,
                              std::multimap<dm::ThinId, std::string>* active_names,
                              std::optional<Result<bool>>* released_snap) {
  ReconcileInput in;
  in.pool_dm_name = pool.name();
  in.next_thin_id = record.next_thin_id;
  auto devices = catalog.device_rows(record.id);
  if (!devices) return tl::unexpected(devices.error());
  in.devices = std::move(*devices);
  auto pending = catalog.pending_operations(record.id);
  if (!pending) return tl::unexpected(pending.error());
  in.pending = *pending;

  // The id probe's device (below) left by a crash mid-probe would keep an
  // id active that recovery may have to delete.
  if (auto r = pool.deactivate(pool.name() + "-probe", {.attempts = 1}); !r) {
    log::warn("recovery: " + r.error().message());
  }
  std::set<std::string> names{pool.name()};
  auto active = pool.active_volumes();
  if (!active) return tl::unexpected(active.error());
  for (const auto& v : *active) {
    names.insert(v.name);
    active_ids->insert(v.id);
    active_names->emplace(v.id, v.name);
  }
  for (const auto& d : in.devices) {
    if (!d.dm_name.empty()) names.insert(d.dm_name);
  }
  for (const auto& n : names) {
    auto info = dm::info(n);
    if (info && info->suspended) in.suspended.push_back(n);
  }
  // A suspended pool answers no message: resume before probing.
  for (const auto& n : in.suspended) {
    if (n == pool.name()) {
      if (auto r = dm::resume(n); !r) return tl::unexpected(r.error().context("recovery"));
    }
  }

  // A metadata snapshot left held (a previous daemon killed inside
  // list_thin_ids, or thin_ls -m) is released: stepsnapd owns the pool, the
  // pool has only one, and the list below needs it.
  *released_snap = pool.release_held_metadata_snap();

  // The whole list when the pool can give it.
  if (auto listed = pool.list_thin_ids()) {
    in.pool_thin_ids = *listed;
    log::info("recovery: pool " + pool.name() + " holds " + std::to_string(listed->size()) +
              " thin ids (metadata snapshot)");
    return in;
  } else {
    log::warn("recovery: " + listed.error().message() + "; probing ids one by one instead");
  }

  std::set<dm::ThinId> candidates;
  for (const auto& d : in.devices) candidates.insert(d.thin_id);
  for (const auto& o : in.pending) candidates.insert(o.thin_id);
  auto st = pool.status();
  if (!st) return tl::unexpected(st.error());
  dm::ThinId pool_next = dm::decode_txn(st->transaction_id).next_id;
  dm::ThinId counter = record.next_thin_id;
  for (dm::ThinId id = counter; id < pool_next && id <= dm::kMaxThinId; ++id) candidates.insert(id);
  for (dm::ThinId id = counter > kProbeBelow ? counter - kProbeBelow : dm::kFirstThinId;
       id < counter; ++id) {
    candidates.insert(id);
  }
  for (dm::ThinId id : candidates) {
    if (thin_exists(pool, id, *active_ids)) in.pool_thin_ids.push_back(id);
  }
  return in;
}

json action_json(const RepairAction& a) {
  json j = {{"action", std::string(to_string(a.kind))}, {"reason", a.reason}};
  if (!a.dm_name.empty()) j["dm_name"] = a.dm_name;
  if (a.thin_id) j["thin_id"] = a.thin_id;
  if (a.device_id) j["device_id"] = a.device_id;
  if (a.operation_id) j["operation_id"] = a.operation_id;
  return j;
}

// Removes the device named `dm_name` (a creating row's intended name, or a
// deleting row's last name) if it is what a crash left of this id: a thin
// device of this pool mapping `id`, or a device with no live table (made,
// its table never loaded). A device of that name mapping anything else is
// not ours to remove: an error, and the thin id is not deleted.
Status remove_recorded_device(dm::ThinPool& pool, const std::string& dm_name, dm::ThinId id,
                              const std::multimap<dm::ThinId, std::string>& active) {
  for (auto [it, end] = active.equal_range(id); it != end; ++it) {
    if (it->second == dm_name) return pool.deactivate(dm_name);
  }
  auto info = dm::info(dm_name);
  if (!info) return {};  // never made, or already gone
  if (!info->live_table) return pool.deactivate(dm_name);
  return fail("roll back thin id " + std::to_string(id), dm_name, EEXIST,
              "a device of that name maps something other than thin id " + std::to_string(id) +
                  " of pool " + pool.name() + "; left alone: remove it by hand");
}

Status execute(Catalog& catalog, dm::ThinPool& pool, const PoolRecord& record,
               const RepairAction& a, const std::multimap<dm::ThinId, std::string>& active) {
  using K = RepairAction::Kind;
  switch (a.kind) {
    case K::resume_device: {
      auto info = dm::info(a.dm_name);
      if (info && !info->suspended) return {};  // the pool, resumed while gathering
      return dm::resume(a.dm_name);
    }
    case K::delete_thin: {
      // The kernel refuses to delete an id that is active (EBUSY), so every
      // device mapping it goes first: the recorded name, and any other
      // device of this pool mapping the id (a leaked id has no record).
      if (!a.dm_name.empty()) {
        if (auto r = remove_recorded_device(pool, a.dm_name, a.thin_id, active); !r) return r;
      }
      for (auto [it, end] = active.equal_range(a.thin_id); it != end; ++it) {
        if (auto r = pool.deactivate(it->second); !r) return r;
      }
      return pool.delete_thin(a.thin_id);
    }
    case K::drop_record:
      return catalog.drop_device(a.device_id);
    case K::mark_faulty:
      return catalog.mark_faulty(a.device_id, a.reason);
    case K::close_operation:
      return catalog.close_operation(a.operation_id, a.outcome, a.reason);
    case K::advance_thin_id:
      return catalog.advance_thin_id(record.id, a.thin_id);
    case K::report_foreign_thin:
      return {};
  }
  return {};
}

}  // namespace

Result<RecoveryResult> recover(Catalog& catalog, EventLog& events, dm::ThinPool& pool,
                               const PoolRecord& record) {
  std::set<dm::ThinId> active_ids;
  std::multimap<dm::ThinId, std::string> active_names;
  std::optional<Result<bool>> released_snap;
  auto input = gather(catalog, pool, record, &active_ids, &active_names, &released_snap);
  if (!input) return tl::unexpected(input.error());
  auto plan = plan_reconcile(*input);
  RecoveryResult result;
  if (released_snap && (!*released_snap || **released_snap)) {
    json data = {{"action", "release_metadata_snap"},
                 {"pool", pool.name()},
                 {"reason", "the pool's metadata snapshot was left held"},
                 {"ok", static_cast<bool>(*released_snap)}};
    if (*released_snap) {
      ++result.repairs;
      log::warn("recovery: released the metadata snapshot left held on " + pool.name());
    } else {
      data["error"] = released_snap->error().message();
      ++result.failures;
      log::error("recovery: " + released_snap->error().message());
    }
    if (auto e = events.append(EventType::agent_recovered, data); !e) {
      return tl::unexpected(e.error());
    }
  }
  // Devices whose kernel delete failed keep their record and their pending
  // operation, untouched, so the catalog still names the thin device and the
  // next start tries again: a record is dropped only once the kernel no
  // longer has the device.
  std::set<std::int64_t> kept;
  for (const auto& a : plan) {
    json data = action_json(a);
    using K = RepairAction::Kind;
    if (a.device_id && kept.count(a.device_id) &&
        (a.kind == K::drop_record || a.kind == K::close_operation)) {
      data["ok"] = false;
      data["skipped"] = true;
      data["error"] = "kept: the kernel delete of its thin device failed; retried at next start";
      ++result.failures;
      if (auto e = events.append(EventType::agent_recovered, data); !e) {
        return tl::unexpected(e.error());
      }
      continue;
    }
    auto sp = Savepoint::begin(catalog.db());
    if (!sp) return tl::unexpected(sp.error());
    auto r = execute(catalog, pool, record, a, active_names);
    if (!r && a.kind == K::delete_thin && a.device_id) kept.insert(a.device_id);
    if (!r) {
      data["ok"] = false;
      data["error"] = r.error().message();
      ++result.failures;
      log::error("recovery: " + std::string(to_string(a.kind)) + " failed: " + r.error().message());
    } else {
      data["ok"] = true;
      ++result.repairs;
      log::info("recovery: " + std::string(to_string(a.kind)) + ": " + a.reason);
    }
    if (auto e = events.append(EventType::agent_recovered, data); !e) {
      return tl::unexpected(e.error());
    }
    if (auto c = sp->commit(); !c) return tl::unexpected(c.error());
  }

  // Created volumes and clones that should be active and are not. Only
  // those kinds are read: a pool's snapshots (100,000 at scale) stay
  // inactive and are not loaded.
  auto devices = catalog.list_devices(
      {.pool_id = record.id, .kinds = {DeviceKind::volume, DeviceKind::clone}});
  if (!devices) return tl::unexpected(devices.error());
  for (const auto& d : *devices) {
    if (d.state != DeviceState::created) continue;
    std::string name = d.dm_name.empty() ? volume_dm_name(record.name, d.name) : d.dm_name;
    // A device made but never given its table (a crash inside an earlier
    // reactivation) is removed and made again.
    if (auto info = dm::info(name)) {
      if (info->live_table) continue;
      if (auto r = pool.deactivate(name); !r) log::warn("recovery: " + r.error().message());
    }
    json data = {{"action", "reactivate"},
                 {"dm_name", name},
                 {"thin_id", d.thin_id},
                 {"device_id", d.id},
                 {"reason", std::string(to_string(d.kind)) + " " + d.name + " was not active"}};
    auto v = pool.activate(d.thin_id, name, d.size_bytes);
    auto sp = Savepoint::begin(catalog.db());
    if (!sp) return tl::unexpected(sp.error());
    if (v) {
      (void)catalog.set_dm_name(d.id, name);
      data["ok"] = true;
      ++result.repairs;
      log::info("recovery: reactivated " + name);
    } else {
      data["ok"] = false;
      data["error"] = v.error().message();
      ++result.failures;
      log::error("recovery: reactivate " + name + ": " + v.error().message());
    }
    if (auto e = events.append(EventType::agent_recovered, data); !e) {
      return tl::unexpected(e.error());
    }
    if (auto c = sp->commit(); !c) return tl::unexpected(c.error());
  }
  return result;
}

Result<RecoveryResult> fail_interrupted_steps(Catalog& catalog, EventLog& events,
                                              const std::string& cgroup_subtree,
                                              const std::set<std::string>& adopted) {
  auto steps = catalog.unfinished_steps();
  if (!steps) return tl::unexpected(steps.error());
  RecoveryResult result;
  for (StepRecord s : *steps) {
    const std::string was = s.state;
    const std::string key = s.pipeline + "/" + s.run + "/" + s.step;
    if (adopted.count(key)) continue;
    bool before_pre =
        (was == "registered" || was == "holding") && (s.policy == "pre" || s.policy == "both");
    json data = {{"action", "fail_step"},
                 {"pipeline", s.pipeline},
                 {"run", s.run},
                 {"step", s.step},
                 {"was", was},
                 {"cgroup", s.cgroup}};
    if (before_pre) {
      // Killed only if the recorded path still leads, beneath the step
      // subtree and without symlinks, to the very directory registered
      // (same inode): a cgroup made again at that path since, or a path
      // recorded by an older agent outside the subtree, is not the step's.
      auto cg = StepCgroup::open(s.cgroup, cgroup_subtree);
      Status k = cg ? cg->kill(s.cgroup_id) : Status(tl::unexpected(cg.error()));
      data["killed"] = static_cast<bool>(k);
      if (!k && k.error().err != ENOENT) {
        data["not_killed"] = k.error().message();
        log::error("recovery: step " + key + ": " + k.error().message());
      }
    }
    s.state = "failed";
    s.error = "stepsnapd restarted while the step was " + was;
    bool post = s.policy == "post" || s.policy == "both";
    if ((was == "running" || was == "finishing") && post && s.post_snapshots.empty())
      s.error += "; its post-snapshot is missing (no pinned watch told when it ended)";
    s.finished_ns = now_ns();
    data["reason"] = s.error;
    auto sp = Savepoint::begin(catalog.db());
    if (!sp) return tl::unexpected(sp.error());
    if (auto r = catalog.save_step(s); !r) {
      data["ok"] = false;
      data["error"] = r.error().message();
      ++result.failures;
      log::error("recovery: step " + key + ": " + r.error().message());
    } else {
      data["ok"] = true;
      ++result.repairs;
      log::warn("recovery: step " + key + ": " + s.error + "; marked failed");
    }
    if (auto e = events.append(EventType::agent_recovered, data); !e) {
      return tl::unexpected(e.error());
    }
    if (auto c = sp->commit(); !c) return tl::unexpected(c.error());
  }
  return result;
}

}  // namespace stepsnap::agent
