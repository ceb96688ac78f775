// snapshot.label: labels added to a snapshot after it was taken. The data
// of a snapshot never changes; its labels may, so a step's results (the
// notebook's pipeline-metrics) can sit on the snapshot that holds them.
#include <cerrno>

#include "agent/catalog/sqlite_db.h"
#include "agent/volumes/volumes.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

// The same bound a request puts on the labels it carries, for the merge.
constexpr std::size_t kMaxLabelsPerSnapshot = 64;

}  // namespace

Result<DeviceRecord> Volumes::label_snapshot(const std::string& name, const Labels& labels) {
  const std::string what = "label snapshot";
  // Held so that a concurrent snapshot.delete cannot drop the row between
  // the lookup and the write.
  std::lock_guard lock(kernel_mutex_);
  auto d = find(name);
  if (!d) return tl::unexpected(d.error().context(what));
  if (d->kind != DeviceKind::snapshot) {
    return fail(
        what, name, EINVAL,
        "it is a " + std::string(to_string(d->kind)) + "; only snapshots take labels later");
  }
  Labels merged = d->labels;
  for (const auto& [key, value] : labels) merged[key] = value;
  if (merged.size() > kMaxLabelsPerSnapshot) {
    return fail(what, name, E2BIG,
                "it would have " + std::to_string(merged.size()) + " labels; at most " +
                    std::to_string(kMaxLabelsPerSnapshot));
  }
  auto done = in_transaction(catalog_.db(), [&]() -> Status {
    if (auto r = catalog_.set_labels(d->id, merged); !r) return r;
    json added = json::object();
    for (const auto& [key, value] : labels) added[key] = value;
    auto e = events_.append(EventType::snapshot_labelled,
                            {{"name", d->name}, {"pool", record_.name}, {"labels", added}});
    if (!e) return tl::unexpected(e.error());
    return {};
  });
  if (!done) return tl::unexpected(done.error().context(what + " " + name));
  d->labels = std::move(merged);
  return *d;
}

}  // namespace stepsnap::agent
