// The step's default seccomp filter: every system call allowed but those
// that would break stepsnap's contract or reach past the step (mounts,
// namespaces, BPF, perf, modules, keys, file handles, ...), which fail
// with EPERM. Docker's default profile is the reference: what it denies to
// a container without extra capabilities, this denies too (the list and
// why: docs/security.md).
#pragma once

#include "common/error.h"

namespace stepsnap::runner {

struct SeccompPolicy {
  // --cap-add SYS_ADMIN: the step may mount and make namespaces (as Docker
  // allows with that capability); the rest stays denied.
  bool allow_mounts = false;
};

// Loads the filter into the calling thread and its future children; needs
// PR_SET_NO_NEW_PRIVS set first (or CAP_SYS_ADMIN). The error names the
// system call the filter could not be built with.
Status load_seccomp_filter(const SeccompPolicy& policy);

}  // namespace stepsnap::runner
