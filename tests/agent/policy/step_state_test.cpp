// The step policy's state machine (pure).
#include "agent/policy/step_state.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

using S = StepState;
using I = StepInput;
using A = StepAction;
constexpr StepPolicyFlags kBoth{true, true};
constexpr StepPolicyFlags kPost{false, true};
constexpr StepPolicyFlags kNone{false, false};

void expect(StepTransition t, S next, A action) {
  EXPECT_EQ(t.next, next) << to_string(t.next);
  EXPECT_EQ(t.action, action);
}

TEST(StepState, BothPolicyHappyPath) {
  expect(step_transition(S::registered, I::held_exec, kBoth), S::holding, A::take_pre);
  expect(step_transition(S::holding, I::pre_done, kBoth), S::running, A::release);
  expect(step_transition(S::running, I::step_end, kBoth), S::finishing, A::take_post);
  expect(step_transition(S::finishing, I::post_done, kBoth), S::finished, A::none);
}

TEST(StepState, PreFailureKillsAndNeverReleases) {
  expect(step_transition(S::holding, I::pre_failed, kBoth), S::failed, A::kill);
  expect(step_transition(S::holding, I::hold_timeout, kBoth), S::failed, A::kill);
  expect(step_transition(S::failed, I::step_end, kBoth), S::failed, A::finish);
  expect(step_transition(S::failed, I::pre_done, kBoth), S::failed, A::none);
}

TEST(StepState, AStepGoneBeforeAnyExecFailsWithoutSnapshots) {
  // Its launcher failed during setup: nothing ran, nothing to snapshot.
  for (auto flags : {kBoth, kPost, kNone})
    expect(step_transition(S::registered, I::step_end, flags), S::failed, A::finish);
}

TEST(StepState, StepEndWhileHoldingWaitsForThePreSnapshot) {
  expect(step_transition(S::holding, I::step_end, kBoth), S::holding, A::none);
}

TEST(StepState, WithoutPrePolicyAHeldExecIsReleasedAtOnce) {
  expect(step_transition(S::registered, I::held_exec, kPost), S::running, A::release);
  expect(step_transition(S::registered, I::exec, kPost), S::running, A::mark_started);
  expect(step_transition(S::running, I::step_end, kPost), S::finishing, A::take_post);
}

TEST(StepState, NonePolicyFinishesWithoutSnapshots) {
  expect(step_transition(S::registered, I::exec, kNone), S::running, A::mark_started);
  expect(step_transition(S::running, I::step_end, kNone), S::finished, A::finish);
}

TEST(StepState, DuplicateInputsAreIgnored) {
  expect(step_transition(S::running, I::held_exec, kBoth), S::running, A::none);
  expect(step_transition(S::finished, I::step_end, kBoth), S::finished, A::none);
  expect(step_transition(S::running, I::exec, kBoth), S::running, A::none);
}

}  // namespace
}  // namespace stepsnap::agent
