// Pod steps (docs/kubernetes.md, "Step snapshots for pods"), inside the
// scripts/vm guest with a real stepsnapd, pool and step tracer: a cgroup tree
// laid out as the kubelet lays it out with the systemd driver (pod slice, one
// child cgroup per container), under <cgroup2>/stepsnap/ as the agent's
// authorisation requires; a pause process there before the registration, an
// init container that writes to the volume and exits, then the main
// container, which writes first thing and last thing.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runner/exec/cgroup.h"
#include "tests/support/step_spawn.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using namespace stepsnap::testing;

// The kubelet's layout under cgroup v2 with the systemd driver, rooted in
// stepsnap/ (owned here, removed innermost first).
struct PodCgroups {
  std::optional<runner::Cgroup> kubepods, qos, pod;
  std::string pod_rel;

  static std::optional<PodCgroups> make(const std::string& uid) {
    PodCgroups p;
    std::string base = "stepsnap/kubepods-" + std::to_string(::getpid()) + ".slice";
    auto a = runner::Cgroup::create(base);
    if (!a) return std::nullopt;
    p.kubepods.emplace(std::move(*a));
    auto b = runner::Cgroup::create(base + "/kubepods-besteffort.slice");
    if (!b) return std::nullopt;
    p.qos.emplace(std::move(*b));
    p.pod_rel = base + "/kubepods-besteffort.slice/kubepods-besteffort-pod" + uid + ".slice";
    auto c = runner::Cgroup::create(p.pod_rel);
    if (!c) return std::nullopt;
    p.pod.emplace(std::move(*c));
    return p;
  }
  // A container's cgroup, as containerd names it.
  Result<runner::Cgroup> container(const std::string& id) const {
    return runner::Cgroup::create(pod_rel + "/cri-containerd-" + id + ".scope");
  }
};

