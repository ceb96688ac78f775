// The node service's kernel side: mount, bind, unmount, and what is mounted
// where (from /proc/self/mountinfo). The mounts are the product (they stay
// after the call, for the pod), so nothing here unmounts on scope exit.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "common/error.h"
#include "csi/parameters.h"
#include "csi/paths.h"

namespace stepsnap::csi {

// The topmost mount at `path` (absolute, as the table shows it), or nullopt.
Result<std::optional<MountEntry>> mount_at(const std::string& path);

// The device number of a block device node (st_rdev).
Result<dev_t> block_device_number(const std::string& device);

// mount(2) of a filesystem on a block device.
Status mount_filesystem(const std::string& device, const std::string& target, const std::string& fs,
                        const MountOptions& options);

// A bind mount of `source` (a directory or a device node) at `target`,
// then, when read_only, a remount of that bind read-only: the kernel ignores
// MS_RDONLY on the first bind call.
Status bind_mount(const std::string& source, const std::string& target, bool read_only);

// umount2(target); a path that is not a mount point is success.
Status unmount(const std::string& target);

}  // namespace stepsnap::csi
