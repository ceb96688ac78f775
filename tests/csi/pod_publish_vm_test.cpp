// Step pods registered by stepsnap-csi at NodePublishVolume, in the
// scripts/vm guest: a real stepsnapd and pool, the real stepsnap-csi
// binary, and in place of the API server a local HTTPS stand-in
// (local_api_server.h; no cluster) serving the pod, its claims and their
// PVs as the API server would. The pod's processes run in a cgroup tree
// laid out as the kubelet lays it out with the systemd driver (as
// tests/agent/daemon/pod_step_vm_test.cpp does), beneath <cgroup2>/stepsnap/
// where the agent's authorisation wants vm tests' step cgroups.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "runner/exec/cgroup.h"
#include "tests/csi/csi_driver_fixture.h"
#include "tests/csi/local_api_server.h"
#include "tests/support/step_spawn.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;


// Starts a process in `cg` running `script` and lets it exec at once.
StepProcess run_in(const runner::Cgroup& cg, const std::string& script) {
  auto p = spawn_step(cg, script);
  if (p.pid > 0) {
    EXPECT_EQ(::write(p.go, "g", 1), 1);
    ::close(p.go);
  }
  return p;
}

const char* kNs = "kubeflow";

class PodPublishVm : public CsiDriverFixture {
 protected:
  void before_driver() override {
    // The guest's init does not bring loopback up; the stand-in listens there.
    sh("ip link set lo up");
    std::string why;
    api_ = LocalApiServer::start(dir_, &why);
    ASSERT_TRUE(api_) << why;
    cgroup2_ = runner::cgroup2_mount_point().value_or("/sys/fs/cgroup");
    // The kubelet's tree: kubepods.slice/kubepods-besteffort.slice/..., in
    // a parent of this test's own (stepsnap-csi --kubepods-parent).
    parent_rel_ = "stepsnap/csi-" + std::to_string(::getpid());
    ASSERT_NO_FATAL_FAILURE(make_cgroup(parent_rel_));
    ASSERT_NO_FATAL_FAILURE(make_cgroup(parent_rel_ + "/kubepods.slice"));
    ASSERT_NO_FATAL_FAILURE(make_cgroup(parent_rel_ + "/kubepods.slice/kubepods-besteffort.slice"));
    driver_args_ = {
        "--kube-api",     api_->url(),     "--kube-token-file", api_->token_file(),
        "--kube-ca-file", api_->ca_file(), "--kubepods-parent", cgroup2_ + "/" + parent_rel_};
  }

  void TearDown() override {
    for (pid_t p : running_) {
      ::kill(p, SIGKILL);
      exit_code(p);
    }
    CsiDriverFixture::TearDown();
    while (!cgroups_.empty()) cgroups_.pop_back();  // innermost first
    api_.reset();
  }

  void make_cgroup(const std::string& rel) {
    auto cg = runner::Cgroup::create(rel);
    ASSERT_TRUE(cg) << cg.error().message();
    cgroups_.push_back(std::move(*cg));
  }

  // The pod's cgroup (systemd driver, BestEffort), made as the kubelet
  // makes it before it publishes the pod's volumes.
  std::string make_pod_cgroup(std::string uid) {
    std::replace(uid.begin(), uid.end(), '-', '_');
    std::string rel = parent_rel_ +
                      "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uid +
                      ".slice";
    make_cgroup(rel);
    return rel;
  }
  // A container's cgroup in the pod, as containerd names it.
  const runner::Cgroup& container(const std::string& pod_rel, const std::string& id) {
    make_cgroup(pod_rel + "/cri-containerd-" + id + ".scope");
    return cgroups_.back();
  }

