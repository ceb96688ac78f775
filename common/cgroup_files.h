// Reading and acting on a cgroup v2 directory's control files, by path: one
// definition for the runner (which owns step cgroups), the agent (which
// kills a step whose pre-snapshot failed) and the BPF tracer (whose safety
// net reads cgroup.events).
#pragma once

#include <string>

#include "common/error.h"

namespace stepsnap {

// Writes `text` to a cgroup control file (cgroup.procs, memory.max, ...) in
// one write(2), as the kernel wants it.
Status write_control_file(const std::string& path, const std::string& text);

// Where the cgroup v2 hierarchy is mounted: "/sys/fs/cgroup" on a pure v2
// system, "/sys/fs/cgroup/unified" on a hybrid one. Read from mountinfo.
Result<std::string> cgroup2_mount_point();

// "populated 1" in <dir>/cgroup.events: some process of the cgroup or of a
// descendant is alive.
Result<bool> cgroup_populated(const std::string& dir);

// SIGKILL to every process in <dir> and its descendants: cgroup.kill, or on
// kernels before 5.14 (no cgroup.kill) a walk of every cgroup.procs with the
// cgroup frozen, so nothing forks between the read and the kill.
Status kill_cgroup(const std::string& dir);

}  // namespace stepsnap
