// Which data block each virtual block of a thin device maps to, read in
// process from the pool's held metadata snapshot (thin_metadata.h), with no
// tool and no XML: what thin_dump --metadata-snap --dev-id prints, without
// the cost of a process and of printing and parsing every mapping.
//
// dm-thin keeps the mappings in a two-level btree (drivers/md/
// dm-thin-metadata.c): the superblock's data_mapping_root is keyed by thin
// id, each value the root of that device's own btree, keyed by virtual
// block, each value `data_block << 24 | time`. The cost is one 4 KiB read
// per node of the device's btree (about one per 250 mapped blocks), in
// this process.
#pragma once

#include <cstdint>
#include <vector>

#include "common/error.h"
#include "dm/thin_ids.h"
#include "dm/thin_mappings.h"
#include "dm/thin_metadata.h"

namespace stepsnap::dm {

// The root of device `id`'s mapping btree under the mapping tree rooted at
// `data_mapping_root`. ENODATA when the tree has no such device.
Result<std::uint64_t> device_mapping_root(const MetadataReader& read,
                                          std::uint64_t data_mapping_root, ThinId id);

// Every mapping of the device btree rooted at `root`, ascending by virtual
// block, adjacent blocks that map to adjacent data blocks merged. Keys out
// of order, a cycle or a tree deeper than the kernel builds are errors,
// never a wrong list.
Result<std::vector<BlockMapping>> device_mappings(const MetadataReader& read, std::uint64_t root);

// The mappings of thin device `id` under the metadata snapshot whose
// superblock copy is at `held_root` (ThinPool::hold_metadata_snapshot).
Result<std::vector<BlockMapping>> thin_mappings_in_snapshot(const MetadataReader& read,
                                                            std::uint64_t held_root, ThinId id);

}  // namespace stepsnap::dm
