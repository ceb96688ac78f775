// Reading a thin device's mappings from the metadata in process
// (dm/metadata_mappings.h), on synthetic blocks laid out as the kernel
// writes them; the vm test checks the same reader against thin_dump on a
// real pool.
#include "dm/metadata_mappings.h"

#include <gtest/gtest.h>

#include <map>

#include "metadata_blocks.h"

namespace stepsnap::dm {
namespace {

using test::Block;
using test::node;
using test::reader;
using test::superblock;

// A mapping's value: the data block in the high 40 bits, the time it was
// written in the low 24.
std::uint64_t mapped(std::uint64_t data, std::uint64_t time = 1) { return data << 24 | time; }

Block leaf(std::uint64_t at, const std::vector<std::uint64_t>& keys,
           const std::vector<std::uint64_t>& values) {
  return node(at, true, keys, values, 8);
}

// A pool with devices 1 (the base) and 4 (its snapshot, one block
// rewritten): the top tree is an internal node over two leaves; each
// device's tree an internal node over two leaves, the first shared.
std::map<std::uint64_t, Block> two_devices() {
  std::map<std::uint64_t, Block> b;
  b[9] = superblock(9, 0, 30);
  b[30] = node(30, false, {1, 4}, {31, 32});
  b[31] = leaf(31, {1}, {40});
  b[32] = leaf(32, {4, 7}, {50, 60});
  // Device 1: blocks 0-2 at data 100-102, block 5 at 200, 6-7 at 300-301.
  b[40] = node(40, false, {0, 5}, {41, 42});
  b[41] = leaf(41, {0, 1, 2}, {mapped(100), mapped(101, 7), mapped(102)});
  b[42] = leaf(42, {5, 6, 7}, {mapped(200), mapped(300), mapped(301)});
  // Device 4 shares leaf 41; block 6 now at data 500, block 9 new at 501.
  b[50] = node(50, false, {0, 5}, {41, 52});
  b[52] = leaf(52, {5, 6, 7, 9}, {mapped(200), mapped(500, 2), mapped(301), mapped(501, 2)});
  // Device 7 maps nothing.
  b[60] = leaf(60, {}, {});
  return b;
}

TEST(MetadataMappings, ReadsADevicesMappingsMergedIntoRanges) {
  auto blocks = two_devices();
  auto base = thin_mappings_in_snapshot(reader(blocks), 9, 1);
  ASSERT_TRUE(base) << base.error().message();
  EXPECT_EQ(*base, (std::vector<BlockMapping>{{0, 100, 3}, {5, 200, 1}, {6, 300, 2}}));
  auto snap = thin_mappings_in_snapshot(reader(blocks), 9, 4);
  ASSERT_TRUE(snap) << snap.error().message();
  EXPECT_EQ(*snap, (std::vector<BlockMapping>{
                       {0, 100, 3}, {5, 200, 1}, {6, 500, 1}, {7, 301, 1}, {9, 501, 1}}));
  auto empty = thin_mappings_in_snapshot(reader(blocks), 9, 7);
  ASSERT_TRUE(empty) << empty.error().message();
  EXPECT_TRUE(empty->empty());
}

TEST(MetadataMappings, TheDeltaIsTheRewrittenAndNewBlocksOnly) {
  auto blocks = two_devices();
  auto base = thin_mappings_in_snapshot(reader(blocks), 9, 1);
  auto snap = thin_mappings_in_snapshot(reader(blocks), 9, 4);
  ASSERT_TRUE(base && snap);
  auto delta = mapping_delta(*snap, *base);
  EXPECT_EQ(delta.changed, (std::vector<BlockMapping>{{6, 500, 1}, {9, 501, 1}}));
  EXPECT_TRUE(delta.unmapped.empty());
  // The other way round, block 9 is one the target does not map.
  auto back = mapping_delta(*base, *snap);
  EXPECT_EQ(back.changed, (std::vector<BlockMapping>{{6, 300, 1}}));
  EXPECT_EQ(back.unmapped, (std::vector<BlockRange>{{9, 1}}));
}

TEST(MetadataMappings, AnIdNotInTheTreeIsENODATA) {
  auto blocks = two_devices();
  for (ThinId id : {0u, 2u, 5u, 8u, 16777215u}) {
    auto r = thin_mappings_in_snapshot(reader(blocks), 9, id);
    ASSERT_FALSE(r) << id;
    EXPECT_EQ(r.error().err, ENODATA) << r.error().message();
  }
  auto none = thin_mappings_in_snapshot(reader(blocks), 0, 1);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().err, EINVAL) << "no metadata snapshot held";
}

TEST(MetadataMappings, DamageIsAnErrorNeverAWrongList) {
  auto blocks = two_devices();
  // Leaves swapped: block 5 would come before block 0.
  blocks[40] = node(40, false, {0, 5}, {42, 41});
  auto order = thin_mappings_in_snapshot(reader(blocks), 9, 1);
  ASSERT_FALSE(order);
  EXPECT_NE(order.error().message().find("out of order"), std::string::npos)
      << order.error().message();

  blocks = two_devices();
  blocks[40] = node(40, false, {0, 5}, {41, 40});  // points at itself
  auto cycle = thin_mappings_in_snapshot(reader(blocks), 9, 1);
  ASSERT_FALSE(cycle);
  EXPECT_NE(cycle.error().message().find("cycle"), std::string::npos);

  blocks = two_devices();
  blocks[41] = node(41, true, {0, 1, 2});  // device details, not mappings
  auto details = thin_mappings_in_snapshot(reader(blocks), 9, 1);
  ASSERT_FALSE(details);
  EXPECT_NE(details.error().message().find("not a mapping's 8"), std::string::npos)
      << details.error().message();

  blocks = two_devices();
  blocks[52][100] ^= 1;  // a flipped bit
  auto flipped = thin_mappings_in_snapshot(reader(blocks), 9, 4);
  ASSERT_FALSE(flipped);
  EXPECT_NE(flipped.error().message().find("checksum"), std::string::npos);

  blocks = two_devices();
  blocks[30] = node(30, false, {4, 1}, {32, 31});
  auto top = thin_mappings_in_snapshot(reader(blocks), 9, 4);
  ASSERT_FALSE(top);
  EXPECT_NE(top.error().message().find("keys out of order"), std::string::npos)
      << top.error().message();
}

}  // namespace
}  // namespace stepsnap::dm
