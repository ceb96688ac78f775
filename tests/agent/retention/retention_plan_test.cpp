// Which runs a sweep deletes, given runs and rules (pure: no catalog, no
// kernel, a fixed clock).
#include "agent/retention/retention_plan.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

constexpr std::int64_t kHour = 3600LL * 1'000'000'000;
constexpr std::int64_t kNow = 1000 * kHour;

// Run `n` of pipeline p, made n hours before kNow (run-1 the newest).
RunFacts run(const std::string& p, int n) {
  RunFacts f;
  f.ref = {p, "run-" + std::to_string(n)};
  f.created_ns = kNow - n * kHour;
  return f;
}

std::vector<std::string> names(const std::vector<RunVerdict>& v) {
  std::vector<std::string> out;
  for (const auto& r : v) out.push_back(r.ref.pipeline + "/" + r.ref.run);
  return out;
}

TEST(RetentionPlan, KeepRunsDeletesAllButTheNewestOldestFirst) {
  std::vector<RunFacts> runs;
  for (int n = 1; n <= 5; ++n) runs.push_back(run("p", n));
  RetentionRules rules{{"p", {.keep_runs = 2}}};
  auto plan = plan_retention(runs, rules, kNow);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"p/run-5", "p/run-4", "p/run-3"}));
  EXPECT_TRUE(plan.kept.empty());
  EXPECT_NE(plan.remove[0].reason.find("keep-runs 2"), std::string::npos) << plan.remove[0].reason;
}

TEST(RetentionPlan, NoRuleNoDefaultDeletesNothing) {
  std::vector<RunFacts> runs{run("p", 1), run("p", 900)};
  auto plan = plan_retention(runs, {{"other", {.keep_runs = 1}}}, kNow);
  EXPECT_TRUE(plan.remove.empty());
  // A rule with no limit deletes nothing either.
  plan = plan_retention(runs, {{"p", {.keep_labels = {"pin"}}}}, kNow);
  EXPECT_TRUE(plan.remove.empty());
}

TEST(RetentionPlan, DefaultRuleAppliesOnlyWithoutAnOwnRule) {
  std::vector<RunFacts> runs{run("a", 1), run("a", 2), run("b", 1), run("b", 2)};
  RetentionRules rules{{"*", {.keep_runs = 1}}, {"b", {.keep_runs = 5}}};
  auto plan = plan_retention(runs, rules, kNow);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"a/run-2"}));
}

TEST(RetentionPlan, MaxAgeDeletesOlderRuns) {
  std::vector<RunFacts> runs{run("p", 1), run("p", 23), run("p", 25), run("p", 48)};
  RetentionRules rules{{"p", {.max_age_seconds = 24 * 3600}}};
  auto plan = plan_retention(runs, rules, kNow);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"p/run-48", "p/run-25"}));
  EXPECT_NE(plan.remove[0].reason.find("max-age 1d"), std::string::npos) << plan.remove[0].reason;
}

TEST(RetentionPlan, KeepRunsAndMaxAgeBothApply) {
  std::vector<RunFacts> runs{run("p", 1), run("p", 2), run("p", 30), run("p", 40)};
  // keep-runs 3 keeps run-30, but it is older than a day.
  RetentionRules rules{{"p", {.keep_runs = 3, .max_age_seconds = 24 * 3600}}};
  auto plan = plan_retention(runs, rules, kNow);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"p/run-40", "p/run-30"}));
}

TEST(RetentionPlan, KeepFailedRunsKeepsTheNewestFailedBeyondTheLimits) {
  std::vector<RunFacts> runs;
  for (int n = 1; n <= 6; ++n) runs.push_back(run("p", n));
  runs[2].failed = true;  // run-3
  runs[4].failed = true;  // run-5
  runs[5].failed = true;  // run-6
  RetentionRules rules{{"p", {.keep_runs = 1, .keep_failed_runs = 2}}};
  auto plan = plan_retention(runs, rules, kNow);
  // run-3 and run-5 are the two newest failed runs; run-6 is the third.
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"p/run-6", "p/run-4", "p/run-2"}));
  EXPECT_EQ(names(plan.kept), (std::vector<std::string>{"p/run-3", "p/run-5"}));
  // A failed run within keep-runs counts as one of the newest failed.
  runs[0].failed = true;  // run-1, kept by keep-runs anyway
  plan = plan_retention(runs, rules, kNow);
  EXPECT_EQ(names(plan.kept), (std::vector<std::string>{"p/run-3"}));
}

