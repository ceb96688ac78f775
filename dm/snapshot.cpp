#include "dm/snapshot.h"

#include <cerrno>

#include "dm/pool_messages.h"
#include "dm/suspend_guard.h"

namespace stepsnap::dm {

Status snapshot_active(const std::string& pool, const ActiveOrigin& origin, ThinId snap_id) {
  std::vector<ThinId> created;
  return snapshot_group_active(pool, {origin}, {snap_id}, &created);
}

Status snapshot_suspending(const std::string& pool, const std::vector<std::string>& devices,
                           ThinId origin, ThinId snap_id) {
  std::vector<SuspendGuard> guards;
  for (const auto& device : devices) {
    auto guard = SuspendGuard::suspend(device);
    if (!guard) return tl::unexpected(guard.error().context("snapshot"));
    guards.push_back(std::move(*guard));
  }
  Status result = create_snap(pool, snap_id, origin);
  for (auto& guard : guards) {
    if (auto r = guard.resume(); !r && result) result = tl::unexpected(r.error());
  }
  if (!result) result.error().context("snapshot");
  return result;
}

Status snapshot_group_active(const std::string& pool, const std::vector<ActiveOrigin>& origins,
                             const std::vector<ThinId>& snap_ids, std::vector<ThinId>* created) {
  created->clear();
  if (origins.size() != snap_ids.size()) {
    return fail("group snapshot", pool, EINVAL, "one snapshot id per origin is needed");
  }
  // Every guard resumes its device when this function leaves, by any path.
  std::vector<SuspendGuard> guards;
  guards.reserve(origins.size());
  for (const auto& origin : origins) {
    auto guard = SuspendGuard::suspend(origin.device);
    if (!guard) return tl::unexpected(guard.error().context("snapshot"));
    guards.push_back(std::move(*guard));
  }

  Status result;
  for (std::size_t i = 0; i < origins.size() && result; ++i) {
    result = create_snap(pool, snap_ids[i], origins[i].id);
    if (result) created->push_back(snap_ids[i]);
  }

  // Resume explicitly to report errors; a failed resume stays armed and the
  // guard's destructor tries again.
  for (auto& guard : guards) {
    if (auto r = guard.resume(); !r && result) result = tl::unexpected(r.error());
  }
  if (!result) result.error().context("snapshot");
  return result;
}

}  // namespace stepsnap::dm
