// agent/retention/: which pipeline runs to keep, and the sweep that deletes
// the others. Uses agent/volumes (and what that uses).
//
// A retention rule of one pipeline (docs/retention.md). Each limit is
// optional; a rule with no limit deletes nothing.
//   keep_runs N         the newest N runs stay; older ones go
//   max_age S           runs older than S seconds go
//   keep_failed_runs N  the newest N failed runs stay even when keep_runs or
//                       max_age would delete them. A count, not a bool: a
//                       pipeline failing every night would otherwise grow
//                       without bound, the thing retention is there to stop.
//   keep LABEL...       a run with a snapshot carrying any of these label
//                       keys is never deleted (the label pins it)
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace stepsnap::agent {

// The pipeline name of the rule that applies to pipelines without their own.
inline constexpr const char* kDefaultRulePipeline = "*";

struct RetentionRule {
  std::optional<std::uint64_t> keep_runs;
  std::uint64_t keep_failed_runs = 0;
  std::optional<std::uint64_t> max_age_seconds;
  std::vector<std::string> keep_labels;

  bool deletes_anything() const { return keep_runs || max_age_seconds; }
  bool operator==(const RetentionRule&) const = default;
};

// Rules by pipeline name ("*": the default rule).
using RetentionRules = std::map<std::string, RetentionRule>;

// The rule for `pipeline`: its own, else the default, else none.
const RetentionRule* rule_for(const RetentionRules& rules, const std::string& pipeline);

// One --retention value, as in the config file:
//   "PIPELINE [keep-runs=N] [keep-failed-runs=N] [max-age=DURATION] [keep=LABEL]..."
// PIPELINE is a pipeline name or "*". Errors name the word and what to do.
struct NamedRule {
  std::string pipeline;
  RetentionRule rule;
};
Result<NamedRule> parse_rule_text(const std::string& text);

// The API's form: {"keep_runs":5,"keep_failed_runs":1,"max_age_seconds":604800,"keep":["pin"]}
// (absent limits are left out).
nlohmann::json rule_json(const RetentionRule& rule);
// The reverse, for the rules file the daemon keeps; EINVAL on a bad shape.
Result<RetentionRule> rule_from_json(const nlohmann::json& j);

}  // namespace stepsnap::agent
