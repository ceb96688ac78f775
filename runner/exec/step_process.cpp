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

#include "runner/exec/step_init.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace stepsnap::runner {
namespace {

// The child reports a setup failure as "<errno> <message>" on runner's
// channel (a socket: MSG_NOSIGNAL, so a runner that died raises no SIGPIPE);
// the channel closed with nothing written means CMD's exec succeeded.
[[noreturn]] void child_fail(int channel, const Error& e) {
  std::string line = std::to_string(e.err) + " " + e.message();
  (void)!::send(channel, line.data(), line.size(), MSG_NOSIGNAL);
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

// The child stays as the step's init and never execs, so runner's
// close-on-exec descriptors (the agent connection, its signalfd and timers,
// the cgroup fd) would stay open in it for the whole step: the agent would
// not see runner's connection close while the step runs. Keeps 0, 1, 2 and
// the channel, which it moves to fd 3; returns the channel's new number.
int close_inherited_fds(int channel) {
  constexpr int kChannel = 3;
  if (channel != kChannel) {
    if (::dup3(channel, kChannel, O_CLOEXEC) < 0) return channel;  // keep what works
    if (channel < kChannel) ::close(channel);
    channel = kChannel;
  }
  if (::syscall(SYS_close_range, kChannel + 1, ~0U, 0) != 0) {
    // Kernels before 5.9: close them one by one.
    for (int fd = kChannel + 1; fd < 65536; ++fd) ::close(fd);
  }
  return channel;
}

// The byte a gated child writes once its setup is done, and the one runner
// answers with to let it exec. Error reports start with a digit (errno).
constexpr char kReady = 'R';
constexpr char kGo = 'G';

[[noreturn]] void run_child(const StepSpec& spec, int channel, bool gated) {
  // Every signal blocked for good: the child becomes the step's init, which
  // takes them through a signalfd and sends them on to CMD (step_init.h).
  // runner blocked the ones it forwards before the clone, so none sent
  // since is lost.
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  channel = close_inherited_fds(channel);

  // A session of its own: runner's terminal job control (Ctrl-Z, then fg)
  // and signals to runner's process group or session never reach the step,
  // so nothing but the agent continues CMD from its hold.
  if (::setsid() < 0)
    child_fail(channel, fail_errno("start a new session for", "the step").value());
  // The cgroup namespace is made here, once the child is in the step's
  // cgroup: clone3 would root it at runner's cgroup (the namespace is copied
  // from the parent before CLONE_INTO_CGROUP places the child). Rooted at the
  // step's cgroup, the step cannot move any of its processes out of it.
  if (::unshare(CLONE_NEWCGROUP) != 0)
    child_fail(channel, fail_errno("create cgroup namespace for", "the step").value());

  if (auto s = run_mount_plan(spec.mounts); !s) child_fail(channel, s.error());
  if (::sethostname(spec.hostname.data(), spec.hostname.size()) != 0)
    child_fail(channel, fail_errno("set hostname", spec.hostname).value());
  if (spec.new_net) {
    if (auto s = bring_up_loopback(); !s) child_fail(channel, s.error());
  }
  if (!spec.workdir.empty() && ::chdir(spec.workdir.c_str()) != 0)
    child_fail(channel, fail_errno("change to working directory", spec.workdir).value());
  // pivot_root left the step at its new /: back to runner's directory when
  // the step's root shows it (it may be under the step's private /tmp, or
  // absent from a --rootfs).
  if (spec.workdir.empty() && !spec.fallback_workdir.empty())
    (void)::chdir(spec.fallback_workdir.c_str());

  if (gated) {
    // Wait for runner's go; EOF (runner refused or died) ends the child
    // before CMD runs a single instruction.
    char go = 0;
    if (::send(channel, &kReady, 1, MSG_NOSIGNAL) != 1) ::_exit(125);
    ssize_t n;
    while ((n = ::read(channel, &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1 || go != kGo) ::_exit(125);
  }

  std::vector<char*> argv, envp;
  for (const auto& a : spec.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  run_step_init(argv.data(), envp.data(), channel, spec.sandbox);
}

}  // namespace

int exit_code_of_start_failure(const Error& e) {
  if (e.kind == "not_found") return 127;
  if (e.kind == "not_executable") return 126;
  return 125;
}

Result<StepProcess> StepProcess::start(const StepSpec& spec, int cgroup_fd,
                                       const std::function<Status()>& before_exec) {
  // One socket both ways: the child's reports (and its "ready" when gated),
  // runner's "go". A socket, not a pipe: send(MSG_NOSIGNAL) to a peer that
  // died meanwhile is EPIPE, never a SIGPIPE that would end the sender.
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return fail_errno("create socket pair for", "step start");
  UniqueFd channel(fds[0]), child_channel(fds[1]);

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
    channel.reset();
    run_child(spec, child_channel.release(), static_cast<bool>(before_exec));
  }
  child_channel.reset();
  StepProcess step(static_cast<pid_t>(pid), UniqueFd(pidfd));

  // Everything the child wrote: nothing when CMD exec'd, else "<errno> <message>".
  std::string report;
  if (before_exec) {
    char first = 0;
    ssize_t n;
    while ((n = ::read(channel.get(), &first, 1)) < 0 && errno == EINTR) {
    }
    if (n == 1 && first == kReady) {
      if (auto s = before_exec(); !s) {
        channel.reset();  // the child sees EOF and exits without exec'ing
        (void)step.wait();
        Error e = s.error();
        e.kind = "before_exec";
        return tl::unexpected(e);
      }
      if (::send(channel.get(), &kGo, 1, MSG_NOSIGNAL) != 1) {
        auto e = fail_errno("release step", spec.command[0]);
        channel.reset();
        (void)step.wait();
        return e;
      }
    } else if (n == 1) {
      report.push_back(first);  // a setup error's first byte
    }
  }

  // Blocks until the step's init closes the channel: once CMD exec'd
  // (nothing written), or after a setup or exec failure (its text).
  char buf[512];
  ssize_t n;
  while ((n = ::read(channel.get(), buf, sizeof(buf))) != 0) {
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
