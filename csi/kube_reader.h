// Reading objects from the Kubernetes API server: the one thing
// stepsnap-csi asks of it (a pod, its claims and their volumes at
// NodePublishVolume). An interface, so the pure logic above it
// (csi/pod_volumes.h) is tested with objects in memory and the HTTPS reader
// (csi/kube_https_reader.h) with a local server.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"

namespace stepsnap::csi {

// Error::kind of a failed get: what the caller can act on.
namespace kube_error {
inline constexpr const char* not_found = "not_found";      // 404
inline constexpr const char* forbidden = "forbidden";      // 401, 403: token or RBAC
inline constexpr const char* unreachable = "unreachable";  // no answer, 5xx: retry later
inline constexpr const char* bad_answer = "bad_answer";    // other status, not JSON
}  // namespace kube_error

class KubeReader {
 public:
  virtual ~KubeReader() = default;
  // GET `path` (e.g. /api/v1/namespaces/NS/pods/NAME): the object, or an
  // Error naming the path with a kind above.
  virtual Result<nlohmann::json> get(const std::string& path) const = 0;
};

}  // namespace stepsnap::csi
