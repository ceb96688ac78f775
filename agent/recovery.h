// Start-up recovery: gathers what the kernel says about the pool (which thin
// ids exist, which of our devices are suspended or inactive), hands it with
// the catalog's records to the pure planner (reconcile.h), executes the
// plan, and reports each repair as one agent.recovered event committed with
// the catalog change it made. Then reactivates created volumes and clones
// that are not active (after a reboot the pool comes back without them).
//
// dm/ has no way to list every thin id of a pool (that needs thin_dump on a
// metadata snapshot), so ids are probed one by one: every id the catalog
// names, every id of a pending operation, the ids the pool handed out past
// the catalog's counter, and the last kProbeBelow ids below the counter.
#pragma once

#include <cstdint>

#include "agent/catalog.h"
#include "agent/event_log.h"
#include "common/error.h"
#include "dm/thin_pool.h"

namespace stepsnap::agent {

inline constexpr std::uint32_t kProbeBelow = 64;

struct RecoveryResult {
  int repairs = 0;   // actions executed (each with an event)
  int failures = 0;  // actions that failed (logged, error event)
};

Result<RecoveryResult> recover(Catalog& catalog, EventLog& events, dm::ThinPool& pool,
                               const PoolRecord& record);

}  // namespace stepsnap::agent
