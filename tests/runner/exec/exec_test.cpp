// `runner exec --no-agent` against the running kernel (label host): real
// namespaces, mounts and cgroups, observed the way a user would.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "runner/exec/cgroup.h"

namespace {
namespace fs = std::filesystem;

struct Outcome {
  int code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class RunnerExec : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("runner-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `[wrapper] runner exec <args>` through the shell; stdout and stderr
  // captured.
  Outcome run(const std::string& args, const std::string& wrapper = "") {
    std::string cmd = wrapper + std::string(RUNNER_PATH) + " exec " + args + " >" +
                      (dir_ / "out").string() + " 2>" + (dir_ / "err").string() + " </dev/null";
    int status = std::system(cmd.c_str());
    Outcome o;
    o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    o.out = slurp(dir_ / "out");
    o.err = slurp(dir_ / "err");
    return o;
  }

  fs::path dir_;
};

TEST_F(RunnerExec, StepIsPidOneWithItsHostnameAndFreshProc) {
  auto o =
      run("--no-agent --hostname stephost -- sh -c 'echo $$ $(hostname) $(ls /proc | grep -c "
          "\"^[0-9]\")'");
  ASSERT_EQ(o.code, 0) << o.err;
  // pid 1, our hostname, and only the step's own processes in /proc (sh and
  // its command substitution children).
  std::istringstream words(o.out);
  std::string pid, host;
  int procs = 0;
  words >> pid >> host >> procs;
  EXPECT_EQ(pid, "1");
  EXPECT_EQ(host, "stephost");
  EXPECT_LE(procs, 4);
}

TEST_F(RunnerExec, ExitCodesAndDeathBySignalPropagate) {
  EXPECT_EQ(run("--no-agent -- true").code, 0);
  EXPECT_EQ(run("--no-agent -- false").code, 1);
  EXPECT_EQ(run("--no-agent -- sh -c 'exit 42'").code, 42);
  // pid 1 cannot signal itself to death, so a child dies and sh reports it.
  EXPECT_EQ(run("--no-agent -- sh -c 'sh -c \"kill -9 \\$\\$\"; exit $?'").code, 137);
  EXPECT_EQ(run("--no-agent -- /nonexistent/cmd").code, 127);
}

TEST_F(RunnerExec, OnlyRequestedVolumesAreMountedAndNothingLeaks) {
  fs::create_directories(dir_ / "vol");
  fs::create_directories(dir_ / "mnt");
  fs::create_directories(dir_ / "ro");
  std::ofstream(dir_ / "vol" / "input") << "hello\n";
  std::string before = slurp("/proc/self/mountinfo");

  auto o = run("--no-agent --volume " + (dir_ / "vol").string() + ":" + (dir_ / "mnt").string() +
               " --volume " + (dir_ / "vol").string() + ":" + (dir_ / "ro").string() + ":ro" +
               " -- sh -c 'cat " + (dir_ / "mnt/input").string() + "; echo out > " +
               (dir_ / "mnt/output").string() + "; touch " + (dir_ / "ro/x").string() +
               " 2>/dev/null && echo ro-writable; test -d " + (dir_ / "mnt/.marshal").string() +
               " && echo marshal'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "hello\nmarshal\n");
  EXPECT_EQ(slurp(dir_ / "vol" / "output"), "out\n");
  EXPECT_FALSE(fs::exists(dir_ / "mnt" / "input")) << "the mount showed on the host";
  EXPECT_EQ(slurp("/proc/self/mountinfo"), before);
}

// Sends SIGTERM to runner half a second after it started `runner exec ARGS`;
// returns runner's exit code.
int exit_code_after_sigterm(const std::string& args) {
  std::string cmd = "sh -c '" + std::string(RUNNER_PATH) + " exec " + args +
                    " 2>/dev/null & pid=$!; sleep 0.5; kill -TERM $pid; wait $pid'";
  int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(RunnerExec, SigtermReachesTheStep) {
  // The step handles SIGTERM and exits 7: runner passes that on.
  EXPECT_EQ(exit_code_after_sigterm(
                "--no-agent -- sh -c \"trap \\\"exit 7\\\" TERM; while :; do sleep 0.1; done\""),
            7);
}

TEST_F(RunnerExec, StepWithoutASigtermHandlerEndsAtOnceAs143) {
  // sleep as pid 1 has no SIGTERM handler, so the kernel would drop the
  // signal; runner ends the step as the signal would end any other process.
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(exit_code_after_sigterm("--no-agent -- sleep 100"), 128 + SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(8))
      << "not the 10 s grace period";
}

TEST_F(RunnerExec, StepHandlingSigtermButRunningOnIsKilledAfterTheGracePeriod) {
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(
      exit_code_after_sigterm(
          "--no-agent -- sh -c \"trap \\\"echo ignored\\\" TERM; while :; do sleep 0.1; done\""),
      137);
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, std::chrono::seconds(10));
  EXPECT_LT(took, std::chrono::seconds(60));
}

TEST_F(RunnerExec, TimeoutKillsTheWholeTreeAndRemovesTheCgroup) {
  auto started = std::chrono::steady_clock::now();
  auto o = run("--no-agent --pipeline p --run timeout" + std::to_string(::getpid()) +
               " --step s --timeout 1 -- sh -c '(sleep 300 &); sleep 300 & sh -c \"sleep 300\" & "
               "sleep 300'");
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(o.code, 124) << o.err;
  EXPECT_LT(took, std::chrono::seconds(60));
  EXPECT_NE(o.err.find("timeout"), std::string::npos) << o.err;
  auto root = stepsnap::runner::cgroup2_mount_point();
  ASSERT_TRUE(root);
  EXPECT_FALSE(fs::exists(*root + "/stepsnap/p/timeout" + std::to_string(::getpid())));
}

TEST_F(RunnerExec, UserErrorsAreOneLineAndMakeNothing) {
  auto root = stepsnap::runner::cgroup2_mount_point();
  ASSERT_TRUE(root);
  for (const std::string args :
       {"--no-agent --volume relative:/x -- true",
        "--no-agent --volume /nonexistent-dir:/mnt -- true",
        "--no-agent --volume /tmp:relative -- true", "--no-agent --step ../x -- true",
        "--no-agent --bogus -- true", "--no-agent"}) {
    auto o = run(args);
    EXPECT_EQ(o.code, 125) << args;
    // The --no-agent warning may come first; the error is one line after it.
    std::string last = o.err.substr(o.err.rfind("runner:"));
    EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << o.err;
  }
  EXPECT_FALSE(fs::exists(*root + "/stepsnap/no-agent"));
}

// The last line of stderr is runner's error, and the only one besides the
// --no-agent warning.
void expect_one_error_line(const Outcome& o, const std::string& about) {
  EXPECT_EQ(o.code, 125) << o.err;
  auto at = o.err.rfind("runner:");
  ASSERT_NE(at, std::string::npos) << o.err;
  std::string last = o.err.substr(at);
  EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << o.err;
  EXPECT_NE(last.find(about), std::string::npos) << o.err;
  std::string before = o.err.substr(0, at);
  EXPECT_LE(std::count(before.begin(), before.end(), '\n'), 1) << o.err;
}

TEST_F(RunnerExec, SystemErrorsAreOneLineAndLeaveNothingBehind) {
  auto root = stepsnap::runner::cgroup2_mount_point();
  ASSERT_TRUE(root);
  std::string run_id = "errors" + std::to_string(::getpid());
  std::string mounts_before = slurp("/proc/self/mountinfo");

  // Agent not running.
  expect_one_error_line(run("--pipeline p --run " + run_id + " --step s --agent " +
                            (dir_ / "no-agent.sock").string() + " -- true"),
                        "is stepsnapd running");
  // Mount failure: the mount point is a file (a missing one would be made).
  std::ofstream(dir_ / "a-file") << "not a directory\n";
  expect_one_error_line(run("--no-agent --pipeline p --run " + run_id + " --step s --volume " +
                            dir_.string() + ":" + (dir_ / "a-file").string() + " -- true"),
                        (dir_ / "a-file").string());
  // Not root.
  expect_one_error_line(
      run("--no-agent -- true", "setpriv --reuid=65534 --regid=65534 --clear-groups "), "root");
  // cgroup v2 not mounted (unmounted in a private mount namespace only).
  expect_one_error_line(run("--no-agent --pipeline p --run " + run_id + " --step s -- true",
                            "unshare -m sh -c 'umount -l " + *root + " && exec \"$0\" \"$@\"' "),
                        "cgroup2");

  EXPECT_FALSE(fs::exists(*root + "/stepsnap/p/" + run_id));
  EXPECT_EQ(slurp("/proc/self/mountinfo"), mounts_before);
}

}  // namespace
