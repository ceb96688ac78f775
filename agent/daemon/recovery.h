// Start-up recovery: gathers what the kernel says about the pool (which thin
// ids exist, which of our devices are suspended or inactive), hands it with
// the catalog's records to the pure planner (reconcile.h), executes the
// plan, and reports each repair as one agent.recovered event committed with
// the catalog change it made. Then reactivates created volumes and clones
// that are not active (after a reboot the pool comes back without them).
//
// Which thin ids exist comes from dm::ThinPool::list_thin_ids (the pool's
// metadata snapshot, read in process), so a leaked id is found wherever it
// is. When that cannot run (a read-only pool takes no messages; someone else
// holds the metadata snapshot) ids are probed one by one instead: every id
// the catalog names, every id of a pending operation, the ids the pool
// handed out past the catalog's counter, and the last kProbeBelow ids below
// the counter.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "agent/catalog/catalog.h"
#include "agent/events/event_log.h"
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

// Steps the catalog has in a non-terminal state (registered, holding,
// running, finishing) cannot be resumed: their BPF watch died with the
// previous daemon. Each is marked failed ("stepsnapd restarted while the
// step was <state>") with one agent.recovered event in the same
// transaction. A step that had not passed its pre-snapshot (registered or
// holding, with a pre policy) would now run without one, so its cgroup is
// killed, as a failed pre-snapshot would; a running step is left to run.
// The kill goes only to a cgroup strictly beneath `cgroup_subtree` whose
// inode is the one recorded at registration (agent/policy/step_cgroup.h).
//
// Steps in `adopted` (pipeline/run/step) are skipped: the step policy took
// them over through the tracer's pinned watches. A step recorded running or
// finishing with a post policy and no post-snapshot says so in its error:
// its post-snapshot is missing.
Result<RecoveryResult> fail_interrupted_steps(Catalog& catalog, EventLog& events,
                                              const std::string& cgroup_subtree,
                                              const std::set<std::string>& adopted = {});

}  // namespace stepsnap::agent
