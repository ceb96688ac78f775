#include "agent/volumes/volumes.h"

#include <cerrno>

#include "common/log.h"
#include "dm/dm_error.h"
#include "dm/dm_task.h"
#include "dm/pool_status.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

// What a new snapshot maps: its origin's mapped sectors, read from the
// origin's thin status right after the snapshot. Blocks the origin maps
// after its resume count too, so this is an upper bound; 0 (unknown) when
// the status cannot be read.
std::uint64_t mapped_bytes_of(const std::string& origin_dm_name) {
  auto lines = dm::status(origin_dm_name);
  if (!lines || lines->size() != 1) return 0;
  auto st = dm::parse_thin_status(lines->front().params);
  return st ? st->mapped_sectors * 512 : 0;
}

constexpr std::uint64_t kSector = 512;

json labels_json(const Labels& labels) {
  json out = json::object();
  for (const auto& [k, v] : labels) out[k] = v;
  return out;
}

// A snapshot's cost in its event: pause_ns, the frozen window the volumes
// saw (first suspend to last resume); flush_ns, the flush before it while
// they still ran; snapshot_ns, the whole kernel side (ids, flush, window).
void put_times(json& data, const dm::SnapshotTimes& times, std::chrono::nanoseconds call) {
  data["pause_ns"] = times.frozen.count();
  data["flush_ns"] = times.flush.count();
  data["snapshot_ns"] = call.count();
}

bool is_space_kind(const Error& e) {
  auto k = dm::kind_of(e);
  return k == dm::ErrorKind::out_of_data_space || k == dm::ErrorKind::out_of_metadata_space;
}

}  // namespace

std::string pool_dm_name(const std::string& pool) { return pool + "-pool"; }
std::string volume_dm_name(const std::string& pool, const std::string& name) {
  return pool + "-vol-" + name;
}

json device_json(const DeviceRecord& d, const std::string& origin_name) {
  // "id" is the catalog's device id, the number origin_id and parent_id name.
  json j = {{"id", d.id},
            {"name", d.name},
            {"kind", std::string(to_string(d.kind))},
            {"state", std::string(to_string(d.state))},
            {"thin_id", d.thin_id},
            {"size_bytes", d.size_bytes},
            {"created", format_rfc3339_ns(d.created_ns)},
            {"labels", labels_json(d.labels)},
            {"owner_uid", d.owner_uid}};
  if (d.run_clone) {
    j["run_clone"] = {{"pipeline", d.run_clone->pipeline},
                      {"run", d.run_clone->run},
                      {"volume", d.run_clone->volume}};
  }
  if (!d.dm_name.empty()) {
    j["dm_name"] = d.dm_name;
    j["path"] = "/dev/mapper/" + d.dm_name;
  }
  if (d.origin_id) j["origin_id"] = *d.origin_id;
  if (!origin_name.empty()) j["origin"] = origin_name;
  if (d.parent_id) j["parent_id"] = *d.parent_id;
  if (!d.fault.empty()) j["fault"] = d.fault;
  if (!d.uuid.empty()) j["uuid"] = d.uuid;
  if (!d.received_from.empty()) {
    auto from = json::parse(d.received_from, nullptr, false);
    if (!from.is_discarded()) j["received_from"] = from;
  }
  // Absent when not measured: nothing records mapped bytes yet (0 = unknown).
  if (d.mapped_bytes) j["mapped_bytes"] = d.mapped_bytes;
  if (d.step) {
    json s = {{"pipeline", d.step->pipeline},
              {"run", d.step->run},
              {"step", d.step->step},
              {"phase", std::string(to_string(d.step->phase))},
              {"command", d.step->command}};
    if (d.step->exit_status) s["exit_status"] = *d.step->exit_status;
    j["step"] = s;
  }
  return j;
}

Result<std::optional<DeviceRecord>> Volumes::find_run_clone(const RunCloneKey& key) {
  return catalog_.find_run_clone(record_.id, key);
}

Result<DeviceRecord> Volumes::find(const std::string& name) {
  auto d = catalog_.find_device(record_.id, name);
  if (!d) return tl::unexpected(d.error());
  if (!*d) {
    return fail("find", name, ENOENT,
                "no volume, snapshot or clone of that name in pool " + record_.name);
  }
  return **d;
}

Result<std::vector<DeviceRecord>> Volumes::list(DeviceFilter filter) {
  filter.pool_id = record_.id;
  return catalog_.list_devices(filter);
}

