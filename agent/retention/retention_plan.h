// Which runs a sweep deletes, as a pure function of what the catalog says
// about each run and the rules (no kernel, no clock: `now_ns` is given), so
// every case is a unit test (tests/agent/retention/retention_plan_test.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/retention/retention_rules.h"

namespace stepsnap::agent {

struct RunRef {
  std::string pipeline;
  std::string run;
  auto operator<=>(const RunRef&) const = default;
};

// A device outside the run that still needs one of the run's devices: a
// clone or restored volume made from one of its snapshots, or a received
// snapshot whose incremental base is one of them.
struct Dependent {
  std::string device;         // the device that needs it
  std::string needs;          // the run's device it needs
  std::string how;            // "origin" or "base"
  std::optional<RunRef> run;  // the run the dependent belongs to, if any
};

// One run as the sweep sees it (retention_sweep.cpp gathers these).
struct RunFacts {
  RunRef ref;
  std::int64_t created_ns = 0;  // its earliest registration, plan or device
  bool failed = false;          // a step failed or exited non-zero
  // Why the run is in use now ("step train is running", "device x is
  // creating"); empty when it is not.
  std::string busy;
  // Label key -> a snapshot of the run carrying it (the first one found).
  std::map<std::string, std::string> label_keys;
  std::vector<Dependent> needed_by;
};

struct RunVerdict {
  RunRef ref;
  std::string reason;  // why it goes, or why it stays although a rule would delete it
};

struct RetentionPlan {
  // In the order to delete them: oldest first, except that a run goes only
  // after every run planned for deletion that needs one of its devices.
  std::vector<RunVerdict> remove;
  // Runs a rule selected but that stay: pinned, busy, needed, or among the
  // newest keep_failed_runs failed runs.
  std::vector<RunVerdict> kept;
};

// Runs of pipelines without a rule (nor a default one) are left alone.
RetentionPlan plan_retention(const std::vector<RunFacts>& runs, const RetentionRules& rules,
                             std::int64_t now_ns);

}  // namespace stepsnap::agent
