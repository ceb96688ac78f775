#include "runner/exec/stepsnapd_client.h"

#include <cerrno>
#include <iostream>
#include <thread>

namespace stepsnap::runner {

using json = nlohmann::json;

namespace {

// A post-snapshot waits for the pool lock behind other steps' snapshots; ten
// minutes is far beyond any healthy pool and still ends a stuck wait.
constexpr std::chrono::seconds kPostSnapshotLimit{600};
constexpr std::chrono::seconds kUnregisterLimit{60};

std::string policy_of(const SnapshotPhases& p) {
  if (p.pre && p.post) return "both";
  if (p.pre) return "pre";
  if (p.post) return "post";
  return "none";
}

// The command as one line for the catalog (what `snapshot show` prints).
std::string command_line(const std::vector<std::string>& argv) {
  constexpr std::size_t kMax = 4096;  // the API's limit
  std::string line;
  for (const auto& a : argv) {
    bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`") == std::string::npos;
    line += (line.empty() ? "" : " ") + (plain ? a : "'" + a + "'");
  }
  if (line.size() > kMax) line.resize(kMax);
  return line;
}

json ref_json(const StepRef& ref) {
  return {{"pipeline", ref.pipeline}, {"run", ref.run}, {"step", ref.step}};
}

}  // namespace

Result<std::unique_ptr<StepsnapdClient>> StepsnapdClient::connect(const std::string& socket_path) {
  auto api = protocol::ApiClient::connect(socket_path);
  if (!api) return tl::unexpected(api.error());
  return std::unique_ptr<StepsnapdClient>(new StepsnapdClient(std::move(*api)));
}

Result<VolumeSource> StepsnapdClient::ensure_run_clone(const StepRef& ref,
                                                       const std::string& volume,
                                                       const std::optional<std::string>& snapshot) {
  json args = {{"pipeline", ref.pipeline}, {"run", ref.run}, {"volume", volume}};
  if (snapshot) args["snapshot"] = *snapshot;
  auto clone = api_.request("run.clone", args);
  if (!clone) return tl::unexpected(clone.error().context("clone volume " + volume));
  if (!clone->contains("path") || !clone->contains("name"))
    return fail("clone volume " + volume, "", EPROTO, "stepsnapd's answer has no device path");
  clone_of_[volume] = (*clone)["name"].get<std::string>();
  return VolumeSource{(*clone)["path"].get<std::string>(), true};
}

Status StepsnapdClient::register_step(const StepRegistration& r) {
  json volumes = json::array();
  for (const auto& v : r.volumes) {
    auto it = clone_of_.find(v);
    if (it == clone_of_.end())
      return fail("register step", r.ref.text(), EINVAL, "volume " + v + " has no clone yet");
    volumes.push_back(it->second);
  }
  json args = ref_json(r.ref);
  args["cgroup"] = r.cgroup_path;
  args["volumes"] = volumes;
  args["policy"] = policy_of(r.snapshots);
  args["command"] = command_line(r.command);
  if (!r.labels.empty()) {
    json labels = json::object();
    for (const auto& [k, v] : r.labels) labels[k] = v;
    args["labels"] = labels;
  }
  auto step = api_.request("step.register", args);
  if (!step) return tl::unexpected(step.error());
  auto id = step->find("registration");
  if (id == step->end() || !id->is_number_unsigned())
    return fail("register step", r.ref.text(), EPROTO,
                "stepsnapd's answer names no registration: it cannot confirm the pre-snapshot "
                "before CMD runs (step.ready); upgrade stepsnapd");
  registered_[r.ref.text()] = {id->get<std::uint64_t>(), r.snapshots.pre, r.volumes.size()};
  return {};
}

Status StepsnapdClient::open_gate(const StepRef& ref) {
  auto it = registered_.find(ref.text());
  if (it == registered_.end())
    return fail("open the gate of step", ref.text(), EINVAL, "the step was not registered here");
  const Registered& mine = it->second;
  json args = ref_json(ref);
  args["registration"] = mine.registration;
  auto ready = api_.request("step.ready", args);
  if (!ready) return tl::unexpected(ready.error());
  // The answer must be about this registration, armed, with one
  // pre-snapshot per volume: anything else is not a confirmation.
  auto id = ready->find("registration");
  bool same = id != ready->end() && id->is_number_unsigned() &&
              id->get<std::uint64_t>() == mine.registration;
  auto pre = ready->value("pre_snapshots", json::array());
  std::size_t taken = pre.is_array() ? pre.size() : 0;
  if (!same || ready->value("state", "") != "armed" || (mine.pre && taken != mine.volumes))
    return fail(
        "open the gate of step", ref.text(), EPROTO,
        "stepsnapd's answer does not confirm this registration's pre-snapshot: " + ready->dump());
  return {};
}

Result<json> StepsnapdClient::wait_until_done(const StepRef& ref, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::milliseconds(5);
  for (;;) {
    auto status = api_.request("step.status", ref_json(ref));
    if (!status) return status;
    std::string state = status->value("state", "");
    if (state == "finished" || state == "failed") return status;
    if (std::chrono::steady_clock::now() > deadline)
      return fail("wait for stepsnapd to finish step", ref.text(), ETIMEDOUT,
                  "still " + state + " after " + std::to_string(limit.count()) +
                      " s; see stepsnapctl step status and the agent's log");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

Status StepsnapdClient::step_finished(const StepRef& ref, int) {
  auto status = wait_until_done(ref, kPostSnapshotLimit);
  if (!status) return tl::unexpected(status.error());
  if ((*status)["state"] == "failed") {
    Error e{"stepsnapd", "step " + ref.text(), 0, status->value("error", "failed")};
    // Never released from its hold: CMD did not run a single instruction.
    if (!status->contains("started")) e.kind = kPreSnapshotFailed;
    return tl::unexpected(e);
  }
  // Taken, but the agent could not vouch for it (a loop device the step
  // left open): the step's outcome stands, the user is told once.
  if (status->value("exact", true) == false)
    std::cerr << "runner: step " << ref.text() << ": the post-snapshot may not hold every write: "
              << status->value("not_exact_reason", std::string("see stepsnapctl step status"))
              << "\n";
  return {};
}

Status StepsnapdClient::unregister_step(const StepRef& ref) {
  // The step never ran: drop its registration now rather than leave the
  // agent watching a cgroup runner is about to remove. An agent that already
  // ended the step (its cgroup emptied) answers with it as it is. "busy"
  // means the step did start (a first exec raced runner's failure): then
  // wait for the agent to finish it, so its record never says "running"
  // after runner is gone. An agent without the op (unknown_op) ends it by
  // itself once the cgroup empties: wait for that, as before.
  auto r = api_.request("step.unregister", ref_json(ref));
  if (r) return {};
  if (r.error().kind != "busy" && r.error().kind != "unknown_op") return tl::unexpected(r.error());
  auto status = wait_until_done(ref, kUnregisterLimit);
  if (!status) return tl::unexpected(status.error());
  return {};
}

Result<StepSnapshots> StepsnapdClient::step_snapshots(const StepRef& ref) {
  auto status = api_.request("step.status", ref_json(ref));
  if (!status) return tl::unexpected(status.error());
  StepSnapshots out;
  for (const auto& n : status->value("pre_snapshots", json::array()))
    if (n.is_string()) out.pre.push_back(n.get<std::string>());
  for (const auto& n : status->value("post_snapshots", json::array()))
    if (n.is_string()) out.post.push_back(n.get<std::string>());
  return out;
}

}  // namespace stepsnap::runner
