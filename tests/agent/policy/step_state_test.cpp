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
constexpr StepPolicyFlags kPre{true, false};

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

// Under a pre policy the first exec must come held; an unheld one is
// already running its program without a pre-snapshot: killed, never started.
TEST(StepState, AnUnheldFirstExecUnderAPrePolicyIsKilledNotStarted) {
  for (auto flags : {kBoth, kPre})
    expect(step_transition(S::registered, I::exec, flags), S::failed, A::kill);
  expect(step_transition(S::failed, I::step_end, kPre), S::failed, A::finish);
}

TEST(StepState, AHoldLostOrBrokenInTheKernelFailsTheStep) {
  expect(step_transition(S::registered, I::hold_lost, kBoth), S::failed, A::kill);
  expect(step_transition(S::holding, I::hold_broken, kBoth), S::failed, A::kill);
  // Continued between the decision to release and the release itself.
  expect(step_transition(S::running, I::hold_broken, kBoth), S::failed, A::kill);
  // A pre-snapshot that completes after the break changes nothing.
  expect(step_transition(S::failed, I::pre_done, kBoth), S::failed, A::none);
}

TEST(StepState, AProcessThatLeftTheCgroupOrWasNotCountedFailsTheStep) {
  for (S s : {S::registered, S::holding, S::running})
    expect(step_transition(s, I::lost_track, kBoth), S::failed, A::kill);
  // Its end is what the post-snapshot waits for anyway.
  expect(step_transition(S::finishing, I::lost_track, kBoth), S::finishing, A::none);
  expect(step_transition(S::failed, I::lost_track, kBoth), S::failed, A::none);
}

TEST(StepState, AnAgentStoppingKillsAHeldStep) {
  expect(step_transition(S::holding, I::abandon, kBoth), S::failed, A::kill);
}

TEST(StepState, UnregisterAndExpiryEndOnlyAStepThatHasNotStarted) {
  for (auto in : {I::unregister, I::expired}) {
    expect(step_transition(S::registered, in, kBoth), S::failed, A::finish);
    expect(step_transition(S::holding, in, kBoth), S::holding, A::none);
    expect(step_transition(S::running, in, kBoth), S::running, A::none);
    expect(step_transition(S::finished, in, kBoth), S::finished, A::none);
  }
}

TEST(StepState, RunnersGateThePreSnapshotIsTakenBeforeCmdExecsAndItsExecIsReleasedAtOnce) {
  expect(step_transition(S::registered, I::gate_ready, kBoth), S::preparing, A::take_pre);
  expect(step_transition(S::preparing, I::pre_done, kBoth), S::armed, A::none);
  expect(step_transition(S::armed, I::held_exec, kBoth), S::running, A::release);
  // No pre policy: confirmed at once, CMD's exec is the start.
  expect(step_transition(S::registered, I::gate_ready, kPost), S::armed, A::none);
  expect(step_transition(S::armed, I::exec, kPost), S::running, A::mark_started);
  expect(step_transition(S::armed, I::held_exec, kNone), S::running, A::release);
}

TEST(StepState, RunnersGateAnExecBeforeTheGateOpensOrAnUnheldOneUnderPreIsKilled) {
  for (auto in : {I::held_exec, I::exec, I::pre_failed, I::hold_lost, I::lost_track})
    expect(step_transition(S::preparing, in, kBoth), S::failed, A::kill);
  expect(step_transition(S::armed, I::exec, kBoth), S::failed, A::kill);
  expect(step_transition(S::armed, I::lost_track, kBoth), S::failed, A::kill);
}

TEST(StepState, RunnersGateClosedOrItsConnectionLostTheStepFailsAndCmdNeverRan) {
  for (S s : {S::preparing, S::armed}) {
    expect(step_transition(s, I::expired, kBoth), S::failed, A::kill);
    expect(step_transition(s, I::step_end, kBoth), S::failed, A::finish);
    expect(step_transition(s, I::unregister, kBoth), S::failed, A::finish);
    expect(step_transition(s, I::gate_ready, kBoth), s, A::none);
  }
}

TEST(StepState, DuplicateInputsAreIgnored) {
  expect(step_transition(S::running, I::held_exec, kBoth), S::running, A::none);
  expect(step_transition(S::finished, I::step_end, kBoth), S::finished, A::none);
  expect(step_transition(S::running, I::exec, kBoth), S::running, A::none);
}

}  // namespace
}  // namespace stepsnap::agent
