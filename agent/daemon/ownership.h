// What the daemon may change because it made it, and what it must leave
// alone because it did not (docs/security.md, "Never destroy what it does
// not own").
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace stepsnap::agent {

// Makes `dir` and any missing parents, and gives mode `mode` to the ones it
// made, only: an existing directory keeps its mode (--socket /tmp/x.sock
// must not turn /tmp into 0755). Returns the directories it made, parents
// first.
Result<std::vector<std::string>> make_owned_dirs(const std::string& dir, mode_t mode);

// The transaction id in the thin-pool superblock at the start of `device`
// (the kernel's magic 27022010 at byte 32), or nullopt when there is none:
// formatting a device that has one destroys every thin device of that pool.
Result<std::optional<std::uint64_t>> thin_pool_superblock(const std::string& device);

}  // namespace stepsnap::agent
