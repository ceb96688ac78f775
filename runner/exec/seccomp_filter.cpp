#include "runner/exec/seccomp_filter.h"

#include <sched.h>
#include <seccomp.h>

#include <cerrno>
#include <memory>

namespace stepsnap::runner {
namespace {

// Denied to every step. Docker's default profile leaves these out of its
// allow-list unless a capability is added; each would let a step reach the
// kernel or the node beyond its sandbox.
constexpr const char* kAlwaysDenied[] = {
    // BPF and perf: programs and probes over the whole node, the agent's own
    // tracer included.
    "bpf",
    "perf_event_open",
    // Kernel modules and replacing the kernel.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "kexec_load",
    "kexec_file_load",
    // File handles: open_by_handle_at opens any inode of a filesystem the
    // step can see, past every bind mount (the 2014 Docker escape).
    "open_by_handle_at",
    "name_to_handle_at",
    // The kernel keyring is not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // Node-wide clocks, accounting, swap, quotas, reboot, the kernel log.
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "stime",
    "adjtimex",
    "acct",
    "swapon",
    "swapoff",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "syslog",
    "vhangup",
    "nfsservctl",
    // I/O ports, obsolete or unconfined calls.
    "ioperm",
    "iopl",
    "lookup_dcookie",
    "sysfs",
    "_sysctl",
    "uselib",
    "ustat",
    "vm86",
    "vm86old",
    // NUMA placement (Docker: only with SYS_NICE), and cross-process probes
    // that need SYS_PTRACE in Docker's profile.
    "get_mempolicy",
    "set_mempolicy",
    "mbind",
    "move_pages",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    // userfaultfd stalls kernel paths at will; io_uring runs I/O outside
    // the filter (Docker's default denies both since 2023).
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
};

// Denied unless --cap-add SYS_ADMIN, as in Docker's profile: remounting
// the clones or the read-only root, and new namespaces (a new user
// namespace gives a root-in-namespace whose mounts the step controls).
constexpr const char* kMountsAndNamespaces[] = {
    "mount",    "umount",  "umount2", "pivot_root", "unshare",   "setns",         "fsopen",
    "fsconfig", "fsmount", "fspick",  "move_mount", "open_tree", "mount_setattr",
};

// clone(2) flags that make namespaces.
constexpr unsigned long kNamespaceFlags[] = {CLONE_NEWNS,    CLONE_NEWUTS, CLONE_NEWIPC,
                                             CLONE_NEWUSER,  CLONE_NEWPID, CLONE_NEWNET,
                                             CLONE_NEWCGROUP};

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

Status deny(scmp_filter_ctx ctx, const char* name, int err) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return {};  // not a system call on this architecture
  int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(static_cast<unsigned>(err)), nr, 0);
  if (rc < 0) return fail("add seccomp rule for", name, -rc);
  return {};
}

}  // namespace

Status load_seccomp_filter(const SeccompPolicy& policy) {
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return fail("create seccomp filter for", "the step", ENOMEM);
  for (const char* name : kAlwaysDenied)
    if (auto s = deny(ctx.get(), name, EPERM); !s) return s;
  if (!policy.allow_mounts) {
    for (const char* name : kMountsAndNamespaces)
      if (auto s = deny(ctx.get(), name, EPERM); !s) return s;
    // clone3 passes its flags in memory, where a filter cannot look: ENOSYS
    // makes glibc fall back to clone, whose flags are checked below (what
    // Docker does).
    if (auto s = deny(ctx.get(), "clone3", ENOSYS); !s) return s;
    for (unsigned long flag : kNamespaceFlags) {
      int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
      if (rc < 0) return fail("add seccomp rule for", "clone with namespace flags", -rc);
    }
  }
  if (int rc = seccomp_load(ctx.get()); rc < 0)
    return fail("load seccomp filter for", "the step", -rc);
  return {};
}

}  // namespace stepsnap::runner
