#include "agent/volumes/run_clones.h"

#include <cerrno>

#include "common/names.h"

namespace stepsnap::agent {

Result<std::string> run_clone_name(const std::string& pipeline, const std::string& run,
                                   const std::string& volume) {
  std::string name = pipeline + "." + run + "." + volume;
  if (auto problem = name_problem(name)) {
    return fail("name the run clone", name, EINVAL,
                *problem + "; use shorter pipeline, run or volume names");
  }
  return name;
}

Result<DeviceRecord> RunClones::source_snapshot(const std::string& volume,
                                                const std::optional<std::string>& snapshot) {
  if (snapshot) {
    auto s = volumes_.find(*snapshot);
    if (!s) return s;
    if (s->kind != DeviceKind::snapshot)
      return fail("clone for a run from", *snapshot, EINVAL,
                  std::string("it is a ") + std::string(to_string(s->kind)) + ", not a snapshot");
    return s;
  }
  auto origin = volumes_.find(volume);
  if (!origin) return origin;
  if (origin->kind == DeviceKind::snapshot) {
    return fail("clone for a run", volume, EINVAL,
                "it is a snapshot; name a volume, and the snapshot with \"snapshot\"");
  }
  // One indexed row, not the volume's every snapshot (there may be 100,000).
  auto newest = volumes_.newest_snapshot(origin->id);
  if (!newest) return tl::unexpected(newest.error());
  if (*newest) return **newest;
  return volumes_.snapshot(volume, std::nullopt, {});
}

Result<DeviceRecord> RunClones::ensure(const std::string& pipeline, const std::string& run,
                                       const std::string& volume,
                                       const std::optional<std::string>& snapshot,
                                       std::uint32_t owner_uid) {
  auto name = run_clone_name(pipeline, run, volume);
  if (!name) return tl::unexpected(name.error());
  const RunCloneKey key{pipeline, run, volume};
  std::lock_guard lock(mutex_);
  auto existing = volumes_.find_run_clone(key);
  if (!existing) return tl::unexpected(existing.error());
  if (*existing) {
    if (snapshot) {
      auto asked = volumes_.find(*snapshot);
      if (!asked) return tl::unexpected(asked.error());
      if ((*existing)->origin_id != asked->id)
        return fail("clone " + *snapshot + " for run", pipeline + "/" + run, EEXIST,
                    "the run already has a clone of " + volume +
                        " from another snapshot; use a new run name");
    }
    return **existing;
  }
  // The name is taken by something that is not this run's clone: whatever
  // it holds was not made for the run, so it is never handed out as one.
  if (auto taken = volumes_.find(*name)) {
    return fail("clone for run", *name, EEXIST,
                "a " + std::string(to_string(taken->kind)) + " of that name (owner uid " +
                    std::to_string(taken->owner_uid) +
                    ") exists and is not the run's clone; delete it or use another run name");
  } else if (taken.error().err != ENOENT) {
    return tl::unexpected(taken.error());
  }
  auto source = source_snapshot(volume, snapshot);
  if (!source) return source;
  Labels labels{{"pipeline", pipeline}, {"run", run}, {"volume", volume}};
  return volumes_.clone(source->name, *name, labels, DeviceKind::clone,
                        Ownership{.uid = owner_uid, .run_clone = key});
}

}  // namespace stepsnap::agent
