// Snapshots at step boundaries. For each registered step the policy watches
// the step's cgroup with the BPF tracer; at the held first exec it takes the
// pre-snapshots of all the step's volumes as one group, records them, emits
// snapshot.created and step.started, then releases the step; when the
// cgroup is empty (the step's mount namespace torn down with it, see
// bpf/tracer.h) it detaches loop devices the step left on its volumes
// (post_settle.h), takes the post-snapshots and emits step.finished. A
// pre-snapshot that fails kills the cgroup instead of releasing it (the step
// never runs without its pre-state) and emits an error event.
//
// Threads: the tracer thread owns the StepTracer (an epoll loop over its fd
// and a command queue: watch, release, unwatch run there); the worker thread
// takes snapshots, so a long snapshot never delays tracer events or API
// calls. Step records are guarded by one mutex, never held across a kernel
// operation. Every state change of a step is written to the catalog's steps
// table, in the same transaction as the event that reports it, so after a
// restart step.status and run.show serve the step as it was last recorded
// (recovery.h fails the ones that were still under way).
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

#include "agent/catalog/catalog.h"
#include "agent/events/event_log.h"
#include "agent/policy/step_state.h"
#include "agent/volumes/volumes.h"
#include "bpf/tracer.h"
#include "common/error.h"
#include "common/unique_fd.h"

namespace stepsnap::agent {

// A step as the policy knows it. The API handler fills it from the wire's
// step.register; the policy never sees protocol types.
struct StepSpec {
  std::string pipeline;
  std::string run;
  std::string step;
  std::string cgroup;                // absolute path of the step's cgroup v2 directory
  std::vector<std::string> volumes;  // volume or clone names, each once
  bool pre_snapshot = true;          // hold the first exec for a pre-snapshot group
  bool post_snapshot = true;         // a post-snapshot group once every process is gone
  std::string command;
  Labels labels;
};

// "pre", "post", "both" or "none": the policy's name in the catalog and API.
std::string_view policy_name(const StepSpec& spec);

struct StepPolicyOptions {
  bpf::TracerOptions tracer;
  // How long a step may be held for its pre-snapshot. When it runs out the
  // policy kills the step's cgroup while the step is still stopped (it would
  // otherwise run without a pre-snapshot). The tracer's own hold timeout,
  // which resumes the step, is set kTracerHoldGrace later as a backstop
  // only: resuming first and killing after would let the step run a few
  // instructions with no pre-snapshot.
  std::chrono::milliseconds hold_timeout{std::chrono::minutes(10)};
};

inline constexpr std::chrono::milliseconds kTracerHoldGrace{2000};

class StepPolicy {
 public:
  static Result<std::unique_ptr<StepPolicy>> start(Volumes& volumes, Catalog& catalog,
                                                   EventLog& events,
                                                   const StepPolicyOptions& options);
  ~StepPolicy();
  StepPolicy(const StepPolicy&) = delete;
  StepPolicy& operator=(const StepPolicy&) = delete;

  // Finishes the snapshot under way, stops watching (a held step is
  // released by the tracer), joins both threads. Idempotent.
  void stop();

  // Errors: EEXIST (step registered and not over), ENOENT (volume), ENXIO
  // (volume not active), EINVAL (volume is a snapshot), or the tracer's.
  Result<nlohmann::json> register_step(const StepSpec& spec);
  Result<nlohmann::json> status(const std::string& pipeline, const std::string& run,
                                const std::string& step);
  Result<nlohmann::json> run(const std::string& pipeline, const std::string& run);

 private:
  struct Step {
    StepSpec args;
    std::uint64_t cgroup_id = 0;
    StepState state = StepState::registered;
    bool ended_while_holding = false;
    std::optional<bpf::ExitStatus> exit;
    std::uint32_t pid = 0;
    std::uint64_t exec_mono_ns = 0;
    // While holding: when the policy gives up on the pre-snapshot.
    std::chrono::steady_clock::time_point hold_deadline{};
    std::int64_t registered_ns = 0;
    std::int64_t started_ns = 0;
    std::int64_t finished_ns = 0;
    std::int64_t held_ns = 0;
    std::string error;
    std::vector<std::string> pre_snapshots;
    std::vector<std::string> post_snapshots;
    // Why the post-snapshot may not hold exactly the step's writes (a loop
    // device the step left open, post_settle.h); empty when it does.
    std::string not_exact;
    bool watching = false;
  };

  StepPolicy(Volumes& volumes, Catalog& catalog, EventLog& events, bpf::StepTracer tracer,
             const StepPolicyOptions& options, UniqueFd wake);

  void tracer_loop();
  void worker_loop();
  // Runs fn on the tracer thread and waits for its result.
  Status on_tracer(std::function<Status(bpf::StepTracer&)> fn);
  // Queues fn for the tracer thread (no wait).
  void post_tracer(std::function<void(bpf::StepTracer&)> fn);
  void post_work(std::function<void()> fn);

  void on_event(const bpf::Event& event);
  // Tracer thread: kills held steps whose hold_deadline passed. Returns the
  // next deadline still pending, if any (for the epoll timeout).
  std::optional<std::chrono::steady_clock::time_point> enforce_hold_deadlines();
  // mutex_ held.
  void apply(const std::string& key, Step& step, StepInput input);
  void take_snapshots(const std::string& key, Phase phase);
  // mutex_ held: step.finished, stop watching.
  void finish_step(const std::string& key, Step& step);
  void emit(EventType type, nlohmann::json data);
  // mutex_ held: writes the step's row (inside the caller's transaction when
  // one is open, so the row and the event commit together). A failed write
  // is logged: the event still goes out, and memory stays authoritative
  // until the next restart.
  void persist(const std::string& key, const Step& step);
  StepRecord record_of(const Step& step) const;
  nlohmann::json step_json(const Step& step) const;
  Result<nlohmann::json> snapshots_json(const std::string& pipeline, const std::string& run,
                                        const std::string& step);

  Volumes& volumes_;
  Catalog& catalog_;
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

}  // namespace stepsnap::agent
