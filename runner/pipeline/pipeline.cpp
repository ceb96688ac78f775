#include "runner/pipeline/pipeline.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <variant>

#include "common/names.h"
#include "common/text.h"
#include "protocol/request.h"
#include "runner/exec/exec.h"
#include "runner/exec/stepsnapd_client.h"
#include "runner/pipeline/forked_steps.h"
#include "runner/pipeline/notebook_compile.h"
#include "runner/pipeline/pipeline_report.h"
#include "runner/pipeline/pipeline_spec.h"
#include "runner/pipeline/step_schedule.h"

namespace stepsnap::runner {

using json = nlohmann::json;

namespace {

constexpr int kRunnerFailed = 125;
constexpr int kStepFailed = 1;
constexpr int kBadNotebook = 2;

int say(const std::string& message) {
  std::cerr << "runner: " << message << "\n";
  return kRunnerFailed;
}

// --parallel's default: the number of CPUs, at most 4 (more steps at once
// than that mostly wait on the same disk).
std::size_t default_parallel_steps() {
  unsigned n = std::thread::hardware_concurrency();
  return std::clamp<std::size_t>(n ? n : 1, 1, 4);
}

std::vector<std::string> names_of(const json& list) {
  std::vector<std::string> out;
  if (list.is_array())
    for (const auto& n : list) out.push_back(n.get<std::string>());
  return out;
}

// On a terminal, a step that runs for long gets a "running N s" line every
// ten seconds: plain lines, so they never garble the step's own output.
class LongStepTicker {
 public:
  LongStepTicker(std::size_t position, std::size_t total, std::string step) {
    if (!::isatty(STDERR_FILENO)) return;
    // The ticker must not take the signals runner forwards to the step.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &old);
    thread_ = std::thread([this, position, total, step = std::move(step)] {
      auto start = std::chrono::steady_clock::now();
      unsigned frame = 0;
      std::unique_lock lock(mutex_);
      while (!cv_.wait_for(lock, std::chrono::seconds(10), [this] { return done_; })) {
        std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
        std::cerr << running_line(position, total, step, elapsed.count(), frame++) << "\n";
      }
    });
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  ~LongStepTicker() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  LongStepTicker(const LongStepTicker&) = delete;
  LongStepTicker& operator=(const LongStepTicker&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

struct RunPlan {
  std::string run;
  // volume name -> the snapshot its run clone is made from; empty: a new
  // initial snapshot.
  std::map<std::string, std::string> clone_sources;
  // Steps (indices) not re-run: before --from-step in execution order.
  std::set<std::size_t> restored;
};

// --restore RUN --from-step S: the clones come from RUN's pre-snapshots of S.
Result<RunPlan> restore_plan(protocol::ApiClient& api, const PipelineSpec& spec,
                             const std::vector<std::size_t>& order, const PipelineRunOptions& o) {
  RunPlan plan;
  auto from = find_step(spec, *o.from_step);
  if (!from)
    return fail("bad --from-step", *o.from_step, 0,
                "no step of that name in pipeline " + spec.pipeline);
  auto status =
      api.request("step.status",
                  {{"pipeline", spec.pipeline}, {"run", *o.restore_run}, {"step", *o.from_step}});
  if (!status)
    return tl::unexpected(
        status.error().context("find step " + *o.from_step + " of run " + *o.restore_run));
  auto clones = names_of((*status)["volumes"]);
  auto pres = names_of((*status)["pre_snapshots"]);
  if (pres.empty() || pres.size() != clones.size())
    return fail("restore run " + *o.restore_run, "step " + *o.from_step, ENOENT,
                "the step has no pre-snapshots to restore (was it run with snapshots pre?)");
  const std::string prefix = spec.pipeline + "." + *o.restore_run + ".";
  for (std::size_t i = 0; i < clones.size(); ++i) {
    if (clones[i].rfind(prefix, 0) != 0) continue;
    plan.clone_sources[clones[i].substr(prefix.size())] = pres[i];
  }
  for (const auto& v : spec.volumes) {
    if (!plan.clone_sources.count(v.name))
      return fail("restore run " + *o.restore_run, "volume " + v.name, ENOENT,
                  "step " + *o.from_step + " has no pre-snapshot of it");
  }
  for (std::size_t i : order) {
    if (i == *from) break;
    plan.restored.insert(i);
  }
  return plan;
}

// The run's initial snapshots and clones (Kale's "create-volume-N" steps),
// one run.create: every volume snapshotted at one instant (or cloned from
// the restore's snapshots), all of it made or none. Without --run the agent
// picks the run id, one no run of the pipeline has. Sets plan.run.
// run.create's "plan": the steps in execution order with their
// dependencies, and the restored ones, so the agent can show the steps that
// never register (skipped, restored, not started).
json plan_json(const PipelineSpec& spec, const std::vector<std::size_t>& order, const RunPlan& plan,
               const PipelineRunOptions& o) {
  json steps = json::array(), restored = json::array();
  for (std::size_t i : order) {
    json step = {{"step", spec.steps[i].name}};
    if (!spec.steps[i].after.empty()) step["after"] = spec.steps[i].after;
    steps.push_back(std::move(step));
    if (plan.restored.count(i)) restored.push_back(spec.steps[i].name);
  }
  json out = {{"steps", steps}};
  if (!restored.empty()) {
    out["restored"] = restored;
    out["restored_from"] = *o.restore_run;
  }
  return out;
}

Status make_run_volumes(protocol::ApiClient& api, const PipelineSpec& spec,
                        const std::optional<std::string>& run, const json& steps_plan,
                        RunPlan& plan) {
  json volumes = json::array(), sources = json::array();
  for (const auto& v : spec.volumes) {
    volumes.push_back(v.name);
    if (auto it = plan.clone_sources.find(v.name); it != plan.clone_sources.end())
      sources.push_back(it->second);
  }
  json args = {{"pipeline", spec.pipeline}, {"volumes", volumes}};
  if (run) args["run"] = *run;
  if (!sources.empty()) args["sources"] = sources;
  args["plan"] = steps_plan;
  auto made = api.request("run.create", args);
  if (!made) {
    if (made.error().kind == "exists" && run)
      return fail("start run", spec.pipeline + "/" + *run, EEXIST,
                  "it exists (it has clones, snapshots or steps); pick another --run");
    return tl::unexpected(made.error().context("make the run's volumes"));
  }
  plan.run = made->value("run", "");
  const json& snaps = (*made)["initial_snapshots"];
  const json& clones = (*made)["clones"];
  for (std::size_t i = 0; i < spec.volumes.size() && i < clones.size(); ++i) {
    const std::string& v = spec.volumes[i].name;
    std::string source = plan.clone_sources.count(v) ? plan.clone_sources[v] : "";
    if (i < snaps.size()) {
      source = snaps[i].value("name", "");
      std::cout << "volume " << v << ": initial snapshot " << source << "\n";
    }
    std::cout << "volume " << v << ": run clone " << clones[i].value("name", "") << " from "
              << source << "\n";
  }
  return {};
}

// A notebook compiled, its warnings printed; or the exit status to return.
std::variant<CompiledNotebook, int> compile_or_status(const PipelineRunOptions& o) {
  NotebookCompileOptions c{o.file, o.volumes, o.params, ""};
  auto compiled = compile_notebook(c);
  if (!compiled) {
    say(compiled.error().message());
    return kBadNotebook;
  }
  for (const auto& w : compiled->warnings) std::cerr << "runner: warning: " << w << "\n";
  return std::move(*compiled);
}

// A notebook step writes its pipeline-metrics to a host file runner names in
// STEPSNAP_METRICS_FILE (the step's volumes are clones mounted only in its
// own mount namespace, so runner cannot read them there).
class MetricsFolder {
 public:
  MetricsFolder() {
    char path[] = "/tmp/stepsnap-metrics-XXXXXX";
    if (::mkdtemp(path)) dir_ = path;
  }
  ~MetricsFolder() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  MetricsFolder(const MetricsFolder&) = delete;
  MetricsFolder& operator=(const MetricsFolder&) = delete;
  const std::string& dir() const { return dir_; }
  std::string file_for(const std::string& step) const {
    return dir_.empty() ? "" : dir_ + "/" + step + ".json";
  }
  // The step's metrics as name, value text; none when it wrote none.
  std::vector<std::pair<std::string, std::string>> read(const std::string& step) const {
    std::vector<std::pair<std::string, std::string>> out;
    std::ifstream in(file_for(step));
    if (!in) return out;
    try {
      json j = json::parse(in);
      for (const auto& [name, value] : j["metrics"].items())
        out.emplace_back(name, value.is_string() ? value.get<std::string>() : value.dump());
    } catch (const json::exception&) {
      out.emplace_back("(unreadable)", file_for(step));
    }
    return out;
  }

 private:
  std::string dir_;
};

// Puts a step's metrics on its post-snapshots as `metric.NAME` labels, so
// that run.show and every later reader of those snapshots see them. A metric
// that cannot be a label (its name, or a value over the label limit) is
// named in a warning; the step's result stands.
void label_with_metrics(protocol::ApiClient& api, const StepResult& r) {
  json labels = json::object();
  for (const auto& [name, value] : r.metrics) {
    std::string key = "metric." + name;
    if (!is_valid_name(key) || value.size() > protocol::kMaxLabelValueLength) {
      std::cerr << "runner: warning: step " << r.name << ": metric " << name
                << " cannot be a snapshot label; it is only in the marshal folder\n";
      continue;
    }
    labels[key] = value;
  }
  if (labels.empty()) return;
  for (const auto& snapshot : r.post_snapshots) {
    auto done = api.request("snapshot.label", {{"name", snapshot}, {"labels", labels}});
    if (!done) {
      std::cerr << "runner: warning: step " << r.name << ": metrics not recorded on " << snapshot
                << ": " << done.error().message() << "\n";
    }
  }
}

}  // namespace

int compile_pipeline(const PipelineRunOptions& o) {
  auto compiled = compile_or_status(o);
  if (auto* status = std::get_if<int>(&compiled)) return *status;
  std::cout << pipeline_to_json(std::get<CompiledNotebook>(compiled).spec) << "\n";
  return 0;
}

int run_pipeline(const PipelineRunOptions& o) {
  const bool notebook = is_notebook_path(o.file);
  Result<PipelineSpec> spec = tl::unexpected(Error{});
  std::set<std::string> metric_steps;
  if (notebook) {
    // Compiled first, as root or not: a notebook that cannot become a
    // pipeline is exit 2 with nothing created.
    auto compiled = compile_or_status(o);
    if (auto* status = std::get_if<int>(&compiled)) return *status;
    auto& c = std::get<CompiledNotebook>(compiled);
    for (const auto& [step, names] : c.metrics) metric_steps.insert(step);
    spec = std::move(c.spec);
  }
  if (::geteuid() != 0) return say("must run as root (namespaces, mounts and cgroups need it)");
  if (!notebook) spec = load_pipeline(o.file);
  if (!spec) return say(spec.error().message());
  MetricsFolder metrics;
  auto order = execution_order(*spec);
  if (!order) return say(order.error().message());
  auto agent = StepsnapdClient::connect(o.agent_socket);
  if (!agent) return say(agent.error().message());
  protocol::ApiClient& api = (*agent)->api();

  RunPlan plan;
  if (o.restore_run) {
    auto restored = restore_plan(api, *spec, *order, o);
    if (!restored) return say(restored.error().message());
    plan = std::move(*restored);
  }
  if (auto s = make_run_volumes(api, *spec, o.run, plan_json(*spec, *order, plan, o), plan); !s)
    return say(s.error().message());
  std::cout << "pipeline " << spec->pipeline << ", run " << plan.run;
  if (o.restore_run)
    std::cout << " (restored from run " << *o.restore_run << " at step " << *o.from_step << ")";
  std::cout << ": " << order->size() << " steps, " << spec->volumes.size() << " volumes\n";

  const std::size_t total = order->size();
  const std::size_t slots = o.parallel ? o.parallel : default_parallel_steps();
  std::map<std::size_t, std::size_t> position;  // step index -> 1-based place in the order
  for (std::size_t k = 0; k < total; ++k) position[(*order)[k]] = k + 1;
  std::map<std::size_t, StepResult> results_at;  // by position: the summary keeps the order
  StepSchedule schedule(*spec, *order, plan.restored);
  std::optional<ForkedSteps> children;  // only with --parallel above 1
  if (slots > 1) children.emplace();
  bool all_ok = true;

  auto report = [&](std::size_t i, StepResult r) {
    std::cout << end_line(position[i], total, r) << std::endl;
    results_at[position[i]] = std::move(r);
  };
  auto finish = [&](std::size_t i, int code, double seconds) {
    StepResult r;
    r.name = spec->steps[i].name;
    r.seconds = seconds;
    r.exit_code = code;
    r.state = code == 0 ? StepState::ok : StepState::failed;
    if (metric_steps.count(r.name)) r.metrics = metrics.read(r.name);
    auto status = api.request("step.status",
                              {{"pipeline", spec->pipeline}, {"run", plan.run}, {"step", r.name}});
    if (status) {
      r.pre_snapshots = names_of((*status)["pre_snapshots"]);
      r.post_snapshots = names_of((*status)["post_snapshots"]);
    }
    label_with_metrics(api, r);
    if (code != 0) all_ok = false;
    schedule.finished(i, code == 0);
    report(i, std::move(r));
  };

  while (true) {
    for (const auto& settled : schedule.take_settled()) {
      StepResult r;
      r.name = spec->steps[settled.step].name;
      if (settled.skipped_because) {
        r.state = StepState::skipped;
        r.because = spec->steps[*settled.skipped_because].name;
        all_ok = false;
      } else {
        r.state = StepState::restored;
      }
      report(settled.step, std::move(r));
    }
    if (schedule.done()) break;
    auto ready = schedule.start_ready(slots);
    if (ready.empty() && schedule.running() == 0) {
      // Cannot happen with an acyclic spec; never spin if it does.
      say("no step of the run can start and none is running; this is a bug in runner");
      return kRunnerFailed;
    }
    for (std::size_t i : ready) {
      const std::string& name = spec->steps[i].name;
      std::cout << start_line(position[i], total, name) << std::endl;
      ExecOptions exec = step_exec_options(*spec, i, plan.run);
      exec.agent_socket = o.agent_socket;
      // What the view needs to draw the graph and quote the restore command.
      if (!spec->steps[i].after.empty())
        exec.labels["stepsnap.after"] = join(spec->steps[i].after, ",");
      if (auto file = std::filesystem::absolute(o.file).string(); file.size() <= 1024)
        exec.labels["stepsnap.pipeline_file"] = file;
      if (!o.kfp_ui_metadata_dir.empty()) {
        std::string dir = o.kfp_ui_metadata_dir + "/" + name;
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
          std::cerr << "runner: --kfp-ui-metadata: mkdir " << dir << ": " << std::strerror(errno)
                    << "\n";
        exec.kfp_ui_metadata = dir + "/mlpipeline-ui-metadata.json";
        exec.view_url = o.view_url;
      }
      if (metric_steps.count(name)) {
        exec.env.emplace_back("STEPSNAP_METRICS_FILE", metrics.file_for(name));
        // The step's root is read-only and its /tmp its own: the folder is
        // bound into the step at its path.
        exec.host_dirs.push_back(metrics.dir());
      }
      if (!children) {
        auto t0 = std::chrono::steady_clock::now();
        int code;
        {
          LongStepTicker ticker(position[i], total, name);
          code = run_exec_with(exec, **agent);
        }
        finish(i, code,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      } else if (auto started = children->start(i, exec); !started) {
        std::cerr << "runner: " << started.error().message() << "\n";
        finish(i, kRunnerFailed, 0);
      }
    }
    if (children && children->running() > 0) {
      auto e = children->wait_one();
      finish(e.step, e.code, e.seconds);
    }
  }
  children.reset();
  std::vector<StepResult> results;
  for (auto& [pos, r] : results_at) results.push_back(std::move(r));
  std::cout << "\n" << summary_table(results) << std::endl;
  if (std::string m = metrics_table(results); !m.empty()) std::cout << "\n" << m << std::endl;
  return all_ok ? 0 : kStepFailed;
}

}  // namespace stepsnap::runner
