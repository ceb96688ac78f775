#include "agent/ctl/retention_format.h"

#include "agent/ctl/ctl_format.h"
#include "common/duration.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

std::string text_of(const json& j, const char* key, const std::string& none = "-") {
  if (!j.contains(key)) return none;
  const json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
  return v.dump();
}

}  // namespace

std::string format_rules(const json& result) {
  if (!result.contains("rules") || !result["rules"].is_array() || result["rules"].empty())
    return "no retention rules: nothing is ever deleted\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : result["rules"]) {
    std::string age = "-";
    if (r.contains("max_age_seconds") && r["max_age_seconds"].is_number_integer() &&
        r["max_age_seconds"].get<std::int64_t>() > 0)
      age = format_duration_seconds(r["max_age_seconds"].get<std::uint64_t>());
    std::string keep;
    if (r.contains("keep") && r["keep"].is_array()) {
      for (const auto& k : r["keep"])
        if (k.is_string()) keep += (keep.empty() ? "" : ",") + k.get<std::string>();
    }
    rows.push_back({text_of(r, "pipeline"), text_of(r, "keep_runs"),
                    text_of(r, "keep_failed_runs", "0"), age, keep.empty() ? "-" : keep,
                    text_of(r, "source")});
  }
  return format_table({"PIPELINE", "KEEP-RUNS", "KEEP-FAILED", "MAX-AGE", "KEEP-LABELS", "SOURCE"},
                      rows);
}

std::string format_sweep(const json& result) {
  const bool dry = result.value("dry_run", false);
  std::string out;
  std::size_t devices = 0, runs = 0;
  if (result.contains("deleted") && result["deleted"].is_array()) {
    for (const auto& d : result["deleted"]) {
      ++runs;
      std::string head = (dry ? "would delete " : "deleted ") + text_of(d, "pipeline") + "/" +
                         text_of(d, "run") + " (" + text_of(d, "reason") + ")";
      if (d.contains("error")) head += ": stopped, " + text_of(d, "error");
      out += head + "\n";
      if (d.contains("devices") && d["devices"].is_array()) {
        for (const auto& name : d["devices"]) {
          if (!name.is_string()) continue;
          out += "  " + name.get<std::string>() + "\n";
          ++devices;
        }
      }
    }
  }
  if (result.contains("kept") && result["kept"].is_array()) {
    for (const auto& k : result["kept"])
      out += "kept " + text_of(k, "pipeline") + "/" + text_of(k, "run") + " (" +
             text_of(k, "reason") + ")\n";
  }
  out += std::string(dry ? "would delete " : "deleted ") + std::to_string(devices) +
         " devices of " + std::to_string(runs) + " runs" +
         (dry ? " (dry run: nothing deleted)" : "") + "\n";
  return out;
}

}  // namespace stepsnap::agent
