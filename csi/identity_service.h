// CSI Identity: who the plugin is, what it offers, whether it is ready.
#pragma once

#include "csi/agent_link.h"
#include "csi/csi.grpc.pb.h"

namespace stepsnap::csi {

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  explicit IdentityService(const AgentLink& agent) : agent_(agent) {}

  grpc::Status GetPluginInfo(grpc::ServerContext*, const ::csi::v1::GetPluginInfoRequest*,
                             ::csi::v1::GetPluginInfoResponse* out) override;
  // CONTROLLER_SERVICE and VOLUME_ACCESSIBILITY_CONSTRAINTS: every volume
  // is reachable from its own node only.
  grpc::Status GetPluginCapabilities(grpc::ServerContext*,
                                     const ::csi::v1::GetPluginCapabilitiesRequest*,
                                     ::csi::v1::GetPluginCapabilitiesResponse* out) override;
  // ready is true once stepsnapd answers a volume.list, false before (the
  // driver itself is up: the CO waits, it does not restart us).
  grpc::Status Probe(grpc::ServerContext*, const ::csi::v1::ProbeRequest*,
                     ::csi::v1::ProbeResponse* out) override;

 private:
  const AgentLink& agent_;
};

}  // namespace stepsnap::csi
