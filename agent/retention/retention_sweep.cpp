#include "agent/retention/retention_sweep.h"

#include <algorithm>

#include "common/log.h"
#include "common/time.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

json run_json(const RunRef& r) { return json{{"pipeline", r.pipeline}, {"run", r.run}}; }

// The run a device belongs to: a step snapshot's (initial, pre, post,
// received ones included) or a run clone's.
std::optional<RunRef> run_of(const DeviceRecord& d) {
  if (d.step && !d.step->pipeline.empty()) return RunRef{d.step->pipeline, d.step->run};
  if (d.run_clone) return RunRef{d.run_clone->pipeline, d.run_clone->run};
  return std::nullopt;
}

std::string step_busy(const std::vector<StepRecord>& steps) {
  for (const auto& s : steps)
    if (!s.terminal()) return "step " + s.step + " is " + s.state;
  return {};
}

}  // namespace

json sweep_json(const SweepReport& report) {
  json deleted = json::array();
  for (const auto& d : report.deleted) {
    json j = run_json(d.ref);
    j["reason"] = d.reason;
    j["devices"] = d.devices;
    if (!d.error.empty()) j["error"] = d.error;
    deleted.push_back(j);
  }
  json kept = json::array();
  for (const auto& k : report.kept) {
    json j = run_json(k.ref);
    j["reason"] = k.reason;
    kept.push_back(j);
  }
  return json{{"dry_run", report.dry_run},
              {"trigger", report.trigger},
              {"deleted", deleted},
              {"kept", kept}};
}

Result<std::vector<RunFacts>> RetentionSweeper::gather(
    std::map<RunRef, std::vector<DeviceRecord>>& devices, const std::optional<std::string>& only) {
  auto all = volumes_.list({});
  if (!all) return tl::unexpected(all.error().context("retention: list devices"));
  std::map<std::int64_t, RunRef> owner;  // device id -> its run
  std::map<std::int64_t, std::string> names;
  for (const auto& d : *all) {
    names[d.id] = d.name;
    if (auto ref = run_of(d)) {
      owner[d.id] = *ref;
      devices[*ref].push_back(d);
    }
  }
  auto known = volumes_.catalog().list_runs();
  if (!known) return tl::unexpected(known.error().context("retention: list runs"));
  std::map<RunRef, std::int64_t> first;
  for (const auto& k : *known) first[{k.pipeline, k.run}] = k.first_ns;

  // Runs without a device left (swept before) are history, not runs to count.
  std::map<RunRef, RunFacts> facts;
  for (const auto& [ref, list] : devices) {
    if (only && ref.pipeline != *only) continue;
    RunFacts f;
    f.ref = ref;
    f.created_ns = first.count(ref) ? first[ref] : list.front().created_ns;
    for (const auto& d : list) {
      f.created_ns = std::min(f.created_ns, d.created_ns);
      if (d.state == DeviceState::creating || d.state == DeviceState::deleting)
        f.busy = "device " + d.name + " is " + std::string(to_string(d.state));
      for (const auto& [key, value] : d.labels) f.label_keys.emplace(key, d.name);
    }
    auto steps = volumes_.catalog().list_steps(ref.pipeline, ref.run);
    if (!steps) return tl::unexpected(steps.error().context("retention: steps"));
    for (const auto& s : *steps) {
      if (s.state == "failed" || (s.exit_status && *s.exit_status != 0)) f.failed = true;
    }
    if (auto b = step_busy(*steps); !b.empty()) f.busy = b;
    facts.emplace(ref, std::move(f));
  }
  // What outside a run still needs one of its devices: a device made from
  // one of its snapshots (dm-thin would let the origin go, but the clone's
  // lineage and a user's clone would lose what they came from), and a
  // received snapshot whose incremental base it is.
  for (const auto& d : *all) {
    auto mine = owner.count(d.id) ? std::optional<RunRef>(owner[d.id]) : std::nullopt;
    auto note = [&](std::optional<std::int64_t> id, const char* how) {
      if (!id || !owner.count(*id)) return;
      const RunRef& theirs = owner[*id];
      if (mine && *mine == theirs) return;
      if (auto it = facts.find(theirs); it != facts.end())
        it->second.needed_by.push_back({d.name, names[*id], how, mine});
    };
    note(d.origin_id, "origin");
    if (!d.received_from.empty()) note(d.parent_id, "base");
  }
  std::vector<RunFacts> out;
  for (auto& [ref, f] : facts) out.push_back(std::move(f));
  return out;
}

std::string RetentionSweeper::busy_now(const RunRef& ref) {
  auto steps = volumes_.catalog().list_steps(ref.pipeline, ref.run);
  if (!steps) return "its steps cannot be read: " + steps.error().message();
  return step_busy(*steps);
}

