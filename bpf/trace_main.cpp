// stepsnap-trace: prints the step tracer's events for one cgroup as
// newline-delimited JSON. A debugging aid for bpf/: the agent uses the same
// StepTracer API.
#include <signal.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "bpf/tracer.h"
#include "common/log.h"

namespace po = boost::program_options;
using namespace std::chrono;
using stepsnap::bpf::Event;
using stepsnap::bpf::EventType;

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr const char* kAbout =
    "Usage: stepsnap-trace --cgroup PATH [--hold] [--hold-timeout S] [--release-after S]\n"
    "\n"
    "Watches a cgroup v2 directory (and the cgroups below it) with the step tracer's\n"
    "BPF programs and prints one JSON object per line for every fork, exec and exit of\n"
    "its processes, then a step_end event when the last of them has exited, and exits.\n"
    "Start it before putting processes into the cgroup. With --hold, the first process\n"
    "to exec in the cgroup is stopped before it runs a single instruction (exec event\n"
    "with \"held\": true) and resumed after --release-after seconds, or at the latest\n"
    "after --hold-timeout seconds (hold_timeout event). With --pod-skip N, PATH is a\n"
    "pod's cgroup (one child cgroup per container): only the child cgroup made after\n"
    "N others is watched (a container event names it), nothing else of the pod.\n"
    "Needs root and a kernel with BTF.\n"
    "\n"
    "Options";

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts(kAbout);
  std::string cgroup;
  double hold_timeout = 60;
  std::optional<double> release_after;
  opts.add_options()("help,h", "show this help")(
      "cgroup", po::value(&cgroup)->value_name("PATH"),
      "cgroup v2 directory to watch, e.g. /sys/fs/cgroup/mystep")(
      "hold", "stop the first exec in the cgroup until released")(
      "hold-timeout", po::value(&hold_timeout)->value_name("S")->default_value(60),
      "release an unreleased hold after S seconds")(
      "release-after", po::value<double>()->value_name("S"),
      "release the hold S seconds after it happened (default: at --hold-timeout)")(
      "follow", "keep running after the step end (until Ctrl-C)")(
      "boundaries-only",
      "print only the step's boundaries (main exec and exit, holds, step end), as the "
      "agent watches; every process is still counted")(
      "pod-skip", po::value<unsigned>()->value_name("N"),
      "PATH is a pod: watch the child cgroup made after N others")(
      "debug", "log libbpf messages and the verifier log to stderr");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "stepsnap-trace: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  if (cgroup.empty()) {
    std::cerr << "stepsnap-trace: --cgroup PATH is required (see --help)\n";
    return 2;
  }
  if (vm.count("release-after")) release_after = vm["release-after"].as<double>();
  if (vm.count("debug")) stepsnap::log::set_level(stepsnap::log::Level::debug);

  auto tracer = stepsnap::bpf::StepTracer::open({.debug = vm.count("debug") > 0});
  if (!tracer) {
    std::cerr << "stepsnap-trace: " << tracer.error().message() << "\n";
    return 1;
  }
  stepsnap::bpf::WatchOptions wopts;
  wopts.hold_first_exec = vm.count("hold") > 0;
  wopts.boundaries_only = vm.count("boundaries-only") > 0;
  wopts.hold_timeout = duration_cast<milliseconds>(duration<double>(hold_timeout));
  // A debugging aid: an unreleased hold lets the process go on (the agent
  // kills instead).
  wopts.on_hold_timeout = stepsnap::bpf::HoldExpiry::release;
  auto id = vm.count("pod-skip")
                ? tracer->watch_pod(
                      cgroup, {.skip_children = vm["pod-skip"].as<unsigned>(), .container = wopts})
                : tracer->watch(cgroup, wopts);
  if (!id) {
    std::cerr << "stepsnap-trace: " << id.error().message() << "\n";
    return 1;
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  bool follow = vm.count("follow") > 0;
  bool ended = false;
  std::optional<steady_clock::time_point> release_at;
  while (!g_stop && (follow || !ended)) {
    auto polled = tracer->poll(milliseconds(100), [&](const Event& e) {
      std::cout << stepsnap::bpf::to_json(e).dump() << "\n" << std::flush;
      if (e.type == EventType::step_end) ended = true;
      // From here the pod's container is the watch that holds.
      if (e.type == EventType::container && e.error == 0) *id = e.task_cgroup_id;
      if (e.type == EventType::exec && e.held && release_after)
        release_at =
            steady_clock::now() + duration_cast<milliseconds>(duration<double>(*release_after));
    });
    if (!polled) {
      std::cerr << "stepsnap-trace: " << polled.error().message() << "\n";
      return 1;
    }
    if (release_at && steady_clock::now() >= *release_at) {
      release_at.reset();
      if (auto st = tracer->release(*id); !st)
        std::cerr << "stepsnap-trace: " << st.error().message() << "\n";
    }
  }
  return 0;
}
