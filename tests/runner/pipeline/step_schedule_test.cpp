// StepSchedule (label unit): which steps of a run may start at once, and
// which are skipped when a step fails, without processes.
#include "runner/pipeline/step_schedule.h"

#include <gtest/gtest.h>

namespace stepsnap::runner {
namespace {

using Steps = std::vector<std::size_t>;

// a -> {b, c} -> d, and e on its own.
PipelineSpec diamond() {
  auto spec = parse_pipeline(R"({"pipeline": "p", "volumes": [{"name": "ws", "mount": "/w"}],
    "steps": [
      {"name": "a", "command": ["true"]},
      {"name": "b", "command": ["true"], "after": ["a"]},
      {"name": "c", "command": ["true"], "after": ["a"]},
      {"name": "d", "command": ["true"], "after": ["b", "c"]},
      {"name": "e", "command": ["true"]}]})",
                             "p.json");
  EXPECT_TRUE(spec) << spec.error().message();
  return *spec;
}

TEST(StepSchedule, StepsWhoseDependenciesAreDoneStartTogetherUpToTheSlots) {
  PipelineSpec spec = diamond();
  StepSchedule s(spec, *execution_order(spec), {});
  EXPECT_EQ(s.start_ready(4), (Steps{0, 4}));  // a and e: nothing before them
  EXPECT_EQ(s.start_ready(4), Steps{});        // b and c wait for a
  s.finished(0, true);
  EXPECT_EQ(s.start_ready(2), Steps{1});  // two slots, e still holds one
  s.finished(4, true);
  EXPECT_EQ(s.start_ready(2), Steps{2});
  EXPECT_EQ(s.running(), 2u);
  s.finished(1, true);
  EXPECT_EQ(s.start_ready(2), Steps{});  // d waits for c too
  s.finished(2, true);
  EXPECT_EQ(s.start_ready(2), Steps{3});
  EXPECT_FALSE(s.done());
  s.finished(3, true);
  EXPECT_TRUE(s.done());
  EXPECT_TRUE(s.take_settled().empty());
}

TEST(StepSchedule, OneSlotIsTheSequentialOrder) {
  PipelineSpec spec = diamond();
  StepSchedule s(spec, *execution_order(spec), {});
  Steps ran;
  while (!s.done()) {
    for (std::size_t i : s.start_ready(1)) {
      ran.push_back(i);
      s.finished(i, true);
    }
  }
  EXPECT_EQ(ran, *execution_order(spec));
}

TEST(StepSchedule, AFailureSkipsItsDependentsAndTheRestStillRuns) {
  PipelineSpec spec = diamond();
  StepSchedule s(spec, *execution_order(spec), {});
  EXPECT_EQ(s.start_ready(4), (Steps{0, 4}));
  s.finished(0, true);
  EXPECT_EQ(s.start_ready(4), (Steps{1, 2}));
  s.finished(1, false);  // b fails while c still runs
  auto settled = s.take_settled();
  ASSERT_EQ(settled.size(), 1u);
  EXPECT_EQ(settled[0].step, 3u);  // d, because of b
  EXPECT_EQ(settled[0].skipped_because, 1u);
  EXPECT_FALSE(s.done());  // c and e still run
  s.finished(2, true);
  s.finished(4, true);
  EXPECT_EQ(s.start_ready(4), Steps{});
  EXPECT_TRUE(s.done());
}

TEST(StepSchedule, RestoredStepsCountAsDoneAndAreReportedFirst) {
  PipelineSpec spec = diamond();
  StepSchedule s(spec, *execution_order(spec), {0, 1});
  auto settled = s.take_settled();
  ASSERT_EQ(settled.size(), 2u);
  EXPECT_FALSE(settled[0].skipped_because);
  EXPECT_EQ(s.start_ready(4), (Steps{2, 4}));
}

}  // namespace
}  // namespace stepsnap::runner
