// A step's filesystem setup as data: the list of operations the child runs,
// in order, inside its new mount namespace (bubblewrap's idea). Building the
// plan touches no kernel state, so it is unit-tested without one; running it
// is one small interpreter (run_mount_plan).
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "runner/exec/options.h"

namespace stepsnap::runner {

struct MountOp {
  enum class Kind {
    make_private,  // MS_REC|MS_PRIVATE on /: nothing propagates back to the host
    bind,          // source -> target (MS_BIND|MS_REC); a missing target is created
    mount_device,  // the filesystem `fstype` on block device source at target
    remount_ro,    // target becomes read-only
    proc,          // a fresh procfs at target, for the new pid namespace, in place of
                   // the host's (detached: unmounting it shows no host process)
    cgroup,        // a read-only cgroup2 at target in place of the host's cgroup
                   // tree (detached): the step sees its own cgroup, writes none
    mkdir,         // target and its parents, mode 0755
    // The sandbox (sandbox_mounts.h). Until `pivot`, every target below is
    // the step's path under the staged root.
    new_root,        // stage source (the host's / or --rootfs) as the step's root
    mount_point,     // a volume's mount point made before the root turns read-only
    read_only_root,  // the staged root and every mount under it read-only, nosuid, nodev
    read_only,       // target bound onto itself read-only (containerd's readonlyPaths)
    mask,            // /dev/null or an empty read-only tmpfs over target (maskedPaths)
    tmpfs,           // a fresh writable tmpfs (mode 1777 for /tmp, 0755 otherwise)
    hide,            // an empty read-only tmpfs over a directory the step must not reach
    dev,             // a minimal /dev (source "minimal") or the host's (source "host")
    pivot,           // pivot_root into the staged root; targets are the step's from here
  };
  Kind kind;
  std::string source;
  std::string target;
  std::string fstype = {};  // mount_device only

  bool operator==(const MountOp&) const = default;
};

// The ordered operations for the step's root (the host's / or --rootfs,
// read-only), its /proc, /dev, /tmp, /run and read-only /sys/fs/cgroup, the
// agent's hidden directories, options' volumes (host directories, as with
// --no-agent, or the device paths of mounted clones) and host_dirs,
// pivot_root, and the
// marshal folder. Fails on a relative target, one over /, /proc or the
// cgroup tree, or a marshal folder that escapes the workspace.
Result<std::vector<MountOp>> build_mount_plan(const ExecOptions& options);

// Runs the plan; the first failing operation stops it, named in the error.
// Bind sources are opened (open_tree) before the first operation: the
// staging tmpfs over /tmp would hide a host directory under /tmp.
Status run_mount_plan(const std::vector<MountOp>& plan);

std::string describe(const MountOp& op);

}  // namespace stepsnap::runner
