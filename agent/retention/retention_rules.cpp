#include "agent/retention/retention_rules.h"

#include <cerrno>
#include <charconv>
#include <sstream>

#include "common/duration.h"
#include "common/names.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

std::optional<std::uint64_t> whole_number(const std::string& text) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

tl::unexpected<Error> bad(const std::string& text, const std::string& what) {
  return fail("--retention", text, EINVAL, what);
}

}  // namespace

const RetentionRule* rule_for(const RetentionRules& rules, const std::string& pipeline) {
  if (auto it = rules.find(pipeline); it != rules.end()) return &it->second;
  if (auto it = rules.find(kDefaultRulePipeline); it != rules.end()) return &it->second;
  return nullptr;
}

Result<NamedRule> parse_rule_text(const std::string& text) {
  std::istringstream in(text);
  NamedRule out;
  if (!(in >> out.pipeline)) {
    return bad(text, "empty; give PIPELINE keep-runs=N, max-age=DURATION, ...");
  }
  if (out.pipeline != kDefaultRulePipeline) {
    if (auto problem = name_problem(out.pipeline)) {
      return bad(text, "pipeline \"" + out.pipeline + "\" " + *problem + "; " +
                           std::string(kNameRule) + " (or * for every other pipeline)");
    }
  }
  std::string word;
  while (in >> word) {
    auto eq = word.find('=');
    if (eq == std::string::npos) {
      return bad(text, "\"" + word +
                           "\" is not KEY=VALUE; use keep-runs=N, keep-failed-runs=N, "
                           "max-age=DURATION or keep=LABEL");
    }
    std::string key = word.substr(0, eq), value = word.substr(eq + 1);
    if (key == "keep-runs" || key == "keep-failed-runs") {
      auto n = whole_number(value);
      if (!n) return bad(text, key + ": \"" + value + "\" is not a whole number");
      if (key == "keep-runs") {
        if (*n == 0) {
          return bad(text,
                     "keep-runs=0 would delete the run that just finished; give 1 or more, or "
                     "use max-age");
        }
        out.rule.keep_runs = *n;
      } else {
        out.rule.keep_failed_runs = *n;
      }
    } else if (key == "max-age") {
      auto s = parse_duration_seconds(value);
      if (!s || *s == 0) {
        return bad(text, "max-age: \"" + value + "\" is not a duration such as 12h, 7d or 2w");
      }
      out.rule.max_age_seconds = *s;
    } else if (key == "keep") {
      if (auto problem = name_problem(value)) {
        return bad(text, "keep: label \"" + value + "\" " + *problem);
      }
      out.rule.keep_labels.push_back(value);
    } else {
      return bad(text,
                 "\"" + key + "\" is not a rule; use keep-runs, keep-failed-runs, max-age or keep");
    }
  }
  return out;
}

json rule_json(const RetentionRule& rule) {
  json j = json::object();
  if (rule.keep_runs) j["keep_runs"] = *rule.keep_runs;
  j["keep_failed_runs"] = rule.keep_failed_runs;
  if (rule.max_age_seconds) j["max_age_seconds"] = *rule.max_age_seconds;
  j["keep"] = rule.keep_labels;
  return j;
}

Result<RetentionRule> rule_from_json(const json& j) {
  RetentionRule rule;
  try {
    if (!j.is_object()) throw std::runtime_error("not an object");
    if (j.contains("keep_runs")) rule.keep_runs = j.at("keep_runs").get<std::uint64_t>();
    rule.keep_failed_runs = j.value("keep_failed_runs", std::uint64_t{0});
    if (j.contains("max_age_seconds"))
      rule.max_age_seconds = j.at("max_age_seconds").get<std::uint64_t>();
    if (j.contains("keep")) rule.keep_labels = j.at("keep").get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    return fail("retention rule", j.dump(), EINVAL, e.what());
  }
  return rule;
}

}  // namespace stepsnap::agent