bool wait_for_file(const std::string& path, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (exists(path)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}


std::string code_of(const json& answer) {
  return answer.contains("error") ? answer["error"].value("code", "?") : "ok";
}

class PodStepVm : public StepsnapdFixture {
 protected:
  // An ext4 volume "ws" with one file, mounted at ws_.
  void make_workspace() {
    json vol = ok("volume.create", {{"name", "ws"}, {"size_bytes", 64 << 20}});
    std::string dev = vol.value("path", "");
    ASSERT_FALSE(dev.empty()) << vol.dump();
    ASSERT_EQ(sh("mkfs.ext4 -q -F " + dev).rc, 0);
    ws_ = dir_ + "/mnt/ws";
    ASSERT_NO_FATAL_FAILURE(mount(dev, ws_));
    { std::ofstream(ws_ + "/before") << "before\n"; }
  }

  json register_pod(const std::string& step, const std::string& pod_cgroup, int skip,
                    const std::vector<std::string>& volumes = {"ws"}) {
    return call("step.register", {{"pipeline", "kfp"},
                                  {"run", "run-1"},
                                  {"step", step},
                                  {"cgroup", pod_cgroup},
                                  {"volumes", volumes},
                                  {"policy", "both"},
                                  {"pod_skip_containers", skip}});
  }

  std::string state(const std::string& step) {
    return ok("step.status", {{"pipeline", "kfp"}, {"run", "run-1"}, {"step", step}})
        .value("state", "");
  }

  std::string ws_;
};

TEST_F(PodStepVm, MainContainerIsHeldAndSnapshottedWhilePauseAndInitRunFree) {
  ASSERT_NO_FATAL_FAILURE(make_workspace());
  auto pod = PodCgroups::make("1f2e3d4c_5b6a_4789_a0b1_c2d3e4f5a6b7");
  ASSERT_TRUE(pod) << "cannot make the pod's cgroups";

  // The sandbox runs before the volume is published: its process is there
  // at registration, forked and waiting to exec.
  auto pause_cg = pod->container("sandbox0");
  ASSERT_TRUE(pause_cg) << pause_cg.error().message();
  std::string pause_mark = dir_ + "/pause-ran";
  auto pause = spawn_step(*pause_cg, "touch " + pause_mark + "; exec sleep 600");
  ASSERT_GT(pause.pid, 0);

  // One init container comes after the registration, before the main one.
  json reg = register_pod("train", pod->pod->path(), 1);
  ASSERT_TRUE(reg.value("ok", false)) << reg.dump();
  EXPECT_EQ(reg["result"].value("state", ""), "registered");
  EXPECT_EQ(reg["result"].value("pod_cgroup", ""), pod->pod->path());

  // The pause process execs now, after the registration: never held.
  ASSERT_EQ(::write(pause.go, "g", 1), 1);
  ::close(pause.go);
  EXPECT_TRUE(wait_for_file(pause_mark, 30s)) << "the pause container was held";

  // The init container: its own child cgroup, writes to the volume, exits.
  auto init_cg = pod->container("init0");
  ASSERT_TRUE(init_cg) << init_cg.error().message();
  auto init = spawn_step(*init_cg, "echo init > " + ws_ + "/init; sync");
  ASSERT_GT(init.pid, 0);
  ASSERT_EQ(::write(init.go, "g", 1), 1);
  ::close(init.go);
  // Exits by itself: a held exec would never run its write (the hold is
  // released only after a pre-snapshot, and none is taken for it).
  EXPECT_EQ(exit_code(init.pid), 0);
  EXPECT_EQ(read_file(ws_ + "/init"), "init\n");
  EXPECT_EQ(state("train"), "registered") << "an init container started the step";
  EXPECT_TRUE(events_of("snapshot.created").empty()) << "a snapshot before the main container";
  EXPECT_TRUE(events_of("step.started").empty());

  // The main container: its first and last acts are writes.
  auto main_cg = pod->container("main0");
  ASSERT_TRUE(main_cg) << main_cg.error().message();
  auto main = spawn_step(*main_cg,
                         "echo first > " + ws_ + "/first; sleep 0.2; echo last > " + ws_ + "/last");
  ASSERT_GT(main.pid, 0);
  ASSERT_EQ(::write(main.go, "g", 1), 1);
  ::close(main.go);
  EXPECT_EQ(exit_code(main.pid), 0);

  json st = wait_step_over("kfp", "run-1", "train");
  ASSERT_EQ(st.value("state", ""), "finished") << st.dump(2) << "\n" << read_file(log_path());
  EXPECT_EQ(st.value("exit_status", -1), 0);
  EXPECT_EQ(st.value("cgroup", ""), main_cg->path()) << "the step is the main container";
  ASSERT_EQ(st["pre_snapshots"].size(), 1u);
  ASSERT_EQ(st["post_snapshots"].size(), 1u);

  // Exactly one step start, at the main container's held exec.
  auto started = events_of("step.started");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["data"].value("pid", 0u), static_cast<unsigned>(main.pid));
  EXPECT_GT(started[0]["data"].value("held_ns", 0ll), 0);

  json pre = ok("clone.create", {{"snapshot", st["pre_snapshots"][0]}, {"name", "pre-view"}});
  json post = ok("clone.create", {{"snapshot", st["post_snapshots"][0]}, {"name", "post-view"}});
  ASSERT_NO_FATAL_FAILURE(mount(pre["path"], dir_ + "/mnt/pre"));
  ASSERT_NO_FATAL_FAILURE(mount(post["path"], dir_ + "/mnt/post"));
  EXPECT_EQ(read_file(dir_ + "/mnt/pre/before"), "before\n");
  EXPECT_EQ(read_file(dir_ + "/mnt/pre/init"), "init\n") << "the init container's write";
  EXPECT_FALSE(exists(dir_ + "/mnt/pre/first")) << "the pre-snapshot holds the main's write";
  EXPECT_EQ(read_file(dir_ + "/mnt/post/first"), "first\n");
  EXPECT_EQ(read_file(dir_ + "/mnt/post/last"), "last\n");

  // The sandbox is still there and was never touched.
  EXPECT_EQ(::kill(pause.pid, 0), 0) << "the pause process was killed";
  ::kill(pause.pid, SIGKILL);
  exit_code(pause.pid);
}

