// The pure logic of dm/, without a kernel: status lines, table strings, id
// allocation and the transaction-id encoding, error kinds.
#include <gtest/gtest.h>

#include "dm/dm_error.h"
#include "dm/pool_status.h"
#include "dm/table.h"
#include "dm/thin_ids.h"

namespace stepsnap::dm {
namespace {

TEST(DmPoolStatus, ParsesAHealthyPool) {
  auto s = parse_pool_status("5 280/4096 1024/4096 - rw discard_passdown error_if_no_space - 1024");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->transaction_id, 5u);
  EXPECT_EQ(s->used_metadata_blocks, 280u);
  EXPECT_EQ(s->total_metadata_blocks, 4096u);
  EXPECT_EQ(s->used_data_blocks, 1024u);
  EXPECT_EQ(s->free_data_blocks(), 3072u);
  EXPECT_FALSE(s->held_metadata_root);
  EXPECT_EQ(s->mode, PoolMode::write);
  EXPECT_TRUE(s->discard_passdown);
  EXPECT_TRUE(s->error_if_no_space);
  EXPECT_FALSE(s->needs_check);
  EXPECT_EQ(s->metadata_low_watermark, 1024u);
}

TEST(DmPoolStatus, ParsesTroubleModes) {
  auto full = parse_pool_status(
      "9 300/4096 4096/4096 17 out_of_data_space no_discard_passdown queue_if_no_space -");
  ASSERT_TRUE(full);
  EXPECT_EQ(full->mode, PoolMode::out_of_data_space);
  EXPECT_EQ(full->held_metadata_root, 17u);
  EXPECT_FALSE(full->discard_passdown);
  EXPECT_FALSE(full->error_if_no_space);

  auto ro =
      parse_pool_status("9 4096/4096 10/4096 - ro discard_passdown queue_if_no_space needs_check");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->mode, PoolMode::read_only);
  EXPECT_TRUE(ro->needs_check);

  auto failed = parse_pool_status("Fail");
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->mode, PoolMode::failed);
}

TEST(DmPoolStatus, AcceptsOlderKernelsShorterLines) {
  auto s = parse_pool_status("0 10/4096 0/100 -");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->mode, PoolMode::write);
}

TEST(DmPoolStatus, RejectsGarbage) {
  EXPECT_FALSE(parse_pool_status(""));
  EXPECT_FALSE(parse_pool_status("x 1/2 3/4"));
  EXPECT_FALSE(parse_pool_status("1 12 3/4"));
  EXPECT_FALSE(parse_pool_status("1 1/2 3/4 - sideways"));
  auto e = parse_pool_status("1 1/2");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().err, EINVAL);
}

TEST(DmThinStatus, ParsesMappedAndEmpty) {
  auto s = parse_thin_status("2048 4095");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->mapped_sectors, 2048u);
  EXPECT_EQ(s->highest_mapped_sector, 4095u);
  auto empty = parse_thin_status("0 -");
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->highest_mapped_sector);
  EXPECT_TRUE(parse_thin_status("Fail")->failed);
  EXPECT_FALSE(parse_thin_status("12"));
}

TEST(DmTable, BuildsAPoolTableWithOurDefaults) {
  PoolTable t;
  t.metadata_dev = "/dev/loop1";
  t.data_dev = "/dev/loop0";
  t.data_sectors = 524288;
  t.low_water_blocks = 409;
  Target target = pool_target(t);
  EXPECT_EQ(target.type, "thin-pool");
  EXPECT_EQ(target.start, 0u);
  EXPECT_EQ(target.length, 524288u);
  EXPECT_EQ(target.params, "/dev/loop1 /dev/loop0 128 409 1 error_if_no_space");
}

TEST(DmTable, BuildsEveryFeature) {
  PoolTable t{"253:1", "253:0", 1024, 256, 0, false, false, false, true};
  EXPECT_EQ(pool_target(t).params,
            "253:1 253:0 256 0 3 skip_block_zeroing no_discard_passdown read_only");
  PoolTable none{"m", "d", 1024, 128, 7, true, true, false, false};
  EXPECT_EQ(pool_target(none).params, "m d 128 7 0");
}

