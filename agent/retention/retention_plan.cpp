#include "agent/retention/retention_plan.h"

#include <algorithm>
#include <set>

#include "common/duration.h"

namespace stepsnap::agent {

namespace {

constexpr std::int64_t kNsPerSecond = 1'000'000'000;

// Newest first; equal times by run name so that the order is total.
bool newer(const RunFacts* a, const RunFacts* b) {
  if (a->created_ns != b->created_ns) return a->created_ns > b->created_ns;
  return a->ref.run > b->ref.run;
}

// Why a rule selects the run at `rank` (0 = newest) for deletion; empty: it does not.
std::string selected(const RetentionRule& rule, const RunFacts& run, std::size_t rank,
                     std::int64_t now_ns) {
  if (rule.keep_runs && rank >= *rule.keep_runs) {
    return "beyond keep-runs " + std::to_string(*rule.keep_runs) + " (number " +
           std::to_string(rank + 1) + " from the newest)";
  }
  if (rule.max_age_seconds) {
    std::int64_t age_s = (now_ns - run.created_ns) / kNsPerSecond;
    if (age_s > static_cast<std::int64_t>(*rule.max_age_seconds)) {
      return "older than max-age " + format_duration_seconds(*rule.max_age_seconds) + " (" +
             format_duration_seconds(static_cast<std::uint64_t>(age_s)) + ")";
    }
  }
  return {};
}

// Why the run stays although selected; empty: nothing holds it (needs are
// checked later, against the whole plan).
std::string exempt(const RetentionRule& rule, const RunFacts& run, bool among_newest_failed) {
  for (const auto& label : rule.keep_labels) {
    if (auto it = run.label_keys.find(label); it != run.label_keys.end())
      return "pinned: snapshot " + it->second + " has label " + label;
  }
  if (!run.busy.empty()) return "in use: " + run.busy;
  if (among_newest_failed) {
    return "one of the newest " + std::to_string(rule.keep_failed_runs) +
           " failed runs (keep-failed-runs)";
  }
  return {};
}

}  // namespace

RetentionPlan plan_retention(const std::vector<RunFacts>& runs, const RetentionRules& rules,
                             std::int64_t now_ns) {
  std::map<std::string, std::vector<const RunFacts*>> by_pipeline;
  for (const auto& r : runs) by_pipeline[r.ref.pipeline].push_back(&r);

  RetentionPlan plan;
  std::vector<std::pair<const RunFacts*, std::string>> candidates;
  for (auto& [pipeline, list] : by_pipeline) {
    const RetentionRule* rule = rule_for(rules, pipeline);
    if (!rule || !rule->deletes_anything()) continue;
    std::sort(list.begin(), list.end(), newer);
    std::uint64_t failed_seen = 0;
    for (std::size_t rank = 0; rank < list.size(); ++rank) {
      const RunFacts& run = *list[rank];
      bool newest_failed = false;
      if (run.failed) newest_failed = ++failed_seen <= rule->keep_failed_runs;
      std::string why = selected(*rule, run, rank, now_ns);
      if (why.empty()) continue;
      if (auto stay = exempt(*rule, run, newest_failed); !stay.empty()) {
        plan.kept.push_back({run.ref, stay});
        continue;
      }
      candidates.emplace_back(&run, why);
    }
  }

  // A run whose device another device needs stays, unless that device's
  // run goes too: drop such runs until nothing changes (dropping one can
  // make another's dependent stay).
  std::set<RunRef> going;
  for (const auto& c : candidates) going.insert(c.first->ref);
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [run, why] : candidates) {
      if (!going.count(run->ref)) continue;
      for (const auto& d : run->needed_by) {
        if (d.run && going.count(*d.run)) continue;
        going.erase(run->ref);
        plan.kept.push_back(
            {run->ref, "needed: " + d.device + " has " + d.needs + " as its " + d.how});
        changed = true;
        break;
      }
    }
  }

  // Oldest first; a run needed by another run that goes waits for it.
  std::vector<std::pair<const RunFacts*, std::string>> order;
  for (const auto& c : candidates)
    if (going.count(c.first->ref)) order.push_back(c);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return newer(b.first, a.first); });
  std::set<RunRef> done;
  while (!order.empty()) {
    auto ready = std::find_if(order.begin(), order.end(), [&](const auto& c) {
      return std::all_of(c.first->needed_by.begin(), c.first->needed_by.end(),
                         [&](const Dependent& d) {
                           return !d.run || *d.run == c.first->ref || done.count(*d.run);
                         });
    });
    // A cycle (runs needing each other's devices) cannot be ordered: take the
    // oldest; both go in this sweep either way.
    if (ready == order.end()) ready = order.begin();
    plan.remove.push_back({ready->first->ref, ready->second});
    done.insert(ready->first->ref);
    order.erase(ready);
  }
  return plan;
}

}  // namespace stepsnap::agent