TEST_F(PodStepVm, ContainerCountSkipsEveryContainerBeforeTheStepsOne) {
  // Sandbox made after the registration (the kubelet mounts volumes before
  // it starts the sandbox), two init containers, a sidecar listed before
  // the main container: four children before the step's.
  ASSERT_NO_FATAL_FAILURE(make_workspace());
  auto pod = PodCgroups::make("0a0b0c0d_0000_4000_8000_000000000001");
  ASSERT_TRUE(pod);
  json reg = register_pod("evaluate", pod->pod->path(), 4);
  ASSERT_TRUE(reg.value("ok", false)) << reg.dump();

  std::vector<runner::Cgroup> others;
  std::vector<pid_t> sidecars;
  int n = 0;
  for (const char* id : {"sandbox1", "init1", "init2", "wait1"}) {
    auto cg = pod->container(id);
    ASSERT_TRUE(cg) << cg.error().message();
    std::string mark = dir_ + "/ran-" + id;
    bool lasts = n == 0 || n == 3;  // pause and the sidecar keep running
    auto p = spawn_step(*cg, "touch " + mark + (lasts ? "; exec sleep 600" : ""));
    ASSERT_GT(p.pid, 0);
    ASSERT_EQ(::write(p.go, "g", 1), 1);
    ::close(p.go);
    EXPECT_TRUE(wait_for_file(mark, 30s)) << id << " was held";
    if (lasts)
      sidecars.push_back(p.pid);
    else
      EXPECT_EQ(exit_code(p.pid), 0) << id;
    others.push_back(std::move(*cg));
    ++n;
  }
  EXPECT_EQ(state("evaluate"), "registered");

  auto main_cg = pod->container("main1");
  ASSERT_TRUE(main_cg);
  auto main = spawn_step(*main_cg, "echo result > " + ws_ + "/result");
  ASSERT_GT(main.pid, 0);
  ASSERT_EQ(::write(main.go, "g", 1), 1);
  ::close(main.go);
  EXPECT_EQ(exit_code(main.pid), 0);
  // The step ends with the main container although the pause and the
  // sidecar still run in the pod.
  json st = wait_step_over("kfp", "run-1", "evaluate");
  ASSERT_EQ(st.value("state", ""), "finished") << st.dump(2) << "\n" << read_file(log_path());
  EXPECT_EQ(st.value("cgroup", ""), main_cg->path());
  ASSERT_EQ(st["post_snapshots"].size(), 1u);
  json post = ok("clone.create", {{"snapshot", st["post_snapshots"][0]}, {"name", "post-view"}});
  ASSERT_NO_FATAL_FAILURE(mount(post["path"], dir_ + "/mnt/post"));
  EXPECT_EQ(read_file(dir_ + "/mnt/post/result"), "result\n");
  for (pid_t p : sidecars) {
    EXPECT_EQ(::kill(p, 0), 0);
    ::kill(p, SIGKILL);
    exit_code(p);
  }
}

TEST_F(PodStepVm, RefusalsNameTheirCauseAndLeaveNothingRegistered) {
  ASSERT_NO_FATAL_FAILURE(make_workspace());
  auto pod = PodCgroups::make("ffffffff_0000_4000_8000_000000000002");
  ASSERT_TRUE(pod);
  const std::string cg2 = runner::cgroup2_mount_point().value_or("/sys/fs/cgroup");

  // An unknown volume.
  json r = register_pod("a", pod->pod->path(), 1, {"no-such-volume"});
  EXPECT_EQ(code_of(r), "not_found") << r.dump();
  // A pod cgroup outside the agent's subtree, and one that does not exist.
  r = register_pod("a", cg2, 1);
  EXPECT_EQ(code_of(r), "forbidden") << r.dump();
  r = register_pod("a", pod->pod->path() + "-gone", 1);
  EXPECT_EQ(code_of(r), "not_found") << r.dump();
  // Too many containers before the step's: the request is refused as such.
  r = register_pod("a", pod->pod->path(), 65);
  EXPECT_EQ(code_of(r), "invalid_value") << r.dump();
  for (const auto& e : events_of("step.started")) ADD_FAILURE() << e.dump();

  // A pod registered twice: under another step name, and under the same.
  r = register_pod("a", pod->pod->path(), 1);
  ASSERT_EQ(code_of(r), "ok") << r.dump();
  r = register_pod("b", pod->pod->path(), 1);
  EXPECT_EQ(code_of(r), "exists") << r.dump();
  EXPECT_NE(r["error"].value("message", "").find("another step is registered on that cgroup"),
            std::string::npos)
      << r.dump();
  r = register_pod("a", pod->pod->path(), 1);
  EXPECT_EQ(code_of(r), "exists") << r.dump();

  // Unregistered while waiting for its container: the pod's own processes
  // (the sandbox) are not the step's, and are left alone.
  auto pause_cg = pod->container("sandbox2");
  ASSERT_TRUE(pause_cg);
  auto pause = spawn_step(*pause_cg, "exec sleep 600");
  ASSERT_GT(pause.pid, 0);
  ASSERT_EQ(::write(pause.go, "g", 1), 1);
  ::close(pause.go);
  json un = ok("step.unregister", {{"pipeline", "kfp"}, {"run", "run-1"}, {"step", "a"}});
  EXPECT_EQ(un.value("state", ""), "failed") << un.dump();
  EXPECT_EQ(::kill(pause.pid, 0), 0) << "unregistering a pod step killed its sandbox";
  EXPECT_TRUE(events_of("step.started").empty());
  // And the pod is free again (its old watch gone: the tracer would refuse
  // a second watch of it).
  r = register_pod("b", pod->pod->path(), 0);
  EXPECT_EQ(code_of(r), "ok") << r.dump();
  ::kill(pause.pid, SIGKILL);
  exit_code(pause.pid);
}