Result<DeviceRecord> Volumes::get(std::int64_t id) {
  auto d = catalog_.get_device(id);
  if (d && d->pool_id != record_.id)
    return fail("find device", "#" + std::to_string(id), ENOENT, "it is in another pool");
  return d;
}

Result<std::optional<DeviceRecord>> Volumes::newest_snapshot(std::int64_t origin_id) {
  return catalog_.newest_snapshot(origin_id);
}

Result<std::vector<std::string>> Volumes::lineage(std::int64_t id, std::size_t max) {
  return catalog_.lineage(id, max);
}

Result<json> Volumes::pool_json() {
  std::lock_guard lock(kernel_mutex_);
  auto st = pool_.status();
  if (!st) return tl::unexpected(st.error());
  return json{{"name", record_.name},
              {"mode", dm::to_string(st->mode)},
              // Blocks times this is bytes: stepsnap-csi's GetCapacity.
              {"block_bytes", record_.block_bytes},
              {"used_data_blocks", st->used_data_blocks},
              {"total_data_blocks", st->total_data_blocks},
              {"used_metadata_blocks", st->used_metadata_blocks},
              {"total_metadata_blocks", st->total_metadata_blocks},
              {"needs_check", st->needs_check}};
}

void Volumes::check_space() {
  auto st = pool_.status();
  if (!st) {
    log::warn("pool status after create: " + st.error().message());
    return;
  }
  auto per_mille = [](std::uint64_t used, std::uint64_t total) {
    return total == 0 ? 0u : static_cast<unsigned>(used * 1000 / total);
  };
  Usage now{per_mille(st->used_data_blocks, st->total_data_blocks),
            per_mille(st->used_metadata_blocks, st->total_metadata_blocks)};
  if (now != last_usage_) {
    // The pool's use over time, for the view's chart: one event per 0.1%
    // step of either space, so a pool filled from empty to full makes at
    // most 2,000 of them.
    auto r = events_.append(EventType::pool_usage,
                            {{"pool", record_.name},
                             {"data_percent", now.data / 10.0},
                             {"metadata_percent", now.metadata / 10.0},
                             {"used_data_blocks", st->used_data_blocks},
                             {"total_data_blocks", st->total_data_blocks},
                             {"used_metadata_blocks", st->used_metadata_blocks},
                             {"total_metadata_blocks", st->total_metadata_blocks}});
    if (!r) log::error("event pool.usage: " + r.error().message());
    last_usage_ = now;
  }
  unsigned data = now.data / 10;
  unsigned meta = now.metadata / 10;
  bool low = data >= low_space_percent_ || meta >= low_space_percent_;
  if (low && !low_space_reported_) {
    log::warn("pool " + record_.name + " is low on space: data " + std::to_string(data) +
              "%, metadata " + std::to_string(meta) + "%");
    auto r = events_.append(EventType::pool_low_space, {{"pool", record_.name},
                                                        {"data_percent", data},
                                                        {"metadata_percent", meta},
                                                        {"threshold_percent", low_space_percent_}});
    if (!r) log::error("event pool.low_space: " + r.error().message());
  }
  low_space_reported_ = low;
}

void Volumes::report_failure(const std::string& op, const Error& error) {
  if (!is_space_kind(error)) {
    // A pool that went read-only or failed (a metadata write error sets
    // needs_check) refuses every create from now on: say so once per
    // refusal, with the kind a monitor can switch on.
    auto k = dm::kind_of(error);
    if (k != dm::ErrorKind::needs_check && k != dm::ErrorKind::read_only &&
        k != dm::ErrorKind::pool_failed)
      return;
    auto r = events_.append(
        EventType::error,
        {{"op", op}, {"pool", record_.name}, {"kind", error.kind}, {"message", error.message()}});
    if (!r) log::error("event error: " + r.error().message());
    return;
  }
  auto r = events_.append(
      EventType::pool_out_of_space,
      {{"pool", record_.name}, {"kind", error.kind}, {"op", op}, {"message", error.message()}});
  if (!r) log::error("event pool.out_of_space: " + r.error().message());
}

Result<DeviceRecord> Volumes::origin_for(const std::string& name, bool want_snapshot,
                                         const std::string& op) {
  auto d = find(name);
  if (!d) return tl::unexpected(d.error().context(op));
  if ((d->kind == DeviceKind::snapshot) != want_snapshot) {
    return fail(op, name, EINVAL,
                std::string("it is a ") + std::string(to_string(d->kind)) +
                    (want_snapshot ? "; give a snapshot" : "; give a volume or clone"));
  }
  if (d->state != DeviceState::created) {
    return fail(op, name, EBUSY, "it is " + std::string(to_string(d->state)));
  }
  return d;
}

