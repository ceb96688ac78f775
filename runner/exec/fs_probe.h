// Which filesystem a clone's block device holds, read from its superblock,
// so runner can mount it without libblkid or trying every type in turn.
#pragma once

#include <string>

#include "common/error.h"

namespace stepsnap::runner {

// "ext4" (also for ext2/ext3: the ext4 driver mounts them), "xfs" or
// "btrfs"; an ENOMEDIUM error naming the device when none is found.
Result<std::string> probe_filesystem(const std::string& device);

}  // namespace stepsnap::runner
