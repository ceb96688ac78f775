#include "agent/policy/step_records.h"

namespace stepsnap::agent {

using json = nlohmann::json;

Result<json> StepRecords::status(const std::string& pipeline, const std::string& run,
                                 const std::string& step, const std::optional<json>& live) {
  return read_step(catalog_, pipeline, run, step, live, volumes_.pool_record().id);
}

Result<json> StepRecords::run(const std::string& pipeline, const std::string& run,
                              const std::map<std::string, json>& live) {
  return read_run(catalog_, pipeline, run, live, volumes_.pool_record().id);
}

}  // namespace stepsnap::agent
