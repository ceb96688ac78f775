#include "csi/controller_service.h"

#include <algorithm>
#include <ctime>

#include "common/log.h"
#include "common/names.h"
#include "csi/driver_info.h"
#include "csi/parameters.h"

namespace stepsnap::csi {

using namespace ::csi::v1;
using grpc::StatusCode;
using json = nlohmann::json;

namespace {

std::string label_of(const json& device, const char* key) {
  const json& labels = device.contains("labels") ? device["labels"] : json::object();
  return labels.is_object() ? labels.value(key, "") : "";
}

// "2024-05-01T12:00:00.123456789Z" (format_rfc3339_ns) -> Timestamp.
void set_time(const std::string& text, google::protobuf::Timestamp* out) {
  std::tm tm{};
  long nanos = 0;
  char* rest = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) return;
  if (*rest == '.') nanos = std::strtol(rest + 1, nullptr, 10);
  out->set_seconds(::timegm(&tm));
  out->set_nanos(static_cast<std::int32_t>(nanos));
}

void fill_snapshot(const json& snap, const std::string& source_volume, Snapshot* out) {
  out->set_snapshot_id(snap.value("name", ""));
  out->set_size_bytes(snap.value("size_bytes", std::int64_t{0}));
  out->set_source_volume_id(source_volume);
  set_time(snap.value("created", ""), out->mutable_creation_time());
  // A dm-thin snapshot is complete the moment create_snap returns.
  out->set_ready_to_use(true);
}

// The agent answered `what` with an error: the mapped code.
tl::unexpected<CsiError> agent_failed(const std::string& what, const Error& e) {
  return tl::unexpected(from_agent_error(what, e));
}

}  // namespace

bool ControllerService::accessible_here(const TopologyRequirement& requirement) const {
  if (requirement.requisite().empty()) return true;
  for (const auto& t : requirement.requisite()) {
    auto it = t.segments().find(std::string(kTopologyKey));
    if (it != t.segments().end() && it->second == node_id_) return true;
  }
  return false;
}

void ControllerService::fill_volume(const json& device, const CreateVolumeRequest& in,
                                    Volume* out) const {
  out->set_volume_id(device.value("name", ""));
  out->set_capacity_bytes(device.value("size_bytes", std::int64_t{0}));
  (*out->mutable_volume_context())["fsType"] = label_of(device, label::fs);
  if (in.has_volume_content_source()) *out->mutable_content_source() = in.volume_content_source();
  (*out->add_accessible_topology()->mutable_segments())[std::string(kTopologyKey)] = node_id_;
}

