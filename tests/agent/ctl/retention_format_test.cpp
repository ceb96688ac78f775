// stepsnapctl's retention and gc output (pure).
#include "agent/ctl/retention_format.h"

#include <gtest/gtest.h>

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;

TEST(RetentionFormat, RulesTable) {
  json r = {{"rules",
             {{{"pipeline", "*"},
               {"keep_runs", 10},
               {"keep_failed_runs", 0},
               {"keep", json::array()},
               {"source", "config"}},
              {{"pipeline", "nightly"},
               {"keep_failed_runs", 2},
               {"max_age_seconds", 604800},
               {"keep", {"pin", "gold"}},
               {"source", "api"}}}}};
  EXPECT_EQ(format_rules(r),
            "PIPELINE  KEEP-RUNS  KEEP-FAILED  MAX-AGE  KEEP-LABELS  SOURCE\n"
            "*         10         0            -        -            config\n"
            "nightly   -          2            1w       pin,gold     api\n");
  EXPECT_EQ(format_rules({{"rules", json::array()}}),
            "no retention rules: nothing is ever deleted\n");
}

TEST(RetentionFormat, SweepSaysWhatWentAndWhatStayed) {
  json r = {{"dry_run", true},
            {"deleted",
             {{{"pipeline", "p"},
               {"run", "r1"},
               {"reason", "beyond keep-runs 2"},
               {"devices", {"p.r1.ws", "r1.ws.initial"}}}}},
            {"kept", {{{"pipeline", "p"}, {"run", "r0"}, {"reason", "pinned"}}}}};
  EXPECT_EQ(format_sweep(r),
            "would delete p/r1 (beyond keep-runs 2)\n"
            "  p.r1.ws\n"
            "  r1.ws.initial\n"
            "kept p/r0 (pinned)\n"
            "would delete 2 devices of 1 runs (dry run: nothing deleted)\n");
  r["dry_run"] = false;
  r["deleted"][0]["error"] = "busy";
  std::string out = format_sweep(r);
  EXPECT_EQ(out.rfind("deleted p/r1 (beyond keep-runs 2): stopped, busy\n", 0), 0u) << out;
}

}  // namespace
}  // namespace stepsnap::agent
