// runner's gate, inside the scripts/vm guest (label vm): a step's CMD never
// execs before the agent has answered, over runner's own connection, that it
// recorded this registration's pre-snapshot (step.ready). Whatever happens to
// the agent's BPF hold meanwhile: a kill -CONT of every process of the step,
// or the agent killed with nothing pinned, so no hold is left at all.
//
// runner runs in-process (run_exec_with) over a real StepsnapdClient wrapped
// in a client that acts at the very moment runner asks to open its gate: the
// child is then set up and waiting, and the agent has not answered yet.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "protocol/api_client.h"
#include "runner/exec/exec.h"
#include "runner/exec/stepsnapd_client.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// The real client, with `at_gate` run just before the gate's step.ready.
class GateHookClient final : public runner::AgentClient {
 public:
  GateHookClient(std::unique_ptr<runner::StepsnapdClient> real, std::function<void()> at_gate)
      : real_(std::move(real)), at_gate_(std::move(at_gate)) {}

  bool takes_snapshots() const override { return true; }
  Result<runner::VolumeSource> ensure_run_clone(
      const runner::StepRef& ref, const std::string& volume,
      const std::optional<std::string>& snapshot) override {
    auto s = real_->ensure_run_clone(ref, volume, snapshot);
    if (s) clone_path = s->path;
    return s;
  }
  Status register_step(const runner::StepRegistration& r) override {
    return real_->register_step(r);
  }
  Status open_gate(const runner::StepRef& ref) override {
    at_gate_();
    return real_->open_gate(ref);
  }
  Status step_finished(const runner::StepRef& ref, int status) override {
    return real_->step_finished(ref, status);
  }
  Status unregister_step(const runner::StepRef& ref) override {
    return real_->unregister_step(ref);
  }

  std::string clone_path;  // the run's clone of the step's one volume

 private:
  std::unique_ptr<runner::StepsnapdClient> real_;
  std::function<void()> at_gate_;
};

constexpr const char* kCgroup = "/sys/fs/cgroup/stepsnap/p/r1/s1";

std::vector<pid_t> cgroup_pids() {
  std::ifstream in(std::string(kCgroup) + "/cgroup.procs");
  std::vector<pid_t> pids;
  for (pid_t p; in >> p;) pids.push_back(p);
  return pids;
}

class RunnerGateVm : public StepsnapdFixture {
 protected:
  runner::ExecOptions options(const std::string& script) {
    auto o =
        runner::parse_exec_options({"--agent", socket_, "--pipeline", "p", "--run", "r1", "--step",
                                    "s1", "--volume", "ws:/workspace", "--", "sh", "-c", script});
    EXPECT_TRUE(o) << o.error().message();
    return o.value_or(runner::ExecOptions{});
  }

  std::unique_ptr<runner::StepsnapdClient> connect() {
    auto c = runner::StepsnapdClient::connect(socket_);
    EXPECT_TRUE(c) << c.error().message();
    return c ? std::move(*c) : nullptr;
  }

  // run_exec_with, with what it said on stderr.
  int run(const runner::ExecOptions& o, runner::AgentClient& agent, std::string& err) {
    ::testing::internal::CaptureStderr();
    int rc = runner::run_exec_with(o, agent);
    err = ::testing::internal::GetCapturedStderr();
    return rc;
  }
};

// Without a pinned tracer, an agent killed after the registration leaves no
// hold at all: CMD used to exec and run unwatched, with no pre-snapshot.
class RunnerGateUnpinnedVm : public RunnerGateVm {
 protected:
  RunnerGateUnpinnedVm() { pin_bpf_ = false; }
};