DeletedRun RetentionSweeper::delete_run(const RunVerdict& verdict,
                                        std::vector<DeviceRecord> devices) {
  DeletedRun out{verdict.ref, verdict.reason, {}, {}};
  // Active devices (the run's clones) first: a clone still open fails its
  // deactivation before any snapshot of the run is gone. Then the
  // snapshots, newest first, so a device goes before the one it was made
  // from.
  std::sort(devices.begin(), devices.end(), [](const DeviceRecord& a, const DeviceRecord& b) {
    if (a.dm_name.empty() != b.dm_name.empty()) return !a.dm_name.empty();
    return a.id > b.id;
  });
  for (const auto& d : devices) {
    if (auto r = volumes_.remove(d.name, d.kind == DeviceKind::snapshot); !r) {
      out.error = r.error().message();
      auto e = events_.append(EventType::error, {{"op", "retention.delete"},
                                                 {"pipeline", verdict.ref.pipeline},
                                                 {"run", verdict.ref.run},
                                                 {"device", d.name},
                                                 {"message", out.error}});
      if (!e) log::error("event error: " + e.error().message());
      log::warn("retention: run " + verdict.ref.pipeline + "/" + verdict.ref.run +
                " left partly deleted: " + out.error + "; the next sweep tries again");
      return out;
    }
    out.devices.push_back(d.name);
    auto e = events_.append(EventType::retention_deleted, {{"pipeline", verdict.ref.pipeline},
                                                           {"run", verdict.ref.run},
                                                           {"device", d.name},
                                                           {"kind", std::string(to_string(d.kind))},
                                                           {"reason", verdict.reason}});
    if (!e) log::error("event retention.deleted: " + e.error().message());
  }
  return out;
}

Result<SweepReport> RetentionSweeper::sweep(bool dry_run, const std::string& trigger,
                                            const std::optional<std::string>& only) {
  std::lock_guard lock(sweep_mutex_);
  std::map<RunRef, std::vector<DeviceRecord>> devices;
  auto facts = gather(devices, only);
  if (!facts) return tl::unexpected(facts.error());
  RetentionPlan plan = plan_retention(*facts, store_.rules(), now_ns());
  SweepReport report{dry_run, trigger, {}, plan.kept};
  std::size_t device_count = 0, errors = 0;
  for (const auto& verdict : plan.remove) {
    if (dry_run) {
      DeletedRun would{verdict.ref, verdict.reason, {}, {}};
      for (const auto& d : devices[verdict.ref]) would.devices.push_back(d.name);
      report.deleted.push_back(std::move(would));
      continue;
    }
    // A step may have registered since the plan was made (a restore of this
    // run, say): then it stays.
    if (auto busy = busy_now(verdict.ref); !busy.empty()) {
      report.kept.push_back({verdict.ref, "in use: " + busy});
      continue;
    }
    DeletedRun done = delete_run(verdict, devices[verdict.ref]);
    device_count += done.devices.size();
    if (!done.error.empty()) ++errors;
    report.deleted.push_back(std::move(done));
  }
  if (!dry_run) {
    auto e = events_.append(EventType::retention_swept, {{"trigger", trigger},
                                                         {"runs_deleted", report.deleted.size()},
                                                         {"devices_deleted", device_count},
                                                         {"runs_kept", report.kept.size()},
                                                         {"errors", errors}});
    if (!e) log::error("event retention.swept: " + e.error().message());
    if (!report.deleted.empty() || errors) {
      log::info("retention (" + trigger + "): deleted " + std::to_string(device_count) +
                " devices of " + std::to_string(report.deleted.size()) + " runs");
    }
  }
  return report;
}

void RetentionSweeper::start(std::chrono::seconds interval) {
  thread_ = std::thread([this, interval] { loop(interval); });
}

void RetentionSweeper::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void RetentionSweeper::loop(std::chrono::seconds interval) {
  using clock = std::chrono::steady_clock;
  std::uint64_t seen = events_.last_seq();
  std::uint64_t low_space_seen = events_.last_seq_of(EventType::pool_low_space);
  auto next = clock::now() + interval;
  while (!stop_ && !events_.closed()) {
    // Woken by every new event (a pool.low_space may be among them), and at
    // least once a second to notice stop() and the timer.
    seen = events_.wait_for(seen, std::chrono::seconds(1));
    if (stop_ || events_.closed()) return;
    std::uint64_t low_space_now = events_.last_seq_of(EventType::pool_low_space);
    bool low_space = low_space_now > low_space_seen;
    low_space_seen = low_space_now;
    std::string trigger;
    if (low_space) {
      trigger = "low_space";
    } else if (interval.count() > 0 && clock::now() >= next) {
      trigger = "timer";
    }
    if (trigger.empty()) continue;
    if (auto r = sweep(false, trigger); !r) log::error("retention sweep: " + r.error().message());
    if (interval.count() > 0) next = clock::now() + interval;
  }
}

}  // namespace stepsnap::agent
