// Start-up reconciliation as a pure function: what the catalog says (device
// rows with their transition state, pending operations, the id counter)
// against what the pool reports (thin ids present, devices suspended) gives an
// ordered list of repairs. No I/O here; the daemon executes the plan, and each
// repair becomes one agent.recovered event.
//
// Policy, one line per case (kernel present = thin id reported by the pool):
//   any of our devices, or the pool, suspended     -> resume it (first of all)
//   creating, present      -> delete the thin device and the record: the
//                             caller never got an answer, no event went out,
//                             so the half-made device is rolled back
//   creating, absent       -> drop the record (the kernel call never happened)
//   deleting, present      -> finish the delete, then drop the record
//   deleting, absent       -> drop the record (the kernel delete happened)
//   created, absent        -> mark faulty: the catalog must not claim a device
//                             that is gone, but a human must hear about it
//   faulty                 -> left alone (already reported)
//   thin id unknown, below the counter -> we allocated it and lost track:
//                             delete it (no thin device is ever leaked);
//                             except id 0, which we never hand out: kept
//                             and reported like a foreign id
//   thin id unknown, at/above the counter -> not provably ours: keep it,
//                             report it, and move the counter past it so we
//                             never collide with it
//   pending operations     -> closed with the outcome the plan gives them
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/catalog/catalog.h"

namespace stepsnap::agent {

struct ReconcileInput {
  std::string pool_dm_name;                  // the pool's own dm device
  std::uint32_t next_thin_id = 1;            // the catalog's counter for this pool
  std::vector<DeviceRow> devices;            // the pool's rows, every state (no labels)
  std::vector<OperationRecord> pending;      // operations still `pending`
  std::vector<std::uint32_t> pool_thin_ids;  // what the pool has (thin_dump / dm/ list)
  std::vector<std::string> suspended;        // dm names currently suspended
};

struct RepairAction {
  enum class Kind {
    resume_device,        // dm_name
    delete_thin,          // thin_id (dm_name: deactivate first when not empty)
    drop_record,          // device_id
    mark_faulty,          // device_id, reason
    close_operation,      // operation_id, outcome
    advance_thin_id,      // thin_id = the new counter value
    report_foreign_thin,  // thin_id (nothing to execute: an event only)
  };
  Kind kind;
  std::string dm_name;
  std::uint32_t thin_id = 0;
  std::int64_t device_id = 0;
  std::int64_t operation_id = 0;
  OperationState outcome = OperationState::done;
  std::string reason;  // one line, for the log and the agent.recovered event

  bool operator==(const RepairAction&) const = default;
};

std::string_view to_string(RepairAction::Kind kind);

// Order: resumes (pool first), thin deletes (ascending id), catalog record
// changes (ascending device id), operation closes, counter advance, reports.
// Resumes come first because a delete or any I/O on a suspended device hangs.
std::vector<RepairAction> plan_reconcile(const ReconcileInput& input);

}  // namespace stepsnap::agent
