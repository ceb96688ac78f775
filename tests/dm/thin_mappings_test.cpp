// thin_dump's mappings and the delta between two devices of one pool (pure).
#include "dm/thin_mappings.h"

#include <gtest/gtest.h>

namespace stepsnap::dm {
namespace {

// As thin_dump 0.9.0 prints it (--dev-id limits it to one device).
constexpr std::string_view kDump =
    R"(<superblock uuid="" time="1" transaction="4" flags="0" version="2" data_block_size="128" nr_data_blocks="160">
  <device dev_id="2" mapped_blocks="5" transaction="0" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="10" length="3" time="0"/>
    <single_mapping origin_block="7" data_block="40" time="1"/>
    <single_mapping origin_block="3" data_block="13" time="0"/>
  </device>
  <device dev_id="5" mapped_blocks="0" transaction="0" creation_time="1" snap_time="1">
  </device>
</superblock>
)";

TEST(ThinMappings, ParsesRangeAndSingleMappingsSorted) {
  auto m = parse_thin_dump_mappings(kDump, 2);
  ASSERT_TRUE(m) << m.error().message();
  std::vector<BlockMapping> want = {{0, 10, 3}, {3, 13, 1}, {7, 40, 1}};
  EXPECT_EQ(*m, want);
  auto empty = parse_thin_dump_mappings(kDump, 5);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  auto missing = parse_thin_dump_mappings(kDump, 9);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().err, ENODATA);
}

TEST(ThinMappings, MalformedDumpsAreRefused) {
  EXPECT_FALSE(
      parse_thin_dump_mappings(R"(<device dev_id="1"><range_mapping origin_begin="0"/>)", 1));
  EXPECT_FALSE(parse_thin_dump_mappings(
      R"(<device dev_id="1"><single_mapping origin_block="2" data_block="9"/>)"
      R"(<range_mapping origin_begin="1" data_begin="4" length="3"/></device>)",
      1));
  EXPECT_FALSE(parse_thin_dump_mappings("<device dev_id=\"1\"", 1));
}

TEST(ThinMappings, FullDeltaIsEveryMappedBlock) {
  std::vector<BlockMapping> target = {{0, 10, 3}, {3, 13, 1}, {7, 40, 1}};
  auto d = mapping_delta(target, {});
  // 0..3 continue into 3 (data 13 follows 12): one run.
  std::vector<BlockMapping> want = {{0, 10, 4}, {7, 40, 1}};
  EXPECT_EQ(d.changed, want);
  EXPECT_TRUE(d.unmapped.empty());
}

TEST(ThinMappings, SharedBlocksAreNotSentChangedAndUnmappedAre) {
  // The base: blocks 0..9 at data 100..109, block 20 at data 200.
  std::vector<BlockMapping> base = {{0, 100, 10}, {20, 200, 1}};
  // The target shares 0..3 and 6..9, rewrote 4..5 (new data 300), no longer
  // maps 20 (discarded), and wrote new block 30.
  std::vector<BlockMapping> target = {{0, 100, 4}, {4, 300, 2}, {6, 106, 4}, {30, 400, 1}};
  auto d = mapping_delta(target, base);
  std::vector<BlockMapping> changed = {{4, 300, 2}, {30, 400, 1}};
  std::vector<BlockRange> unmapped = {{20, 1}};
  EXPECT_EQ(d.changed, changed);
  EXPECT_EQ(d.unmapped, unmapped);
}

TEST(ThinMappings, IdenticalDevicesHaveAnEmptyDelta) {
  std::vector<BlockMapping> m = {{0, 5, 3}, {9, 50, 2}};
  auto d = mapping_delta(m, m);
  EXPECT_TRUE(d.changed.empty());
  EXPECT_TRUE(d.unmapped.empty());
}

TEST(ThinMappings, ARunSplitDifferentlyStillMatchesBlockByBlock) {
  // thin_dump may print one device's run as pieces the other prints whole.
  std::vector<BlockMapping> base = {{0, 10, 8}};
  std::vector<BlockMapping> target = {{0, 10, 2}, {2, 12, 1}, {3, 13, 5}};
  auto d = mapping_delta(target, base);
  EXPECT_TRUE(d.changed.empty());
  EXPECT_TRUE(d.unmapped.empty());
}

}  // namespace
}  // namespace stepsnap::dm