  // A pod as the API server returns it: an Argo step pod (init; wait and
  // main) with volumes ws and data from claims, and the token's projected
  // volume. annotations: the stepsnap.io ones, or none.
  json pod_object(const std::string& name, const std::string& uid, bool annotated,
                  const std::string& restart = "Never") {
    json pod = json::parse(R"({
      "apiVersion": "v1", "kind": "Pod",
      "spec": {"initContainers": [{"name": "init", "image": "argoexec"}],
               "containers": [{"name": "wait", "image": "argoexec"},
                              {"name": "main", "image": "python"}],
               "volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "ws-claim"}},
                           {"name": "kube-api-access-x", "projected": {"sources": []}},
                           {"name": "data", "persistentVolumeClaim": {"claimName": "data-claim"}}]},
      "status": {"phase": "Pending", "qosClass": "BestEffort"}})");
    pod["metadata"] = {{"name", name}, {"namespace", kNs}, {"uid", uid}};
    if (annotated)
      pod["metadata"]["annotations"] = {{"stepsnap.io/pipeline", "titanic"},
                                        {"stepsnap.io/run", "run-7"},
                                        {"stepsnap.io/step", "train"}};
    pod["spec"]["restartPolicy"] = restart;
    return pod;
  }

  // The two claims, bound to PVs of this driver whose handles are the
  // volumes made through CreateVolume.
  void serve_claims() {
    for (auto [claim, pv, handle] :
         {std::tuple{"ws-claim", "pv-ws", ws_}, {"data-claim", "pv-data", data_}}) {
      api_->put(std::string("/api/v1/namespaces/") + kNs + "/persistentvolumeclaims/" + claim,
                {{"kind", "PersistentVolumeClaim"},
                 {"spec", {{"volumeName", pv}}},
                 {"status", {{"phase", "Bound"}}}});
      api_->put(
          std::string("/api/v1/persistentvolumes/") + pv,
          {{"kind", "PersistentVolume"},
           {"spec", {{"csi", {{"driver", "stepsnap.csi.local"}, {"volumeHandle", handle}}}}}});
    }
  }

  void make_volumes() {
    v1::CreateVolumeResponse out;
    ASSERT_RPC_OK(create_volume("pvc-ws", 64 << 20, &out));
    ws_ = out.volume().volume_id();
    ASSERT_RPC_OK(create_volume("pvc-data", 64 << 20, &out));
    data_ = out.volume().volume_id();
    ASSERT_RPC_OK(stage(ws_, staging_path(ws_)));
    ASSERT_RPC_OK(stage(data_, staging_path(data_)));
  }

  // NodePublishVolume as the kubelet sends it with podInfoOnMount.
  grpc::Status publish_for(const std::string& id, const std::string& pod, const std::string& uid,
                           std::string* target) {
    *target = pod_path(uid, id);
    v1::NodePublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging_path(id));
    req.set_target_path(*target);
    *req.mutable_volume_capability() = mount_cap();
    auto& ctx = *req.mutable_volume_context();
    ctx["csi.storage.k8s.io/pod.name"] = pod;
    ctx["csi.storage.k8s.io/pod.namespace"] = kNs;
    ctx["csi.storage.k8s.io/pod.uid"] = uid;
    ctx["csi.storage.k8s.io/serviceAccount.name"] = "default";
    ctx["csi.storage.k8s.io/ephemeral"] = "false";
    v1::NodePublishVolumeResponse resp;
    return call(node_stub_.get(), &v1::Node::Stub::NodePublishVolume, req, &resp);
  }

  // The file's content in a clone of `snapshot` ("" when absent).
  std::string in_snapshot(const std::string& snapshot, const std::string& file) {
    std::string clone = "view-" + std::to_string(views_++);
    json c = ok("clone.create", {{"snapshot", snapshot}, {"name", clone}});
    std::string at = dir_ + "/mnt/" + clone;
    mount(c.value("path", ""), at);
    return exists(at + "/" + file) ? read_file(at + "/" + file) : "";
  }

  std::unique_ptr<LocalApiServer> api_;
  std::string cgroup2_, parent_rel_, ws_, data_;
  std::vector<runner::Cgroup> cgroups_;
  std::vector<pid_t> running_;
  int views_ = 0;
};

