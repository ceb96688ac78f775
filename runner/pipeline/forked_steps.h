// Steps that run at the same time (`runner pipeline run --parallel N`), each
// in a forked copy of runner that does what `runner exec` does.
//
// A fork per step, not a thread: run_exec_with forwards signals through a
// signalfd and owns the process's signal mask while its step runs, which
// only one step per process can do. Each child gets its own process group
// (so a terminal's Ctrl-C reaches only this process, which forwards it to
// every running step once) and its own connection to stepsnapd.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"
#include "runner/exec/options.h"

namespace stepsnap::runner {

class ForkedSteps {
 public:
  ForkedSteps();
  ~ForkedSteps();
  ForkedSteps(const ForkedSteps&) = delete;
  ForkedSteps& operator=(const ForkedSteps&) = delete;

  // Forks a child that runs `exec` against the agent at `exec.agent_socket`.
  Status start(std::size_t step, const ExecOptions& exec);

  struct Exit {
    std::size_t step = 0;
    int code = 0;  // runner exec's exit status (128+N when the child was killed)
    double seconds = 0;
  };
  // Blocks until a running step ends; forwards the signals runner forwards
  // to every running step meanwhile. Only while running() > 0.
  Exit wait_one();
  std::size_t running() const { return children_.size(); }

 private:
  struct Child {
    std::size_t step;
    std::chrono::steady_clock::time_point started;
  };
  sigset_t old_mask_;
  UniqueFd signals_;
  std::map<pid_t, Child> children_;
};

}  // namespace stepsnap::runner
