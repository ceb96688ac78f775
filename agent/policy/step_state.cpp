#include "agent/policy/step_state.h"

namespace stepsnap::agent {

std::string_view to_string(StepState s) {
  switch (s) {
    case StepState::registered:
      return "registered";
    case StepState::preparing:
      return "preparing";
    case StepState::armed:
      return "armed";
    case StepState::holding:
      return "holding";
    case StepState::running:
      return "running";
    case StepState::finishing:
      return "finishing";
    case StepState::finished:
      return "finished";
    case StepState::failed:
      return "failed";
  }
  return "unknown";
}

StepTransition step_transition(StepState state, StepInput input, StepPolicyFlags flags) {
  using S = StepState;
  using I = StepInput;
  using A = StepAction;
  auto end_action = [&]() {
    return flags.post ? StepTransition{S::finishing, A::take_post}
                      : StepTransition{S::finished, A::finish};
  };
  switch (state) {
    case S::registered:
      if (input == I::held_exec) {
        return flags.pre ? StepTransition{S::holding, A::take_pre}
                         : StepTransition{S::running, A::release};
      }
      // Under a pre policy every first exec must come held: one that did
      // not (its hold was never made) is already running its program
      // without a pre-snapshot, so it is killed, never called started.
      if (input == I::exec) {
        return flags.pre ? StepTransition{S::failed, A::kill}
                         : StepTransition{S::running, A::mark_started};
      }
      if (input == I::gate_ready) {
        return flags.pre ? StepTransition{S::preparing, A::take_pre}
                         : StepTransition{S::armed, A::none};
      }
      if (input == I::hold_lost || input == I::lost_track) return {S::failed, A::kill};
      // Gone before any exec: the step's launcher failed in its setup, so
      // CMD never ran; there is no state worth a post-snapshot.
      if (input == I::step_end || input == I::unregister || input == I::expired) {
        return {S::failed, A::finish};
      }
      break;
    case S::preparing:
      if (input == I::pre_done) return {S::armed, A::none};
      // Nothing of the step may exec before runner opens its gate, and
      // runner opens it only once this state is left for armed.
      if (input == I::pre_failed || input == I::held_exec || input == I::exec ||
          input == I::hold_lost || input == I::lost_track || input == I::expired) {
        return {S::failed, A::kill};
      }
      if (input == I::step_end || input == I::unregister) return {S::failed, A::finish};
      break;
    case S::armed:
      if (input == I::held_exec) return {S::running, A::release};
      if (input == I::exec) {
        return flags.pre ? StepTransition{S::failed, A::kill}
                         : StepTransition{S::running, A::mark_started};
      }
      if (input == I::hold_lost || input == I::lost_track || input == I::expired) {
        return {S::failed, A::kill};
      }
      if (input == I::step_end || input == I::unregister) return {S::failed, A::finish};
      break;
    case S::holding:
      if (input == I::pre_done) return {S::running, A::release};
      if (input == I::pre_failed || input == I::hold_timeout || input == I::hold_broken ||
          input == I::abandon || input == I::lost_track) {
        return {S::failed, A::kill};
      }
      break;
    case S::running:
      if (input == I::step_end) return end_action();
      if (input == I::hold_broken || input == I::lost_track) return {S::failed, A::kill};
      break;
    case S::finishing:
      if (input == I::post_done) return {S::finished, A::none};
      if (input == I::post_failed) return {S::failed, A::none};
      break;
    case S::failed:
      if (input == I::step_end) return {S::failed, A::finish};
      break;
    case S::finished:
      break;
  }
  return {state, A::none};
}

}  // namespace stepsnap::agent