CsiResult<void> ControllerService::create_volume(const CreateVolumeRequest& in, Volume* out) {
  if (in.name().empty()) return csi_fail(StatusCode::INVALID_ARGUMENT, "name is empty");
  if (auto r = check_capabilities(in.volume_capabilities()); !r) return r;
  auto fs = filesystem_for(in.parameters(), in.volume_capabilities());
  if (!fs) return tl::unexpected(fs.error());
  if (in.has_accessibility_requirements() && !accessible_here(in.accessibility_requirements())) {
    return csi_fail(StatusCode::RESOURCE_EXHAUSTED,
                    "this driver serves node " + node_id_ +
                        " only, which the volume's requisite topology does not include");
  }
  const CapacityRange* range = in.has_capacity_range() ? &in.capacity_range() : nullptr;
  const VolumeContentSource* source =
      in.has_volume_content_source() ? &in.volume_content_source() : nullptr;
  const std::string id = device_name_for(in.name());
  const std::string wanted_source = source_label(source);

  // The same name again: the same volume if it was asked for the same way.
  auto same_again = [&](const json& existing) -> CsiResult<void> {
    if (label_of(existing, label::name) != in.name()) {
      return csi_fail(StatusCode::ALREADY_EXISTS, "a stepsnap device named " + id +
                                                      " exists and was not made for \"" +
                                                      in.name() + "\"; pick another name");
    }
    bool same_fs = source ? true : label_of(existing, label::fs) == *fs;
    if (!same_fs || label_of(existing, label::source) != wanted_source ||
        !size_fits(existing.value("size_bytes", std::uint64_t{0}), range)) {
      return csi_fail(StatusCode::ALREADY_EXISTS,
                      "volume \"" + in.name() +
                          "\" exists with another size, filesystem or source; delete it or pick "
                          "another name");
    }
    for (const auto& cap : in.volume_capabilities()) {
      if (auto r = check_capability_fits(cap, label_of(existing, label::fs)); !r) {
        return csi_fail(StatusCode::ALREADY_EXISTS,
                        "volume \"" + in.name() + "\" exists: " + r.error().message);
      }
    }
    fill_volume(existing, in, out);
    return {};
  };

  std::lock_guard lock(mutex_);
  auto existing = agent_.find_volume(id);
  if (!existing) return agent_failed("look up volume " + id, existing.error());
  if (*existing) return same_again(**existing);
  if (auto snap = agent_.find_snapshot(id); snap && *snap) {
    return csi_fail(StatusCode::ALREADY_EXISTS,
                    "a snapshot named " + id + " exists; pick another name for the volume");
  }

  json labels = {{label::name, in.name()}, {label::source, wanted_source}};
  Result<json> made = tl::unexpected(Error{});
  if (!source) {
    auto size = size_for(range);
    if (!size) return tl::unexpected(size.error());
    labels[label::fs] = *fs;
    json args = {{"name", id}, {"size_bytes", *size}, {"labels", labels}};
    if (*fs != "none") args["filesystem"] = *fs;
    made = agent_.call("volume.create", args);
  } else {
    // From a snapshot, or from a volume through a passing snapshot: either
    // way the new volume is a restore (a thin snapshot made writable), the
    // same size and filesystem as its source.
    std::string snapshot;
    std::string source_fs;
    std::uint64_t source_size = 0;
    bool passing = false;
    if (source->has_snapshot()) {
      snapshot = source->snapshot().snapshot_id();
      auto snap = agent_.find_snapshot(snapshot);
      if (!snap) return agent_failed("look up snapshot " + snapshot, snap.error());
      if (!*snap) {
        return csi_fail(StatusCode::NOT_FOUND, "source snapshot \"" + snapshot + "\" not found");
      }
      source_fs = label_of(**snap, label::fs);
      source_size = (*snap)->value("size_bytes", std::uint64_t{0});
    } else if (source->has_volume()) {
      const std::string& vol = source->volume().volume_id();
      auto v = agent_.find_volume(vol);
      if (!v) return agent_failed("look up volume " + vol, v.error());
      if (!*v) return csi_fail(StatusCode::NOT_FOUND, "source volume \"" + vol + "\" not found");
      source_fs = label_of(**v, label::fs);
      source_size = (*v)->value("size_bytes", std::uint64_t{0});
      snapshot = id + std::string(kCloneSourceSuffix);
      // A passing snapshot left by a create that died half-way goes first.
      (void)agent_.call("snapshot.delete", {{"name", snapshot}});
      auto taken =
          agent_.call("snapshot.create",
                      {{"volume", vol}, {"name", snapshot}, {"labels", {{label::fs, source_fs}}}});
      if (!taken) return agent_failed("snapshot source volume " + vol, taken.error());
      passing = true;
    } else {
      return csi_fail(StatusCode::INVALID_ARGUMENT,
                      "volume_content_source names neither a snapshot nor a volume");
    }
    if (source_fs.empty()) source_fs = "none";  // not made through this driver: raw
    auto fail_with = [&](CsiError e) -> CsiResult<void> {
      if (passing) (void)agent_.call("snapshot.delete", {{"name", snapshot}});
      return tl::unexpected(std::move(e));
    };
    if (!size_fits(source_size, range)) {
      return fail_with(
          {StatusCode::OUT_OF_RANGE, "the source holds " + std::to_string(source_size) +
                                         " bytes, outside capacity_range; a volume from a "
                                         "source has the source's size"});
    }
    bool fs_asked = !in.parameters().empty() ||
                    std::any_of(in.volume_capabilities().begin(), in.volume_capabilities().end(),
                                [](const VolumeCapability& c) {
                                  return c.has_mount() && !c.mount().fs_type().empty();
                                });
    if (fs_asked && *fs != source_fs) {
      return fail_with(
          {StatusCode::INVALID_ARGUMENT, "the source holds " + source_fs + ", not " + *fs +
                                             "; a volume from a source keeps its filesystem"});
    }
    for (const auto& cap : in.volume_capabilities()) {
      if (auto r = check_capability_fits(cap, source_fs); !r) return fail_with(r.error());
    }
    labels[label::fs] = source_fs;
    made = agent_.call("restore", {{"snapshot", snapshot}, {"name", id}, {"labels", labels}});
    if (passing) {
      if (auto r = agent_.call("snapshot.delete", {{"name", snapshot}}); !r)
        log::warn("CreateVolume " + in.name() + ": passing snapshot " + snapshot +
                  " left: " + r.error().message());
    }
  }
  if (!made) {
    if (made.error().kind == "exists") {
      // Made meanwhile by someone else (not through this driver's lock).
      auto again = agent_.find_volume(id);
      if (again && *again) return same_again(**again);
    }
    return agent_failed("create volume " + id, made.error());
  }
  fill_volume(*made, in, out);
  log::info("CreateVolume " + in.name() + ": made " + id);
  return {};
}

