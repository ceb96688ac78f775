// step.status and run.show as the catalog records them: a step's row (or
// the live step's view, which wins over it), its snapshots and whether its
// post-snapshots are exact. Needs no tracer, so the agent answers these
// reads even when the step tracer did not start.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "agent/catalog/catalog.h"
#include "agent/volumes/step_json.h"
#include "agent/volumes/volumes.h"
#include "common/error.h"

namespace stepsnap::agent {

class StepRecords {
 public:
  StepRecords(Volumes& volumes, Catalog& catalog) : volumes_(volumes), catalog_(catalog) {}

  // `live`: the step's view from memory when it is live.
  Result<nlohmann::json> status(const std::string& pipeline, const std::string& run,
                                const std::string& step,
                                const std::optional<nlohmann::json>& live = std::nullopt);
  // `live`: the views of the run's live steps, by step name.
  Result<nlohmann::json> run(const std::string& pipeline, const std::string& run,
                             const std::map<std::string, nlohmann::json>& live = {});

 private:
  Volumes& volumes_;
  Catalog& catalog_;
};

}  // namespace stepsnap::agent
