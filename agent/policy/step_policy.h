// agent/policy/: snapshots at step boundaries (state machine + tracer
// driver). Uses agent/volumes and bpf/.
//
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

#include <atomic>
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
#include <set>
#include <string>
#include <thread>

#include "agent/catalog/catalog.h"
#include "agent/events/event_log.h"
#include "agent/policy/hold_times.h"
#include "agent/policy/step_cgroup.h"
#include "agent/policy/step_records.h"
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
  // The API connection the registration is leased to (0: none): when it
  // closes before a process entered the cgroup, the registration expires.
  std::uint64_t connection = 0;
  // Set: a pod step. `cgroup` is then the kubelet's pod cgroup, which may
  // already hold processes (the sandbox's pause); the step is the child
  // cgroup made after this many others, which the tracer picks in the
  // kernel as it is made (bpf::PodWatchOptions), and from then on `cgroup`
  // names that child. Nothing else of the pod is held or counted. Leased to
  // the pod's cgroup: removed before the step started, it expires.
  std::optional<std::uint32_t> pod_skip_containers;
};

// "pre", "post", "both" or "none": the policy's name in the catalog and API.
std::string_view policy_name(const StepSpec& spec);

struct StepPolicyOptions {
  bpf::TracerOptions tracer;
  // How long a step may be held for its pre-snapshot. When it runs out the
  // policy kills the step's cgroup while the step is still stopped (it would
  // otherwise run without a pre-snapshot). The tracer's own hold timeout is
  // an "on timeout: kill" watch set kTracerHoldGrace later, a backstop
  // only: the tracer never resumes a held step by itself.
  std::chrono::milliseconds hold_timeout{std::chrono::minutes(10)};
  // A registration whose cgroup has no process within this time expires
  // (an error event, op step.expire), and so does one whose cgroup
  // directory is removed before the step started: its watch slot and name
  // are freed.
  std::chrono::milliseconds step_lease{std::chrono::seconds(60)};
  // Where step cgroups must be (step_cgroup.h); empty: <cgroup v2 mount>/stepsnap.
  std::string cgroup_subtree;
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

  // Finishes the snapshot under way and joins both threads. With the
  // tracer's programs pinned (StepPolicyOptions::tracer.pin_dir) the steps
  // stay watched and a held step stays held, guarded by the kernel side,
  // for the next agent to adopt. Unpinned, every step still held is killed
  // (nothing would guard its hold: a SIGCONT would run it without its
  // pre-snapshot). Idempotent.
  void stop();

  // The steps (pipeline/run/step) start() took over from an earlier agent
  // through the tracer's pinned watches: each carries on from the state the
  // catalog and the kernel side recorded. Every other unfinished step of
  // the catalog is the caller's to fail (recovery.h).
  const std::set<std::string>& adopted() const { return adopted_; }

  // Errors: EEXIST (step registered and not over), ENOENT (volume), ENXIO
  // (volume not active), EINVAL (volume is a snapshot), the cgroup's
  // (StepCgroup::open: EPERM outside the stepsnap subtree, ...; EBUSY when
  // it already has processes), or the tracer's.
  Result<nlohmann::json> register_step(const StepSpec& spec);
  // Drops a registration whose step has not started (state registered):
  // its watch ends, its cgroup is killed if a process is in it (one that
  // has not exec'd yet and would otherwise run unwatched), and it is
  // recorded failed with the reason. A step already over answers as it is.
  // Errors: ENOENT (no such step), EBUSY (started: it ends when its
  // processes exit).
  Result<nlohmann::json> unregister_step(const std::string& pipeline, const std::string& run,
                                         const std::string& step);
  // step.ready, from runner's gate: the step's processes are set up and
  // wait before CMD's exec, which runner lets happen only on this call's
  // answer. Takes the pre-snapshots (none without a pre policy) and
  // answers once they are recorded, with `registration` (what
  // register_step answered) and the snapshot names. Only for the
  // registration named, over the connection it is leased to, in state
  // registered. Errors: ENOENT (no such step), ESTALE (another
  // registration of the name), EPERM (another connection), EBUSY (an exec
  // came first, or asked twice), ECANCELED with kind pre_snapshot_failed
  // (the step was killed: CMD never ran), ESHUTDOWN (the agent stops).
  Result<nlohmann::json> step_ready(const std::string& pipeline, const std::string& run,
                                    const std::string& step, std::uint64_t registration,
                                    std::uint64_t connection);
  // The API connection `connection` closed: each registration leased to
  // it whose cgroup has no process yet expires (an error event, op
  // step.expire), since nobody is left to start it. One with a process in
  // its cgroup goes on: that process may be setting up before its exec.
  // One at runner's gate (step.ready asked) is killed: nobody is left to
  // be told its pre-snapshot is taken, so CMD must never run.
  void connection_closed(std::uint64_t connection);
  Result<nlohmann::json> status(const std::string& pipeline, const std::string& run,
                                const std::string& step);
  Result<nlohmann::json> run(const std::string& pipeline, const std::string& run);

