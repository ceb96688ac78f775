// The gate between a step's setup and CMD's first instruction, where the
// agent's pre-snapshot goes (label host: real namespaces and a real cgroup).
#include "runner/exec/step_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "runner/exec/cgroup.h"

namespace stepsnap::runner {
namespace {
namespace fs = std::filesystem;

class StepGate : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("step-gate-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    auto cg = Cgroup::create("stepsnap-test/gate-" + std::to_string(::getpid()) + "-" +
                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(cg) << cg.error().message();
    cgroup_.emplace(std::move(*cg));
  }
  void TearDown() override { fs::remove_all(dir_); }

  // CMD's first act is to leave a marker: it shows whether CMD ever ran.
  StepSpec marker_step() {
    StepSpec spec;
    spec.mounts = {{MountOp::Kind::make_private, "", "/"}, {MountOp::Kind::proc, "proc", "/proc"}};
    spec.hostname = "gate";
    spec.env = {"PATH=/usr/bin:/bin"};
    spec.command = {"/usr/bin/touch", marker().string()};
    return spec;
  }
  fs::path marker() const { return dir_ / "cmd-ran"; }

  fs::path dir_;
  std::optional<Cgroup> cgroup_;
};

TEST_F(StepGate, FailedPreSnapshotMeansCmdNeverRuns) {
  bool asked = false;
  auto step = StepProcess::start(marker_step(), cgroup_->dir_fd(), [&]() -> Status {
    asked = true;
    return fail("pre-snapshot", "workspace", EIO);
  });
  ASSERT_FALSE(step);
  EXPECT_TRUE(asked);
  EXPECT_EQ(step.error().kind, "before_exec");
  EXPECT_EQ(step.error().message(), "pre-snapshot workspace: Input/output error");
  EXPECT_FALSE(fs::exists(marker())) << "CMD ran although its pre-snapshot failed";
  auto populated = cgroup_->populated();
  ASSERT_TRUE(populated);
  EXPECT_FALSE(*populated);
}

TEST_F(StepGate, PreSnapshotRunsWhileTheStepWaitsInItsCgroup) {
  bool marker_before = true, populated_before = false;
  auto step = StepProcess::start(marker_step(), cgroup_->dir_fd(), [&]() -> Status {
    marker_before = fs::exists(marker());
    auto p = cgroup_->populated();
    populated_before = p && *p;
    return {};
  });
  ASSERT_TRUE(step) << step.error().message();
  auto status = step->wait();
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(*status, 0);
  EXPECT_FALSE(marker_before) << "CMD ran before the pre-snapshot";
  EXPECT_TRUE(populated_before) << "the waiting step was not in its cgroup";
  EXPECT_TRUE(fs::exists(marker()));
}

TEST_F(StepGate, SetupFailureIsReportedWithTheGateInPlace) {
  auto spec = marker_step();
  spec.mounts.push_back({MountOp::Kind::bind, "/nonexistent-source", "/mnt"});
  bool asked = false;
  auto step = StepProcess::start(spec, cgroup_->dir_fd(), [&]() -> Status {
    asked = true;
    return {};
  });
  ASSERT_FALSE(step);
  EXPECT_FALSE(asked) << "the gate opened for a step whose setup failed";
  EXPECT_EQ(step.error().kind, "setup");
  EXPECT_NE(step.error().message().find("/nonexistent-source"), std::string::npos)
      << step.error().message();
}

TEST_F(StepGate, InitHoldsNoneOfRunnersDescriptors) {
  // runner's descriptors are close-on-exec, and the step's init never
  // execs: it must close them itself (an agent connection held by a step
  // would outlive runner). This one stands for them.
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  auto spec = marker_step();
  spec.command = {"/bin/sleep", "100"};
  auto step = StepProcess::start(spec, cgroup_->dir_fd());
  ::close(fds[0]);
  ::close(fds[1]);
  ASSERT_TRUE(step) << step.error().message();

  // All init keeps is the signalfd it reads signals from.
  std::vector<std::string> open;
  for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(step->pid()) + "/fd"))
    open.push_back(fs::read_symlink(fd.path()).string());
  EXPECT_EQ(open, std::vector<std::string>{"anon_inode:[signalfd]"});

  // SIGTERM to init reaches sleep, which dies of it.
  ASSERT_TRUE(step->signal(SIGTERM));
  auto status = step->wait();
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(*status, 128 + SIGTERM);
}

TEST_F(StepGate, ASignalSentDuringSetupReachesCmd) {
  // Sent to the step's init while it waits at the gate, before CMD exists:
  // it stays pending and goes to CMD once CMD is forked.
  auto spec = marker_step();
  spec.command = {"/bin/sleep", "100"};
  auto step = StepProcess::start(spec, cgroup_->dir_fd(), [&]() -> Status {
    std::ifstream procs(cgroup_->path() + "/cgroup.procs");
    pid_t init = 0;
    if (!(procs >> init)) return fail("read", cgroup_->path() + "/cgroup.procs", EIO);
    if (::kill(init, SIGUSR1) != 0) return fail_errno("signal", "the step's init");
    return {};
  });
  ASSERT_TRUE(step) << step.error().message();
  auto status = step->wait();
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(*status, 128 + SIGUSR1);
}

}  // namespace
}  // namespace stepsnap::runner