TEST(DmTable, PoolTableRoundTrips) {
  PoolTable t{"7:1", "7:0", 2048, 256, 20, false, true, true, false};
  auto back = parse_pool_target(pool_target(t));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->metadata_dev, "7:1");
  EXPECT_EQ(back->data_dev, "7:0");
  EXPECT_EQ(back->data_sectors, 2048u);
  EXPECT_EQ(back->block_sectors, 256u);
  EXPECT_EQ(back->low_water_blocks, 20u);
  EXPECT_FALSE(back->zero_new_blocks);
  EXPECT_TRUE(back->discard_passdown);
  EXPECT_TRUE(back->error_if_no_space);
  // The kernel's own table text when no feature is set.
  auto bare = parse_pool_target(Target{0, 100, "thin-pool", "7:1 7:0 128 0 0"});
  ASSERT_TRUE(bare);
  EXPECT_FALSE(bare->error_if_no_space);
  EXPECT_FALSE(parse_pool_target(Target{0, 100, "linear", "7:0 0"}));
  EXPECT_FALSE(parse_pool_target(Target{0, 100, "thin-pool", "7:1 7:0 128 0 2 x"}));
}

TEST(DmTable, ThinTableRoundTrips) {
  Target t = thin_target("253:4", 77, 131072);
  EXPECT_EQ(t.type, "thin");
  EXPECT_EQ(t.length, 131072u);
  EXPECT_EQ(t.params, "253:4 77");
  auto back = parse_thin_target(t);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->pool_dev, "253:4");
  EXPECT_EQ(back->id, 77u);
  EXPECT_FALSE(parse_thin_target(Target{0, 1, "thin", "253:4"}));
}

TEST(DmThinIds, AFreshPoolStartsAtOne) {
  TxnView v = decode_txn(0);
  EXPECT_EQ(v.generation, 0u);
  EXPECT_EQ(v.next_id, kFirstThinId);
}

TEST(DmThinIds, EveryChangeBumpsTheTransactionId) {
  std::uint64_t txn = 0;
  std::uint64_t created = txn_for_create(txn, 1);
  EXPECT_NE(created, txn);
  EXPECT_EQ(decode_txn(created).next_id, 2u);
  EXPECT_EQ(decode_txn(created).generation, 1u);
  std::uint64_t deleted = txn_for_delete(created);
  EXPECT_NE(deleted, created);
  EXPECT_EQ(decode_txn(deleted).next_id, 2u);  // a delete never lowers the next id
  EXPECT_EQ(decode_txn(deleted).generation, 2u);
  EXPECT_EQ(encode_txn(decode_txn(deleted)), deleted);
}

TEST(DmThinIds, IdsAreMonotonicAndSkipIdsInUse) {
  EXPECT_EQ(next_free_id(5, {}), 5u);
  EXPECT_EQ(next_free_id(5, {5, 6, 8}), 7u);
  // After the last 24-bit id, wrap to the first free one.
  EXPECT_EQ(decode_txn(txn_for_create(0, kMaxThinId)).next_id, kFirstThinId);
  EXPECT_EQ(next_free_id(kMaxThinId, {kMaxThinId, 1, 2}), 3u);
  EXPECT_EQ(next_free_id(0, {}), kFirstThinId);
}

TEST(DmThinIds, ExhaustionIsReported) {
  std::set<ThinId> all;
  for (ThinId id = kFirstThinId; id <= kMaxThinId; ++id) all.insert(all.end(), id);
  EXPECT_FALSE(next_free_id(1, all));
}

TEST(DmErrorKind, SurvivesTheErrorType) {
  Status e = fail_kind(ErrorKind::out_of_data_space, "use pool", "p", ENOSPC, "data 10/10");
  EXPECT_EQ(kind_of(e.error()), ErrorKind::out_of_data_space);
  EXPECT_EQ(e.error().kind, "out_of_data_space");
  EXPECT_EQ(kind_of(Error{"x", "y", 0, ""}), ErrorKind::none);
  Error ctx = e.error();
  ctx.context("snapshot workspace");
  EXPECT_EQ(kind_of(ctx), ErrorKind::out_of_data_space);
}

}  // namespace
}  // namespace stepsnap::dm
