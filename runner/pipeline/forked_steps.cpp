#include "runner/pipeline/forked_steps.h"

#include <poll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>

#include "runner/exec/exec.h"
#include "runner/exec/stepsnapd_client.h"

namespace stepsnap::runner {

namespace {

// The signals `runner exec` forwards to its step, and SIGCHLD to wake up.
sigset_t watched_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : kForwardedSignals) sigaddset(&set, sig);
  sigaddset(&set, SIGCHLD);
  return set;
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 125;
}

}  // namespace

ForkedSteps::ForkedSteps() {
  sigset_t set = watched_signals();
  ::sigprocmask(SIG_BLOCK, &set, &old_mask_);
  signals_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
}

ForkedSteps::~ForkedSteps() {
  // Normally none are left; on an early return, the steps still end their
  // own way (each child runner takes its step's post-snapshot).
  while (!children_.empty()) wait_one();
  ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
}

Status ForkedSteps::start(std::size_t step, const ExecOptions& exec) {
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork for step", exec.step);
  if (pid == 0) {
    ::setpgid(0, 0);
    ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
    int code = 125;
    if (auto agent = StepsnapdClient::connect(exec.agent_socket); agent) {
      code = run_exec_with(exec, **agent);
    } else {
      std::cerr << "runner: step " << exec.step << ": " << agent.error().message() << "\n";
    }
    std::cout.flush();
    std::cerr.flush();
    ::_exit(code);
  }
  // Also from the parent, so no signal can find the child outside its group.
  ::setpgid(pid, pid);
  children_[pid] = Child{step, std::chrono::steady_clock::now()};
  return {};
}

ForkedSteps::Exit ForkedSteps::wait_one() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      auto it = children_.find(pid);
      if (it == children_.end()) continue;  // not one of ours (a ticker has none)
      Exit e{it->second.step, exit_code_of(status),
             std::chrono::duration<double>(std::chrono::steady_clock::now() - it->second.started)
                 .count()};
      children_.erase(it);
      return e;
    }
    if (pid < 0 && errno == ECHILD) {
      // Lost track (should not happen): report every remaining step failed.
      auto it = children_.begin();
      Exit e{it->second.step, 125, 0};
      children_.erase(it);
      return e;
    }
    pollfd p{signals_.get(), POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    signalfd_siginfo si{};
    while (::read(signals_.get(), &si, sizeof(si)) == sizeof(si)) {
      int sig = static_cast<int>(si.ssi_signo);
      if (sig == SIGCHLD) continue;
      for (const auto& [child, c] : children_) ::kill(child, sig);
    }
  }
}

}  // namespace stepsnap::runner
