// Snapshots at step boundaries. For each registered step the policy watches
// the step's cgroup with the BPF tracer; at the held first exec it takes the
// pre-snapshots of all the step's volumes as one group, records them, emits
// snapshot.created and step.started, then releases the step; when the
// cgroup is empty it takes the post-snapshots and emits step.finished. A
// pre-snapshot that fails kills the cgroup instead of releasing it (the step
// never runs without its pre-state) and emits an error event.
//
// Threads: the tracer thread owns the StepTracer (an epoll loop over its fd
// and a command queue: watch, release, unwatch run there); the worker thread
// takes snapshots, so a long snapshot never delays tracer events or API
// calls. Step records are guarded by one mutex, never held across a kernel
// operation. Steps live in memory (the catalog keeps their snapshots): after
// a restart step.status still shows a step's snapshots, with state "unknown".
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "agent/event_log.h"
#include "agent/request.h"
#include "agent/step_state.h"
#include "agent/volumes.h"
#include "bpf/tracer.h"
#include "common/error.h"
#include "common/unique_fd.h"

namespace stepsnap::agent {

struct StepPolicyOptions {
  bpf::TracerOptions tracer;
  // How long the tracer may hold a step for its pre-snapshot. When it runs
  // out the tracer resumes the step itself; the policy then kills it, since
  // it would run without a pre-snapshot.
  std::chrono::milliseconds hold_timeout{std::chrono::minutes(10)};
};

class StepPolicy {
 public:
  static Result<std::unique_ptr<StepPolicy>> start(Volumes& volumes, EventLog& events,
                                                   const StepPolicyOptions& options);
  ~StepPolicy();
  StepPolicy(const StepPolicy&) = delete;
  StepPolicy& operator=(const StepPolicy&) = delete;

  // Finishes the snapshot under way, stops watching (a held step is
  // released by the tracer), joins both threads. Idempotent.
  void stop();

  // Errors: EEXIST (step registered and not over), ENOENT (volume), ENXIO
  // (volume not active), EINVAL (volume is a snapshot), or the tracer's.
  Result<nlohmann::json> register_step(const StepRegisterArgs& args);
  Result<nlohmann::json> status(const std::string& pipeline, const std::string& run,
                                const std::string& step);
  Result<nlohmann::json> run(const std::string& pipeline, const std::string& run);

 private:
  struct Step {
    StepRegisterArgs args;
    std::uint64_t cgroup_id = 0;
    StepState state = StepState::registered;
    bool ended_while_holding = false;
    std::optional<bpf::ExitStatus> exit;
    std::uint32_t pid = 0;
    std::uint64_t exec_mono_ns = 0;
    std::int64_t registered_ns = 0;
    std::int64_t started_ns = 0;
    std::int64_t finished_ns = 0;
    std::int64_t held_ns = 0;
    std::string error;
    std::vector<std::string> pre_snapshots;
    std::vector<std::string> post_snapshots;
    bool watching = false;
  };

  StepPolicy(Volumes& volumes, EventLog& events, bpf::StepTracer tracer,
             const StepPolicyOptions& options, UniqueFd wake);

  void tracer_loop();
  void worker_loop();
  // Runs fn on the tracer thread and waits for its result.
  Status on_tracer(std::function<Status(bpf::StepTracer&)> fn);
  // Queues fn for the tracer thread (no wait).
  void post_tracer(std::function<void(bpf::StepTracer&)> fn);
  void post_work(std::function<void()> fn);

  void on_event(const bpf::Event& event);
  // mutex_ held.
  void apply(const std::string& key, Step& step, StepInput input);
  void take_snapshots(const std::string& key, Phase phase);
  // mutex_ held: step.finished, stop watching.
  void finish_step(const std::string& key, Step& step);
  void emit(EventType type, nlohmann::json data);
  nlohmann::json step_json(const Step& step) const;
  Result<nlohmann::json> snapshots_json(const std::string& pipeline, const std::string& run,
                                        const std::string& step);

  Volumes& volumes_;
  EventLog& events_;
  StepPolicyOptions options_;
  std::optional<bpf::StepTracer> tracer_;  // the tracer thread's only
  UniqueFd wake_;                          // eventfd: commands for the tracer thread

  std::mutex mutex_;  // steps_, by_cgroup_
  std::map<std::string, Step> steps_;
  std::map<std::uint64_t, std::string> by_cgroup_;

  std::mutex queue_mutex_;
  std::condition_variable work_cv_;
  std::deque<std::function<void(bpf::StepTracer&)>> tracer_queue_;
  std::deque<std::function<void()>> work_queue_;
  bool stopping_ = false;

  std::thread tracer_thread_;
  std::thread worker_thread_;
};

// Ends every process of a cgroup: cgroup.kill, or SIGKILL to each pid in
// cgroup.procs on kernels without it.
Status kill_cgroup(const std::string& cgroup_dir);

}  // namespace stepsnap::agent
