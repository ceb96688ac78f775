// runner/exec/: one step in namespaces, its cgroup and mounts, and the agent
// client. Uses protocol/ only.
//
// `runner exec`: one pipeline step, start to finish. Returns the exit status
// runner itself exits with (see exec_help() for the table).
#pragma once

#include <signal.h>

#include "runner/exec/agent_client.h"
#include "runner/exec/options.h"

namespace stepsnap::runner {

// What runner passes on to the step's init, which sends it to CMD (and
// `runner pipeline run --parallel` to each running step). Not SIGTSTP or
// SIGCONT: Ctrl-Z and fg on runner stop and continue runner only, and a
// SIGCONT must never end the agent's hold of CMD.
inline constexpr int kForwardedSignals[] = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT,
                                            SIGUSR1, SIGUSR2, SIGWINCH};

int run_exec(const ExecOptions& options);

// The same with an agent client already connected (`runner pipeline` runs
// every step of a run over one connection). Needs root.
int run_exec_with(const ExecOptions& options, AgentClient& agent);

}  // namespace stepsnap::runner
