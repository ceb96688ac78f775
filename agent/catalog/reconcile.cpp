#include "agent/catalog/reconcile.h"

#include <algorithm>
#include <map>
#include <set>

namespace stepsnap::agent {

std::string_view to_string(RepairAction::Kind kind) {
  using K = RepairAction::Kind;
  switch (kind) {
    case K::resume_device:
      return "resume_device";
    case K::delete_thin:
      return "delete_thin";
    case K::drop_record:
      return "drop_record";
    case K::mark_faulty:
      return "mark_faulty";
    case K::close_operation:
      return "close_operation";
    case K::advance_thin_id:
      return "advance_thin_id";
    case K::report_foreign_thin:
      return "report_foreign_thin";
  }
  return "unknown";
}

std::vector<RepairAction> plan_reconcile(const ReconcileInput& in) {
  using K = RepairAction::Kind;
  const std::set<std::uint32_t> present(in.pool_thin_ids.begin(), in.pool_thin_ids.end());
  const std::set<std::string> suspended(in.suspended.begin(), in.suspended.end());

  std::vector<RepairAction> resumes, deletes, records, closes, tail;
  std::set<std::uint32_t> known;
  std::set<std::uint32_t> deleted;
  // What the plan did to each device, so its pending operation gets the
  // matching outcome.
  std::map<std::int64_t, OperationState> outcome_of_device;

  if (!in.pool_dm_name.empty() && suspended.count(in.pool_dm_name)) {
    resumes.push_back({.kind = K::resume_device,
                       .dm_name = in.pool_dm_name,
                       .reason = "pool " + in.pool_dm_name + " was left suspended"});
  }

  std::vector<const DeviceRow*> devices;
  for (const auto& d : in.devices) devices.push_back(&d);
  std::sort(devices.begin(), devices.end(),
            [](const DeviceRow* a, const DeviceRow* b) { return a->id < b->id; });

  for (const DeviceRow* d : devices) {
    known.insert(d->thin_id);
    const bool here = present.count(d->thin_id) > 0;
    const std::string who = std::string(to_string(d->kind)) + " " + d->name + " (thin id " +
                            std::to_string(d->thin_id) + ")";
    if (!d->dm_name.empty() && suspended.count(d->dm_name)) {
      resumes.push_back({.kind = K::resume_device,
                         .dm_name = d->dm_name,
                         .thin_id = d->thin_id,
                         .device_id = d->id,
                         .reason = who + " was left suspended"});
    }
    auto delete_thin = [&](std::string why) {
      deletes.push_back({.kind = K::delete_thin,
                         .dm_name = d->dm_name,
                         .thin_id = d->thin_id,
                         .device_id = d->id,
                         .reason = std::move(why)});
      deleted.insert(d->thin_id);
    };
    auto drop = [&](std::string why) {
      records.push_back({.kind = K::drop_record,
                         .thin_id = d->thin_id,
                         .device_id = d->id,
                         .reason = std::move(why)});
    };
    switch (d->state) {
      case DeviceState::creating:
        if (here) {
          delete_thin("roll back half-made " + who);
          drop("roll back half-made " + who);
        } else {
          drop(who + " was never made by the kernel");
        }
        outcome_of_device[d->id] = OperationState::rolled_back;
        break;
      case DeviceState::deleting:
        if (here) {
          delete_thin("finish deleting " + who);
          drop("finish deleting " + who);
        } else {
          drop(who + " was already deleted by the kernel");
        }
        outcome_of_device[d->id] = OperationState::completed_by_recovery;
        break;
      case DeviceState::created:
        if (!here) {
          records.push_back({.kind = K::mark_faulty,
                             .thin_id = d->thin_id,
                             .device_id = d->id,
                             .reason = who + " is missing from the pool"});
        }
        break;
      case DeviceState::faulty:
        break;
    }
  }

  for (std::uint32_t id : present) {
    if (known.count(id) || deleted.count(id)) continue;
    // Id 0 is a valid kernel id that this agent never hands out (catalog
    // and dm/ both start at 1): now that recovery sees every id, not just
    // those near the counter, it must not take 0 for one of its own.
    if (id != 0 && id < in.next_thin_id) {
      deletes.push_back({.kind = K::delete_thin,
                         .thin_id = id,
                         .reason = "thin id " + std::to_string(id) +
                                   " was allocated by this agent but has no record: leaked"});
    } else {
      tail.push_back({.kind = K::report_foreign_thin,
                      .thin_id = id,
                      .reason = "thin id " + std::to_string(id) +
                                " is in the pool but was never allocated by this agent; kept"});
    }
  }
  if (!present.empty()) {
    std::uint32_t highest = *present.rbegin();
    if (highest >= in.next_thin_id) {
      tail.insert(tail.begin(),
                  {.kind = K::advance_thin_id,
                   .thin_id = highest + 1,
                   .reason = "thin id counter moved past " + std::to_string(highest)});
    }
  }

  std::vector<const OperationRecord*> ops;
  for (const auto& op : in.pending) ops.push_back(&op);
  std::sort(ops.begin(), ops.end(),
            [](const OperationRecord* a, const OperationRecord* b) { return a->id < b->id; });
  for (const OperationRecord* op : ops) {
    OperationState outcome = OperationState::failed;
    std::string why = "interrupted; the device record no longer exists";
    if (op->device_id) {
      if (auto it = outcome_of_device.find(*op->device_id); it != outcome_of_device.end()) {
        outcome = it->second;
        why = outcome == OperationState::rolled_back ? "rolled back at start-up"
                                                     : "completed at start-up";
      } else {
        // The device row moved on (created/faulty) but the close was lost.
        auto dev = std::find_if(in.devices.begin(), in.devices.end(),
                                [&](const DeviceRow& d) { return d.id == *op->device_id; });
        if (dev != in.devices.end() && dev->state == DeviceState::created) {
          outcome = OperationState::done;
          why = "device is created";
        } else if (dev != in.devices.end()) {
          why = "device is " + std::string(to_string(dev->state));
        }
      }
    }
    closes.push_back(
        {.kind = K::close_operation,
         .thin_id = op->thin_id,
         .device_id = op->device_id.value_or(0),
         .operation_id = op->id,
         .outcome = outcome,
         .reason = std::string(to_string(op->kind)) + " " + op->device_name + ": " + why});
  }

  auto by_thin = [](const RepairAction& a, const RepairAction& b) { return a.thin_id < b.thin_id; };
  std::stable_sort(deletes.begin(), deletes.end(), by_thin);

  std::vector<RepairAction> plan;
  for (auto* part : {&resumes, &deletes, &records, &closes, &tail})
    plan.insert(plan.end(), part->begin(), part->end());
  return plan;
}

}  // namespace stepsnap::agent
