// Table strings for the two targets we load: thin-pool and thin
// (Documentation/admin-guide/device-mapper/thin-provisioning.rst).
// Pure functions, unit-tested without a kernel.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"
#include "dm/dm_task.h"
#include "dm/thin_ids.h"

namespace stepsnap::dm {

constexpr std::uint64_t kSectorSize = 512;

struct PoolTable {
  std::string metadata_dev;  // path or "major:minor"
  std::string data_dev;
  std::uint64_t data_sectors = 0;  // length of the pool device
  // Allocation and copy-on-write unit. 64 KiB (LVM's default): small enough
  // that the first write after a snapshot copies little, large enough that
  // the metadata stays small. Must be a multiple of 128 sectors (64 KiB).
  std::uint32_t block_sectors = 128;
  // The kernel raises a dm event when free data blocks drop below this.
  std::uint64_t low_water_blocks = 0;
  // Zero a newly provisioned block before use, so a new volume never shows
  // bytes of a deleted one (off = "skip_block_zeroing").
  bool zero_new_blocks = true;
  // Pass discards down to the data device, so deleting data returns space to
  // a sparse backing file or thin-provisioned array.
  bool discard_passdown = true;
  // Fail writes with ENOSPC at once when data space runs out instead of
  // queueing them for no_space_timeout (60 s): a step gets an error, not a hang.
  bool error_if_no_space = true;
  bool read_only = false;
};

Target pool_target(const PoolTable& table);
// Reads back a live thin-pool table line (as DM_DEVICE_TABLE returns it).
Result<PoolTable> parse_pool_target(const Target& target);

// "thin <pool dev> <dev id>", `sectors` long.
Target thin_target(const std::string& pool_dev, ThinId id, std::uint64_t sectors);
// The id in a live thin table line, and the pool device it names ("major:minor").
struct ThinTable {
  std::string pool_dev;
  ThinId id = 0;
};
Result<ThinTable> parse_thin_target(const Target& target);

}  // namespace stepsnap::dm