grpc::Status ControllerService::CreateVolume(grpc::ServerContext*, const CreateVolumeRequest* in,
                                             CreateVolumeResponse* out) {
  return rpc_status(create_volume(*in, out->mutable_volume()), "CreateVolume");
}

grpc::Status ControllerService::DeleteVolume(grpc::ServerContext*, const DeleteVolumeRequest* in,
                                             DeleteVolumeResponse*) {
  auto run = [&]() -> CsiResult<void> {
    if (in->volume_id().empty())
      return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_id is empty");
    std::lock_guard lock(mutex_);
    auto v = agent_.find_volume(in->volume_id());
    if (!v) return agent_failed("look up volume " + in->volume_id(), v.error());
    if (!*v) return {};  // gone already: success, as the spec asks
    auto r = agent_.call("volume.delete", {{"name", in->volume_id()}});
    if (!r && r.error().kind != "not_found")
      return agent_failed("delete volume " + in->volume_id(), r.error());
    return {};
  };
  return rpc_status(run(), "DeleteVolume");
}

grpc::Status ControllerService::ValidateVolumeCapabilities(
    grpc::ServerContext*, const ValidateVolumeCapabilitiesRequest* in,
    ValidateVolumeCapabilitiesResponse* out) {
  auto run = [&]() -> CsiResult<void> {
    if (in->volume_id().empty())
      return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_id is empty");
    if (in->volume_capabilities().empty())
      return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_capabilities is empty");
    auto v = agent_.find_volume(in->volume_id());
    if (!v) return agent_failed("look up volume " + in->volume_id(), v.error());
    if (!*v) return csi_fail(StatusCode::NOT_FOUND, "volume \"" + in->volume_id() + "\" not found");
    std::string fs = label_of(**v, label::fs);
    if (fs.empty()) fs = "none";
    for (const auto& key_value : in->parameters()) {
      if (key_value.first.rfind("csi.storage.k8s.io/", 0) == 0) continue;
      if (key_value.first != "fsType" || key_value.second != fs) {
        out->set_message("parameter " + key_value.first + "=" + key_value.second +
                         " does not describe this volume (fsType " + fs + ")");
        return {};
      }
    }
    for (const auto& cap : in->volume_capabilities()) {
      auto ok = check_capability(cap);
      if (ok) ok = check_capability_fits(cap, fs);
      if (!ok) {
        out->set_message(ok.error().message);  // not confirmed: no `confirmed`
        return {};
      }
    }
    auto* confirmed = out->mutable_confirmed();
    *confirmed->mutable_volume_context() = in->volume_context();
    *confirmed->mutable_volume_capabilities() = in->volume_capabilities();
    *confirmed->mutable_parameters() = in->parameters();
    *confirmed->mutable_mutable_parameters() = in->mutable_parameters();
    return {};
  };
  return rpc_status(run(), "ValidateVolumeCapabilities");
}

