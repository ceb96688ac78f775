// The parts of a hold reported in step.started (pure arithmetic on the
// stamps): they add up to the whole, and a missing stamp gives 0, never a
// negative or wrapped-around part.
#include "agent/policy/hold_times.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

using std::chrono::nanoseconds;

// An exec-held step's stamps: held 8,900 ns, of which pause 5,000.
HoldStamps exec_held_stamps() {
  return {.exec = 1'000,
          .seen = 1'300,
          .snapshot_start = 1'500,
          .snapshot_end = 9'500,
          .release = 9'900,
          .flush = nanoseconds(2'000),
          .pause = nanoseconds(5'000)};
}

TEST(HoldTimes, PartsAddUpToTheHeldTime) {
  HoldParts p = hold_parts(exec_held_stamps());
  EXPECT_EQ(p.held_ns, 8'900);
  EXPECT_EQ(p.wake_ns, 300);
  EXPECT_EQ(p.queue_ns, 200);
  EXPECT_EQ(p.flush_ns, 2'000);
  EXPECT_EQ(p.pause_ns, 5'000);
  EXPECT_EQ(p.group_other_ns, 1'000);
  EXPECT_EQ(p.release_ns, 400);
  EXPECT_EQ(p.wake_ns + p.queue_ns + p.flush_ns + p.pause_ns + p.group_other_ns + p.release_ns,
            p.held_ns);
  auto j = to_json(p);
  EXPECT_EQ(j["group_other_ns"], 1'000);
  EXPECT_EQ(j.size(), 7u);
}

TEST(HoldTimes, TheGroupCallsPartsAreReportedAsMeasured) {
  HoldStamps s = exec_held_stamps();
  s.group = GroupParts{.lock_wait_ns = 10,
                       .lookup_ns = 20,
                       .status_ns = 30,
                       .txn_ns = 40,
                       .intent_ns = 50,
                       .suspend_ns = 1'000,
                       .create_snap_ns = 3'000,
                       .resume_ns = 1'000,
                       .result_ns = 60};
  auto j = to_json(hold_parts(s));
  ASSERT_TRUE(j.contains("group"));
  const auto& g = j["group"];
  EXPECT_EQ(g["lock_wait_ns"], 10);
  EXPECT_EQ(g["lookup_ns"], 20);
  EXPECT_EQ(g["status_ns"], 30);
  EXPECT_EQ(g["txn_ns"], 40);
  EXPECT_EQ(g["intent_ns"], 50);
  EXPECT_EQ(g["suspend_ns"], 1'000);
  EXPECT_EQ(g["create_snap_ns"], 3'000);
  EXPECT_EQ(g["resume_ns"], 1'000);
  EXPECT_EQ(g["result_ns"], 60);
  // The frozen window is suspend + create_snap + resume; the parts before
  // and after it are inside group_other_ns.
  EXPECT_EQ(g["suspend_ns"].get<std::int64_t>() + g["create_snap_ns"].get<std::int64_t>() +
                g["resume_ns"].get<std::int64_t>(),
            j["pause_ns"].get<std::int64_t>());
}

TEST(HoldTimes, AGatedStepIsHeldAtTheGateAndAtItsExecAndThePartsAddUp) {
  HoldStamps s{.gate = 1'000,
               .armed = 10'000,
               .exec = 50'000,
               .seen = 50'300,
               .snapshot_start = 1'200,
               .snapshot_end = 9'200,
               .release = 50'700,
               .flush = nanoseconds(2'000),
               .pause = nanoseconds(5'000)};
  HoldParts p = hold_parts(s);
  EXPECT_TRUE(p.gated);
  EXPECT_EQ(p.gate_ns, 9'000);
  EXPECT_EQ(p.exec_ns, 700);
  // runner's 40,000 ns between the answer and the exec are not a hold.
  EXPECT_EQ(p.held_ns, 9'700);
  EXPECT_EQ(p.queue_ns, 200);
  EXPECT_EQ(p.group_other_ns, 1'000);
  EXPECT_EQ(p.release_ns, 800 + 400);
  EXPECT_EQ(p.wake_ns + p.queue_ns + p.flush_ns + p.pause_ns + p.group_other_ns + p.release_ns,
            p.held_ns);
  auto j = to_json(p);
  EXPECT_EQ(j["gate_ns"], 9'000);
  EXPECT_EQ(j["exec_ns"], 700);
}

TEST(HoldTimes, AMissingOrOutOfOrderStampGivesZeroNotANegativePart) {
  // An agent restarted mid-hold knows the exec but never saw it handled.
  HoldParts p = hold_parts({.exec = 5'000, .release = 9'000});
  EXPECT_EQ(p.held_ns, 4'000);
  EXPECT_EQ(p.wake_ns, 0);
  EXPECT_EQ(p.queue_ns, 0);
  EXPECT_EQ(p.release_ns, 0);
  // dm/'s own times larger than the group's span (different clocks' rounding).
  HoldParts q = hold_parts({.exec = 1,
                            .snapshot_start = 10,
                            .snapshot_end = 20,
                            .release = 30,
                            .flush = nanoseconds(8),
                            .pause = nanoseconds(8)});
  EXPECT_EQ(q.group_other_ns, 0);
}

}  // namespace
}  // namespace stepsnap::agent
