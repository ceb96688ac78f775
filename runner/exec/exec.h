// runner/exec/: one step in namespaces, its cgroup and mounts, and the agent
// client. Uses protocol/ only.
//
// `runner exec`: one pipeline step, start to finish. Returns the exit status
// runner itself exits with (see exec_help() for the table).
#pragma once

#include "runner/exec/agent_client.h"
#include "runner/exec/options.h"

namespace stepsnap::runner {

int run_exec(const ExecOptions& options);

// The same with an agent client already connected (`runner pipeline` runs
// every step of a run over one connection). Needs root.
int run_exec_with(const ExecOptions& options, AgentClient& agent);

}  // namespace stepsnap::runner