TEST_F(PodStepVm, PodRemovedBeforeItsContainerCameExpiresTheRegistration) {
  ASSERT_NO_FATAL_FAILURE(make_workspace());
  auto pod = PodCgroups::make("eeeeeeee_0000_4000_8000_000000000003");
  ASSERT_TRUE(pod);
  json r = register_pod("gone", pod->pod->path(), 0);
  ASSERT_EQ(code_of(r), "ok") << r.dump();
  ASSERT_TRUE(pod->pod->remove());
  json st = wait_step_over("kfp", "run-1", "gone");
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump();
  EXPECT_NE(st.value("error", "").find("was removed before the step started"), std::string::npos)
      << st.dump();
}

// --step-cgroup-root: the agent trusts the kubelet's pods' cgroup (here a
// stand-in beneath stepsnap/, where vm tests keep their cgroups) and nothing
// else, stepsnap/ included.
class PodStepKubeletRootVm : public PodStepVm {
 protected:
  PodStepKubeletRootVm() {
    root_ = runner::cgroup2_mount_point().value_or("/sys/fs/cgroup") + "/stepsnap/kubepods-" +
            std::to_string(::getpid()) + ".slice";
    extra_args_ = {"--step-cgroup-root", root_};
  }
  std::string root_;
};

TEST_F(PodStepKubeletRootVm, PodsBeneathTheGivenRootRegisterAndNothingElseDoes) {
  ASSERT_NO_FATAL_FAILURE(make_workspace());
  auto pod = PodCgroups::make("abababab_0000_4000_8000_000000000004");
  ASSERT_TRUE(pod);
  ASSERT_EQ(pod->kubepods->path(), root_);
  auto elsewhere = runner::Cgroup::create("stepsnap/not-kubepods-" + std::to_string(::getpid()));
  ASSERT_TRUE(elsewhere) << elsewhere.error().message();
  json r = register_pod("outside", elsewhere->path(), 0);
  EXPECT_EQ(code_of(r), "forbidden") << r.dump();

  json reg = register_pod("inside", pod->pod->path(), 0);
  ASSERT_EQ(code_of(reg), "ok") << reg.dump();
  auto main_cg = pod->container("main3");
  ASSERT_TRUE(main_cg);
  auto main = spawn_step(*main_cg, "echo done > " + ws_ + "/done");
  ASSERT_GT(main.pid, 0);
  ASSERT_EQ(::write(main.go, "g", 1), 1);
  ::close(main.go);
  EXPECT_EQ(exit_code(main.pid), 0);
  json st = wait_step_over("kfp", "run-1", "inside");
  ASSERT_EQ(st.value("state", ""), "finished") << st.dump(2) << "\n" << read_file(log_path());
  EXPECT_EQ(st["pre_snapshots"].size(), 1u);
  EXPECT_EQ(st["post_snapshots"].size(), 1u);
}

}  // namespace
}  // namespace stepsnap::agent
