// The step's root process: started with clone3 straight into new namespaces
// and into the step's cgroup (CLONE_INTO_CGROUP), so not one instruction of
// the step runs outside them. It sets the step up (its own session, cgroup
// namespace, mounts, hostname) and stays as the step's init, pid 1, with CMD
// as its child, pid 2 (step_init.h). Held by a pidfd, so signals and the
// final wait can never reach a recycled pid.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "runner/exec/mount_plan.h"
#include "runner/exec/options.h"
#include "runner/exec/sandbox_process.h"

namespace stepsnap::runner {

struct StepSpec {
  std::vector<MountOp> mounts;
  std::string hostname;
  bool new_net = true;
  std::string workdir;               // empty: stay where runner was
  std::vector<std::string> env;      // "K=V", the whole environment
  std::vector<std::string> command;  // argv; argv[0] is looked up in PATH
  ProcessSandbox sandbox = {};       // what CMD's process becomes before its exec
  // runner's working directory, the step's when workdir is empty and the
  // step's root has it; "/" otherwise.
  std::string fallback_workdir = {};
};

class StepProcess {
 public:
  // Starts the step and returns once CMD runs. A failure inside the child
  // (a mount, the exec) comes back as the Error, its kind "not_found",
  // "not_executable" or "setup": see exit_code_of_start_failure().
  //
  // before_exec, when given, runs in runner once the child's setup is done
  // and before CMD's first instruction (the agent's pre-snapshot). If it
  // fails, the child exits without exec'ing and its error comes back with
  // kind "before_exec": the step never ran.
  static Result<StepProcess> start(const StepSpec& spec, int cgroup_fd,
                                   const std::function<Status()>& before_exec = {});

  // The step's init, as runner sees it.
  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  // To the step's init, which sends it on to CMD.
  Status signal(int sig) const;
  // Waits for the step's init, which exits when CMD ends; returns the
  // shell-style exit status: CMD's exit code or 128+N for CMD's death by
  // signal N (init_exit_status), or 128+N when init itself was killed by
  // signal N (runner's cgroup kill: 137).
  Result<int> wait();

 private:
  StepProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid_;
  UniqueFd pidfd_;
};

// The exit code runner reports for a failed start: 127 when CMD was not
// found, 126 when it could not be executed, 125 for everything else.
int exit_code_of_start_failure(const Error& e);

}  // namespace stepsnap::runner
