// A real stepsnap-csi for vm tests: the binary, started beside the
// fixture's real stepsnapd (loop-file dm-thin pool), reached over its Unix
// socket with the generated gRPC stubs, as the kubelet and the sidecars
// reach it. A kubelet directory of the test's own holds every mount, all
// unmounted in TearDown.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "csi/csi.grpc.pb.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {

namespace v1 = ::csi::v1;

// "OK" or "NOT_FOUND: volume \"x\" not found", for assertion messages.
std::string describe(const grpc::Status& s);

#define EXPECT_RPC_OK(s) EXPECT_TRUE((s).ok()) << describe(s)
#define ASSERT_RPC_OK(s) ASSERT_TRUE((s).ok()) << describe(s)
#define EXPECT_RPC_CODE(s, code) EXPECT_EQ((s).error_code(), grpc::StatusCode::code) << describe(s)

v1::VolumeCapability mount_cap(const std::string& fs = "",
                               v1::VolumeCapability::AccessMode::Mode mode =
                                   v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
v1::VolumeCapability block_cap();

class CsiDriverFixture : public StepsnapdFixture {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts stepsnap-csi (--agent-socket agent_socket) and waits for its
  // socket; returns its pid.
  pid_t start_driver(const std::string& endpoint, const std::string& agent_socket,
                     const std::string& log);
  // One RPC with a generous deadline (the guest runs under emulation).
  template <typename Stub, typename Req, typename Resp>
  grpc::Status call(Stub* stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& req, Resp* resp) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    return (stub->*method)(&context, req, resp);
  }

  // CreateVolume with a mount (or the given) capability.
  grpc::Status create_volume(const std::string& name, std::int64_t bytes,
                             v1::CreateVolumeResponse* out,
                             const std::map<std::string, std::string>& parameters = {},
                             const v1::VolumeContentSource* source = nullptr,
                             const v1::VolumeCapability& cap = mount_cap());
  grpc::Status delete_volume(const std::string& id);
  grpc::Status create_snapshot(const std::string& name, const std::string& volume,
                               v1::CreateSnapshotResponse* out);
  grpc::Status stage(const std::string& id, const std::string& staging,
                     const v1::VolumeCapability& cap = mount_cap());
  grpc::Status unstage(const std::string& id, const std::string& staging);
  grpc::Status publish(const std::string& id, const std::string& staging, const std::string& target,
                       bool read_only = false, const v1::VolumeCapability& cap = mount_cap());
  grpc::Status unpublish(const std::string& id, const std::string& target);

  // The kubelet's paths for a volume: its staging folder and its folder in
  // a pod, both under kubelet_.
  std::string staging_path(const std::string& id) const;
  std::string pod_path(const std::string& pod, const std::string& id) const;

  // Stages and publishes volume `id` read-write into pod `pod`; returns the
  // published folder.
  std::string stage_and_publish(const std::string& id, const std::string& pod);

  // Run after stepsnapd is up and before the driver starts (e.g. a stand-in
  // API server the driver's arguments name).
  virtual void before_driver() {}
  std::vector<std::string> driver_args_;  // more arguments for stepsnap-csi

  std::string kubelet_;   // --kubelet-dir
  std::string endpoint_;  // the driver's socket
  const std::string node_ = "node-a";
  pid_t driver_ = -1;
  std::unique_ptr<v1::Identity::Stub> identity_;
  std::unique_ptr<v1::Controller::Stub> controller_;
  std::unique_ptr<v1::Node::Stub> node_stub_;

  // Sends sig to a driver and reaps it; returns its wait status.
  static int stop_driver(pid_t pid, int sig);
};

}  // namespace stepsnap::testing
