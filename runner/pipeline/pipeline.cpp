#include "runner/pipeline/pipeline.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include <set>
#include <thread>
#include <variant>

#include "common/names.h"
#include "common/text.h"
#include "runner/exec/exec.h"
#include "runner/exec/stepsnapd_client.h"
#include "runner/pipeline/notebook_compile.h"
#include "runner/pipeline/pipeline_report.h"
#include "runner/pipeline/pipeline_spec.h"

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

std::string generated_run_id() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "run-%Y%m%d-%H%M%S", &utc);
  return buf;
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

// Fails when the run already has a clone: a run id names one run.
Status check_run_is_new(protocol::ApiClient& api, const PipelineSpec& spec,
                        const std::string& run) {
  auto volumes = api.request("volume.list", json::object());
  if (!volumes) return tl::unexpected(volumes.error());
  for (const auto& v : (*volumes)["volumes"]) {
    std::string name = v.value("name", "");
    if (name.rfind(spec.pipeline + "." + run + ".", 0) == 0)
      return fail("start run", spec.pipeline + "/" + run, EEXIST,
                  "it exists (clone " + name + "); pick another --run");
  }
  return {};
}

// The run's initial snapshots and clones (Kale's "create-volume-N" steps).
Status make_run_volumes(protocol::ApiClient& api, const PipelineSpec& spec, RunPlan& plan) {
  for (const auto& v : spec.volumes) {
    std::string& source = plan.clone_sources[v.name];
    if (source.empty()) {
      // Recorded as the run's initial snapshot (phase initial).
      json args = {{"volume", v.name}, {"pipeline", spec.pipeline}, {"run", plan.run}};
      std::string name = plan.run + "." + v.name + ".initial";
      if (is_valid_name(name)) args["name"] = name;
      auto snap = api.request("snapshot.create", args);
      if (!snap) return tl::unexpected(snap.error().context("initial snapshot of " + v.name));
      source = snap->value("name", "");
      std::cout << "volume " << v.name << ": initial snapshot " << source << "\n";
    }
    auto clone = api.request(
        "run.clone",
        {{"pipeline", spec.pipeline}, {"run", plan.run}, {"volume", v.name}, {"snapshot", source}});
    if (!clone) return tl::unexpected(clone.error().context("clone " + v.name + " for the run"));
    std::cout << "volume " << v.name << ": run clone " << clone->value("name", "") << " from "
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
  plan.run = o.run.value_or(generated_run_id());
  if (auto s = check_run_is_new(api, *spec, plan.run); !s) return say(s.error().message());
  std::cout << "pipeline " << spec->pipeline << ", run " << plan.run;
  if (o.restore_run)
    std::cout << " (restored from run " << *o.restore_run << " at step " << *o.from_step << ")";
  std::cout << ": " << order->size() << " steps, " << spec->volumes.size() << " volumes\n";
  if (auto s = make_run_volumes(api, *spec, plan); !s) return say(s.error().message());

  const std::size_t total = order->size();
  std::vector<StepResult> results;
  std::map<std::size_t, std::string> failed_because;  // skipped step -> failed step
  bool all_ok = true;
  for (std::size_t pos = 0; pos < total; ++pos) {
    std::size_t i = (*order)[pos];
    StepResult r;
    r.name = spec->steps[i].name;
    if (plan.restored.count(i)) {
      r.state = StepState::restored;
    } else if (auto it = failed_because.find(i); it != failed_because.end()) {
      r.state = StepState::skipped;
      r.because = it->second;
      all_ok = false;
    } else {
      std::cout << start_line(pos + 1, total, r.name) << std::endl;
      ExecOptions exec = step_exec_options(*spec, i, plan.run);
      exec.agent_socket = o.agent_socket;
      // What the view needs to draw the graph and quote the restore command.
      if (!spec->steps[i].after.empty())
        exec.labels["stepsnap.after"] = join(spec->steps[i].after, ",");
      if (auto file = std::filesystem::absolute(o.file).string(); file.size() <= 1024)
        exec.labels["stepsnap.pipeline_file"] = file;
      if (!o.kfp_ui_metadata_dir.empty()) {
        std::string dir = o.kfp_ui_metadata_dir + "/" + r.name;
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
          std::cerr << "runner: --kfp-ui-metadata: mkdir " << dir << ": " << std::strerror(errno)
                    << "\n";
        exec.kfp_ui_metadata = dir + "/mlpipeline-ui-metadata.json";
        exec.view_url = o.view_url;
      }
      const bool records_metrics = metric_steps.count(r.name) > 0;
      if (records_metrics) exec.env.emplace_back("STEPSNAP_METRICS_FILE", metrics.file_for(r.name));
      auto t0 = std::chrono::steady_clock::now();
      int code;
      {
        LongStepTicker ticker(pos + 1, total, r.name);
        code = run_exec_with(exec, **agent);
      }
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      r.exit_code = code;
      r.state = code == 0 ? StepState::ok : StepState::failed;
      if (records_metrics) r.metrics = metrics.read(r.name);
      auto status = api.request(
          "step.status", {{"pipeline", spec->pipeline}, {"run", plan.run}, {"step", r.name}});
      if (status) {
        r.pre_snapshots = names_of((*status)["pre_snapshots"]);
        r.post_snapshots = names_of((*status)["post_snapshots"]);
      }
      if (code != 0) {
        all_ok = false;
        for (std::size_t d : dependents_of(*spec, i)) failed_because.emplace(d, r.name);
      }
    }
    std::cout << end_line(pos + 1, total, r) << std::endl;
    results.push_back(std::move(r));
  }
  std::cout << "\n" << summary_table(results) << std::endl;
  if (std::string m = metrics_table(results); !m.empty()) std::cout << "\n" << m << std::endl;
  return all_ok ? 0 : kStepFailed;
}

}  // namespace stepsnap::runner
