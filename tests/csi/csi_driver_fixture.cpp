#include "tests/csi/csi_driver_fixture.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "csi/status_map.h"

namespace stepsnap::testing {

std::string describe(const grpc::Status& s) {
  std::string name = csi::grpc_code_name(s.error_code());
  return s.ok() ? name : name + ": " + s.error_message();
}

v1::VolumeCapability mount_cap(const std::string& fs, v1::VolumeCapability::AccessMode::Mode mode) {
  v1::VolumeCapability c;
  c.mutable_mount()->set_fs_type(fs);
  c.mutable_access_mode()->set_mode(mode);
  return c;
}

v1::VolumeCapability block_cap() {
  v1::VolumeCapability c;
  c.mutable_block();
  c.mutable_access_mode()->set_mode(v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return c;
}

pid_t CsiDriverFixture::start_driver(const std::string& endpoint, const std::string& agent_socket,
                                     const std::string& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (!std::freopen(log.c_str(), "a", stderr)) ::_exit(126);
    if (!std::freopen(log.c_str(), "a", stdout)) ::_exit(126);
    std::vector<std::string> args = {
        "stepsnap-csi", "--endpoint", "unix://" + endpoint, "--agent-socket", agent_socket,
        "--node-id",    node_,        "--kubelet-dir",      kubelet_,         "--log-level",
        "debug"};
    args.insert(args.end(), driver_args_.begin(), driver_args_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(STEPSNAP_CSI_PATH, argv.data());
    ::_exit(127);
  }
  for (int i = 0; i < 600 && !exists(endpoint); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return pid;
}

int CsiDriverFixture::stop_driver(pid_t pid, int sig) {
  if (pid <= 0) return -1;
  ::kill(pid, sig);
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 600 && (done = ::waitpid(pid, &status, WNOHANG)) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    ADD_FAILURE() << "stepsnap-csi did not stop within 30 s of signal " << sig << "; killed";
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  return status;
}

void CsiDriverFixture::SetUp() {
  StepsnapdFixture::SetUp();
  if (IsSkipped() || HasFatalFailure()) return;
  kubelet_ = dir_ + "/kubelet";
  std::filesystem::create_directories(kubelet_ + "/pods");
  endpoint_ = dir_ + "/csi/csi.sock";
  before_driver();
  if (HasFatalFailure()) return;
  driver_ = start_driver(endpoint_, socket_, dir_ + "/csi.log");
  ASSERT_TRUE(exists(endpoint_)) << "stepsnap-csi made no socket; its log:\n"
                                 << read_file(dir_ + "/csi.log");
  auto channel = grpc::CreateChannel("unix://" + endpoint_, grpc::InsecureChannelCredentials());
  identity_ = v1::Identity::NewStub(channel);
  controller_ = v1::Controller::NewStub(channel);
  node_stub_ = v1::Node::NewStub(channel);
}

void CsiDriverFixture::TearDown() {
  if (!kubelet_.empty()) {
    // Everything the driver mounted under our kubelet dir, innermost first,
    // before the fixture removes the devices.
    std::vector<std::string> under;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string id, parent, dev, root, point;
      f >> id >> parent >> dev >> root >> point;
      if (point.rfind(kubelet_ + "/", 0) == 0) under.push_back(point);
    }
    for (auto it = under.rbegin(); it != under.rend(); ++it) sh("umount " + *it);
  }
  if (driver_ > 0) {
    stop_driver(driver_, SIGTERM);
    if (HasFailure()) std::cerr << "stepsnap-csi's log:\n" << read_file(dir_ + "/csi.log");
  }
  StepsnapdFixture::TearDown();
}

grpc::Status CsiDriverFixture::create_volume(const std::string& name, std::int64_t bytes,
                                             v1::CreateVolumeResponse* out,
                                             const std::map<std::string, std::string>& parameters,
                                             const v1::VolumeContentSource* source,
                                             const v1::VolumeCapability& cap) {
  v1::CreateVolumeRequest req;
  req.set_name(name);
  if (bytes > 0) req.mutable_capacity_range()->set_required_bytes(bytes);
  *req.add_volume_capabilities() = cap;
  for (const auto& [k, v] : parameters) (*req.mutable_parameters())[k] = v;
  if (source) *req.mutable_volume_content_source() = *source;
  return call(controller_.get(), &v1::Controller::Stub::CreateVolume, req, out);
}

grpc::Status CsiDriverFixture::delete_volume(const std::string& id) {
  v1::DeleteVolumeRequest req;
  req.set_volume_id(id);
  v1::DeleteVolumeResponse out;
  return call(controller_.get(), &v1::Controller::Stub::DeleteVolume, req, &out);
}

grpc::Status CsiDriverFixture::create_snapshot(const std::string& name, const std::string& volume,
                                               v1::CreateSnapshotResponse* out) {
  v1::CreateSnapshotRequest req;
  req.set_name(name);
  req.set_source_volume_id(volume);
  return call(controller_.get(), &v1::Controller::Stub::CreateSnapshot, req, out);
}

grpc::Status CsiDriverFixture::stage(const std::string& id, const std::string& staging,
                                     const v1::VolumeCapability& cap) {
  v1::NodeStageVolumeRequest req;
  req.set_volume_id(id);
  req.set_staging_target_path(staging);
  *req.mutable_volume_capability() = cap;
  v1::NodeStageVolumeResponse out;
  return call(node_stub_.get(), &v1::Node::Stub::NodeStageVolume, req, &out);
}

grpc::Status CsiDriverFixture::unstage(const std::string& id, const std::string& staging) {
  v1::NodeUnstageVolumeRequest req;
  req.set_volume_id(id);
  req.set_staging_target_path(staging);
  v1::NodeUnstageVolumeResponse out;
  return call(node_stub_.get(), &v1::Node::Stub::NodeUnstageVolume, req, &out);
}

grpc::Status CsiDriverFixture::publish(const std::string& id, const std::string& staging,
                                       const std::string& target, bool read_only,
                                       const v1::VolumeCapability& cap) {
  v1::NodePublishVolumeRequest req;
  req.set_volume_id(id);
  req.set_staging_target_path(staging);
  req.set_target_path(target);
  req.set_readonly(read_only);
  *req.mutable_volume_capability() = cap;
  v1::NodePublishVolumeResponse out;
  return call(node_stub_.get(), &v1::Node::Stub::NodePublishVolume, req, &out);
}

grpc::Status CsiDriverFixture::unpublish(const std::string& id, const std::string& target) {
  v1::NodeUnpublishVolumeRequest req;
  req.set_volume_id(id);
  req.set_target_path(target);
  v1::NodeUnpublishVolumeResponse out;
  return call(node_stub_.get(), &v1::Node::Stub::NodeUnpublishVolume, req, &out);
}

std::string CsiDriverFixture::staging_path(const std::string& id) const {
  std::string dir =
      kubelet_ + "/plugins/kubernetes.io/csi/stepsnap.csi.local/" + id + "/globalmount";
  std::filesystem::create_directories(dir);  // the kubelet makes it
  return dir;
}

std::string CsiDriverFixture::pod_path(const std::string& pod, const std::string& id) const {
  std::string parent = kubelet_ + "/pods/" + pod + "/volumes/kubernetes.io~csi/" + id;
  std::filesystem::create_directories(parent);  // the kubelet makes the parent
  return parent + "/mount";
}

std::string CsiDriverFixture::stage_and_publish(const std::string& id, const std::string& pod) {
  std::string target = pod_path(pod, id);
  auto s = stage(id, staging_path(id));
  EXPECT_RPC_OK(s);
  auto p = publish(id, staging_path(id), target);
  EXPECT_RPC_OK(p);
  return target;
}

}  // namespace stepsnap::testing
