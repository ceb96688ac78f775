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
  auto snaps = volumes_.list({.kind = DeviceKind::snapshot, .origin_id = origin->id});
  if (!snaps) return tl::unexpected(snaps.error());
  const DeviceRecord* newest = nullptr;
  for (const auto& s : *snaps) {
    if (s.state != DeviceState::created) continue;
    // Thin ids only grow, so the highest is the newest even when two
    // snapshots share a clock tick.
    if (!newest || s.thin_id > newest->thin_id) newest = &s;
  }
  if (newest) return *newest;
  return volumes_.snapshot(volume, std::nullopt, {});
}

Result<DeviceRecord> RunClones::ensure(const std::string& pipeline, const std::string& run,
                                       const std::string& volume,
                                       const std::optional<std::string>& snapshot) {
  auto name = run_clone_name(pipeline, run, volume);
  if (!name) return tl::unexpected(name.error());
  std::lock_guard lock(mutex_);
  auto existing = volumes_.find(*name);
  if (existing) {
    if (existing->kind != DeviceKind::clone)
      return fail("clone for run", *name, EEXIST,
                  std::string("a ") + std::string(to_string(existing->kind)) +
                      " already has that name; delete it or use another run name");
    // Names can collide ("p.r.a" + "b" and "p.r" + "a.b"): the labels say
    // whose clone this really is.
    const Labels& l = existing->labels;
    auto label = [&](const char* key) { return l.count(key) ? l.at(key) : std::string(); };
    if (label("pipeline") != pipeline || label("run") != run || label("volume") != volume)
      return fail("clone for run", *name, EEXIST,
                  "that name is the clone of volume " + label("volume") + " for run " +
                      label("pipeline") + "/" + label("run") + "; use another run name");
    if (snapshot) {
      auto asked = volumes_.find(*snapshot);
      if (!asked) return tl::unexpected(asked.error());
      if (existing->origin_id != asked->id)
        return fail("clone " + *snapshot + " for run", pipeline + "/" + run, EEXIST,
                    "the run already has a clone of " + volume +
                        " from another snapshot; use a new run name");
    }
    return existing;
  }
  if (existing.error().err != ENOENT) return existing;
  auto source = source_snapshot(volume, snapshot);
  if (!source) return source;
  Labels labels{{"pipeline", pipeline}, {"run", run}, {"volume", volume}};
  return volumes_.clone(source->name, *name, labels, DeviceKind::clone);
}

}  // namespace stepsnap::agent
