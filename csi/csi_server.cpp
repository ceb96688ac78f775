#include "csi/csi_server.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/cgroup_files.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "csi/kube_https_reader.h"

namespace stepsnap::csi {

namespace {

// A socket file at `path` nobody serves is left by a killed driver: remove
// it. One somebody serves is another driver: refuse.
Status clear_stale_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("check the endpoint", path);
  }
  if (!S_ISSOCK(st.st_mode))
    return fail("serve at", path, EEXIST, "it is not a socket; remove it or pick another path");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("check the endpoint", path);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
    return fail("serve at", path, EADDRINUSE, "another process serves it; stop that one first");
  if (::unlink(path.c_str()) != 0) return fail_errno("remove the stale socket", path);
  return {};
}

}  // namespace

// Where step pods are read from, when there is an API server to read them.
struct PodSource {
  std::unique_ptr<KubeReader> reader;
  CgroupDriver driver = CgroupDriver::systemd;
  std::string kubepods_parent;
};

namespace {

Result<std::optional<PodSource>> pod_source(const CsiOptions& options) {
  std::string url = options.kube_api.empty() ? in_cluster_api_url() : options.kube_api;
  if (url.empty()) {
    log::info(
        "stepsnap-csi: no API server (not in a pod, no --kube-api): step pods are not "
        "registered");
    return std::nullopt;
  }
  auto reader = KubeHttpsReader::make({url, options.kube_token_file, options.kube_ca_file});
  if (!reader) return tl::unexpected(reader.error());
  PodSource source{
      std::move(*reader),
      options.cgroup_driver == "cgroupfs" ? CgroupDriver::cgroupfs : CgroupDriver::systemd,
      options.kubepods_parent};
  if (source.kubepods_parent.empty()) {
    auto mount = cgroup2_mount_point();
    if (!mount) return tl::unexpected(mount.error().context("find the kubelet's cgroups"));
    source.kubepods_parent = *mount;
  }
  log::info("stepsnap-csi: step pods read from " + url + ", their cgroups under " +
            source.kubepods_parent + " (" + options.cgroup_driver + " driver)");
  return source;
}

std::unique_ptr<PodRegistrar> make_registrar(const AgentLink& agent,
                                             std::optional<PodSource> source) {
  if (!source) return nullptr;
  return std::make_unique<PodRegistrar>(agent, std::move(source->reader), source->driver,
                                        std::move(source->kubepods_parent));
}

}  // namespace

CsiServer::CsiServer(const CsiOptions& options, std::optional<PodSource> pods)
    : options_(options),
      agent_(options.agent_socket),
      pods_(make_registrar(agent_, std::move(pods))),
      identity_(agent_),
      controller_(agent_, options.node_id),
      node_(agent_, options.node_id, options.kubelet_dir, pods_.get()) {}

Result<std::unique_ptr<CsiServer>> CsiServer::start(const CsiOptions& options) {
  const std::string& path = options.endpoint;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (auto r = clear_stale_socket(path); !r) return tl::unexpected(r.error());
  auto pods = pod_source(options);
  if (!pods) return tl::unexpected(pods.error());
  std::unique_ptr<CsiServer> s(new CsiServer(options, std::move(*pods)));
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort("unix://" + path, grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(&s->identity_);
  builder.RegisterService(&s->controller_);
  builder.RegisterService(&s->node_);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || !bound) {
    s->server_.reset();
    return fail("serve CSI at", path, EADDRNOTAVAIL,
                "gRPC could not listen there; check the directory exists and is writable");
  }
  // The kubelet and the sidecars run as root; nobody else talks to us.
  if (::chmod(path.c_str(), 0600) != 0)
    log::warn("chmod 0600 " + path + ": " + std::strerror(errno));
  log::info("stepsnap-csi: serving CSI at unix://" + path + " for node " + options.node_id +
            ", stepsnapd at " + options.agent_socket);
  return s;
}

void CsiServer::stop() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
  server_.reset();
  if (::unlink(options_.endpoint.c_str()) != 0 && errno != ENOENT)
    log::warn("remove " + options_.endpoint + ": " + std::strerror(errno));
}

}  // namespace stepsnap::csi
