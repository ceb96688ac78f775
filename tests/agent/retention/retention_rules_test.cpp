// The rule text of --retention and the rules file's JSON (pure), and the
// duration words they use.
#include "agent/retention/retention_rules.h"

#include <gtest/gtest.h>

#include "common/duration.h"

namespace stepsnap::agent {
namespace {

TEST(RetentionRules, ParsesEveryLimit) {
  auto r = parse_rule_text("train keep-runs=5 keep-failed-runs=2 max-age=7d keep=pin keep=golden");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->pipeline, "train");
  EXPECT_EQ(r->rule.keep_runs, 5u);
  EXPECT_EQ(r->rule.keep_failed_runs, 2u);
  EXPECT_EQ(r->rule.max_age_seconds, 7u * 86400);
  EXPECT_EQ(r->rule.keep_labels, (std::vector<std::string>{"pin", "golden"}));
  auto d = parse_rule_text("* max-age=12h");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->pipeline, "*");
  EXPECT_FALSE(d->rule.keep_runs);
  EXPECT_EQ(d->rule.max_age_seconds, 12u * 3600);
}

TEST(RetentionRules, RefusesWhatItCannotMeanInOneLine) {
  for (const char* bad :
       {"", "train keep-runs=0", "train keep-runs=x", "train max-age=7y", "train max-age=0",
        "train keep-runs", "train keep_runs=1", "bad/name keep-runs=1", "train keep=bad/label"}) {
    auto r = parse_rule_text(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("--retention"), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
  }
}

TEST(RetentionRules, JsonRoundTrip) {
  RetentionRule rule{
      .keep_runs = 3, .keep_failed_runs = 1, .max_age_seconds = 60, .keep_labels = {"k"}};
  auto back = rule_from_json(rule_json(rule));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, rule);
  EXPECT_FALSE(rule_from_json(nlohmann::json{{"keep_runs", "three"}}));
}

TEST(RetentionRules, RuleForFallsBackToTheDefault) {
  RetentionRules rules{{"*", {.keep_runs = 1}}, {"a", {.keep_runs = 2}}};
  EXPECT_EQ(rule_for(rules, "a")->keep_runs, 2u);
  EXPECT_EQ(rule_for(rules, "b")->keep_runs, 1u);
  EXPECT_EQ(rule_for({}, "b"), nullptr);
}

TEST(Duration, WordsAndSeconds) {
  EXPECT_EQ(parse_duration_seconds("90"), 90u);
  EXPECT_EQ(parse_duration_seconds("90s"), 90u);
  EXPECT_EQ(parse_duration_seconds("45m"), 2700u);
  EXPECT_EQ(parse_duration_seconds("2w"), 14u * 86400);
  EXPECT_FALSE(parse_duration_seconds("d"));
  EXPECT_FALSE(parse_duration_seconds("-1d"));
  EXPECT_FALSE(parse_duration_seconds("1.5h"));
  EXPECT_FALSE(parse_duration_seconds("999999999999d"));
  EXPECT_EQ(format_duration_seconds(604800), "1w");
  EXPECT_EQ(format_duration_seconds(5400), "90m");
  EXPECT_EQ(format_duration_seconds(0), "0s");
}

}  // namespace
}  // namespace stepsnap::agent
