// `runner exec --no-agent` against the running kernel (label host): real
// namespaces, mounts and cgroups, observed the way a user would.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

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

// Debian's interpreter, not a version manager's shim script: the step is
// then the Python process itself.
constexpr const char* kPython = "/usr/bin/python3";

// Waits until `done` holds; false if it did not within a minute (a hung
// step, not a slow one: the bound only keeps a broken test from hanging).
bool eventually(const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// The state letter of /proc/PID/stat ('T' stopped, 'Z' zombie), or 0.
char proc_state(pid_t pid) {
  std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  auto paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? 0 : stat[paren + 2];
}

std::vector<pid_t> cgroup_pids(const std::string& cgroup) {
  std::ifstream procs(cgroup + "/cgroup.procs");
  std::vector<pid_t> pids;
  for (pid_t pid; procs >> pid;) pids.push_back(pid);
  return pids;
}

class RunnerExec : public ::testing::Test {
 protected:
  void SetUp() override {
    // Not under /tmp: the step has a /tmp of its own. It sees this folder
    // read-only through its view of the host, writable with shared().
    dir_ = fs::path("/var/tmp") / ("runner-test-" + std::to_string(::getpid()) + "-" +
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

  // Starts `runner exec <args>` in a process group of its own (as a shell
  // starts a job), stdout and stderr captured; finish() waits for it.
  pid_t start(const std::string& args) {
    std::string cmd = "exec " + std::string(RUNNER_PATH) + " exec " + args + " >" +
                      (dir_ / "out").string() + " 2>" + (dir_ / "err").string() + " </dev/null";
    pid_t pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // both sides: whichever runs first, the group exists
    return pid;
  }
  Outcome finish(pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    Outcome o;
    o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    o.out = slurp(dir_ / "out");
    o.err = slurp(dir_ / "err");
    return o;
  }
  // Runs a step that creates ready() once it is set to receive signals,
  // sends sig to runner then, and returns how runner ended.
  Outcome signal_when_ready(const std::string& args, int sig) {
    pid_t runner = start(args);
    bool ready = eventually([&] { return fs::exists(ready_file()); });
    ::kill(runner, sig);
    auto o = finish(runner);
    EXPECT_TRUE(ready) << "the step never got ready: " << o.err;
    return o;
  }
  fs::path ready_file() const { return dir_ / "ready"; }
  // The test's folder as a volume at its own path: the step may write there.
  std::string shared() const { return "--volume " + dir_.string() + ":" + dir_.string() + " "; }

  fs::path dir_;
};

TEST_F(RunnerExec, CmdIsPidTwoUnderTheStepsInitWithItsHostnameAndFreshProc) {
  auto o =
      run("--no-agent --hostname stephost -- sh -c 'echo $$ $(cat /proc/1/comm) $(hostname) $(ls "
          "/proc | grep -c \"^[0-9]\")'");
  ASSERT_EQ(o.code, 0) << o.err;
  // CMD is pid 2 under the step's init, our hostname, and only the step's
  // own processes in /proc (init, sh and its command substitution children).
  std::istringstream words(o.out);
  std::string pid, init, host;
  int procs = 0;
  words >> pid >> init >> host >> procs;
  EXPECT_EQ(pid, "2");
  EXPECT_EQ(init, "stepsnap-init");
  EXPECT_EQ(host, "stephost");
  EXPECT_LE(procs, 5);
}

TEST_F(RunnerExec, EveryExitStatusPassesThrough) {
  for (int code = 0; code <= 255; code += 17)
    EXPECT_EQ(run("--no-agent -- sh -c 'exit " + std::to_string(code) + "'").code, code) << code;
  for (int code : {1, 2, 124, 125, 126, 127, 128, 129, 130, 137, 143, 254, 255})
    EXPECT_EQ(run("--no-agent -- sh -c 'exit " + std::to_string(code) + "'").code, code) << code;
  EXPECT_EQ(run("--no-agent -- true").code, 0);
  EXPECT_EQ(run("--no-agent -- false").code, 1);
  EXPECT_EQ(run("--no-agent -- /nonexistent/cmd").code, 127);
  std::ofstream(dir_ / "not-executable") << "data\n";
  EXPECT_EQ(run("--no-agent -- " + (dir_ / "not-executable").string()).code, 126);
}

TEST_F(RunnerExec, DeathBySignalIsReportedAsByAShell) {
  // CMD signals itself, as run directly: it dies of it (pid 1 would not).
  EXPECT_EQ(run("--no-agent -- sh -c 'kill -TERM $$; sleep 1'").code, 128 + SIGTERM);
  EXPECT_EQ(run("--no-agent -- sh -c 'kill -KILL $$; sleep 1'").code, 128 + SIGKILL);
  EXPECT_EQ(run("--no-agent -- sh -c 'kill -HUP $$; sleep 1'").code, 128 + SIGHUP);
  EXPECT_EQ(run("--no-agent -- sh -c 'kill -USR1 $$; sleep 1'").code, 128 + SIGUSR1);
  // A child that dies of a signal, reported by sh.
  EXPECT_EQ(run("--no-agent -- sh -c 'sh -c \"kill -9 \\$\\$\"; exit $?'").code, 137);
}

TEST_F(RunnerExec, OrphansAreReapedWhileCmdRuns) {
  // Python reaps only the children it waits for. Its grandchild, orphaned
  // when the child exits, is adopted by the step's pid 1 and must not stay
  // a zombie while CMD runs on (with CMD as pid 1, it did).
  std::string script =
      "import os, sys, time\n"
      "r, w = os.pipe()\n"
      "child = os.fork()\n"
      "if child == 0:\n"
      "    grandchild = os.fork()\n"
      "    if grandchild == 0:\n"
      "        os._exit(0)\n"
      "    os.write(w, str(grandchild).encode())\n"
      "    os._exit(0)\n"
      "os.close(w)\n"
      "os.waitpid(child, 0)\n"
      "orphan = int(os.read(r, 32))\n"
      "for _ in range(3000):\n"
      "    if not os.path.exists('/proc/%d' % orphan):\n"
      "        print('reaped')\n"
      "        sys.exit(0)\n"
      "    time.sleep(0.01)\n"
      "state = open('/proc/%d/stat' % orphan).read().rsplit(')', 1)[1].split()[0]\n"
      "print('still there, state', state)\n"
      "sys.exit(1)\n";
  std::ofstream(dir_ / "orphan.py") << script;
  auto o = run("--no-agent -- " + std::string(kPython) + " " + (dir_ / "orphan.py").string());
  EXPECT_EQ(o.code, 0) << o.out << o.err;
  EXPECT_EQ(o.out, "reaped\n") << o.err;
}

TEST_F(RunnerExec, StepRunsInASessionOfItsOwn) {
  // Its session and process group are led by the step's init (pid 1 in its
  // namespace); in runner's session they would be led from outside the
  // namespace, which reads as 0.
  auto o = run("--no-agent -- " + std::string(kPython) +
               " -c 'import os; print(os.getsid(0), os.getpgid(0))'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "1 1\n");
}

TEST_F(RunnerExec, ContinuingRunnersProcessGroupLeavesAStoppedStepStopped) {
  // The agent holds CMD with a SIGSTOP at its first exec. Here CMD stops
  // itself the same way; Ctrl-Z then fg, or kill -CONT of runner's group,
  // continues runner's process group and must not continue CMD.
  auto root = stepsnap::runner::cgroup2_mount_point();
  ASSERT_TRUE(root);
  std::string run_id = "cont" + std::to_string(::getpid());
  std::string cgroup = *root + "/stepsnap/p/" + run_id + "/s";
  pid_t runner = start("--no-agent --pipeline p --run " + run_id +
                       " --step s -- sh -c 'kill -STOP $$; echo continued'");
  pid_t cmd = 0;
  bool stopped = eventually([&] {
    for (pid_t pid : cgroup_pids(cgroup))
      if (proc_state(pid) == 'T') cmd = pid;
    return cmd != 0;
  });
  if (!stopped) ::kill(runner, SIGKILL);
  ASSERT_TRUE(stopped) << finish(runner).err;

  ASSERT_EQ(::kill(-runner, SIGCONT), 0);
  // A SIGCONT wakes a stopped task while kill() runs: no wait is needed.
  EXPECT_EQ(proc_state(cmd), 'T') << "runner's process group continued the step";

  ::kill(cmd, SIGCONT);  // what the agent does once the pre-snapshot is taken
  auto o = finish(runner);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "continued\n");
}

TEST_F(RunnerExec, ASigcontToTheStepsInitIsNotPassedOnToCmd) {
  // The step's init sends the signals it gets on to CMD, but not SIGCONT:
  // to CMD it could only undo the agent's hold at its exec (which kills
  // CMD), even when sent to init while it waited at runner's gate. Here CMD
  // stops itself the way the hold stops it.
  auto root = stepsnap::runner::cgroup2_mount_point();
  ASSERT_TRUE(root);
  std::string run_id = "initcont" + std::to_string(::getpid());
  std::string cgroup = *root + "/stepsnap/p/" + run_id + "/s";
  pid_t runner = start("--no-agent --pipeline p --run " + run_id +
                       " --step s -- sh -c 'kill -STOP $$; echo continued'");
  pid_t cmd = 0, init = 0;
  bool stopped = eventually([&] {
    for (pid_t pid : cgroup_pids(cgroup)) {
      if (proc_state(pid) == 'T') cmd = pid;
      std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
      std::string name;
      if (comm >> name && name == "stepsnap-init") init = pid;
    }
    return cmd != 0 && init != 0;
  });
  if (!stopped) ::kill(runner, SIGKILL);
  ASSERT_TRUE(stopped) << finish(runner).err;

  ASSERT_EQ(::kill(init, SIGCONT), 0);
  // init reads it from its signalfd and would pass it on at once.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(proc_state(cmd), 'T') << "the step's init passed SIGCONT on to CMD";

  ::kill(cmd, SIGCONT);
  auto o = finish(runner);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "continued\n");
}

TEST_F(RunnerExec, StepCannotMoveOutOfItsCgroup) {
  // The step runs in a cgroup namespace rooted at its cgroup, with a
  // read-only /sys/fs/cgroup that shows only that cgroup. Each way out is
  // tried, then through a cgroup2 the step mounts writable itself (it gets
  // CAP_SYS_ADMIN for that, and so may mount), then through the host's /proc
  // below the step's (it is not there).
  auto root = stepsnap::runner::cgroup2_mount_point();
  ASSERT_TRUE(root);
  std::string run_id = "escape" + std::to_string(::getpid());
  std::string cgroup = *root + "/stepsnap/p/" + run_id + "/s";
  fs::create_directories(dir_ / "cg");
  fs::path go = dir_ / "go";
  std::string script =
      "grep ^0:: /proc/self/cgroup; "
      "echo $$ > /sys/fs/cgroup/cgroup.procs 2>/dev/null && echo moved-by-sys-fs-cgroup; "
      "echo $$ > /sys/fs/cgroup/unified/cgroup.procs 2>/dev/null && echo moved-by-unified; "
      "test -e /sys/fs/cgroup/stepsnap && echo host-tree-visible; "
      "mkdir /sys/fs/cgroup/sub 2>/dev/null && echo made-a-child-cgroup; "
      "mount -t cgroup2 none " +
      (dir_ / "cg").string() + " && echo $$ > " + (dir_ / "cg/cgroup.procs").string() +
      "; test -e " + (dir_ / "cg/stepsnap").string() +
      " && echo host-tree-in-own-mount; "
      "grep ^0:: /proc/self/cgroup; "
      "touch " +
      ready_file().string() + "; while [ ! -e " + go.string() +
      " ]; do sleep 0.05; done; "
      "umount -l /proc || echo umount-failed; test -e /proc/1/ns/cgroup && echo host-proc-below; "
      "exit 0";
  pid_t runner = start("--no-agent --cap-add SYS_ADMIN " + shared() + "--pipeline p --run " +
                       run_id + " --step s -- sh -c '" + script + "'");
  bool ready = eventually([&] { return fs::exists(ready_file()); });
  // Seen from the host: CMD (sh) is still in the step's cgroup.
  std::vector<std::string> in_cgroup;
  for (pid_t pid : cgroup_pids(cgroup))
    in_cgroup.push_back(slurp("/proc/" + std::to_string(pid) + "/comm"));
  std::ofstream(go) << "";
  auto o = finish(runner);
  ASSERT_TRUE(ready) << o.err;
  EXPECT_NE(std::find(in_cgroup.begin(), in_cgroup.end(), "sh\n"), in_cgroup.end())
      << "CMD left the step's cgroup";
  EXPECT_EQ(o.code, 0) << o.err;
  // "0::/": at the root of its cgroup namespace, which is the step's cgroup.
  EXPECT_EQ(o.out, "0::/\n0::/\n") << o.err;
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

TEST_F(RunnerExec, SigtermReachesTheStep) {
  // The step handles SIGTERM and exits 7: runner passes that on.
  auto o = signal_when_ready("--no-agent " + shared() + "-- sh -c 'trap \"exit 7\" TERM; touch " +
                                 ready_file().string() + "; while :; do sleep 0.1; done'",
                             SIGTERM);
  EXPECT_EQ(o.code, 7) << o.err;
}

TEST_F(RunnerExec, StepWithoutASigtermHandlerDiesOfIt) {
  // sleep has no SIGTERM handler: it dies of the signal, as run directly
  // (a grace kill after 10 s would be 137).
  auto o = signal_when_ready(
      "--no-agent " + shared() + "-- sh -c 'touch " + ready_file().string() + "; exec sleep 100'",
      SIGTERM);
  EXPECT_EQ(o.code, 128 + SIGTERM) << o.err;
}

TEST_F(RunnerExec, SigintReachesAPythonStepAsKeyboardInterrupt) {
  std::string script =
      "import sys, time\n"
      "try:\n"
      "    open(sys.argv[1], 'w').close()\n"
      "    time.sleep(100)\n"
      "except KeyboardInterrupt:\n"
      "    print('KeyboardInterrupt')\n"
      "    sys.exit(3)\n";
  std::ofstream(dir_ / "interrupt.py") << script;
  auto o = signal_when_ready("--no-agent " + shared() + "-- " + std::string(kPython) + " " +
                                 (dir_ / "interrupt.py").string() + " " + ready_file().string(),
                             SIGINT);
  EXPECT_EQ(o.code, 3) << o.err;
  EXPECT_EQ(o.out, "KeyboardInterrupt\n") << o.err;

  // Uncaught, Python ends by dying of SIGINT itself: 130, as in a shell.
  fs::remove(ready_file());
  o = signal_when_ready("--no-agent " + shared() + "-- " + std::string(kPython) +
                            " -c 'import sys, time; open(sys.argv[1], \"w\").close(); "
                            "time.sleep(100)' " +
                            ready_file().string(),
                        SIGINT);
  EXPECT_EQ(o.code, 128 + SIGINT) << o.err;
  EXPECT_NE(o.err.find("KeyboardInterrupt"), std::string::npos) << o.err;
}

TEST_F(RunnerExec, StepHandlingSigtermButRunningOnIsKilledAfterTheGracePeriod) {
  auto o =
      signal_when_ready("--no-agent " + shared() + "-- sh -c 'trap \"echo ignored\" TERM; touch " +
                            ready_file().string() + "; while :; do sleep 0.1; done'",
                        SIGTERM);
  EXPECT_EQ(o.code, 137) << o.err;
  EXPECT_EQ(o.out, "ignored\n");
  EXPECT_NE(o.err.find("ignored signal 15 for 10 s"), std::string::npos) << o.err;
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
