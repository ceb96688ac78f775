#include "runner/exec/sandbox_process.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace stepsnap::runner {

Status enter_process_sandbox(const ProcessSandbox& sb) {
  // No exec of a setuid program or one with file capabilities can give
  // back what is dropped below; it also lets an unprivileged process load
  // the seccomp filter.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return fail_errno("set no_new_privs for", "the step");
  // The bounding set first, while CAP_SETPCAP is still held. EINVAL ends
  // the walk: the kernel knows no capability with that number.
  for (int cap = 0; cap < 64; ++cap) {
    if (sb.capabilities & (CapMask{1} << cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno == EINVAL) break;
      return fail_errno("drop capability " + std::to_string(cap) + " from the bounding set of",
                        "the step");
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return fail_errno("clear the ambient capabilities of", "the step");
  // Groups before the uid: changing them needs CAP_SETGID, gone with uid 0.
  gid_t groups[] = {sb.gid};
  if (::setgroups(1, groups) != 0)
    return fail_errno("set groups of the step to", std::to_string(sb.gid));
  if (::setresgid(sb.gid, sb.gid, sb.gid) != 0)
    return fail_errno("set the step's gid to", std::to_string(sb.gid));
  // Leaving uid 0 clears the permitted and effective sets (no
  // SECBIT_KEEP_CAPS), so a --user step holds no capability at all.
  if (::setresuid(sb.uid, sb.uid, sb.uid) != 0)
    return fail_errno("set the step's uid to", std::to_string(sb.uid));
  if (sb.uid == 0) {
    // Root across exec gets permitted = inheritable | bounding: both are
    // the mask, so CapEff after the exec is exactly the mask.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    for (int i = 0; i < 2; ++i) {
      auto half = static_cast<__u32>(sb.capabilities >> (32 * i));
      data[i].effective = data[i].permitted = data[i].inheritable = half;
    }
    if (::syscall(SYS_capset, &header, data) != 0)
      return fail_errno("set the capabilities of", "the step");
  }
  return load_seccomp_filter(sb.seccomp);
}

}  // namespace stepsnap::runner
