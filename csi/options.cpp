#include "csi/options.h"

#include <boost/program_options.hpp>
#include <cerrno>
#include <filesystem>
#include <sstream>

#include "common/log.h"
#include "common/names.h"

namespace stepsnap::csi {

namespace po = boost::program_options;

Result<std::string> parse_endpoint(const std::string& endpoint) {
  std::string path;
  if (endpoint.rfind("unix://", 0) == 0) {
    path = endpoint.substr(7);
  } else if (endpoint.rfind("unix:", 0) == 0) {
    path = endpoint.substr(5);
  } else {
    return fail("parse --endpoint", endpoint, EINVAL, "give unix:///ABSOLUTE/PATH");
  }
  if (path.empty() || path[0] != '/')
    return fail("parse --endpoint", endpoint, EINVAL, "the socket path must be absolute");
  // sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
  if (path.size() >= 108)
    return fail("parse --endpoint", endpoint, ENAMETOOLONG, "a socket path has at most 107 bytes");
  return path;
}

Result<std::variant<CsiOptions, HelpRequested>> parse_csi_options(int argc,
                                                                  const char* const* argv) {
  CsiOptions o;
  std::string endpoint;
  po::options_description desc(
      "stepsnap-csi: the CSI driver of stepsnap volumes and snapshots (Identity, Controller and\n"
      "Node services on one Unix socket), a client of the node's stepsnapd. See "
      "docs/kubernetes.md.\n\nOptions");
  desc.add_options()("help,h", "print this help and exit")(
      "endpoint", po::value(&endpoint),
      "where to serve CSI: unix:///PATH (required; the socket is removed at exit)")(
      "agent-socket", po::value(&o.agent_socket)->default_value(o.agent_socket),
      "stepsnapd's API socket")("node-id", po::value(&o.node_id),
                                "this node's id, e.g. the Kubernetes node name (required)")(
      "kubelet-dir", po::value(&o.kubelet_dir)->default_value(o.kubelet_dir),
      "publish and stage only to paths under this directory")(
      "log-level", po::value(&o.log_level)->default_value(o.log_level),
      "debug, info, warn or error")(
      "kube-api", po::value(&o.kube_api),
      "the API server, https://HOST[:PORT], for step pods (default in a pod: "
      "KUBERNETES_SERVICE_HOST and _PORT; none: no pod steps)")(
      "kube-token-file", po::value(&o.kube_token_file)->default_value(o.kube_token_file),
      "the bearer token for the API server (read at every request)")(
      "kube-ca-file", po::value(&o.kube_ca_file)->default_value(o.kube_ca_file),
      "the API server's CA certificate (PEM)")(
      "cgroup-driver", po::value(&o.cgroup_driver)->default_value(o.cgroup_driver),
      "the kubelet's cgroup driver: systemd or cgroupfs")(
      "kubepods-parent", po::value(&o.kubepods_parent),
      "the cgroup v2 directory holding the kubelet's kubepods tree, as stepsnapd sees it "
      "(default: the cgroup2 mount)");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return fail("parse options", "", EINVAL, e.what());
  }
  if (vm.count("help")) {
    std::ostringstream text;
    text << desc << "\n";
    return HelpRequested{text.str()};
  }
  if (endpoint.empty())
    return fail("parse options", "--endpoint", EINVAL, "missing; give unix:///PATH");
  auto path = parse_endpoint(endpoint);
  if (!path) return tl::unexpected(path.error());
  o.endpoint = *path;
  if (o.node_id.empty())
    return fail("parse options", "--node-id", EINVAL, "missing; give this node's name");
  // A topology value in Kubernetes: at most 63 characters of [A-Za-z0-9._-].
  if (!is_valid_name(o.node_id))
    return fail("parse options", "--node-id " + o.node_id, EINVAL, std::string(kNameRule));
  if (o.kubelet_dir.empty() || o.kubelet_dir[0] != '/')
    return fail("parse options", "--kubelet-dir " + o.kubelet_dir, EINVAL, "give an absolute path");
  o.kubelet_dir = std::filesystem::path(o.kubelet_dir).lexically_normal().string();
  while (o.kubelet_dir.size() > 1 && o.kubelet_dir.back() == '/') o.kubelet_dir.pop_back();
  if (o.kubelet_dir == "/")
    return fail("parse options", "--kubelet-dir /", EINVAL,
                "the whole file system is not a kubelet directory");
  if (o.cgroup_driver != "systemd" && o.cgroup_driver != "cgroupfs")
    return fail("parse options", "--cgroup-driver " + o.cgroup_driver, EINVAL,
                "give systemd or cgroupfs, as the kubelet's --cgroup-driver");
  if (!o.kubepods_parent.empty()) {
    if (o.kubepods_parent[0] != '/')
      return fail("parse options", "--kubepods-parent " + o.kubepods_parent, EINVAL,
                  "give an absolute path");
    o.kubepods_parent = std::filesystem::path(o.kubepods_parent).lexically_normal().string();
    while (o.kubepods_parent.size() > 1 && o.kubepods_parent.back() == '/')
      o.kubepods_parent.pop_back();
  }
  log::Level level;
  if (!log::parse_level(o.log_level, &level))
    return fail("parse options", "--log-level " + o.log_level, EINVAL,
                "give debug, info, warn or error");
  return o;
}

}  // namespace stepsnap::csi