// The one create sequence, containerd's transition(): the intent goes into
// the catalog before the kernel call (from the pool's id hook, so the thin id
// the pool picked is in it), then the kernel operation runs, and then either
// every intent is aborted (a space failure also reported as
// pool.out_of_space) or every one is finished with its event in one
// transaction. The pool's space is checked after a success.
//
//   spec_for(index, thin_id) -> Result<CreateSpec>  the index-th device's record
//   kernel_op(before)        -> Result<std::vector<Made>>, one per device
//   event_for(index, record) -> std::pair<EventType, json>
template <typename SpecFn, typename OpFn, typename EventFn>
Result<std::vector<DeviceRecord>> Volumes::create_with_intent(
    std::string_view op, SpecFn&& spec_for, OpFn&& kernel_op, EventFn&& event_for,
    bool check_space_now, std::chrono::nanoseconds* results_time) {
  std::vector<Intent> intents;
  auto before = [&](dm::ThinId id) -> Status {
    auto spec = spec_for(intents.size(), id);
    if (!spec) return tl::unexpected(spec.error());
    auto i = catalog_.begin_create(*spec);
    if (!i) return tl::unexpected(i.error());
    intents.push_back(*i);
    return {};
  };
  Result<std::vector<Made>> made = kernel_op(before);
  if (!made) {
    for (const auto& i : intents) (void)catalog_.abort_create(i, made.error(), false);
    report_failure(std::string(op), made.error());
    return tl::unexpected(made.error());
  }
  std::vector<DeviceRecord> records;
  const auto results_start = std::chrono::steady_clock::now();
  auto st = in_transaction(catalog_.db(), [&]() -> Status {
    for (std::size_t k = 0; k < intents.size(); ++k) {
      const Made& m = made->at(k);
      if (auto r = catalog_.finish_create(intents[k], m.dm_name, m.mapped_bytes); !r) return r;
      auto d = catalog_.get_device(intents[k].device_id);
      if (!d) return tl::unexpected(d.error());
      auto [type, data] = event_for(k, *d);
      auto e = events_.append(type, data);
      if (!e) return tl::unexpected(e.error());
      records.push_back(*d);
    }
    return {};
  });
  if (results_time) *results_time = std::chrono::steady_clock::now() - results_start;
  if (!st) return tl::unexpected(st.error());
  if (check_space_now) check_space();
  return records;
}

Status Volumes::name_is_free(const std::string& op, const std::string& name) {
  auto taken = catalog_.find_device(record_.id, name);
  if (!taken) return tl::unexpected(taken.error());
  if (*taken) return fail(op, name, EEXIST, "that name is taken; pick another");
  return {};
}

Result<DeviceRecord> Volumes::create_volume(const std::string& name, std::uint64_t size_bytes,
                                            const Labels& labels, const Ownership& who) {
  std::lock_guard lock(kernel_mutex_);
  if (auto free = name_is_free("create volume", name); !free) return tl::unexpected(free.error());
  auto made = create_with_intent(
      "volume.create",
      [&](std::size_t, dm::ThinId id) -> Result<CreateSpec> {
        return CreateSpec{.pool_id = record_.id,
                          .name = name,
                          .kind = DeviceKind::volume,
                          .size_bytes = size_bytes,
                          .labels = labels,
                          .thin_id = id,
                          .owner_uid = who.uid,
                          .dm_name = volume_dm_name(record_.name, name)};
      },
      [&](const dm::BeforeCreate& before) -> Result<std::vector<Made>> {
        auto vol = pool_.create_volume(volume_dm_name(record_.name, name), size_bytes, before);
        if (!vol) return tl::unexpected(vol.error());
        return std::vector<Made>{{vol->name, 0}};
      },
      [&](std::size_t, const DeviceRecord& d) {
        return std::pair{EventType::volume_created, device_json(d)};
      });
  if (!made) return tl::unexpected(made.error());
  return made->front();
}

