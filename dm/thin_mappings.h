// Which blocks of a thin device hold data, and where in the pool's data
// device, and the difference between two devices of one pool found from
// those mappings alone, never from their data. The send reads the mappings
// in process (metadata_mappings.h); thin_dump (Debian's
// thin-provisioning-tools) and its parser here are the reference the vm
// test checks that reader against.
//
// dm-thin shares a block between a snapshot and its origin by pointing both
// at the same data block; a write breaks the sharing by giving the writer a
// new data block. So a virtual block differs between two devices of one
// pool exactly when their mappings name different data blocks (or only one
// maps it): that is how thin_delta works too. While the metadata snapshot
// is held, every data block it maps stays allocated (its btrees hold
// references), so the data read from those blocks is what the devices held
// when the metadata snapshot was taken, even if a device is deleted meanwhile.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "dm/thin_ids.h"

namespace stepsnap::dm {

// `length` virtual blocks from `virt` map to data blocks from `data`.
struct BlockMapping {
  std::uint64_t virt = 0;
  std::uint64_t data = 0;
  std::uint64_t length = 0;
  bool operator==(const BlockMapping&) const = default;
};

struct BlockRange {
  std::uint64_t begin = 0;
  std::uint64_t length = 0;
  bool operator==(const BlockRange&) const = default;
};

// The mappings of device `id` in thin_dump's XML (range_mapping and
// single_mapping elements of its <device dev_id=...>), ascending by virtual
// block. ENODATA when the dump has no such device.
Result<std::vector<BlockMapping>> parse_thin_dump_mappings(std::string_view xml, ThinId id);

// What to send so that `base` becomes `target`: blocks to copy (with where
// the target's data lives) and blocks the target no longer maps (the
// receiver discards them). Without a base (full stream) every mapped block.
struct MappingDelta {
  std::vector<BlockMapping> changed;
  std::vector<BlockRange> unmapped;
};
MappingDelta mapping_delta(const std::vector<BlockMapping>& target,
                           const std::vector<BlockMapping>& base);

// Runs `thin_dump --metadata-snap --dev-id ID` on the pool's metadata device
// (a metadata snapshot must be held: ThinPool::hold_metadata_snapshot).
Result<std::vector<BlockMapping>> dump_thin_mappings(const std::string& metadata_device, ThinId id);

}  // namespace stepsnap::dm
