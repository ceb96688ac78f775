// The KubeReader of a pod inside the cluster: HTTPS to the API server with
// the service account's bearer token, the server checked against the
// service account's CA (cpp-httplib's OpenSSL client).
#pragma once

#include <memory>
#include <string>

#include "common/error.h"
#include "csi/kube_reader.h"

namespace stepsnap::csi {

struct KubeApiConfig {
  std::string url;         // https://HOST:PORT
  std::string token_file;  // read at every request: the kubelet rotates it
  std::string ca_file;     // PEM; the server's certificate must chain to it
};

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

// The in-cluster URL from KUBERNETES_SERVICE_HOST and _PORT (an IPv6 host
// in brackets); empty when they are not set (not in a pod).
std::string in_cluster_api_url();

class KubeHttpsReader final : public KubeReader {
 public:
  // EINVAL: a URL that is not https://HOST[:PORT]; ENOENT: no CA file.
  static Result<std::unique_ptr<KubeHttpsReader>> make(const KubeApiConfig& config);
  Result<nlohmann::json> get(const std::string& path) const override;

 private:
  explicit KubeHttpsReader(KubeApiConfig config) : config_(std::move(config)) {}
  KubeApiConfig config_;
};

}  // namespace stepsnap::csi
