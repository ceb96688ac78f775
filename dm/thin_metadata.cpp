#include "dm/thin_metadata.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>

#include "common/crc32c.h"
#include "common/unique_fd.h"

namespace stepsnap::dm {
namespace {

// Offsets of struct thin_disk_superblock (dm-thin-metadata.c) and struct
// node_header (dm-btree-internal.h); everything on disk is little-endian.
constexpr std::size_t kSbFlagsOffset = 4;  // the checksum covers flags onwards
constexpr std::size_t kSbBlocknr = 8;
constexpr std::size_t kSbMagic = 32;
constexpr std::size_t kSbTransactionId = 48;
constexpr std::size_t kSbHeldRoot = 56;
constexpr std::size_t kSbDataMappingRoot = 320;
constexpr std::size_t kSbDeviceDetailsRoot = 328;
constexpr std::size_t kSbDataBlockSize = 336;

constexpr std::size_t kNodeFlags = 4;
constexpr std::size_t kNodeBlocknr = 8;
constexpr std::size_t kNodeNrEntries = 16;
constexpr std::size_t kNodeMaxEntries = 20;
constexpr std::size_t kNodeValueSize = 24;
constexpr std::size_t kNodeHeaderBytes = 32;
constexpr std::uint32_t kInternalNode = 1;
constexpr std::uint32_t kLeafNode = 2;
// The kernel's btrees over 2^24 devices are a few levels deep; anything
// deeper is damage.
constexpr int kMaxDepth = 16;

std::uint32_t le32(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint32_t>(b[at]) | static_cast<std::uint32_t>(b[at + 1]) << 8 |
         static_cast<std::uint32_t>(b[at + 2]) << 16 | static_cast<std::uint32_t>(b[at + 3]) << 24;
}

std::uint64_t le64(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint64_t>(le32(b, at)) | static_cast<std::uint64_t>(le32(b, at + 4))
                                                       << 32;
}

std::string block_name(std::uint64_t blocknr) {
  return "metadata block " + std::to_string(blocknr);
}

}  // namespace

std::uint32_t metadata_checksum(std::span<const std::uint8_t> bytes, std::uint32_t xor_seed) {
  // The kernel's dm_bm_checksum: crc32c from ~0 without the final
  // inversion, then the block type's xor.
  return ~crc32c(bytes) ^ xor_seed;
}

Result<ThinSuperblock> parse_thin_superblock(std::span<const std::uint8_t> block,
                                             std::uint64_t blocknr) {
  if (block.size() != kMetadataBlockBytes) {
    return fail("read thin superblock", block_name(blocknr), EINVAL, "short block");
  }
  if (le64(block, kSbMagic) != kThinSuperblockMagic) {
    return fail("read thin superblock", block_name(blocknr), EINVAL,
                "no thin-pool superblock magic (not thin metadata, or not a metadata snapshot)");
  }
  if (metadata_checksum(block.subspan(kSbFlagsOffset), kSuperblockCsumXor) != le32(block, 0)) {
    return fail("read thin superblock", block_name(blocknr), EIO, "checksum mismatch");
  }
  ThinSuperblock sb;
  sb.blocknr = le64(block, kSbBlocknr);
  if (sb.blocknr != blocknr) {
    return fail("read thin superblock", block_name(blocknr), EIO,
                "says it lives at block " + std::to_string(sb.blocknr));
  }
  sb.transaction_id = le64(block, kSbTransactionId);
  sb.held_root = le64(block, kSbHeldRoot);
  sb.data_mapping_root = le64(block, kSbDataMappingRoot);
  sb.device_details_root = le64(block, kSbDeviceDetailsRoot);
  sb.data_block_sectors = le32(block, kSbDataBlockSize);
  return sb;
}

Result<BtreeNode> parse_btree_node(std::span<const std::uint8_t> block, std::uint64_t blocknr) {
  const std::string what = block_name(blocknr);
  if (block.size() != kMetadataBlockBytes)
    return fail("read btree node", what, EINVAL, "short block");
  if (metadata_checksum(block.subspan(kNodeFlags), kBtreeCsumXor) != le32(block, 0)) {
    return fail("read btree node", what, EIO, "checksum mismatch");
  }
  if (le64(block, kNodeBlocknr) != blocknr) {
    return fail("read btree node", what, EIO,
                "says it lives at block " + std::to_string(le64(block, kNodeBlocknr)));
  }
  std::uint32_t flags = le32(block, kNodeFlags);
  std::uint32_t nr = le32(block, kNodeNrEntries);
  std::uint32_t max = le32(block, kNodeMaxEntries);
  BtreeNode node;
  node.value_size = le32(block, kNodeValueSize);
  node.leaf = (flags & kLeafNode) != 0;
  if (node.leaf == ((flags & kInternalNode) != 0)) {
    return fail("read btree node", what, EIO, "neither a leaf nor an internal node");
  }
  if (nr > max || max == 0 ||
      kNodeHeaderBytes + std::uint64_t{max} * (8 + node.value_size) > kMetadataBlockBytes) {
    return fail("read btree node", what, EIO, "entry counts do not fit in a block");
  }
  if (!node.leaf && node.value_size != 8) {
    return fail("read btree node", what, EIO, "internal node values are not block numbers");
  }
  node.keys.reserve(nr);
  for (std::uint32_t i = 0; i < nr; ++i) node.keys.push_back(le64(block, kNodeHeaderBytes + 8 * i));
  const std::size_t values = kNodeHeaderBytes + 8 * std::size_t{max};
  if (!node.leaf) {
    for (std::uint32_t i = 0; i < nr; ++i) node.children.push_back(le64(block, values + 8 * i));
  } else if (node.value_size == 8) {
    node.values.reserve(nr);
    for (std::uint32_t i = 0; i < nr; ++i) node.values.push_back(le64(block, values + 8 * i));
  }
  return node;
}

namespace {

Status walk(const MetadataReader& read, std::uint64_t blocknr, int depth,
            std::set<std::uint64_t>& seen, std::vector<std::uint64_t>& out) {
  if (depth > kMaxDepth) {
    return fail("walk btree", block_name(blocknr), EIO, "deeper than any real btree");
  }
  if (!seen.insert(blocknr).second) {
    return fail("walk btree", block_name(blocknr), EIO, "reached twice (a cycle)");
  }
  auto bytes = read(blocknr);
  if (!bytes) return tl::unexpected(bytes.error());
  auto node = parse_btree_node(*bytes, blocknr);
  if (!node) return tl::unexpected(node.error());
  if (node->leaf) {
    out.insert(out.end(), node->keys.begin(), node->keys.end());
    return {};
  }
  for (std::uint64_t child : node->children) {
    if (auto r = walk(read, child, depth + 1, seen, out); !r) return r;
  }
  return {};
}

}  // namespace

Result<std::vector<std::uint64_t>> btree_keys(const MetadataReader& read, std::uint64_t root) {
  std::vector<std::uint64_t> keys;
  std::set<std::uint64_t> seen;
  if (auto r = walk(read, root, 0, seen, keys); !r) return tl::unexpected(r.error());
  return keys;
}

Result<std::vector<ThinId>> thin_ids_in_snapshot(const MetadataReader& read,
                                                 std::uint64_t held_root) {
  if (held_root == 0) return fail("list thin ids", "", EINVAL, "no metadata snapshot is held");
  auto bytes = read(held_root);
  if (!bytes) return tl::unexpected(bytes.error());
  auto sb = parse_thin_superblock(*bytes, held_root);
  if (!sb) return tl::unexpected(sb.error());
  auto keys = btree_keys(read, sb->device_details_root);
  if (!keys) return tl::unexpected(keys.error().context("device details"));
  std::vector<ThinId> ids;
  for (std::uint64_t k : *keys) {
    if (k > kMaxThinId) {
      return fail("list thin ids", "", EIO, "device key " + std::to_string(k) + " is over 24 bits");
    }
    ids.push_back(static_cast<ThinId>(k));
  }
  return ids;
}

Result<MetadataReader> open_metadata_device(const std::string& path) {
  auto fd = std::make_shared<UniqueFd>(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  if (!*fd) return fail_errno("open metadata device", path);
  return MetadataReader([fd, path](std::uint64_t blocknr) -> Result<std::vector<std::uint8_t>> {
    // O_DIRECT wants an aligned buffer.
    void* raw = nullptr;
    if (::posix_memalign(&raw, kMetadataBlockBytes, kMetadataBlockBytes) != 0) {
      return fail("read metadata", path, ENOMEM);
    }
    std::unique_ptr<void, decltype(&std::free)> buf(raw, &std::free);
    ssize_t n = ::pread(fd->get(), raw, kMetadataBlockBytes,
                        static_cast<off_t>(blocknr * kMetadataBlockBytes));
    if (n < 0) return fail_errno("read metadata " + block_name(blocknr), path);
    if (static_cast<std::size_t>(n) != kMetadataBlockBytes) {
      return fail("read metadata " + block_name(blocknr), path, EIO, "past the device's end");
    }
    auto* p = static_cast<const std::uint8_t*>(raw);
    return std::vector<std::uint8_t>(p, p + kMetadataBlockBytes);
  });
}

}  // namespace stepsnap::dm