grpc::Status ControllerService::GetCapacity(grpc::ServerContext*, const GetCapacityRequest* in,
                                            GetCapacityResponse* out) {
  auto run = [&]() -> CsiResult<void> {
    if (in->has_accessible_topology()) {
      auto it = in->accessible_topology().segments().find(std::string(kTopologyKey));
      if (it == in->accessible_topology().segments().end() || it->second != node_id_) {
        out->set_available_capacity(0);  // another node's pool
        return {};
      }
    }
    // The pool's status comes with any page of volume.list; one row will do.
    auto listed = agent_.call("volume.list", {{"limit", 1}});
    if (!listed) return agent_failed("read the pool's status", listed.error());
    const json pool = listed->value("pool", json::object());
    std::uint64_t block = pool.value("block_bytes", std::uint64_t{0});
    std::uint64_t total = pool.value("total_data_blocks", std::uint64_t{0});
    std::uint64_t used = pool.value("used_data_blocks", std::uint64_t{0});
    if (block == 0) {
      return csi_fail(StatusCode::INTERNAL,
                      "stepsnapd's volume.list gave no pool block_bytes; upgrade stepsnapd");
    }
    // A pool that is not writable has nothing to give.
    bool writable = pool.value("mode", "") == "rw" && !pool.value("needs_check", false);
    std::uint64_t free = writable && total > used ? (total - used) * block : 0;
    out->set_available_capacity(static_cast<std::int64_t>(free));
    // Thin volumes may be larger than the free space; this is what a new
    // volume's blocks can fill today.
    out->mutable_maximum_volume_size()->set_value(static_cast<std::int64_t>(free));
    return {};
  };
  return rpc_status(run(), "GetCapacity");
}

grpc::Status ControllerService::ControllerGetCapabilities(grpc::ServerContext*,
                                                          const ControllerGetCapabilitiesRequest*,
                                                          ControllerGetCapabilitiesResponse* out) {
  for (auto type : {ControllerServiceCapability::RPC::CREATE_DELETE_VOLUME,
                    ControllerServiceCapability::RPC::CREATE_DELETE_SNAPSHOT,
                    ControllerServiceCapability::RPC::LIST_SNAPSHOTS,
                    ControllerServiceCapability::RPC::CLONE_VOLUME,
                    ControllerServiceCapability::RPC::GET_CAPACITY}) {
    out->add_capabilities()->mutable_rpc()->set_type(type);
  }
  return grpc::Status::OK;
}

CsiResult<void> ControllerService::create_snapshot(const CreateSnapshotRequest& in, Snapshot* out) {
  if (in.name().empty()) return csi_fail(StatusCode::INVALID_ARGUMENT, "name is empty");
  if (in.source_volume_id().empty())
    return csi_fail(StatusCode::INVALID_ARGUMENT, "source_volume_id is empty");
  for (const auto& key_value : in.parameters()) {
    if (key_value.first.rfind("csi.storage.k8s.io/", 0) == 0) continue;
    return csi_fail(StatusCode::INVALID_ARGUMENT,
                    "unknown parameter \"" + key_value.first +
                        "\"; stepsnap-csi's VolumeSnapshotClass takes no parameters");
  }
  const std::string id = device_name_for(in.name());
  std::lock_guard lock(mutex_);
  auto existing = agent_.find_snapshot(id);
  if (!existing) return agent_failed("look up snapshot " + id, existing.error());
  if (*existing) {
    if (label_of(**existing, label::name) != in.name() ||
        label_of(**existing, label::source_volume) != in.source_volume_id()) {
      return csi_fail(StatusCode::ALREADY_EXISTS,
                      "snapshot \"" + in.name() + "\" exists of another volume; pick another name");
    }
    fill_snapshot(**existing, in.source_volume_id(), out);
    return {};
  }
  auto volume = agent_.find_volume(in.source_volume_id());
  if (!volume) return agent_failed("look up volume " + in.source_volume_id(), volume.error());
  if (!*volume) {
    return csi_fail(StatusCode::NOT_FOUND,
                    "source volume \"" + in.source_volume_id() + "\" not found");
  }
  if (auto v = agent_.find_volume(id); v && *v) {
    return csi_fail(StatusCode::ALREADY_EXISTS,
                    "a volume named " + id + " exists; pick another name for the snapshot");
  }
  std::string fs = label_of(**volume, label::fs);
  json labels = {{label::name, in.name()}, {label::source_volume, in.source_volume_id()}};
  if (!fs.empty()) labels[label::fs] = fs;
  auto made = agent_.call("snapshot.create",
                          {{"volume", in.source_volume_id()}, {"name", id}, {"labels", labels}});
  if (!made) return agent_failed("snapshot volume " + in.source_volume_id(), made.error());
  fill_snapshot(*made, in.source_volume_id(), out);
  log::info("CreateSnapshot " + in.name() + ": made " + id);
  return {};
}

grpc::Status ControllerService::CreateSnapshot(grpc::ServerContext*,
                                               const CreateSnapshotRequest* in,
                                               CreateSnapshotResponse* out) {
  return rpc_status(create_snapshot(*in, out->mutable_snapshot()), "CreateSnapshot");
}