 private:
  struct Step {
    StepSpec args;
    std::uint64_t cgroup_id = 0;
    // Held from registration: kills go through it (step_cgroup.h).
    std::shared_ptr<const StepCgroup> cgroup;
    StepState state = StepState::registered;
    bool ended_while_holding = false;
    std::optional<bpf::ExitStatus> exit;
    std::uint32_t pid = 0;
    std::uint64_t exec_mono_ns = 0;
    // The pre-snapshot hold's stamps, reported in step.started.
    HoldStamps hold;
    // While holding: when the policy gives up on the pre-snapshot.
    std::chrono::steady_clock::time_point hold_deadline{};
    // While registered: when the registration expires if its cgroup is
    // still empty.
    std::chrono::steady_clock::time_point lease_deadline{};
    // Which registration of this name it is: a deferred removal from
    // memory must not remove a newer one.
    std::uint64_t life = 0;
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
    // A pod step: the pod's cgroup (args.cgroup becomes the container's
    // once picked). Empty for other steps.
    std::string pod_cgroup;
  };

  StepPolicy(Volumes& volumes, Catalog& catalog, EventLog& events, bpf::StepTracer tracer,
             const StepPolicyOptions& options, UniqueFd wake);

  // Before the threads start: takes over the catalog's unfinished steps
  // whose watch the pinned tracer still has, moves each on from what the
  // kernel side did while no agent ran, and drops pinned watches nobody
  // claims.
  void adopt_steps();
  void adopt_step(const StepRecord& record, const std::string& subtree);
  // The tracer watch of a step.
  bpf::WatchOptions watch_options(const StepSpec& spec) const;
  void tracer_loop();
  void worker_loop();
  // Runs fn on the tracer thread and waits for its result.
  Status on_tracer(std::function<Status(bpf::StepTracer&)> fn);
  // Queues fn for the tracer thread (no wait).
  void post_tracer(std::function<void(bpf::StepTracer&)> fn);
  void post_work(std::function<void()> fn);

  void on_event(const bpf::Event& event);
  // mutex_ held: a pod step's container cgroup was picked (or could not be
  // watched): the step's cgroup is that child from now on.
  // `key` by value: the caller's is the by_cgroup_ entry this replaces.
  void on_container(std::string key, Step& step, const bpf::Event& event);
  // SIGKILL to the step's cgroup through its held fd, if it is still the
  // cgroup registered (same inode).
  static Status kill_step_cgroup(const Step& step);
  // Tracer thread: kills held steps whose hold_deadline passed. Returns the
  // next deadline still pending, if any (for the epoll timeout).
  std::optional<std::chrono::steady_clock::time_point> enforce_hold_deadlines();
  // Tracer thread: expires registrations whose lease ran out with an empty
  // cgroup, or whose cgroup directory is gone.
  void enforce_leases();
  // mutex_ held: ends a registered step that never started, with an error
  // event (op) saying why.
  void expire(const std::string& key, Step& step, const std::string& op, StepInput input);
  // Tracer thread, at stop: kills the steps still held.
  void abandon_holds();
  // mutex_ held.
  void apply(const std::string& key, Step& step, StepInput input);
  void take_snapshots(const std::string& key, Phase phase);
  // mutex_ held: step.finished, stop watching.
  void finish_step(const std::string& key, Step& step);
  // Removes an over step from memory later, on the tracer thread.
  void forget_later(const std::string& key, const Step& step);
  // mutex_ held: a group that completed after its step left memory is
  // added to the step's catalog row.
  void record_late_snapshots(const StepInfo& info, Phase phase, const GroupSnapshot& group);
  void emit(EventType type, nlohmann::json data);
  // mutex_ held: writes the step's row (inside the caller's transaction when
  // one is open, so the row and the event commit together). A failed write
  // is logged: the event still goes out, and memory stays authoritative
  // until the next restart.
  void persist(const std::string& key, const Step& step);
  StepRecord record_of(const Step& step) const;
  nlohmann::json step_json(const Step& step) const;

  Volumes& volumes_;
  Catalog& catalog_;
  StepRecords records_{volumes_, catalog_};
  EventLog& events_;
  StepPolicyOptions options_;
  std::optional<bpf::StepTracer> tracer_;  // the tracer thread's only
  UniqueFd wake_;                          // eventfd: commands for the tracer thread

  std::mutex mutex_;  // steps_, by_cgroup_
  // Notified on every step state change (mutex_): step.ready waits on it.
  std::condition_variable state_cv_;
  std::atomic<bool> closing_{false};   // stop() began: step.ready waits end
  std::map<std::string, Step> steps_;  // steps not over, and over ones until the tracer
                                       // thread forgets them (the catalog keeps them)
  std::uint64_t lives_ = 0;
  std::map<std::uint64_t, std::string> by_cgroup_;
  std::set<std::string> adopted_;

  std::mutex queue_mutex_;
  std::condition_variable work_cv_;
  std::deque<std::function<void(bpf::StepTracer&)>> tracer_queue_;
  std::deque<std::function<void()>> work_queue_;
  bool stopping_ = false;

  std::thread tracer_thread_;
  std::thread worker_thread_;
};

}  // namespace stepsnap::agent
