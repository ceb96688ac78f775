// The life of a registered step as a pure state machine: what the step
// policy does at each tracer event or snapshot result. No I/O here; the
// policy (step_policy.h) performs the returned action. Unit-tested.
//
//   registered --held exec--> holding   (take pre-snapshots; step stopped)
//   registered --gate ready-> preparing (take pre-snapshots; the step's
//                                        only process waits at runner's gate,
//                                        before CMD's exec; step.ready)
//   registered --gate ready-> armed     (no pre policy: confirm at once)
//   preparing --pre done----> armed     (confirmed to runner, which opens
//                                        its gate: CMD execs)
//   preparing --pre failed--> failed    (kill the cgroup: CMD never ran)
//   preparing or armed
//             --any exec----> failed    (preparing: an exec before the
//                                        gate opened; kill)
//   armed     --held exec---> running   (CMD's exec: release it at once)
//   armed     --exec--------> running   (no pre policy: note the start)
//   armed     --exec--------> failed    (pre policy, exec not held: kill)
//   preparing or armed
//             --expired-----> failed    (runner's connection closed: nobody
//                                        can open the gate; kill)
//   preparing or armed
//             --step end----> failed    (the gate closed: CMD never ran)
//   preparing or armed
//             --unregister--> failed    (runner gave up at its gate; the
//                                        policy killed what was there)
//   registered --exec-------> running   (no pre policy: just note the start)
//   registered --exec-------> failed    (pre policy: an exec that was not held
//                                        would run without its pre-snapshot;
//                                        kill it)
//   registered --hold lost--> failed    (the kernel killed the exec it could
//                                        not hold; kill the rest)
//   registered --step end---> failed    (no exec ever: its launcher failed)
//   registered --unregister-> failed    (dropped before it started; finish)
//   registered --expired----> failed    (no process in its lease, or its
//                                        cgroup vanished; finish)
//   holding   --pre done----> running   (release the step)
//   holding   --pre failed--> failed    (kill the cgroup, never release)
//   holding   --hold timeout> failed    (kill it while still stopped)
//   holding   --hold broken-> failed    (continued from outside before its
//                                        release: the kernel killed it; kill
//                                        the rest)
//   holding   --abandon-----> failed    (the agent stops: kill it, nothing
//                                        would guard the hold)
//   running   --hold broken-> failed    (continued from outside between the
//                                        decision to release and the release)
//   registered, holding or running
//             --lost track--> failed    (a process left the step's cgroup, or
//                                        could not be counted: its writes or its
//                                        end would escape the snapshots; kill)
//   running   --step end----> finishing (take post-snapshots, or finish)
//   holding   --step end----> holding   (remembered; handled at pre done)
//   finishing --post done---> finished
//   finishing --post failed-> failed
//   failed    --step end----> failed    (report step.finished, stop watching)
#pragma once

#include <string_view>

namespace stepsnap::agent {

enum class StepState {
  registered,
  preparing,  // step.ready: the pre-snapshot under way, the step at runner's gate
  armed,      // the pre-snapshot confirmed to runner; CMD's exec is next
  holding,
  running,
  finishing,
  finished,
  failed
};
std::string_view to_string(StepState s);

enum class StepInput {
  held_exec,     // the tracer stopped the step's first exec
  gate_ready,    // step.ready: runner's step is set up and waits at its gate
  exec,          // the step's main process exec'd (not held)
  pre_done,      // pre-snapshots taken
  pre_failed,    // pre-snapshots failed
  hold_timeout,  // the pre-snapshot was not taken within --hold-timeout
  hold_lost,     // the kernel killed the first exec: its hold could not be reported
  hold_broken,   // the held process was continued (SIGCONT) before its release
  abandon,       // the agent stops while the step is held
  unregister,    // step.unregister before the step started
  expired,       // no process in the cgroup within the lease, or the cgroup is gone
  lost_track,    // a process of the step left its cgroup, or could not be counted
  step_end,      // every process of the step is gone
  post_done,
  post_failed,
};

enum class StepAction {
  none,          // ignore (duplicate or out-of-order input)
  take_pre,      // snapshot the volumes (phase pre)
  release,       // emit step.started, release the held process
  mark_started,  // emit step.started (held 0)
  kill,          // kill the cgroup, emit error
  take_post,     // snapshot the volumes (phase post), then finish
  finish,        // emit step.finished (no post-snapshot), stop watching
};

struct StepPolicyFlags {
  bool pre = false;
  bool post = false;
};

struct StepTransition {
  StepState next;
  StepAction action;
};

// A step_end while holding changes nothing here: the policy remembers it
// and feeds step_end again once the step is running (or failed).
StepTransition step_transition(StepState state, StepInput input, StepPolicyFlags flags);

}  // namespace stepsnap::agent