grpc::Status ControllerService::DeleteSnapshot(grpc::ServerContext*,
                                               const DeleteSnapshotRequest* in,
                                               DeleteSnapshotResponse*) {
  auto run = [&]() -> CsiResult<void> {
    if (in->snapshot_id().empty())
      return csi_fail(StatusCode::INVALID_ARGUMENT, "snapshot_id is empty");
    std::lock_guard lock(mutex_);
    auto s = agent_.find_snapshot(in->snapshot_id());
    if (!s) return agent_failed("look up snapshot " + in->snapshot_id(), s.error());
    if (!*s) return {};  // gone already
    auto r = agent_.call("snapshot.delete", {{"name", in->snapshot_id()}});
    if (!r && r.error().kind != "not_found")
      return agent_failed("delete snapshot " + in->snapshot_id(), r.error());
    return {};
  };
  return rpc_status(run(), "DeleteSnapshot");
}

CsiResult<void> ControllerService::list_snapshots(const ListSnapshotsRequest& in,
                                                  ListSnapshotsResponse* out) {
  if (in.max_entries() < 0)
    return csi_fail(StatusCode::INVALID_ARGUMENT, "max_entries is negative");
  // The token is the name of the last snapshot of the previous page: pages
  // stay right when snapshots come and go in between.
  if (!in.starting_token().empty() && !is_valid_name(in.starting_token())) {
    return csi_fail(StatusCode::ABORTED,
                    "starting_token \"" + in.starting_token() +
                        "\" is not one this driver gave; list again from the start");
  }
  // Every volume and clone by catalog id, to name each snapshot's origin.
  auto listed = agent_.list_all("volume.list", json::object(), "volumes");
  if (!listed) return agent_failed("list volumes", listed.error());
  std::map<std::int64_t, std::string> volume_names;
  for (const auto& v : *listed)
    volume_names[v.value("id", std::int64_t{0})] = v.value("name", "");

  std::vector<json> snapshots;
  if (!in.snapshot_id().empty()) {
    auto s = agent_.find_snapshot(in.snapshot_id());
    if (!s) return agent_failed("look up snapshot " + in.snapshot_id(), s.error());
    if (*s) snapshots.push_back(**s);
  } else {
    json args = json::object();
    if (!in.source_volume_id().empty()) {
      if (!volume_names.empty() &&
          std::none_of(volume_names.begin(), volume_names.end(),
                       [&](const auto& kv) { return kv.second == in.source_volume_id(); }))
        return {};  // no such volume: no snapshots, not an error
      args["volume"] = in.source_volume_id();
    }
    auto all = agent_.list_all("snapshot.list", args, "snapshots");
    if (!all) {
      if (all.error().kind == "not_found") return {};
      return agent_failed("list snapshots", all.error());
    }
    for (const auto& s : *all) snapshots.push_back(s);
  }
  auto source_of = [&](const json& s) {
    std::string from_label = label_of(s, label::source_volume);
    if (!from_label.empty()) return from_label;
    if (s.contains("origin")) return s.value("origin", "");
    auto it = volume_names.find(s.value("origin_id", std::int64_t{0}));
    return it == volume_names.end() ? std::string() : it->second;
  };
  if (!in.source_volume_id().empty()) {
    std::erase_if(snapshots, [&](const json& s) { return source_of(s) != in.source_volume_id(); });
  }
  std::sort(snapshots.begin(), snapshots.end(),
            [](const json& a, const json& b) { return a.value("name", "") < b.value("name", ""); });
  std::size_t limit =
      in.max_entries() > 0 ? static_cast<std::size_t>(in.max_entries()) : snapshots.size();
  std::size_t given = 0;
  for (std::size_t i = 0; i < snapshots.size(); ++i) {
    const std::string name = snapshots[i].value("name", "");
    if (!in.starting_token().empty() && name <= in.starting_token()) continue;
    if (given == limit) {
      out->set_next_token(out->entries(out->entries_size() - 1).snapshot().snapshot_id());
      break;
    }
    fill_snapshot(snapshots[i], source_of(snapshots[i]), out->add_entries()->mutable_snapshot());
    ++given;
  }
  return {};
}

grpc::Status ControllerService::ListSnapshots(grpc::ServerContext*, const ListSnapshotsRequest* in,
                                              ListSnapshotsResponse* out) {
  return rpc_status(list_snapshots(*in, out), "ListSnapshots");
}

}  // namespace stepsnap::csi
