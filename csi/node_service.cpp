#include "csi/node_service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <map>
#include <system_error>

#include "common/log.h"
#include "common/unique_fd.h"
#include "csi/driver_info.h"
#include "csi/mounts.h"
#include "csi/parameters.h"
#include "csi/paths.h"

namespace stepsnap::csi {

using namespace ::csi::v1;
using grpc::StatusCode;
namespace fs = std::filesystem;

namespace {

tl::unexpected<CsiError> kernel_failed(const Error& e) {
  return csi_fail(StatusCode::INTERNAL, e.message());
}

// A capability a volume cannot serve is FAILED_PRECONDITION on the node
// (the spec's "exceeds capabilities"), not a malformed request.
CsiResult<void> fits(const VolumeCapability& cap, const std::string& fs) {
  auto r = check_capability_fits(cap, fs);
  if (!r) return csi_fail(StatusCode::FAILED_PRECONDITION, r.error().message);
  return {};
}

// Whether the mount at `path` shows the filesystem of block device `dev`.
bool shows_device(const MountEntry& m, dev_t dev) { return ::makedev(m.major, m.minor) == dev; }

}  // namespace

CsiResult<NodeService::Device> NodeService::device_of(const std::string& volume_id) const {
  auto v = agent_.find_volume(volume_id);
  if (!v) return tl::unexpected(from_agent_error("look up volume " + volume_id, v.error()));
  if (!*v) return csi_fail(StatusCode::NOT_FOUND, "volume \"" + volume_id + "\" not found");
  Device d{(*v)->value("path", ""), ""};
  const auto& labels = (*v)->value("labels", nlohmann::json::object());
  d.fs = labels.is_object() ? labels.value(label::fs, "") : "";
  if (d.fs.empty()) d.fs = "none";  // not made through this driver: a raw device
  if (d.path.empty()) {
    return csi_fail(StatusCode::FAILED_PRECONDITION,
                    "volume \"" + volume_id + "\" has no active device; check stepsnapd's log");
  }
  return d;
}

CsiResult<std::string> NodeService::checked_path(const std::string& field,
                                                 const std::string& path) const {
  if (path.empty()) return csi_fail(StatusCode::INVALID_ARGUMENT, field + " is empty");
  std::error_code ec;
  std::string dir = fs::weakly_canonical(kubelet_dir_, ec).string();
  if (ec) dir = kubelet_dir_;
  std::string resolved = fs::weakly_canonical(path, ec).string();
  if (ec || !is_inside(kubelet_dir_, path) || !is_inside(dir, resolved)) {
    return csi_fail(StatusCode::INVALID_ARGUMENT, field + " " + path +
                                                      " is outside the kubelet directory " +
                                                      kubelet_dir_ + " (--kubelet-dir)");
  }
  return fs::path(path).lexically_normal().string();
}

CsiResult<void> NodeService::stage(const NodeStageVolumeRequest& in) {
  if (in.volume_id().empty()) return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_id is empty");
  auto staging = checked_path("staging_target_path", in.staging_target_path());
  if (!staging) return tl::unexpected(staging.error());
  if (!in.has_volume_capability())
    return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_capability is missing");
  if (auto r = check_capability(in.volume_capability()); !r) return r;
  auto dev = device_of(in.volume_id());
  if (!dev) return tl::unexpected(dev.error());
  if (auto r = fits(in.volume_capability(), dev->fs); !r) return r;
  // Block: the device node is bound straight into the pod at publish.
  if (in.volume_capability().has_block()) return {};

  auto rdev = block_device_number(dev->path);
  if (!rdev) return kernel_failed(rdev.error());
  auto mounted = mount_at(*staging);
  if (!mounted) return kernel_failed(mounted.error());
  if (*mounted) {
    if (shows_device(**mounted, *rdev)) return {};  // staged already
    return csi_fail(StatusCode::ALREADY_EXISTS, "staging_target_path " + *staging +
                                                    " holds another mount (" + (*mounted)->source +
                                                    "); unstage that first");
  }
  std::error_code ec;
  fs::create_directories(*staging, ec);  // the CO makes it; a missing one costs nothing
  const auto& mount = in.volume_capability().mount();
  auto options = mount_options(mount.mount_flags(), dev->fs,
                               is_read_only_mode(in.volume_capability().access_mode().mode()));
  if (auto r = mount_filesystem(dev->path, *staging, dev->fs, options); !r)
    return kernel_failed(r.error());
  log::info("NodeStageVolume " + in.volume_id() + ": " + dev->path + " at " + *staging);
  return {};
}

CsiResult<void> NodeService::unstage(const NodeUnstageVolumeRequest& in) {
  if (in.volume_id().empty()) return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_id is empty");
  auto staging = checked_path("staging_target_path", in.staging_target_path());
  if (!staging) return tl::unexpected(staging.error());
  auto mounted = mount_at(*staging);
  if (!mounted) return kernel_failed(mounted.error());
  if (!*mounted) {
    // Nothing to undo; still NOT_FOUND for a volume that does not exist.
    auto dev = device_of(in.volume_id());
    if (!dev && dev.error().code == StatusCode::NOT_FOUND) return tl::unexpected(dev.error());
    return {};
  }
  if (auto r = unmount(*staging); !r) return kernel_failed(r.error());
  log::info("NodeUnstageVolume " + in.volume_id() + ": unmounted " + *staging);
  return {};
}

CsiResult<void> NodeService::publish(const NodePublishVolumeRequest& in) {
  if (in.volume_id().empty()) return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_id is empty");
  auto target = checked_path("target_path", in.target_path());
  if (!target) return tl::unexpected(target.error());
  if (!in.has_volume_capability())
    return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_capability is missing");
  if (auto r = check_capability(in.volume_capability()); !r) return r;
  if (in.staging_target_path().empty()) {
    return csi_fail(
        StatusCode::FAILED_PRECONDITION,
        "staging_target_path is empty; this driver stages first (STAGE_UNSTAGE_VOLUME)");
  }
  auto staging = checked_path("staging_target_path", in.staging_target_path());
  if (!staging) return tl::unexpected(staging.error());
  auto dev = device_of(in.volume_id());
  if (!dev) return tl::unexpected(dev.error());
  if (auto r = fits(in.volume_capability(), dev->fs); !r) return r;
  const bool block = in.volume_capability().has_block();
  const bool read_only =
      in.readonly() || is_read_only_mode(in.volume_capability().access_mode().mode());
  if (block && read_only) {
    // A read-only mount does not stop writes through a device node on it
    // (the kernel checks the mount's flag for files, not devices).
    return csi_fail(StatusCode::FAILED_PRECONDITION,
                    "read-only block publishing is not supported: a read-only bind of a device "
                    "node does not refuse writes; publish read-write or use a mount");
  }
  auto rdev = block_device_number(dev->path);
  if (!rdev) return kernel_failed(rdev.error());

  auto existing = mount_at(*target);
  if (!existing) return kernel_failed(existing.error());
  if (*existing) {
    bool same = false;
    if (block) {
      struct stat st {};
      same = ::stat(target->c_str(), &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == *rdev;
    } else {
      same = shows_device(**existing, *rdev);
    }
    if (same && (*existing)->read_only == read_only) return {};  // published already
    return csi_fail(
        StatusCode::ALREADY_EXISTS,
        "target_path " + *target + " is published already, " +
            (same ? std::string("with another read-only setting") : "with another volume") +
            "; unpublish it first");
  }

  // A step pod's step is registered before its first volume is in place,
  // and surely before this call answers: the kubelet starts the pod's
  // sandbox only once every volume is published. Refused: nothing mounted.
  if (pods_) {
    std::map<std::string, std::string> context(in.volume_context().begin(),
                                               in.volume_context().end());
    if (auto r = pods_->on_publish(in.volume_id(), context); !r) return r;
  }

  std::error_code ec;
  std::string source;
  bool made_target = false;
  if (block) {
    fs::create_directories(fs::path(*target).parent_path(), ec);
    made_target = !fs::exists(*target);
    UniqueFd fd(::open(target->c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    if (!fd) return kernel_failed(fail_errno("create", *target).value());
    source = dev->path;
  } else {
    auto staged = mount_at(*staging);
    if (!staged) return kernel_failed(staged.error());
    if (!*staged || !shows_device(**staged, *rdev)) {
      return csi_fail(StatusCode::FAILED_PRECONDITION, "volume \"" + in.volume_id() +
                                                           "\" is not staged at " + *staging +
                                                           "; call NodeStageVolume first");
    }
    made_target = !fs::exists(*target);
    fs::create_directories(*target, ec);
    if (ec) return csi_fail(StatusCode::INTERNAL, "create " + *target + ": " + ec.message());
    source = *staging;
  }
  if (auto r = bind_mount(source, *target, read_only); !r) {
    if (made_target) fs::remove(*target, ec);  // nothing half-made
    return kernel_failed(r.error());
  }
  log::info("NodePublishVolume " + in.volume_id() + ": " + source + " at " + *target +
            (read_only ? " (read-only)" : ""));
  return {};
}

CsiResult<void> NodeService::unpublish(const NodeUnpublishVolumeRequest& in) {
  if (in.volume_id().empty()) return csi_fail(StatusCode::INVALID_ARGUMENT, "volume_id is empty");
  auto target = checked_path("target_path", in.target_path());
  if (!target) return tl::unexpected(target.error());
  auto mounted = mount_at(*target);
  if (!mounted) return kernel_failed(mounted.error());
  if (*mounted) {
    if (auto r = unmount(*target); !r) return kernel_failed(r.error());
  } else {
    auto dev = device_of(in.volume_id());
    if (!dev && dev.error().code == StatusCode::NOT_FOUND) return tl::unexpected(dev.error());
  }
  // The spec: the plugin removes the file or directory it made at target_path.
  std::error_code ec;
  fs::remove(*target, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return csi_fail(StatusCode::INTERNAL, "remove " + *target + ": " + ec.message());
  }
  log::info("NodeUnpublishVolume " + in.volume_id() + ": " + *target + " removed");
  return {};
}

grpc::Status NodeService::NodeStageVolume(grpc::ServerContext*, const NodeStageVolumeRequest* in,
                                          NodeStageVolumeResponse*) {
  std::lock_guard lock(mutex_);
  return rpc_status(stage(*in), "NodeStageVolume");
}

grpc::Status NodeService::NodeUnstageVolume(grpc::ServerContext*,
                                            const NodeUnstageVolumeRequest* in,
                                            NodeUnstageVolumeResponse*) {
  std::lock_guard lock(mutex_);
  return rpc_status(unstage(*in), "NodeUnstageVolume");
}

grpc::Status NodeService::NodePublishVolume(grpc::ServerContext*,
                                            const NodePublishVolumeRequest* in,
                                            NodePublishVolumeResponse*) {
  std::lock_guard lock(mutex_);
  return rpc_status(publish(*in), "NodePublishVolume");
}

grpc::Status NodeService::NodeUnpublishVolume(grpc::ServerContext*,
                                              const NodeUnpublishVolumeRequest* in,
                                              NodeUnpublishVolumeResponse*) {
  std::lock_guard lock(mutex_);
  return rpc_status(unpublish(*in), "NodeUnpublishVolume");
}

grpc::Status NodeService::NodeGetCapabilities(grpc::ServerContext*,
                                              const NodeGetCapabilitiesRequest*,
                                              NodeGetCapabilitiesResponse* out) {
  out->add_capabilities()->mutable_rpc()->set_type(
      NodeServiceCapability::RPC::STAGE_UNSTAGE_VOLUME);
  return grpc::Status::OK;
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext*, const NodeGetInfoRequest*,
                                      NodeGetInfoResponse* out) {
  out->set_node_id(node_id_);
  (*out->mutable_accessible_topology()->mutable_segments())[std::string(kTopologyKey)] = node_id_;
  return grpc::Status::OK;
}

}  // namespace stepsnap::csi
