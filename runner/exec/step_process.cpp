#include "runner/exec/step_process.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace stepsnap::runner {
namespace {

// The child reports a setup failure as "<errno> <message>" on a CLOEXEC pipe;
// a successful exec closes the pipe with nothing written.
[[noreturn]] void child_fail(int report_fd, const Error& e) {
  std::string line = std::to_string(e.err) + " " + e.message();
  (void)!::write(report_fd, line.data(), line.size());
  ::_exit(125);
}

Status bring_up_loopback() {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return fail_errno("open socket for", "lo");
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) return fail_errno("read flags of", "lo");
  ifr.ifr_flags |= IFF_UP;
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) return fail_errno("bring up", "lo");
  return {};
}

// The byte a gated child writes once its setup is done, and the one runner
// answers with to let it exec. Error reports start with a digit (errno).
constexpr char kReady = 'R';
constexpr char kGo = 'G';

[[noreturn]] void run_child(const StepSpec& spec, int report_fd, int go_fd) {
  // runner blocks the signals it forwards; the step starts with none blocked.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  if (auto s = run_mount_plan(spec.mounts); !s) child_fail(report_fd, s.error());
  if (::sethostname(spec.hostname.data(), spec.hostname.size()) != 0)
    child_fail(report_fd, fail_errno("set hostname", spec.hostname).value());
  if (spec.new_net) {
    if (auto s = bring_up_loopback(); !s) child_fail(report_fd, s.error());
  }
  if (!spec.workdir.empty() && ::chdir(spec.workdir.c_str()) != 0)
    child_fail(report_fd, fail_errno("change to working directory", spec.workdir).value());

  if (go_fd >= 0) {
    // Wait for runner's go; EOF (runner refused or died) ends the child
    // before CMD runs a single instruction.
    char go = 0;
    if (::write(report_fd, &kReady, 1) != 1) ::_exit(125);
    ssize_t n;
    while ((n = ::read(go_fd, &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1 || go != kGo) ::_exit(125);
    ::close(go_fd);
  }

  std::vector<char*> argv, envp;
  for (const auto& a : spec.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ::execvpe(argv[0], argv.data(), envp.data());
  int err = errno;
  std::string line =
      std::to_string(err) + " execute " + spec.command[0] + ": " + std::strerror(err);
  (void)!::write(report_fd, line.data(), line.size());
  ::_exit(err == ENOENT ? 127 : 126);
}

}  // namespace

int exit_code_of_start_failure(const Error& e) {
  if (e.kind == "not_found") return 127;
  if (e.kind == "not_executable") return 126;
  return 125;
}

Result<StepProcess> StepProcess::start(const StepSpec& spec, int cgroup_fd,
                                       const std::function<Status()>& before_exec) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return fail_errno("create pipe for", "step start");
  UniqueFd report_read(pipe_fds[0]), report_write(pipe_fds[1]);
  UniqueFd go_read, go_write;
  if (before_exec) {
    // A socket, not a pipe: send(MSG_NOSIGNAL) to a child that died meanwhile
    // is EPIPE, never a SIGPIPE that would end runner.
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pipe_fds) != 0)
      return fail_errno("create socket pair for", "step start");
    go_read.reset(pipe_fds[0]);
    go_write.reset(pipe_fds[1]);
  }

  int pidfd = -1;
  struct clone_args args {};
  args.flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD |
               CLONE_INTO_CGROUP | (spec.new_net ? CLONE_NEWNET : 0);
  args.pidfd = reinterpret_cast<__u64>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<__u64>(cgroup_fd);
  long pid = ::syscall(SYS_clone3, &args, sizeof(args));
  if (pid < 0) {
    auto err = fail_errno("start step in new namespaces and cgroup", spec.command[0]);
    if (errno == ENOSYS || errno == E2BIG)
      err.value().detail = "needs clone3 with CLONE_INTO_CGROUP (Linux 5.7 or newer)";
    return err;
  }
  if (pid == 0) {
    report_read.reset();
    go_write.reset();
    run_child(spec, report_write.get(), go_read.get());
  }
  report_write.reset();
  go_read.reset();
  StepProcess step(static_cast<pid_t>(pid), UniqueFd(pidfd));

  // Everything the child wrote: nothing when CMD exec'd, else "<errno> <message>".
  std::string report;
  if (before_exec) {
    char first = 0;
    ssize_t n;
    while ((n = ::read(report_read.get(), &first, 1)) < 0 && errno == EINTR) {
    }
    if (n == 1 && first == kReady) {
      if (auto s = before_exec(); !s) {
        go_write.reset();  // the child sees EOF and exits without exec'ing
        (void)step.wait();
        Error e = s.error();
        e.kind = "before_exec";
        return tl::unexpected(e);
      }
      if (::send(go_write.get(), &kGo, 1, MSG_NOSIGNAL) != 1) {
        auto e = fail_errno("release step", spec.command[0]);
        go_write.reset();
        (void)step.wait();
        return e;
      }
    } else if (n == 1) {
      report.push_back(first);  // a setup error's first byte
    }
    go_write.reset();
  }

  // Blocks until the child execs (pipe closed, nothing written) or fails.
  char buf[512];
  ssize_t n;
  while ((n = ::read(report_read.get(), buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    report.append(buf, static_cast<size_t>(n));
  }
  if (report.empty()) return step;

  (void)step.wait();  // reap the failed child
  // The child formatted the whole message; errno only decides the kind.
  auto space = report.find(' ');
  int err = std::atoi(report.substr(0, space).c_str());
  Error e{space == std::string::npos ? report : report.substr(space + 1), "", 0, "", "setup"};
  if (e.op.rfind("execute", 0) == 0) e.kind = err == ENOENT ? "not_found" : "not_executable";
  return tl::unexpected(e);
}

Status StepProcess::signal(int sig) const {
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0)
    return fail_errno("signal", "step pid " + std::to_string(pid_));
  return {};
}

Result<int> StepProcess::wait() {
  siginfo_t info{};
  for (;;) {
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED) ==
        0)
      break;
    if (errno != EINTR) return fail_errno("wait for", "step pid " + std::to_string(pid_));
  }
  if (info.si_code == CLD_EXITED) return info.si_status;
  return 128 + info.si_status;
}

}  // namespace stepsnap::runner
