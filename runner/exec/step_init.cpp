#include "runner/exec/step_init.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace stepsnap::runner {
namespace {

// runner's channel is a socket: MSG_NOSIGNAL keeps a runner that died from
// raising a SIGPIPE in init, which would then be sent on to CMD.
void tell_runner(int report_fd, const std::string& text) {
  (void)!::send(report_fd, text.data(), text.size(), MSG_NOSIGNAL);
}

[[noreturn]] void init_fail(int report_fd, const std::string& what) {
  int err = errno;
  tell_runner(report_fd, std::to_string(err) + " " + what + ": " + std::strerror(err));
  ::_exit(125);
}

[[noreturn]] void exec_cmd(char* const argv[], char* const envp[], int exec_report_fd,
                           const ProcessSandbox& sandbox) {
  // CMD starts with no signal blocked, as after a fork by a shell; init
  // keeps its own mask.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Last before the exec: from here on CMD is who --user says, with its
  // capabilities and the seccomp filter; the exec is the filter's first
  // allowed call.
  if (auto s = enter_process_sandbox(sandbox); !s) {
    std::string line = std::to_string(s.error().err) + " " + s.error().message();
    (void)!::write(exec_report_fd, line.data(), line.size());
    ::_exit(125);
  }
  ::execvpe(argv[0], argv, envp);
  int err = errno;
  std::string line =
      std::to_string(err) + " execute " + std::string(argv[0]) + ": " + std::strerror(err);
  (void)!::write(exec_report_fd, line.data(), line.size());
  ::_exit(err == ENOENT ? 127 : 126);
}

}  // namespace

int init_exit_status(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 125;  // not reached: init waits without WUNTRACED/WCONTINUED
}

void run_step_init(char* const argv[], char* const envp[], int report_fd,
                   const ProcessSandbox& sandbox) {
  // `ps` in the step shows what pid 1 is, rather than a second "runner".
  ::prctl(PR_SET_NAME, "stepsnap-init", 0, 0, 0);

  sigset_t all;
  sigfillset(&all);
  // Made before the fork: a signal pending since the step's setup is read
  // here and sent on once CMD exists.
  int signals = ::signalfd(-1, &all, SFD_CLOEXEC);
  if (signals < 0) init_fail(report_fd, "take signals through a signalfd in the step's init");

  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) init_fail(report_fd, "create pipe for CMD's exec");
  pid_t cmd = ::fork();
  if (cmd < 0) init_fail(report_fd, "fork CMD in the step's init");
  if (cmd == 0) {
    ::close(exec_pipe[0]);
    exec_cmd(argv, envp, exec_pipe[1], sandbox);
  }
  ::close(exec_pipe[1]);

  // EOF with nothing written: the exec succeeded and closed CMD's end (the
  // agent may hold CMD stopped right after it; that is not init's concern).
  std::string failure;
  char buf[512];
  ssize_t n;
  while ((n = ::read(exec_pipe[0], buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    failure.append(buf, static_cast<size_t>(n));
  }
  ::close(exec_pipe[0]);
  if (!failure.empty()) tell_runner(report_fd, failure);
  ::close(STDIN_FILENO);
  ::close(STDOUT_FILENO);
  ::close(STDERR_FILENO);
  // Last: once runner sees EOF, init holds nothing but its signalfd.
  ::close(report_fd);

  for (;;) {
    struct signalfd_siginfo si {};
    n = ::read(signals, &si, sizeof(si));
    if (n != static_cast<ssize_t>(sizeof(si))) {
      if (n < 0 && errno == EINTR) continue;
      // Cannot happen with a valid signalfd; without it init could neither
      // reap nor forward, and waiting for CMD alone still ends the step.
      int status = 0;
      while (::waitpid(cmd, &status, 0) < 0 && errno == EINTR) {
      }
      ::_exit(init_exit_status(status));
    }
    int sig = static_cast<int>(si.ssi_signo);
    // SIGCONT is not passed on: init never stops (pid 1 cannot be stopped
    // from its namespace), and to CMD a SIGCONT would only undo the agent's
    // hold at its exec. A kill -CONT of init, even one sent while the step
    // waited at runner's gate and kept pending until CMD existed, would
    // otherwise break that hold and get CMD killed.
    if (sig == SIGCONT) continue;
    if (sig != SIGCHLD) {
      // Whoever sent it (runner forwarding its own signals, or anyone who
      // may signal the step's pid 1) meant the step: that is CMD.
      ::kill(cmd, sig);
      continue;
    }
    // One SIGCHLD may stand for several children: reap until none is left
    // that has ended. Orphans of the step are init's children too.
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (pid == cmd) ::_exit(init_exit_status(status));
    }
  }
}

}  // namespace stepsnap::runner
