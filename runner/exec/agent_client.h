// What runner needs from stepsnapd, as an interface: the seam between runner/
// and the agent's newline-delimited JSON API over its Unix socket.
//
// runner calls, in this order, for one step:
//   ensure_run_clone   once per --volume, before anything else is made
//   register_step      once the step's cgroup exists (the agent watches it
//                      and holds CMD's first exec)
//   open_gate          the step is set up and waits at runner's gate, before
//                      CMD's exec: the agent takes the pre-snapshot and
//                      confirms it; only then does runner let CMD exec
//   step_finished      every process of the step is gone (post-snapshot)
//   unregister_step    instead of step_finished, when the step never ran
// Nothing in runner/ includes agent/: the socket client implementing this
// (stepsnapd_client.h) speaks the agent's wire format through common/.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "runner/exec/options.h"

namespace stepsnap::runner {

struct StepRef {
  std::string pipeline;
  std::string run;
  std::string step;
  std::string text() const { return pipeline + "/" + run + "/" + step; }
};

struct StepRegistration {
  StepRef ref;
  std::string cgroup_path;
  SnapshotPhases snapshots;
  std::vector<std::string> volumes;  // volume names, in --volume order
  std::vector<std::string> command;
  Labels labels;
};

// The names of a step's snapshots, as the agent recorded them.
struct StepSnapshots {
  std::vector<std::string> pre;
  std::vector<std::string> post;
};

// Where a volume's data is: a host directory (bind-mounted) or a block device
// (mounted with its filesystem inside the step's mount namespace, so the
// host's mount table never shows it).
struct VolumeSource {
  std::string path;
  bool block_device = false;
};

class AgentClient {
 public:
  virtual ~AgentClient() = default;

  // False for --no-agent: runner then says loudly that nothing is snapshotted.
  virtual bool takes_snapshots() const = 0;
  // This run's clone of `volume`: made on the run's first use from
  // `snapshot`, or else the volume's newest snapshot; reused by later steps.
  virtual Result<VolumeSource> ensure_run_clone(const StepRef& ref, const std::string& volume,
                                                const std::optional<std::string>& snapshot) = 0;
  virtual Status register_step(const StepRegistration& registration) = 0;
  // Blocks until the agent has recorded this registration's pre-snapshot
  // (or confirmed the registration, without a pre policy). An error means
  // CMD must not run: the pre-snapshot failed, the agent is gone, or its
  // answer is not about this registration.
  virtual Status open_gate(const StepRef& ref) = 0;
  // exit_status: runner's own exit status for the step (CMD's, 128+N, 124).
  virtual Status step_finished(const StepRef& ref, int exit_status) = 0;
  virtual Status unregister_step(const StepRef& ref) = 0;
  // After step_finished: the step's snapshots (none without an agent).
  virtual Result<StepSnapshots> step_snapshots(const StepRef&) { return StepSnapshots{}; }
};

// --no-agent: a volume "name" is a host directory, used as it is; no clones,
// no registration, no snapshots.
class NoAgentClient final : public AgentClient {
 public:
  bool takes_snapshots() const override { return false; }
  Result<VolumeSource> ensure_run_clone(const StepRef& ref, const std::string& volume,
                                        const std::optional<std::string>& snapshot) override;
  Status register_step(const StepRegistration&) override { return {}; }
  Status open_gate(const StepRef&) override { return {}; }
  Status step_finished(const StepRef&, int) override { return {}; }
  Status unregister_step(const StepRef&) override { return {}; }
};

// NoAgentClient for --no-agent; otherwise the stepsnapd client connected to
// options.agent_socket ("cannot connect to stepsnapd at SOCKET: No such file
// or directory (is stepsnapd running? ...)").
Result<std::unique_ptr<AgentClient>> connect_agent(const ExecOptions& options);

}  // namespace stepsnap::runner