Result<DeviceRecord> Volumes::snapshot(const std::string& volume,
                                       const std::optional<std::string>& name, const Labels& labels,
                                       const std::optional<StepInfo>& step, const Ownership& who) {
  std::lock_guard lock(kernel_mutex_);
  auto origin = origin_for(volume, false, "snapshot");
  if (!origin) return tl::unexpected(origin.error());
  if (name) {
    if (auto free = name_is_free("create snapshot", *name); !free)
      return tl::unexpected(free.error());
  }
  dm::SnapshotTimes times;
  std::chrono::nanoseconds call{};
  auto made = create_with_intent(
      "snapshot.create",
      [&](std::size_t, dm::ThinId id) -> Result<CreateSpec> {
        std::string made_name = name ? *name : volume + ".s" + std::to_string(id);
        if (!is_valid_name(made_name)) made_name = "snap.s" + std::to_string(id);
        return CreateSpec{.pool_id = record_.id,
                          .name = made_name,
                          .kind = DeviceKind::snapshot,
                          .origin_id = origin->id,
                          .labels = labels,
                          .step = step,
                          .thin_id = id,
                          .owner_uid = who.uid};
      },
      [&](const dm::BeforeCreate& before) -> Result<std::vector<Made>> {
        auto t0 = std::chrono::steady_clock::now();
        auto id = pool_.snapshot(origin->thin_id, before, &times);
        call = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now() - t0);
        if (!id) return tl::unexpected(id.error().context("snapshot " + volume));
        return std::vector<Made>{{"", mapped_bytes_of(origin->dm_name)}};
      },
      [&](std::size_t, const DeviceRecord& d) {
        json data = device_json(d, origin->name);
        put_times(data, times, call);
        return std::pair{EventType::snapshot_created, data};
      });
  if (!made) return tl::unexpected(made.error());
  return made->front();
}

Result<GroupSnapshot> Volumes::snapshot_group(const std::vector<std::string>& volumes,
                                              const StepInfo& step, const Labels& labels,
                                              const json& event_extra) {
  using Clock = std::chrono::steady_clock;
  const auto asked = Clock::now();
  std::lock_guard lock(kernel_mutex_);
  const auto locked = Clock::now();
  std::vector<DeviceRecord> origins;
  std::vector<dm::ThinVolume> active;
  for (const auto& v : volumes) {
    auto o = origin_for(v, false, "snapshot step volume");
    if (!o) return tl::unexpected(o.error());
    if (o->dm_name.empty()) {
      return fail("snapshot step volume", v, ENXIO, "it is not active");
    }
    active.push_back(dm::ThinVolume{o->dm_name, o->thin_id, o->size_bytes / kSector});
    origins.push_back(*o);
  }
  const auto looked_up = Clock::now();
  dm::SnapshotTimes times;
  std::chrono::nanoseconds call{}, results{};
  const std::string phase(to_string(step.phase));
  auto made = create_with_intent(
      "step snapshot",
      [&](std::size_t k, dm::ThinId id) -> Result<CreateSpec> {
        const DeviceRecord& origin = origins.at(k);
        // A run's clone is named "<pipeline>.<run>.<volume>"; its snapshots say
        // just the volume, since the run and step are in the name already.
        std::string volume = origin.name;
        if (auto it = origin.labels.find("volume"); it != origin.labels.end() &&
                                                    origin.labels.count("run") &&
                                                    origin.labels.at("run") == step.run)
          volume = it->second;
        std::string name = step.run + "." + step.step + "." + volume + "." + phase;
        auto taken = catalog_.find_device(record_.id, name);
        if (!taken) return tl::unexpected(taken.error());
        if (!is_valid_name(name) || *taken) {
          name = origin.name.substr(0, 40) + ".s" + std::to_string(id) + "." + phase;
        }
        return CreateSpec{.pool_id = record_.id,
                          .name = name,
                          .kind = DeviceKind::snapshot,
                          .origin_id = origin.id,
                          .labels = labels,
                          .step = step,
                          .thin_id = id};
      },
      [&](const dm::BeforeCreate& before) -> Result<std::vector<Made>> {
        auto t0 = std::chrono::steady_clock::now();
        auto ids = pool_.snapshot_group(active, before, &times);
        call = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now() - t0);
        if (!ids) return tl::unexpected(ids.error());
        // Mapped bytes are read later, by settle_group: a status ioctl per
        // volume the held step need not wait for.
        return std::vector<Made>(origins.size());
      },
      [&](std::size_t k, const DeviceRecord& d) {
        json data = device_json(d, origins[k].name);
        put_times(data, times, call);
        data["group_size"] = origins.size();
        if (event_extra.is_object()) data.update(event_extra);
        return std::pair{EventType::snapshot_created, data};
      },
      /*check_space_now=*/false, &results);
  if (!made) return tl::unexpected(made.error());
  GroupSnapshot group{.snapshots = std::move(*made),
                      .pause = times.frozen,
                      .flush = times.flush,
                      .origin_dm_names = {},
                      .lock_wait = locked - asked,
                      .lookup = looked_up - locked,
                      .kernel = times,
                      .results = results};
  for (const auto& o : origins) group.origin_dm_names.push_back(o.dm_name);
  return group;
}

