#include "dm/snapshot.h"

#include <cerrno>

#include "common/log.h"
#include "dm/flush.h"
#include "dm/pool_messages.h"
#include "dm/suspend_guard.h"

namespace stepsnap::dm {

namespace {

using Clock = std::chrono::steady_clock;

// A failed flush costs only time: the suspend still flushes and freezes, so
// the snapshot is as exact either way. Logged, never fatal.
void flush_all(const std::vector<std::string>& devices, const SnapshotOptions& options) {
  if (!options.flush_first) return;
  auto t0 = Clock::now();
  for (const auto& device : devices) {
    if (auto r = flush_device(device); !r) log::warn("dm: " + r.error().message());
  }
  if (options.times) options.times->flush = Clock::now() - t0;
}

// Suspends every device, runs `create`, resumes every device (also when a
// suspend or `create` failed), and times the frozen window.
template <typename Create>
Status suspended_for(const std::vector<std::string>& devices, const SnapshotOptions& options,
                     Create&& create) {
  flush_all(devices, options);
  auto t0 = Clock::now();
  Clock::time_point suspended, created;
  Status result;
  {
    // Every guard resumes its device when this scope ends, by any path.
    std::vector<SuspendGuard> guards;
    guards.reserve(devices.size());
    for (const auto& device : devices) {
      auto guard = SuspendGuard::suspend(device);
      if (!guard) {
        result = tl::unexpected(guard.error());
        break;
      }
      guards.push_back(std::move(*guard));
    }
    suspended = Clock::now();
    if (result) result = create();
    created = Clock::now();
    // Resume explicitly to report errors; a failed resume stays armed and
    // the guard's destructor tries again.
    for (auto& guard : guards) {
      if (auto r = guard.resume(); !r && result) result = tl::unexpected(r.error());
    }
  }
  if (options.times) {
    auto end = Clock::now();
    options.times->frozen = end - t0;
    options.times->suspend = suspended - t0;
    options.times->create_snap = created - suspended;
    options.times->resume = end - created;
  }
  if (!result) result.error().context("snapshot");
  return result;
}

}  // namespace

Status snapshot_active(const std::string& pool, const ActiveOrigin& origin, ThinId snap_id,
                       const SnapshotOptions& options) {
  std::vector<ThinId> created;
  return snapshot_group_active(pool, {origin}, {snap_id}, &created, options);
}

Status snapshot_suspending(const std::string& pool, const std::vector<std::string>& devices,
                           ThinId origin, ThinId snap_id, const SnapshotOptions& options) {
  return suspended_for(devices, options, [&] { return create_snap(pool, snap_id, origin); });
}

Status snapshot_group_active(const std::string& pool, const std::vector<ActiveOrigin>& origins,
                             const std::vector<ThinId>& snap_ids, std::vector<ThinId>* created,
                             const SnapshotOptions& options) {
  created->clear();
  if (origins.size() != snap_ids.size()) {
    return fail("group snapshot", pool, EINVAL, "one snapshot id per origin is needed");
  }
  std::vector<std::string> devices;
  for (const auto& origin : origins) devices.push_back(origin.device);
  return suspended_for(devices, options, [&]() -> Status {
    for (std::size_t i = 0; i < origins.size(); ++i) {
      if (auto r = create_snap(pool, snap_ids[i], origins[i].id); !r) return r;
      created->push_back(snap_ids[i]);
    }
    return {};
  });
}

}  // namespace stepsnap::dm
