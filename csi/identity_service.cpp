#include "csi/identity_service.h"

#include "common/log.h"
#include "csi/driver_info.h"

namespace stepsnap::csi {

using namespace ::csi::v1;

grpc::Status IdentityService::GetPluginInfo(grpc::ServerContext*, const GetPluginInfoRequest*,
                                            GetPluginInfoResponse* out) {
  out->set_name(std::string(kDriverName));
  out->set_vendor_version(std::string(kDriverVersion));
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(grpc::ServerContext*,
                                                    const GetPluginCapabilitiesRequest*,
                                                    GetPluginCapabilitiesResponse* out) {
  for (auto type : {PluginCapability::Service::CONTROLLER_SERVICE,
                    PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS}) {
    out->add_capabilities()->mutable_service()->set_type(type);
  }
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*, const ProbeRequest*, ProbeResponse* out) {
  auto answer = agent_.call("volume.list", {{"limit", 1}});
  if (!answer) log::debug("probe: stepsnapd not ready: " + answer.error().message());
  out->mutable_ready()->set_value(answer.has_value());
  return grpc::Status::OK;
}

}  // namespace stepsnap::csi
