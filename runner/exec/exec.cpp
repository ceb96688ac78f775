#include "runner/exec/exec.h"

#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>

#include "common/unique_fd.h"
#include "runner/exec/agent_client.h"
#include "runner/exec/cgroup.h"
#include "runner/exec/fs_probe.h"
#include "runner/exec/kfp_metadata.h"
#include "runner/exec/mount_plan.h"
#include "runner/exec/sandbox_process.h"
#include "runner/exec/step_env.h"
#include "runner/exec/step_process.h"
#include "runner/exec/stepsnapd_client.h"

extern char** environ;

namespace stepsnap::runner {
namespace {

constexpr int kRunnerFailed = 125;
constexpr int kTimedOut = 124;
// A forwarded SIGINT, SIGTERM or SIGQUIT that CMD handles or ignores
// without exiting ends the step this long afterwards.
constexpr int kSignalGraceSeconds = 10;

int say(int code, const std::string& message) {
  std::cerr << "runner: " << message << "\n";
  return code;
}

// Limits need their controller enabled from the hierarchy's root down to the
// step's parent; a hierarchy that does not offer it is a clear error.
Status set_limit(const Cgroup& cg, const std::string& controller, const std::string& file,
                 const std::string& value) {
  namespace fs = std::filesystem;
  auto root = cgroup2_mount_point();
  if (!root) return tl::unexpected(root.error());
  fs::path step(cg.path());
  std::vector<fs::path> ancestors;
  for (fs::path p = step.parent_path(); p.string().size() >= root->size(); p = p.parent_path()) {
    ancestors.insert(ancestors.begin(), p);
    if (p == fs::path(*root)) break;
  }
  for (const auto& dir : ancestors) {
    std::ofstream control(dir / "cgroup.subtree_control");
    control << "+" << controller << std::flush;
    if (!control)
      return fail(
          "enable cgroup controller " + controller + " in", dir.string(), EINVAL,
          "this cgroup v2 hierarchy does not offer it (see " + *root + "/cgroup.controllers)");
  }
  std::ofstream out(step / file);
  out << value << std::flush;
  if (!out) return fail("write " + value + " to", (step / file).string(), EINVAL);
  return {};
}

Status apply_limits(const Cgroup& cg, const ExecOptions& o) {
  if (o.memory_bytes) {
    if (auto s = set_limit(cg, "memory", "memory.max", std::to_string(*o.memory_bytes)); !s)
      return s;
  }
  if (o.cpus) {
    constexpr long kPeriod = 100000;
    long quota = std::lround(*o.cpus * kPeriod);
    if (auto s =
            set_limit(cg, "cpu", "cpu.max", std::to_string(quota) + " " + std::to_string(kPeriod));
        !s)
      return s;
  }
  return {};
}

// CMD's credentials, capabilities and seccomp filter from the options
// (checked when they were parsed).
ProcessSandbox process_sandbox(const ExecOptions& o) {
  ProcessSandbox sb;
  sb.uid = o.sandbox.uid;
  sb.gid = o.sandbox.gid;
  sb.capabilities = step_capabilities(o.sandbox.cap_add, o.sandbox.cap_drop).value_or(0);
  sb.seccomp.allow_mounts = sb.uid == 0 && (sb.capabilities & (CapMask{1} << CAP_SYS_ADMIN));
  return sb;
}

std::vector<std::string> runner_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  return env;
}

std::string current_directory() {
  std::error_code ec;
  auto cwd = std::filesystem::current_path(ec);
  return ec ? "/" : cwd.string();
}

UniqueFd timer_after(double seconds) {
  UniqueFd fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
  if (!fd) return fd;
  struct itimerspec when {};
  when.it_value.tv_sec = static_cast<time_t>(seconds);
  when.it_value.tv_nsec = static_cast<long>((seconds - std::floor(seconds)) * 1e9);
  if (when.it_value.tv_sec == 0 && when.it_value.tv_nsec == 0) when.it_value.tv_nsec = 1;
  ::timerfd_settime(fd.get(), 0, &when, nullptr);
  return fd;
}

// Removes the empty stepsnap/<pipeline>/<run> parents a step leaves behind;
// a parent another step still uses is not empty and stays.
void remove_empty_parents(const std::string& step_path) {
  auto root = cgroup2_mount_point();
  if (!root) return;
  std::filesystem::path p = std::filesystem::path(step_path).parent_path();
  // Two levels: <run> and <pipeline>; stepsnap/ itself stays for the next step.
  for (int i = 0; i < 2 && p.string().size() > root->size(); ++i, p = p.parent_path())
    if (::rmdir(p.c_str()) != 0) break;
}

struct StepOutcome {
  int code = kRunnerFailed;  // the exit status runner reports
  bool ran = false;          // CMD was exec'd: the agent gets step_finished
  bool gate_shut = false;    // the agent did not confirm the pre-snapshot (said already)
};

// Starts the step in its cgroup, forwards signals, enforces the timeout, and
// returns the exit status runner reports.
StepOutcome run_step(const ExecOptions& o, const std::vector<MountOp>& plan,
                     const Cgroup& step_cgroup, AgentClient& agent) {
  // Forwarded signals are taken through a signalfd; blocked before the
  // step starts so none is lost in between.
  sigset_t forwarded;
  sigemptyset(&forwarded);
  for (int sig : kForwardedSignals) sigaddset(&forwarded, sig);
  sigset_t old_mask;
  ::sigprocmask(SIG_BLOCK, &forwarded, &old_mask);
  UniqueFd signals(::signalfd(-1, &forwarded, SFD_CLOEXEC));

  StepSpec spec{plan,
                o.hostname,
                o.net == NetMode::none,
                o.workdir.value_or(""),
                step_environment(runner_environment(), o.env, o.sandbox.uid),
                o.command,
                process_sandbox(o),
                current_directory()};
  // runner's gate: the step's init, set up (mounts, sandbox plan) and not
  // yet forked CMD, waits until the agent answers over runner's connection
  // that it recorded this registration's pre-snapshot. Without that answer
  // the child exits and CMD never runs, whatever happens to the agent's
  // BPF hold (a SIGCONT, an agent gone or restarted). CMD's exec, once let
  // through, is still the cgroup's first, and the tracer holds it until
  // the agent records the step started.
  StepRef ref{o.pipeline, o.run, o.step};
  auto step = StepProcess::start(spec, step_cgroup.dir_fd(), [&] { return agent.open_gate(ref); });
  if (!step) {
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (step.error().kind == "before_exec") {
      Error e = step.error();
      e.kind.clear();
      return {say(kRunnerFailed, "stepsnapd did not confirm the pre-snapshot of step " +
                                     ref.text() + ", so CMD was not run: " + e.message()),
              false, true};
    }
    return {say(exit_code_of_start_failure(step.error()), step.error().message()), false};
  }

  UniqueFd deadline = o.timeout_seconds ? timer_after(*o.timeout_seconds) : UniqueFd();
  UniqueFd grace;
  int forwarded_signal = 0;
  bool timed_out = false;
  for (;;) {
    struct pollfd fds[4] = {{step->pidfd(), POLLIN, 0},
                            {signals.get(), POLLIN, 0},
                            {deadline.get(), POLLIN, 0},
                            {grace.get(), POLLIN, 0}};
    if (::poll(fds, 4, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo si {};
      if (::read(signals.get(), &si, sizeof(si)) == sizeof(si)) {
        forwarded_signal = static_cast<int>(si.ssi_signo);
        // Only signals that ask the step to stop get the grace kill: a step
        // that handles SIGHUP or SIGUSR1 and keeps running is doing its job.
        bool asks_to_stop = forwarded_signal == SIGINT || forwarded_signal == SIGTERM ||
                            forwarded_signal == SIGQUIT;
        // To the step's init, which sends it on to CMD (step_init.h): CMD
        // gets it as if it ran directly, and dies of it without a handler.
        (void)step->signal(forwarded_signal);
        if (asks_to_stop && !grace) grace = timer_after(kSignalGraceSeconds);
      }
    }
    if (fds[2].revents & POLLIN) {
      timed_out = true;
      std::cerr << "runner: step " << o.step << " ran out of its " << *o.timeout_seconds
                << " s timeout; killing every process of its cgroup\n";
      (void)step_cgroup.kill();
      deadline.reset();
    }
    if (fds[3].revents & POLLIN) {
      std::cerr << "runner: step " << o.step << " ignored signal " << forwarded_signal << " for "
                << kSignalGraceSeconds << " s; killing its cgroup\n";
      (void)step_cgroup.kill();
      grace.reset();
    }
  }
  auto status = step->wait();
  ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  if (!status) return {say(kRunnerFailed, status.error().message()), true};
  if (timed_out) return {kTimedOut, true};
  return {*status, true};
}

}  // namespace

int run_exec(const ExecOptions& o) {
  if (::geteuid() != 0)
    return say(kRunnerFailed, "must run as root (namespaces, mounts and cgroups need it)");
  auto agent = connect_agent(o);
  if (!agent) return say(kRunnerFailed, agent.error().message());
  if (!(*agent)->takes_snapshots())
    std::cerr << "runner: --no-agent: volumes are host directories bind-mounted as they are; "
                 "NO SNAPSHOTS are taken\n";
  return run_exec_with(o, **agent);
}

int run_exec_with(const ExecOptions& o, AgentClient& agent) {
  // Volume names become what to mount: host directories with --no-agent,
  // this run's clones (block devices) with the agent.
  StepRef ref{o.pipeline, o.run, o.step};
  ExecOptions resolved = o;
  std::vector<std::string> volume_names;
  for (auto& v : resolved.volumes) {
    volume_names.push_back(v.name);
    std::optional<std::string> from;
    if (auto it = o.clone_from.find(v.name); it != o.clone_from.end()) from = it->second;
    auto source = agent.ensure_run_clone(ref, v.name, from);
    if (!source) return say(kRunnerFailed, source.error().message());
    v.name = source->path;
    if (source->block_device) {
      auto fstype = probe_filesystem(source->path);
      if (!fstype)
        return say(kRunnerFailed,
                   "volume " + volume_names.back() + ": " + fstype.error().message());
      v.fstype = *fstype;
    }
  }
  auto plan = build_mount_plan(resolved);
  if (!plan) return say(kRunnerFailed, plan.error().message());

  auto cg = Cgroup::create("stepsnap/" + o.pipeline + "/" + o.run + "/" + o.step);
  if (!cg) {
    auto e = cg.error();
    if (e.err == EEXIST) e.detail = "a step " + ref.text() + " is already running";
    return say(kRunnerFailed, e.message());
  }
  StepOutcome outcome;
  if (auto s = apply_limits(*cg, o); !s) {
    say(kRunnerFailed, s.error().message());
  } else if (auto r = agent.register_step(
                 {ref, cg->path(), o.snapshots, volume_names, o.command, o.labels});
             !r) {
    say(kRunnerFailed, "register step " + ref.text() + " with stepsnapd: " + r.error().message());
  } else {
    outcome = run_step(resolved, *plan, *cg, agent);
    // Every process of the step must be gone before the post-snapshot. The
    // step's init exits when CMD ends, and the kernel kills the rest of its
    // pid namespace before that exit is reported; this is the safety net.
    if (outcome.ran && agent.takes_snapshots()) {
      if (auto p = cg->populated(); p && *p) {
        (void)cg->kill();
        (void)cg->wait_empty(std::chrono::seconds(10));
      }
    }
    auto done = outcome.ran ? agent.step_finished(ref, outcome.code) : agent.unregister_step(ref);
    if (!done && outcome.gate_shut) {
      // Said once already: the agent is gone or failed the step, and CMD
      // never ran. Its registration ends with the connection or has ended.
    } else if (!done && done.error().kind == kPreSnapshotFailed) {
      // The agent killed the step at its held first exec: CMD never ran.
      outcome.code =
          say(kRunnerFailed, "pre-snapshot of step " + ref.text() +
                                 " failed, the step did not start: " + done.error().detail);
    } else if (!done) {
      say(0, "stepsnapd after step " + ref.text() + ": " + done.error().message());
      if (outcome.ran && outcome.code == 0) outcome.code = kRunnerFailed;
    } else if (!o.kfp_ui_metadata.empty()) {
      auto snaps = agent.step_snapshots(ref);
      Status written =
          snaps ? write_file_atomically(o.kfp_ui_metadata,
                                        kfp_ui_metadata(ref, snaps->pre, snaps->post, o.view_url))
                : Status(tl::unexpected(snaps.error()));
      if (!written) {
        say(0, "--kfp-ui-metadata " + o.kfp_ui_metadata + ": " + written.error().message());
        if (outcome.code == 0) outcome.code = kRunnerFailed;
      }
    }
  }
  std::string cg_path = cg->path();
  if (auto s = cg->remove(); !s) say(0, "cleanup: " + s.error().message());
  remove_empty_parents(cg_path);
  return outcome.code;
}

}  // namespace stepsnap::runner