TEST_F(PodPublishVm, AStepPodIsRegisteredAtItsFirstPublishAndSnapshottedOnBothVolumes) {
  ASSERT_NO_FATAL_FAILURE(make_volumes());
  serve_claims();

  // A pod without the annotations: published as before, one GET, no step.
  const std::string plain_uid = "0a0b0c0d-0000-4000-8000-00000000000a";
  api_->put(std::string("/api/v1/namespaces/") + kNs + "/pods/plain",
            pod_object("plain", plain_uid, false));
  std::string plain_rel = make_pod_cgroup(plain_uid);
  std::string plain_target;
  ASSERT_RPC_OK(publish_for(ws_, "plain", plain_uid, &plain_target));
  EXPECT_EQ(api_->requests(),
            (std::vector<std::string>{std::string("/api/v1/namespaces/") + kNs + "/pods/plain"}));
  const runner::Cgroup& plain_main = container(plain_rel, "plain0");
  auto plain = run_in(plain_main, "echo plain > " + plain_target + "/plain");
  ASSERT_GT(plain.pid, 0);
  EXPECT_EQ(exit_code(plain.pid), 0) << "a process of a pod without annotations was held";
  EXPECT_TRUE(events_of("snapshot.created").empty());

  // The step pod: its cgroup exists (the kubelet makes it before
  // publishing), no container in it yet.
  const std::string uid = "1f2e3d4c-5b6a-4789-a0b1-c2d3e4f5a6b7";
  api_->put(std::string("/api/v1/namespaces/") + kNs + "/pods/train-abc",
            pod_object("train-abc", uid, true));
  std::string pod_rel = make_pod_cgroup(uid);
  std::string ws_target, data_target;
  ASSERT_RPC_OK(publish_for(ws_, "train-abc", uid, &ws_target));
  // Registered before the first publish answered, with both volumes.
  json st = ok("step.status", {{"pipeline", "titanic"}, {"run", "run-7"}, {"step", "train"}});
  EXPECT_EQ(st.value("state", ""), "registered") << st.dump();
  // Before its container is picked, the step's cgroup is the pod's.
  EXPECT_EQ(st.value("cgroup", ""), cgroup2_ + "/" + pod_rel) << st.dump();
  std::set<std::string> vols;
  for (const auto& v : st["volumes"])
    vols.insert(v.is_string() ? v.get<std::string>() : v.value("name", ""));
  EXPECT_EQ(vols, (std::set<std::string>{ws_, data_})) << st.dump();
  std::size_t asked = api_->requests().size();
  EXPECT_EQ(asked, 1u + 1 + 2 + 2) << "plain pod; step pod, 2 claims, 2 PVs";
  // The second volume's publish finds the pod registered and asks nothing.
  ASSERT_RPC_OK(publish_for(data_, "train-abc", uid, &data_target));
  EXPECT_EQ(api_->requests().size(), asked);
  // A repeated publish (the kubelet retries) changes nothing.
  std::string again;
  ASSERT_RPC_OK(publish_for(ws_, "train-abc", uid, &again));

  // The sandbox, the init container (writes and exits), the wait sidecar
  // (keeps running), then main, which writes first thing and last thing.
  auto pause = run_in(container(pod_rel, "sandbox"), "exec sleep 600");
  ASSERT_GT(pause.pid, 0);
  running_.push_back(pause.pid);
  auto init = run_in(container(pod_rel, "init"), "echo init > " + ws_target + "/init; sync");
  ASSERT_GT(init.pid, 0);
  EXPECT_EQ(exit_code(init.pid), 0) << "the init container was held";
  auto wait = run_in(container(pod_rel, "wait"), "exec sleep 600");
  ASSERT_GT(wait.pid, 0);
  running_.push_back(wait.pid);
  EXPECT_TRUE(events_of("snapshot.created").empty()) << "a snapshot before the main container";
  const runner::Cgroup& main_cg = container(pod_rel, "main");
  auto main = run_in(main_cg, "echo first > " + ws_target + "/first; echo first > " + data_target +
                                  "/first; sleep 0.2; echo last > " + ws_target +
                                  "/last; echo last > " + data_target + "/last");
  ASSERT_GT(main.pid, 0);
  EXPECT_EQ(exit_code(main.pid), 0);

  st = wait_step_over("titanic", "run-7", "train");
  ASSERT_EQ(st.value("state", ""), "finished")
      << st.dump(2) << "\n"
      << read_file(log_path()) << read_file(dir_ + "/csi.log");
  EXPECT_EQ(st.value("cgroup", ""), main_cg.path()) << "the step is the main container";
  ASSERT_EQ(st["pre_snapshots"].size(), 2u) << st.dump(2);
  ASSERT_EQ(st["post_snapshots"].size(), 2u) << st.dump(2);
  // Each volume's pre-snapshot has what came before main (the init's write
  // on ws) and none of main's; its post-snapshot has main's last write.
  std::set<std::string> origins;
  for (const auto& name : st["pre_snapshots"]) {
    json snap = ok("snapshot.show", {{"name", name}});
    std::string origin = snap.value("origin", "");
    origins.insert(origin);
    EXPECT_EQ(in_snapshot(name, "first"), "") << origin << ": the pre-snapshot has main's write";
    if (origin == ws_) {
      EXPECT_EQ(in_snapshot(name, "init"), "init\n");
    }
  }
  EXPECT_EQ(origins, (std::set<std::string>{ws_, data_}));
  origins.clear();
  for (const auto& name : st["post_snapshots"]) {
    origins.insert(ok("snapshot.show", {{"name", name}}).value("origin", ""));
    EXPECT_EQ(in_snapshot(name, "first"), "first\n");
    EXPECT_EQ(in_snapshot(name, "last"), "last\n");
  }
  EXPECT_EQ(origins, (std::set<std::string>{ws_, data_}));
  EXPECT_EQ(::kill(wait.pid, 0), 0) << "the wait sidecar was killed";
}