TEST(RetentionPlan, KeepLabelPinsTheWholeRun) {
  std::vector<RunFacts> runs{run("p", 1), run("p", 2), run("p", 3)};
  runs[2].label_keys = {{"pin", "run-3.train.ws.post"}};
  runs[1].label_keys = {{"other", "x"}};
  RetentionRules rules{{"p", {.keep_runs = 1, .keep_labels = {"pin"}}}};
  auto plan = plan_retention(runs, rules, kNow);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"p/run-2"}));
  ASSERT_EQ(plan.kept.size(), 1u);
  EXPECT_NE(plan.kept[0].reason.find("run-3.train.ws.post"), std::string::npos);
}

TEST(RetentionPlan, ABusyRunStays) {
  std::vector<RunFacts> runs{run("p", 1), run("p", 2)};
  runs[1].busy = "step train is running";
  auto plan = plan_retention(runs, {{"p", {.keep_runs = 1}}}, kNow);
  EXPECT_TRUE(plan.remove.empty());
  ASSERT_EQ(plan.kept.size(), 1u);
  EXPECT_NE(plan.kept[0].reason.find("train is running"), std::string::npos);
}

TEST(RetentionPlan, ARunNeededOutsideStaysUnlessItsDependentGoesToo) {
  std::vector<RunFacts> runs{run("p", 1), run("p", 2), run("p", 3), run("p", 4)};
  // run-4's snapshot is the origin of a user's clone (no run).
  runs[3].needed_by = {{"my-clone", "run-4.train.ws.pre", "origin", std::nullopt}};
  // run-3's snapshot is where run-2 was restored from; both go.
  runs[2].needed_by = {{"p.run-2.ws", "run-3.train.ws.pre", "origin", RunRef{"p", "run-2"}}};
  auto plan = plan_retention(runs, {{"p", {.keep_runs = 1}}}, kNow);
  // Oldest first would be run-3, run-2; run-2 needs run-3, so it goes first.
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"p/run-2", "p/run-3"}));
  ASSERT_EQ(plan.kept.size(), 1u);
  EXPECT_EQ(plan.kept[0].ref.run, "run-4");
  EXPECT_NE(plan.kept[0].reason.find("my-clone"), std::string::npos);
}

TEST(RetentionPlan, ANeedChainStaysWhenItsNewestLinkStays) {
  std::vector<RunFacts> runs{run("p", 1), run("p", 2), run("p", 3)};
  // run-1 (kept by keep-runs) was restored from run-2, run-2 from run-3.
  runs[1].needed_by = {{"c1", "s2", "origin", RunRef{"p", "run-1"}}};
  runs[2].needed_by = {{"c2", "s3", "origin", RunRef{"p", "run-2"}}};
  auto plan = plan_retention(runs, {{"p", {.keep_runs = 1}}}, kNow);
  EXPECT_TRUE(plan.remove.empty());
  EXPECT_EQ(plan.kept.size(), 2u);
}

TEST(RetentionPlan, AReceivedIncrementalKeepsItsBase) {
  std::vector<RunFacts> runs{run("p", 1), run("q", 5)};
  // A snapshot received into pipeline p's run-1 has its base in q's run-5.
  runs[1].needed_by = {{"recv", "q5.train.ws.post", "base", RunRef{"p", "run-1"}}};
  auto plan = plan_retention(runs, {{"*", {.max_age_seconds = 3600}}}, kNow);
  EXPECT_TRUE(plan.remove.empty());
  ASSERT_EQ(plan.kept.size(), 1u);
  EXPECT_NE(plan.kept[0].reason.find("base"), std::string::npos);
}

TEST(RetentionPlan, PipelinesAreCountedApart) {
  std::vector<RunFacts> runs;
  for (int n = 1; n <= 3; ++n) {
    runs.push_back(run("a", n));
    runs.push_back(run("b", n));
  }
  auto plan = plan_retention(runs, {{"*", {.keep_runs = 2}}}, kNow);
  EXPECT_EQ(names(plan.remove), (std::vector<std::string>{"a/run-3", "b/run-3"}));
}

}  // namespace
}  // namespace stepsnap::agent