void Volumes::settle_group(const GroupSnapshot& group) {
  std::lock_guard lock(kernel_mutex_);
  // The ioctls first: the catalog's lock is not held across them.
  std::vector<std::uint64_t> mapped;
  for (std::size_t k = 0; k < group.snapshots.size() && k < group.origin_dm_names.size(); ++k)
    mapped.push_back(mapped_bytes_of(group.origin_dm_names[k]));
  auto st = in_transaction(catalog_.db(), [&]() -> Status {
    for (std::size_t k = 0; k < mapped.size(); ++k) {
      if (mapped[k] == 0) continue;  // unknown: the row keeps 0
      // A snapshot deleted meanwhile has no row to update: nothing to say.
      (void)catalog_.set_mapped_bytes(group.snapshots[k].id, mapped[k]);
    }
    return {};
  });
  if (!st) log::warn("record mapped bytes of a step's snapshots: " + st.error().message());
  check_space();
}

Result<DeviceRecord> Volumes::clone(const std::string& snapshot, const std::string& name,
                                    const Labels& labels, DeviceKind kind, const Ownership& who) {
  const std::string what = kind == DeviceKind::clone ? "clone" : "restore";
  std::lock_guard lock(kernel_mutex_);
  auto source = origin_for(snapshot, true, what);
  if (!source) return tl::unexpected(source.error());
  if (auto free = name_is_free(what, name); !free) return tl::unexpected(free.error());
  auto made = create_with_intent(
      what,
      [&](std::size_t, dm::ThinId id) -> Result<CreateSpec> {
        return CreateSpec{.pool_id = record_.id,
                          .name = name,
                          .kind = kind,
                          .origin_id = source->id,
                          .labels = labels,
                          .thin_id = id,
                          .owner_uid = who.uid,
                          .run_clone = who.run_clone,
                          .dm_name = volume_dm_name(record_.name, name)};
      },
      [&](const dm::BeforeCreate& before) -> Result<std::vector<Made>> {
        auto vol = pool_.clone(source->thin_id, volume_dm_name(record_.name, name),
                               source->size_bytes, before);
        if (!vol) return tl::unexpected(vol.error());
        return std::vector<Made>{{vol->name, 0}};
      },
      [&](std::size_t, const DeviceRecord& d) {
        return std::pair{
            kind == DeviceKind::clone ? EventType::clone_created : EventType::volume_created,
            device_json(d, source->name)};
      });
  if (!made) return tl::unexpected(made.error());
  return made->front();
}

Status Volumes::remove(const std::string& name, bool snapshot) {
  const std::string what = snapshot ? "delete snapshot" : "delete volume";
  std::lock_guard lock(kernel_mutex_);
  auto d = find(name);
  if (!d) return tl::unexpected(d.error().context(what));
  if ((d->kind == DeviceKind::snapshot) != snapshot) {
    return fail(what, name, EINVAL,
                "it is a " + std::string(to_string(d->kind)) +
                    (snapshot ? "; use volume.delete" : "; use snapshot.delete"));
  }
  auto intent = catalog_.begin_delete(d->id);
  if (!intent) return tl::unexpected(intent.error());
  if (!d->dm_name.empty()) {
    if (auto r = pool_.deactivate(d->dm_name); !r) {
      (void)catalog_.abort_delete(*intent, r.error(), true);
      return tl::unexpected(r.error().context(what + " " + name));
    }
    (void)catalog_.set_dm_name(d->id, "");
  }
  if (auto r = pool_.delete_thin(d->thin_id); !r) {
    (void)catalog_.abort_delete(*intent, r.error(), true);
    return tl::unexpected(r.error().context(what + " " + name));
  }
  auto done = in_transaction(catalog_.db(), [&]() -> Status {
    if (auto r = catalog_.finish_delete(*intent); !r) return r;
    json data = device_json(*d);
    data.erase("dm_name");
    data.erase("path");
    data["state"] = "deleted";
    auto e =
        events_.append(snapshot ? EventType::snapshot_deleted : EventType::volume_deleted, data);
    if (!e) return tl::unexpected(e.error());
    return {};
  });
  if (done) check_space();
  return done;
}

}  // namespace stepsnap::agent
