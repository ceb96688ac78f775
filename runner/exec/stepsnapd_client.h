// AgentClient over stepsnapd's socket API (docs/api.md): run.clone for the
// run's clones, step.register for the step, step.status to wait for the
// post-snapshot.
//
// The pre-snapshot needs no call: the agent's BPF tracer holds the step at
// its first exec, snapshots, and only then lets CMD run; a failed
// pre-snapshot kills the held step before its first instruction. runner
// learns of it from step.status once the step is gone (step_finished).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "protocol/api_client.h"
#include "runner/exec/agent_client.h"

namespace stepsnap::runner {

// The Error::kind step_finished returns when the agent's pre-snapshot failed,
// so CMD never ran.
inline constexpr const char* kPreSnapshotFailed = "pre_snapshot_failed";

class StepsnapdClient final : public AgentClient {
 public:
  static Result<std::unique_ptr<StepsnapdClient>> connect(const std::string& socket_path);

  bool takes_snapshots() const override { return true; }
  Result<VolumeSource> ensure_run_clone(const StepRef& ref, const std::string& volume,
                                        const std::optional<std::string>& snapshot) override;
  Status register_step(const StepRegistration& registration) override;
  Status step_finished(const StepRef& ref, int exit_status) override;
  Status unregister_step(const StepRef& ref) override;
  Result<StepSnapshots> step_snapshots(const StepRef& ref) override;

  // The raw API, for `runner pipeline` (initial snapshots, run summaries).
  protocol::ApiClient& api() { return api_; }

 private:
  explicit StepsnapdClient(protocol::ApiClient api) : api_(std::move(api)) {}
  // Polls step.status until the agent is done with the step (finished or
  // failed) and returns the last status.
  Result<nlohmann::json> wait_until_done(const StepRef& ref, std::chrono::seconds limit);

  protocol::ApiClient api_;
  std::map<std::string, std::string> clone_of_;  // volume name -> this run's clone
};

}  // namespace stepsnap::runner
