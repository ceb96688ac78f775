// Reading which thin ids a live pool has, in process.
//
// The thin-pool target has no message that lists its devices. What it has is
// a metadata snapshot: `reserve_metadata_snap` copies the superblock, pins the
// btrees it points at (later changes shadow them instead of writing in place)
// and commits, so the copy and everything under it stay unchanged on the
// metadata device until `release_metadata_snap`. thin_ls/thin_dump
// --metadata-snap read that copy; so do we, without shelling out: the copy's
// device-details btree is keyed by thin id (drivers/md/dm-thin-metadata.c,
// persistent-data/dm-btree-internal.h).
//
// The parsers are pure (unit-tested on synthetic blocks); the walk takes a
// block reader so it runs on a file, a device, or a test's map.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/error.h"
#include "dm/thin_ids.h"

namespace stepsnap::dm {

inline constexpr std::size_t kMetadataBlockBytes = 4096;
inline constexpr std::uint64_t kThinSuperblockMagic = 27022010;
// Checksum seeds of the kernel's validators (the value stored is
// crc32c(~0, bytes after the csum field) ^ seed).
inline constexpr std::uint32_t kSuperblockCsumXor = 160774;
inline constexpr std::uint32_t kBtreeCsumXor = 121107;

// The kernel's dm_bm_checksum: crc32c with seed ~0 and no final inversion,
// xor'ed with `xor_seed`.
std::uint32_t metadata_checksum(std::span<const std::uint8_t> bytes, std::uint32_t xor_seed);

struct ThinSuperblock {
  std::uint64_t blocknr = 0;
  std::uint64_t transaction_id = 0;
  std::uint64_t held_root = 0;  // 0: no metadata snapshot held
  std::uint64_t data_mapping_root = 0;
  std::uint64_t device_details_root = 0;
  std::uint32_t data_block_sectors = 0;
};

// `block` is a superblock (the real one at block 0, or a metadata snapshot's
// copy at `blocknr`): magic, location and checksum are verified.
Result<ThinSuperblock> parse_thin_superblock(std::span<const std::uint8_t> block,
                                             std::uint64_t blocknr);

struct BtreeNode {
  bool leaf = false;
  std::uint32_t value_size = 0;
  std::vector<std::uint64_t> keys;
  // Internal nodes: the child block of each key. Leaves: empty.
  std::vector<std::uint64_t> children;
  // Leaves whose values are 8 bytes (the data mapping trees: a device's
  // subtree root, or a mapped block's data block and time): the value of
  // each key. Empty otherwise (device details are not needed).
  std::vector<std::uint64_t> values;
};

Result<BtreeNode> parse_btree_node(std::span<const std::uint8_t> block, std::uint64_t blocknr);

using MetadataReader = std::function<Result<std::vector<std::uint8_t>>(std::uint64_t blocknr)>;

// Every key of the btree rooted at `root`, ascending. Refuses cycles and
// trees deeper than the kernel ever builds, so a damaged device cannot make
// it loop.
Result<std::vector<std::uint64_t>> btree_keys(const MetadataReader& read, std::uint64_t root);

// The thin ids recorded under the metadata snapshot whose superblock copy is
// at `held_root`.
Result<std::vector<ThinId>> thin_ids_in_snapshot(const MetadataReader& read,
                                                 std::uint64_t held_root);

// A reader over a metadata device (O_DIRECT: the page cache must not serve a
// block older than what the kernel wrote).
Result<MetadataReader> open_metadata_device(const std::string& path);

}  // namespace stepsnap::dm
