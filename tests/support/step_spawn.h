// A step's process for vm tests that drive stepsnapd without runner: forked
// into the step's cgroup, it waits for the go-ahead, then execs
// /bin/sh -c `script` (the exec the tracer holds when the policy has pre).
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "runner/exec/cgroup.h"

namespace stepsnap::testing {

struct StepProcess {
  pid_t pid = -1;
  int go = -1;  // write one byte to let the process exec
};

// pid -1 when the fork or the move into `cg` failed.
inline StepProcess spawn_step(const runner::Cgroup& cg, const std::string& script) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  pid_t child = ::fork();
  if (child == 0) {
    ::close(fds[1]);
    char c;
    if (::read(fds[0], &c, 1) != 1) ::_exit(120);
    ::execl("/bin/sh", "sh", "-c", script.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[0]);
  if (!cg.add_process(child)) {
    ::kill(child, SIGKILL);
    return {};
  }
  return {child, fds[1]};
}

// The process's exit code (128 + signal when killed); one still there after
// 60 s (held and never released) is killed and reported as -2, so a failure
// ends the test instead of hanging it.
inline int exit_code(pid_t pid) {
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace stepsnap::testing
