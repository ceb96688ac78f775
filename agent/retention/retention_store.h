// The rules in force: those of the config file (--retention), overlaid by
// those set over the API (retention.set), which are kept in a file in the
// state directory so that they survive a restart. An API rule of a
// pipeline replaces its config rule whole; clearing it brings the config
// rule back.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/retention/retention_rules.h"
#include "common/error.h"

namespace stepsnap::agent {

class RetentionStore {
 public:
  // Reads `file` (absent: no API rules yet). A file that does not parse is
  // an error naming it: starting without the rules someone set would
  // delete what they meant to keep.
  static Result<RetentionStore> open(RetentionRules config, std::string file);

  RetentionStore(RetentionStore&& other) noexcept;

  RetentionRules rules() const;
  // Sets (or, with rule nullopt, clears) the API rule of `pipeline` and
  // writes the file (a new file renamed over the old: never half-written).
  Status set(const std::string& pipeline, const std::optional<RetentionRule>& rule);
  // [{"pipeline":..,"source":"config"|"api", ...rule_json}], by pipeline.
  nlohmann::json show() const;

 private:
  RetentionStore(RetentionRules config, std::string file)
      : config_(std::move(config)), file_(std::move(file)) {}
  Status save() const;  // with mutex_ held

  mutable std::mutex mutex_;
  RetentionRules config_;
  RetentionRules api_;
  std::string file_;
};

}  // namespace stepsnap::agent
