// CSI Node: this node's id and topology, and a volume's way into a pod:
// NodeStage mounts the volume's filesystem once at the kubelet's staging
// path, NodePublish binds it (or, in block mode, the device node) into the
// pod's folder, read-only when asked; the Un- calls undo each. Every call
// is idempotent: a repeat of a done call finds the mount and succeeds.
// Paths outside --kubelet-dir are refused. A publish for a step pod
// registers its step first (csi/pod_registrar.h).
#pragma once

#include <mutex>

#include "csi/agent_link.h"
#include "csi/csi.grpc.pb.h"
#include "csi/pod_registrar.h"
#include "csi/status_map.h"

namespace stepsnap::csi {

class NodeService final : public ::csi::v1::Node::Service {
 public:
  // pods: registers step pods at publish (csi/pod_registrar.h); null when
  // there is no API server to read pods from.
  NodeService(const AgentLink& agent, std::string node_id, std::string kubelet_dir,
              PodRegistrar* pods = nullptr)
      : agent_(agent),
        node_id_(std::move(node_id)),
        kubelet_dir_(std::move(kubelet_dir)),
        pods_(pods) {}

  grpc::Status NodeStageVolume(grpc::ServerContext*, const ::csi::v1::NodeStageVolumeRequest* in,
                               ::csi::v1::NodeStageVolumeResponse*) override;
  grpc::Status NodeUnstageVolume(grpc::ServerContext*,
                                 const ::csi::v1::NodeUnstageVolumeRequest* in,
                                 ::csi::v1::NodeUnstageVolumeResponse*) override;
  grpc::Status NodePublishVolume(grpc::ServerContext*,
                                 const ::csi::v1::NodePublishVolumeRequest* in,
                                 ::csi::v1::NodePublishVolumeResponse*) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext*,
                                   const ::csi::v1::NodeUnpublishVolumeRequest* in,
                                   ::csi::v1::NodeUnpublishVolumeResponse*) override;
  grpc::Status NodeGetCapabilities(grpc::ServerContext*,
                                   const ::csi::v1::NodeGetCapabilitiesRequest*,
                                   ::csi::v1::NodeGetCapabilitiesResponse* out) override;
  grpc::Status NodeGetInfo(grpc::ServerContext*, const ::csi::v1::NodeGetInfoRequest*,
                           ::csi::v1::NodeGetInfoResponse* out) override;

 private:
  struct Device {
    std::string path;  // /dev/mapper/...
    std::string fs;    // ext4, xfs or none
  };
  // The volume's active device; NOT_FOUND when there is no such volume.
  CsiResult<Device> device_of(const std::string& volume_id) const;
  // INVALID_ARGUMENT unless `path` is inside --kubelet-dir, both lexically
  // and once symlinks in the part that exists are resolved.
  CsiResult<std::string> checked_path(const std::string& field, const std::string& path) const;

  CsiResult<void> stage(const ::csi::v1::NodeStageVolumeRequest& in);
  CsiResult<void> unstage(const ::csi::v1::NodeUnstageVolumeRequest& in);
  CsiResult<void> publish(const ::csi::v1::NodePublishVolumeRequest& in);
  CsiResult<void> unpublish(const ::csi::v1::NodeUnpublishVolumeRequest& in);

  const AgentLink& agent_;
  const std::string node_id_;
  const std::string kubelet_dir_;
  PodRegistrar* const pods_;
  // One mount change at a time: "is it mounted" and "mount it" must not
  // interleave with a CO's retry of the same call.
  std::mutex mutex_;
};

}  // namespace stepsnap::csi
