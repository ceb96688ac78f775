// What CMD's process becomes just before its exec: who it runs as, its
// capabilities, no_new_privs and the seccomp filter. The step's init keeps
// runner's credentials (it only reaps and forwards signals, and never
// execs); CMD and everything it starts gets these.
#pragma once

#include <sys/types.h>

#include "common/error.h"
#include "runner/exec/capabilities.h"
#include "runner/exec/seccomp_filter.h"

namespace stepsnap::runner {

struct ProcessSandbox {
  uid_t uid = 0;
  gid_t gid = 0;
  // Root keeps these (effective, permitted, inheritable and bounding sets);
  // any other uid has none effective, and at most these in its bounding set.
  CapMask capabilities = 0;
  SeccompPolicy seccomp;
};

// Applies the sandbox to the calling process, in this order: no_new_privs;
// the bounding set; supplementary groups, gid, uid; the capability sets;
// the seccomp filter. Run in CMD's child between fork and exec.
Status enter_process_sandbox(const ProcessSandbox& sandbox);

}  // namespace stepsnap::runner
