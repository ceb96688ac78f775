// The kernel side of the step's filesystem sandbox: the operations of the
// mount plan (mount_plan.h) that build the step's root and move it there.
// Each takes paths as the runner's child sees them before pivot_root.
#pragma once

#include <string>

#include "common/error.h"

namespace stepsnap::runner {

// Where the step's root is assembled before pivot_root: a directory on a
// tmpfs mounted over /tmp in the child's mount namespace only.
inline constexpr const char* kStagingTmp = "/tmp";
inline constexpr const char* kStage = "/tmp/.stepsnap-root";

// Mounts the staging tmpfs and binds `source` (the host's / or --rootfs),
// with everything mounted below it, at kStage.
Status stage_root(const std::string& source);

// mount_setattr(AT_RECURSIVE): `path` and every mount below it read-only,
// nosuid, nodev. Mounts made on top afterwards (volumes, /tmp) are not.
Status make_tree_read_only(const std::string& path);

// A bind of `path` onto itself, made read-only (nosuid, nodev, noexec kept
// from the source where it had them). Missing paths are skipped.
Status bind_read_only(const std::string& path);

// Hides `path`: /dev/null over a file, an empty read-only tmpfs over a
// directory. Missing paths are skipped.
Status mask_path(const std::string& path);

// A fresh tmpfs at `path` (nosuid, nodev), mode `mode`; read-only when asked.
Status mount_tmpfs(const std::string& path, unsigned mode, bool read_only);

// A minimal /dev at `path`: tmpfs with the host's null, zero, full, random,
// urandom and tty bound in, a new devpts instance, shm, the usual symlinks;
// then made read-only (shm and pts stay writable).
Status mount_minimal_dev(const std::string& path);

// The host's /dev, with every device of the node, at `path`.
Status mount_host_dev(const std::string& path);

// pivot_root into `new_root` and drop the old root from the namespace.
Status pivot_into(const std::string& new_root);

}  // namespace stepsnap::runner
