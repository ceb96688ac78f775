// CSI Controller, node-local: volumes and snapshots in this node's pool
// through stepsnapd (volume.create/delete, snapshot.create/show/list/delete,
// restore, volume.list's pool status). Run beside each node's stepsnapd,
// driven by external-provisioner and external-snapshotter in their
// per-node (distributed) mode.
#pragma once

#include <mutex>

#include "csi/agent_link.h"
#include "csi/csi.grpc.pb.h"
#include "csi/status_map.h"

namespace stepsnap::csi {

class ControllerService final : public ::csi::v1::Controller::Service {
 public:
  ControllerService(const AgentLink& agent, std::string node_id)
      : agent_(agent), node_id_(std::move(node_id)) {}

  grpc::Status CreateVolume(grpc::ServerContext*, const ::csi::v1::CreateVolumeRequest* in,
                            ::csi::v1::CreateVolumeResponse* out) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const ::csi::v1::DeleteVolumeRequest* in,
                            ::csi::v1::DeleteVolumeResponse* out) override;
  grpc::Status ValidateVolumeCapabilities(
      grpc::ServerContext*, const ::csi::v1::ValidateVolumeCapabilitiesRequest* in,
      ::csi::v1::ValidateVolumeCapabilitiesResponse* out) override;
  grpc::Status GetCapacity(grpc::ServerContext*, const ::csi::v1::GetCapacityRequest* in,
                           ::csi::v1::GetCapacityResponse* out) override;
  grpc::Status ControllerGetCapabilities(
      grpc::ServerContext*, const ::csi::v1::ControllerGetCapabilitiesRequest*,
      ::csi::v1::ControllerGetCapabilitiesResponse* out) override;
  grpc::Status CreateSnapshot(grpc::ServerContext*, const ::csi::v1::CreateSnapshotRequest* in,
                              ::csi::v1::CreateSnapshotResponse* out) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext*, const ::csi::v1::DeleteSnapshotRequest* in,
                              ::csi::v1::DeleteSnapshotResponse* out) override;
  grpc::Status ListSnapshots(grpc::ServerContext*, const ::csi::v1::ListSnapshotsRequest* in,
                             ::csi::v1::ListSnapshotsResponse* out) override;

 private:
  CsiResult<void> create_volume(const ::csi::v1::CreateVolumeRequest& in, ::csi::v1::Volume* out);
  CsiResult<void> create_snapshot(const ::csi::v1::CreateSnapshotRequest& in,
                                  ::csi::v1::Snapshot* out);
  CsiResult<void> list_snapshots(const ::csi::v1::ListSnapshotsRequest& in,
                                 ::csi::v1::ListSnapshotsResponse* out);
  // The made (or found) device as a CSI Volume, pinned to this node.
  void fill_volume(const nlohmann::json& device, const ::csi::v1::CreateVolumeRequest& in,
                   ::csi::v1::Volume* out) const;
  // Whether the topology requirement lets the volume live on this node.
  bool accessible_here(const ::csi::v1::TopologyRequirement& requirement) const;

  const AgentLink& agent_;
  const std::string node_id_;
  // One create or delete at a time: "is the name taken" and "make it" are
  // two agent calls, and a CO retries a slow call while the first still
  // runs; without this both would try to make the device.
  std::mutex mutex_;
};

}  // namespace stepsnap::csi
