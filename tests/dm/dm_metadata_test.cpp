// Pure parts of dm/: the dm name check, how a recorded transaction id
// relates to the pool's, and the thin metadata reader on synthetic blocks
// laid out as the kernel writes them (the vm test reads a real pool's).
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "dm/dm_task.h"
#include "dm/thin_ids.h"
#include "dm/thin_metadata.h"
#include "metadata_blocks.h"

namespace stepsnap::dm {
namespace {

TEST(DmName, LongestAllowedIs127Bytes) {
  EXPECT_TRUE(check_dm_name(std::string(127, 'a')));
  auto r = check_dm_name(std::string(128, 'a'));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, EINVAL);
  std::string m = r.error().message();
  EXPECT_NE(m.find("128 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("127"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  EXPECT_FALSE(check_dm_name(""));
}

TEST(DmName, ANameTooLongNeverReachesTheKernel) {
  // The check runs before libdevmapper is even asked, so this holds on a
  // host without device-mapper too.
  auto r = create_device(std::string(200, 'v'), {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("device-mapper allows at most 127"), std::string::npos)
      << r.error().message();
}

TEST(TxnRelation, GenerationsOrderTheChanges) {
  std::uint64_t t0 = encode_txn({.generation = 10, .next_id = 5});
  EXPECT_EQ(compare_txn(t0, t0), TxnRelation::same);
  EXPECT_EQ(compare_txn(t0, txn_for_create(t0, 5)), TxnRelation::ahead);
  EXPECT_EQ(compare_txn(t0, txn_for_delete(txn_for_delete(t0))), TxnRelation::ahead);
  EXPECT_EQ(compare_txn(txn_for_create(t0, 5), t0), TxnRelation::behind);
  EXPECT_EQ(compare_txn(t0, 0), TxnRelation::behind) << "a reformatted pool";
  EXPECT_EQ(compare_txn(t0, encode_txn({.generation = 10, .next_id = 9})), TxnRelation::diverged);
}

TEST(ThinMetadata, ChecksumIsTheKernelsCrc32c) {
  const char* text = "123456789";
  std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(text), 9);
  // CRC-32C("123456789") = 0xE3069283; the kernel skips the final inversion.
  EXPECT_EQ(metadata_checksum(bytes, 0), 0xE3069283u ^ 0xFFFFFFFFu);
  EXPECT_EQ(metadata_checksum(bytes, kBtreeCsumXor), 0xE3069283u ^ 0xFFFFFFFFu ^ kBtreeCsumXor);
}

using test::Block;
using test::node;
using test::reader;
using test::superblock;

TEST(ThinMetadata, ListsTheDeviceIdsOfATwoLevelTree) {
  std::map<std::uint64_t, Block> blocks;
  blocks[9] = superblock(9, 20);
  blocks[20] = node(20, false, {1, 300}, {21, 22});
  blocks[21] = node(21, true, {1, 2, 17});
  blocks[22] = node(22, true, {300, 16777215});
  auto ids = thin_ids_in_snapshot(reader(blocks), 9);
  ASSERT_TRUE(ids) << ids.error().message();
  EXPECT_EQ(*ids, (std::vector<ThinId>{1, 2, 17, 300, 16777215}));
}

TEST(ThinMetadata, AnEmptyPoolHasNoIds) {
  std::map<std::uint64_t, Block> blocks;
  blocks[3] = superblock(3, 4);
  blocks[4] = node(4, true, {});
  auto ids = thin_ids_in_snapshot(reader(blocks), 3);
  ASSERT_TRUE(ids) << ids.error().message();
  EXPECT_TRUE(ids->empty());
}

TEST(ThinMetadata, DamageIsAnErrorNeverAWrongList) {
  std::map<std::uint64_t, Block> blocks;
  blocks[9] = superblock(9, 20);
  blocks[20] = node(20, true, {1, 2});
  blocks[20][40] ^= 1;  // a flipped bit
  auto flipped = thin_ids_in_snapshot(reader(blocks), 9);
  ASSERT_FALSE(flipped);
  EXPECT_NE(flipped.error().message().find("checksum"), std::string::npos);

  blocks[20] = node(21, true, {1, 2});  // written for another place
  auto moved = thin_ids_in_snapshot(reader(blocks), 9);
  ASSERT_FALSE(moved);
  EXPECT_NE(moved.error().message().find("lives at block 21"), std::string::npos);

  blocks[20] = node(20, false, {1}, {20});  // points at itself
  auto cycle = thin_ids_in_snapshot(reader(blocks), 9);
  ASSERT_FALSE(cycle);
  EXPECT_NE(cycle.error().message().find("cycle"), std::string::npos);

  EXPECT_FALSE(thin_ids_in_snapshot(reader(blocks), 0)) << "no snapshot held";
  Block not_thin(kMetadataBlockBytes, 0);
  blocks[5] = not_thin;
  auto magic = thin_ids_in_snapshot(reader(blocks), 5);
  ASSERT_FALSE(magic);
  EXPECT_NE(magic.error().message().find("magic"), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::dm