TEST_F(PodPublishVm, RefusedPodsFailThePublishSayingWhyAndMountNothing) {
  ASSERT_NO_FATAL_FAILURE(make_volumes());
  serve_claims();
  // restartPolicy Always: a restarted container would shift the count.
  const std::string uid = "2a2b2c2d-0000-4000-8000-00000000000b";
  api_->put(std::string("/api/v1/namespaces/") + kNs + "/pods/always",
            pod_object("always", uid, true, "Always"));
  make_pod_cgroup(uid);
  std::string target;
  auto s = publish_for(ws_, "always", uid, &target);
  EXPECT_RPC_CODE(s, FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("restartPolicy"), std::string::npos) << describe(s);
  EXPECT_NE(s.error_message().find("kubeflow/always"), std::string::npos) << describe(s);
  EXPECT_FALSE(exists(target)) << "a refused publish left its target";

  // The pod was replaced under the same name: another uid.
  s = publish_for(ws_, "always", "3a3b3c3d-0000-4000-8000-00000000000c", &target);
  EXPECT_RPC_CODE(s, FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("replaced"), std::string::npos) << describe(s);

  // No RBAC rule for us: the message says which to give.
  api_->put(std::string("/api/v1/namespaces/") + kNs + "/pods/train-abc",
            pod_object("train-abc", uid, true));
  api_->forbid(true);
  s = publish_for(ws_, "train-abc", uid, &target);
  EXPECT_RPC_CODE(s, PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("get on pods, persistentvolumeclaims, persistentvolumes"),
            std::string::npos)
      << describe(s);
  EXPECT_FALSE(exists(target));
  json st = StepsnapdFixture::call("step.status",
                                   {{"pipeline", "titanic"}, {"run", "run-7"}, {"step", "train"}});
  EXPECT_TRUE(st.contains("error")) << "a refused pod was registered: " << st.dump();
}

}  // namespace
}  // namespace stepsnap::testing
