// AgentClient over stepsnapd's socket API (docs/api.md): run.clone for the
// run's clones, step.register for the step, step.status to wait for the
// post-snapshot.
//
// The pre-snapshot is runner's gate (step.ready, open_gate): the step's
// init waits before CMD's exec until the agent answers, over this
// connection, that it recorded the pre-snapshot of the very registration
// step.register answered. The agent's BPF tracer still holds CMD's exec,
// the cgroup's first, and releases it once the step is recorded started.
#pragma once

#include <chrono>
#include <cstdint>
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
  Status open_gate(const StepRef& ref) override;
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
  struct Registered {
    std::uint64_t registration = 0;  // step.register's answer
    bool pre = false;                // a pre-snapshot is to be confirmed
    std::size_t volumes = 0;
  };
  std::map<std::string, Registered> registered_;  // StepRef::text() -> it
};

}  // namespace stepsnap::runner
