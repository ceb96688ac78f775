// The gRPC server of stepsnap-csi: the three services on one Unix socket.
// Owns the socket file: refuses to take over a socket another process still
// serves, removes a stale one, and removes its own when stopped.
#pragma once

#include <grpcpp/server.h>

#include <memory>
#include <optional>

#include "common/error.h"
#include "csi/agent_link.h"
#include "csi/controller_service.h"
#include "csi/identity_service.h"
#include "csi/node_service.h"
#include "csi/options.h"
#include "csi/pod_registrar.h"

namespace stepsnap::csi {

// Where step pods are read from (csi_server.cpp).
struct PodSource;

class CsiServer {
 public:
  static Result<std::unique_ptr<CsiServer>> start(const CsiOptions& options);
  // Finishes the calls under way (5 s at most), stops, removes the socket.
  void stop();
  ~CsiServer() { stop(); }

 private:
  CsiServer(const CsiOptions& options, std::optional<PodSource> pods);
  CsiOptions options_;
  AgentLink agent_;
  std::unique_ptr<PodRegistrar> pods_;  // before node_, which points at it
  IdentityService identity_;
  ControllerService controller_;
  NodeService node_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace stepsnap::csi
