// What keeps a block device open, in words for an error message: devices
// stacked on it (/sys/dev/block/M:m/holders), filesystems mounted from it
// (/proc/self/mountinfo) and the kernel's open count.
#pragma once

#include <cstdint>
#include <string>

namespace stepsnap::dm {

// "held by dm-7 (stepsnap-clone1); mounted at /mnt/ws; open count 2", or
// "open count 1 (holder unknown)" when nothing more can be found.
std::string describe_holders(std::uint32_t major, std::uint32_t minor, std::int32_t open_count);

}  // namespace stepsnap::dm
