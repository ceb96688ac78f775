// stepsnap-csi's command line. Parsing and validation only; main() acts on it.
#pragma once

#include <string>
#include <variant>

#include "common/error.h"

namespace stepsnap::csi {

struct CsiOptions {
  std::string endpoint;  // the socket's path, from unix:///PATH
  std::string agent_socket = "/run/stepsnap/stepsnapd.sock";
  std::string node_id;
  std::string kubelet_dir = "/var/lib/kubelet";  // lexically normal, no trailing /
  std::string log_level = "info";
  // Pod steps (csi/pod_registrar.h). No API server (empty kube_api: not in
  // a pod and no --kube-api): NodePublishVolume registers no pod.
  std::string kube_api;  // https://HOST:PORT, default from KUBERNETES_SERVICE_HOST/_PORT
  std::string kube_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::string kube_ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  std::string cgroup_driver = "systemd";  // the kubelet's --cgroup-driver
  // The cgroup v2 directory holding the kubelet's kubepods tree, as
  // stepsnapd sees it; empty: the cgroup2 mount found at start.
  std::string kubepods_parent;
};

struct HelpRequested {
  std::string text;
};

// "unix:///csi/csi.sock" or "unix:/csi/csi.sock" -> "/csi/csi.sock"; the
// kubelet and the sidecars only speak Unix sockets to a node plugin.
Result<std::string> parse_endpoint(const std::string& endpoint);

Result<std::variant<CsiOptions, HelpRequested>> parse_csi_options(int argc,
                                                                  const char* const* argv);

}  // namespace stepsnap::csi
