// Thin metadata blocks laid out as the kernel writes them, for the pure
// tests of dm/thin_metadata.h and dm/metadata_mappings.h (the vm tests read
// a real pool's).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "dm/thin_metadata.h"

namespace stepsnap::dm::test {

using Block = std::vector<std::uint8_t>;

inline void put32(Block& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline void put64(Block& b, std::size_t at, std::uint64_t v) {
  put32(b, at, static_cast<std::uint32_t>(v));
  put32(b, at + 4, static_cast<std::uint32_t>(v >> 32));
}
inline void seal(Block& b, std::uint32_t xor_seed) {
  put32(b, 0, metadata_checksum(std::span(b).subspan(4), xor_seed));
}

inline Block superblock(std::uint64_t at, std::uint64_t details_root,
                        std::uint64_t mapping_root = 0) {
  Block b(kMetadataBlockBytes, 0);
  put64(b, 8, at);
  put64(b, 32, kThinSuperblockMagic);
  put64(b, 48, 77);  // transaction id
  put64(b, 320, mapping_root);
  put64(b, 328, details_root);
  put32(b, 336, 128);
  seal(b, kSuperblockCsumXor);
  return b;
}

// A node as dm-btree writes it: header, max_entries keys, then max_entries
// values of value_size bytes. Internal nodes' values are child blocks.
inline Block node(std::uint64_t at, bool leaf, const std::vector<std::uint64_t>& keys,
                  const std::vector<std::uint64_t>& values = {}, std::uint32_t value_size = 0) {
  Block b(kMetadataBlockBytes, 0);
  if (value_size == 0) value_size = leaf ? 24 : 8;  // struct disk_device_details / block
  const std::uint32_t max = (kMetadataBlockBytes - 32) / (8 + value_size);
  put32(b, 4, leaf ? 2 : 1);
  put64(b, 8, at);
  put32(b, 16, static_cast<std::uint32_t>(keys.size()));
  put32(b, 20, max);
  put32(b, 24, value_size);
  for (std::size_t i = 0; i < keys.size(); ++i) put64(b, 32 + 8 * i, keys[i]);
  for (std::size_t i = 0; i < values.size(); ++i) {
    put64(b, 32 + 8 * std::size_t{max} + value_size * i, values[i]);
  }
  seal(b, kBtreeCsumXor);
  return b;
}

inline MetadataReader reader(std::map<std::uint64_t, Block>& blocks) {
  return [&blocks](std::uint64_t at) -> Result<Block> {
    auto it = blocks.find(at);
    if (it == blocks.end()) return fail("read", std::to_string(at), EIO);
    return it->second;
  };
}

}  // namespace stepsnap::dm::test