TEST_F(RunnerGateUnpinnedVm, WithTheAgentKilledBeforeItConfirmsThePreSnapshotCmdNeverRuns) {
  make_volume("ws", {{"seed", "seed\n"}});
  std::vector<pid_t> at_gate;
  GateHookClient agent(connect(), [&] {
    at_gate = cgroup_pids();
    ASSERT_EQ(::kill(pid_, SIGKILL), 0);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  });
  std::string err;
  int rc = run(options("echo ran > /workspace/ran"), agent, err);

  EXPECT_EQ(rc, 125) << err;
  EXPECT_NE(err.find("stepsnapd did not confirm the pre-snapshot of step p/r1/s1, so CMD was not "
                     "run"),
            std::string::npos)
      << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one line: " << err;
  // At the gate the step was its init alone, in runner's code.
  ASSERT_EQ(at_gate.size(), 1u);
  // CMD never wrote its clone; nothing of the step is left.
  ASSERT_FALSE(agent.clone_path.empty());
  std::string clone = dir_ + "/mnt/clone";
  ASSERT_NO_FATAL_FAILURE(mount(agent.clone_path, clone));
  EXPECT_EQ(read_file(clone + "/seed"), "seed\n");
  EXPECT_FALSE(exists(clone + "/ran")) << "CMD ran without its pre-snapshot";
  EXPECT_FALSE(exists(kCgroup)) << "runner removes the step's cgroup";
}

// kill -CONT of every process of the step while the agent has not answered
// (it is stopped): nothing is held to be continued, and the step's only
// process waits in runner's code. Once the agent answers, the step runs
// with exact snapshots.
TEST_F(RunnerGateVm, ContinuedBeforeTheAgentConfirmsTheStepStillDoesNotReachCmd) {
  make_volume("ws", {});
  std::vector<pid_t> after_cont;
  GateHookClient agent(connect(), [&] {
    ASSERT_EQ(::kill(pid_, SIGSTOP), 0);
    for (pid_t p : cgroup_pids()) ::kill(p, SIGCONT);
    std::this_thread::sleep_for(1s);
    after_cont = cgroup_pids();
    ASSERT_EQ(::kill(pid_, SIGCONT), 0);
  });
  std::string err;
  int rc = run(options("echo ran > /workspace/ran"), agent, err);
  EXPECT_EQ(rc, 0) << err;

  ASSERT_EQ(after_cont.size(), 1u) << "CMD was forked before the gate opened";
  json s = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "s1"}});
  EXPECT_EQ(s.value("state", ""), "finished") << s.dump();
  ASSERT_EQ(s["pre_snapshots"].size(), 1u) << s.dump();
  ASSERT_EQ(s["post_snapshots"].size(), 1u) << s.dump();
  EXPECT_FALSE(exists(mount_snapshot(s["pre_snapshots"][0]) + "/ran"));
  EXPECT_EQ(read_file(mount_snapshot(s["post_snapshots"][0]) + "/ran"), "ran\n");
  // CMD's exec is still the step's start, as the tracer saw it.
  auto started = events_of("step.started");
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["data"]["pre_snapshots"], s["pre_snapshots"]) << started[0].dump();
}

// step.ready answers only for the registration step.register answered,
// over the connection that made it.
TEST_F(RunnerGateVm, StepReadyIsOnlyForThisRegistrationOverItsConnection) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  ASSERT_EQ(sh(std::string("mkdir -p ") + kCgroup).rc, 0);
  json reg = ok("step.register", {{"pipeline", "p"},
                                  {"run", "r1"},
                                  {"step", "s1"},
                                  {"cgroup", kCgroup},
                                  {"volumes", {"ws"}},
                                  {"policy", "both"}});
  ASSERT_TRUE(reg.contains("registration")) << reg.dump();
  std::uint64_t id = reg["registration"];
  json ref = {{"pipeline", "p"}, {"run", "r1"}, {"step", "s1"}};

  json other = ref;
  other["registration"] = id;
  json answer = call("step.ready", other);  // a connection of its own
  EXPECT_EQ(answer["error"].value("code", ""), "forbidden") << answer.dump();

  json stale = ref;
  stale["registration"] = id + 1;
  answer = call("step.ready", stale);
  EXPECT_EQ(answer["error"].value("code", ""), "busy") << answer.dump();
  EXPECT_NE(answer["error"].value("message", "").find("is not the step's"), std::string::npos)
      << answer.dump();

  // Nothing changed: the step is still only registered, with no snapshot.
  json s = ok("step.status", ref);
  EXPECT_EQ(s.value("state", ""), "registered") << s.dump();
  EXPECT_TRUE(s["pre_snapshots"].empty()) << s.dump();
  ok("step.unregister", ref);
  ::rmdir(kCgroup);
}

}  // namespace
}  // namespace stepsnap::testing
