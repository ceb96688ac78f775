// stepsnapctl's tables for retention.show / retention.set (the rules) and
// gc (what a sweep deleted or would delete, and what it kept). Pure.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace stepsnap::agent {

// {"rules":[{pipeline, source, keep_runs?, keep_failed_runs, max_age_seconds?, keep}]}
std::string format_rules(const nlohmann::json& result);
// gc's answer: {dry_run, deleted:[{pipeline, run, reason, devices, error?}], kept:[...]}
std::string format_sweep(const nlohmann::json& result);

}  // namespace stepsnap::agent
