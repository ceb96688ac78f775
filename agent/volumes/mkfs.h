// Making a filesystem on a new volume (volume.create with "filesystem"), so
// a user gets a mountable volume in one call. Runs Debian's mkfs tools
// (e2fsprogs, xfsprogs) rather than writing filesystems ourselves.
#pragma once

#include <string>

#include "common/error.h"

namespace stepsnap::agent {

// fs is "ext4" or "xfs". The tool's own last stderr line comes back in the
// error, e.g. "mkfs.xfs /dev/mapper/p-vol-x: exit status 1 (agsize too small)".
Status make_filesystem(const std::string& device, const std::string& fs);

}  // namespace stepsnap::agent
