#include "dm/metadata_mappings.h"

#include <cerrno>
#include <set>
#include <string>

namespace stepsnap::dm {
namespace {

// Deeper than any btree the kernel builds (2^24 devices, 2^64 blocks).
constexpr int kMaxDepth = 16;
// The low 24 bits of a mapping's value are the time it was written
// (dm-thin-metadata.c: pack_block_time).
constexpr int kTimeBits = 24;

std::string block_name(std::uint64_t blocknr) {
  return "metadata block " + std::to_string(blocknr);
}

Result<BtreeNode> read_node(const MetadataReader& read, std::uint64_t blocknr) {
  auto bytes = read(blocknr);
  if (!bytes) return tl::unexpected(bytes.error());
  return parse_btree_node(*bytes, blocknr);
}

Status walk_mappings(const MetadataReader& read, std::uint64_t blocknr, int depth,
                     std::set<std::uint64_t>& seen, std::vector<BlockMapping>& out) {
  if (depth > kMaxDepth) {
    return fail("walk mapping btree", block_name(blocknr), EIO, "deeper than any real btree");
  }
  if (!seen.insert(blocknr).second) {
    return fail("walk mapping btree", block_name(blocknr), EIO, "reached twice (a cycle)");
  }
  auto node = read_node(read, blocknr);
  if (!node) return tl::unexpected(node.error());
  if (!node->leaf) {
    for (std::uint64_t child : node->children) {
      if (auto r = walk_mappings(read, child, depth + 1, seen, out); !r) return r;
    }
    return {};
  }
  if (node->value_size != 8) {
    return fail(
        "walk mapping btree", block_name(blocknr), EIO,
        "leaf values are " + std::to_string(node->value_size) + " bytes, not a mapping's 8");
  }
  for (std::size_t i = 0; i < node->keys.size(); ++i) {
    const std::uint64_t virt = node->keys[i];
    const std::uint64_t data = node->values[i] >> kTimeBits;
    if (!out.empty()) {
      BlockMapping& last = out.back();
      if (virt < last.virt + last.length) {
        return fail("walk mapping btree", block_name(blocknr), EIO,
                    "block " + std::to_string(virt) + " is out of order");
      }
      if (virt == last.virt + last.length && data == last.data + last.length) {
        ++last.length;
        continue;
      }
    }
    out.push_back({virt, data, 1});
  }
  return {};
}

}  // namespace

Result<std::uint64_t> device_mapping_root(const MetadataReader& read,
                                          std::uint64_t data_mapping_root, ThinId id) {
  const std::string op = "find thin id " + std::to_string(id) + " in the mapping btree";
  std::uint64_t at = data_mapping_root;
  for (int depth = 0; depth <= kMaxDepth; ++depth) {
    auto node = read_node(read, at);
    if (!node) return tl::unexpected(node.error().context(op));
    for (std::size_t i = 1; i < node->keys.size(); ++i) {
      if (node->keys[i] <= node->keys[i - 1]) {
        return fail(op, block_name(at), EIO, "keys out of order");
      }
    }
    if (node->leaf) {
      if (node->value_size != 8) {
        return fail(op, block_name(at), EIO, "leaf values are not subtree roots");
      }
      for (std::size_t i = 0; i < node->keys.size(); ++i) {
        if (node->keys[i] == id) return node->values[i];
      }
      return fail(op, "", ENODATA, "the pool's metadata has no such device");
    }
    // dm-btree's lookup: the child whose first key is the greatest one not
    // above the key searched (lower_bound in dm-btree.c).
    std::size_t child = node->keys.size();
    for (std::size_t i = 0; i < node->keys.size() && node->keys[i] <= id; ++i) child = i;
    if (child == node->keys.size()) {
      return fail(op, "", ENODATA, "the pool's metadata has no such device");
    }
    at = node->children[child];
  }
  return fail(op, block_name(at), EIO, "deeper than any real btree");
}

Result<std::vector<BlockMapping>> device_mappings(const MetadataReader& read, std::uint64_t root) {
  std::vector<BlockMapping> out;
  std::set<std::uint64_t> seen;
  if (auto r = walk_mappings(read, root, 0, seen, out); !r) return tl::unexpected(r.error());
  return out;
}

Result<std::vector<BlockMapping>> thin_mappings_in_snapshot(const MetadataReader& read,
                                                            std::uint64_t held_root, ThinId id) {
  const std::string op = "read the mappings of thin id " + std::to_string(id);
  if (held_root == 0) return fail(op, "", EINVAL, "no metadata snapshot is held");
  auto bytes = read(held_root);
  if (!bytes) return tl::unexpected(bytes.error().context(op));
  auto sb = parse_thin_superblock(*bytes, held_root);
  if (!sb) return tl::unexpected(sb.error().context(op));
  auto root = device_mapping_root(read, sb->data_mapping_root, id);
  if (!root) return tl::unexpected(root.error());
  auto mappings = device_mappings(read, *root);
  if (!mappings) return tl::unexpected(mappings.error().context(op));
  return mappings;
}

}  // namespace stepsnap::dm
