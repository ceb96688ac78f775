// A step's process for vm tests that drive stepsnapd without runner: forked
// into the step's cgroup, it waits for the go-ahead, then execs
// /bin/sh -c `script` (the exec the tracer holds when the policy has pre).
#pragma once

#include <signal.h>
#include <unistd.h>

#include <string>

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

}  // namespace stepsnap::testing
