// Pool-level behaviour on raw thin devices (no filesystem): many snapshots,
// id allocation, the suspend guard under failure, a full pool, a stale view,
// a busy device. Runs in the vm guest (label vm).
#include "dm/thin_pool.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>
#include <stdexcept>

#include "assert_ok.h"
#include "dm/dm_task.h"
#include "dm/snapshot.h"
#include "dm/suspend_guard.h"
#include "fs_helpers.h"
#include "test_pool.h"

namespace stepsnap::dm::testing {
namespace {

constexpr std::uint64_t kRawBytes = 64 * kMiB;

bool node_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
}

std::string marker(int i) { return "snapshot number " + std::to_string(i); }

class ThinPoolTest : public ::testing::Test {
 protected:
  void make_pool(std::uint64_t data_bytes = 256 * kMiB, std::uint64_t metadata_bytes = 16 * kMiB) {
    auto tp = TestPool::make(data_bytes, metadata_bytes);
    ASSERT_TRUE(tp) << tp.error().message();
    tp_ = std::move(*tp);
  }
  void SetUp() override { make_pool(); }
  ThinPool& pool() { return tp_->pool(); }
  std::unique_ptr<TestPool> tp_;
};

TEST_F(ThinPoolTest, TwoHundredSnapshotsAreAllReadableAndIdsAreNeverReused) {
  ThinVolume origin = ASSERT_OK(pool().create_volume(tp_->name("origin"), kRawBytes)).value();
  ASSERT_TRUE(node_exists(origin.path()));
  std::vector<ThinId> snaps;
  std::set<ThinId> ever_used{origin.id};
  for (int i = 0; i < 200; ++i) {
    ASSERT_OK(write_block(origin.path(), 0, marker(i)));
    ThinId id = ASSERT_OK(pool().snapshot(origin)).value();
    EXPECT_TRUE(ever_used.insert(id).second) << "id " << id << " handed out twice";
    snaps.push_back(id);
  }
  for (int i = 0; i < 200; ++i) {
    auto v =
        ASSERT_OK(pool().activate(snaps[i], tp_->name("read"), kRawBytes, {.read_only = true}));
    std::string head = ASSERT_OK(read_block(v->path(), 0, marker(i).size())).value();
    EXPECT_EQ(head, marker(i)) << "snapshot " << i << " (id " << snaps[i] << ")";
    ASSERT_OK(pool().deactivate(v->name));
    EXPECT_FALSE(node_exists(v->path()));
  }

  // Delete every other snapshot, then make more, also through a fresh view of
  // the pool (what the agent gets after a restart): no id comes back.
  for (int i = 0; i < 200; i += 2) ASSERT_OK(pool().delete_thin(snaps[i]));
  for (int i = 0; i < 20; ++i) {
    ThinId id = ASSERT_OK(pool().snapshot(origin)).value();
    EXPECT_TRUE(ever_used.insert(id).second) << "id " << id << " reused after delete";
  }
  auto reopened = ASSERT_OK(ThinPool::open(pool().name(), pool().transaction_id()));
  for (int i = 0; i < 20; ++i) {
    ThinId id = ASSERT_OK(reopened->create_thin()).value();
    EXPECT_TRUE(ever_used.insert(id).second) << "id " << id << " reused after reopen";
  }
  // The survivors are still intact.
  for (int i = 1; i < 200; i += 66) {
    auto v =
        ASSERT_OK(pool().activate(snaps[i], tp_->name("read"), kRawBytes, {.read_only = true}));
    EXPECT_EQ(read_block(v->path(), 0, marker(i).size()).value_or(""), marker(i));
    ASSERT_OK(pool().deactivate(v->name));
  }
}

TEST_F(ThinPoolTest, SuspendGuardResumesTheOriginAfterAnInjectedFailure) {
  ThinVolume origin = ASSERT_OK(pool().create_volume(tp_->name("origin"), kRawBytes)).value();
  ThinId taken = ASSERT_OK(pool().snapshot(origin)).value();

  // create_snap onto an id that exists fails inside the suspended window.
  auto r = snapshot_active(pool().name(), {origin.name, origin.id}, taken);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, EEXIST) << r.error().message();
  EXPECT_NE(r.error().message().find(pool().name()), std::string::npos) << r.error().message();

  auto info_after = ASSERT_OK(info(origin.name));
  EXPECT_FALSE(info_after->suspended);
  ASSERT_OK(write_block(origin.path(), 0, "still writable"));
  EXPECT_EQ(read_block(origin.path(), 0, 14).value_or(""), "still writable");

  // An exception thrown while suspended resumes too.
  try {
    auto guard = ASSERT_OK(SuspendGuard::suspend(origin.name));
    EXPECT_TRUE(info(origin.name)->suspended);
    throw std::runtime_error("injected");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(ASSERT_OK(info(origin.name))->suspended);
  ASSERT_OK(write_block(origin.path(), 4096, "after the exception"));
  // And the pool goes on making snapshots.
  ASSERT_OK(pool().snapshot(origin));
}

// 64 MiB of data. A volume holds 40 MiB, a snapshot pins it, and overwriting
// the volume needs 40 MiB more: the pool runs out of data space. Deleting the
// snapshot returns the blocks and the pool works again.
TEST_F(ThinPoolTest, AFullPoolGivesOutOfDataSpaceAndDeletingASnapshotRecovers) {
  tp_.reset();
  make_pool(64 * kMiB);
  ThinVolume v = ASSERT_OK(pool().create_volume(tp_->name("vol"), 128 * kMiB)).value();
  std::string chunk(kMiB, 'a');
  for (int i = 0; i < 40; ++i) ASSERT_OK(write_block(v.path(), i * kMiB, chunk));
  ThinId snap = ASSERT_OK(pool().snapshot(v)).value();

  std::fill(chunk.begin(), chunk.end(), 'b');
  int failed_at = -1;
  for (int i = 0; i < 40 && failed_at < 0; ++i) {
    auto w = write_block(v.path(), i * kMiB, chunk);
    if (!w) {
      failed_at = i;
      // error_if_no_space: the write fails at once instead of hanging.
      EXPECT_TRUE(w.error().err == ENOSPC || w.error().err == EIO) << w.error().message();
    }
  }
  ASSERT_GE(failed_at, 0) << "the pool never filled up";

  auto st = ASSERT_OK(pool().status());
  EXPECT_EQ(st->mode, PoolMode::out_of_data_space);
  EXPECT_EQ(st->used_data_blocks, st->total_data_blocks);
  auto usable = pool().check_usable();
  ASSERT_FALSE(usable);
  EXPECT_EQ(kind_of(usable.error()), ErrorKind::out_of_data_space) << usable.error().message();
  auto refused = pool().create_thin();
  ASSERT_FALSE(refused);
  EXPECT_EQ(kind_of(refused.error()), ErrorKind::out_of_data_space) << refused.error().message();

  ASSERT_OK(pool().delete_thin(snap));
  EXPECT_EQ(ASSERT_OK(pool().status())->mode, PoolMode::write);
  ASSERT_OK(pool().check_usable());
  for (int i = failed_at; i < 40; ++i) ASSERT_OK(write_block(v.path(), i * kMiB, chunk));
  EXPECT_EQ(read_block(v.path(), 39 * kMiB, 1).value_or(""), "b");
  ASSERT_OK(pool().create_thin());
}

TEST_F(ThinPoolTest, RunningOutOfMetadataIsItsOwnErrorAndRefusesNewSnapshots) {
  // 256 KiB of metadata is 64 blocks: a few dozen rounds of "change 4 blocks
  // of the origin, snapshot it" use them all (each round copies btree nodes).
  tp_.reset();
  make_pool(256 * kMiB, 256 * 1024);
  ThinVolume v = ASSERT_OK(pool().create_volume(tp_->name("vol"), 200 * kMiB)).value();
  std::string chunk(4 * 64 * 1024, 'm');
  bool exhausted = false;
  for (int i = 1; i < 400 && !exhausted; ++i) {
    (void)write_block(v.path(), (i * 7 % 3000) * 64 * 1024ull, chunk);  // may fail once full
    auto snap = pool().snapshot(v);
    if (!snap) {
      exhausted = true;
      EXPECT_EQ(kind_of(snap.error()), ErrorKind::out_of_metadata_space) << snap.error().message();
      EXPECT_EQ(snap.error().err, ENOSPC) << snap.error().message();
    }
  }
  ASSERT_TRUE(exhausted) << "256 KiB of metadata never filled up";

  // The kernel aborted the transaction: read-only, needs_check. Distinct
  // from a full data device, and every later attempt is refused up front.
  auto st = ASSERT_OK(pool().status());
  EXPECT_EQ(st->mode, PoolMode::read_only);
  EXPECT_TRUE(st->needs_check);
  EXPECT_LT(st->used_data_blocks, st->total_data_blocks);
  auto usable = pool().check_usable();
  ASSERT_FALSE(usable);
  EXPECT_EQ(kind_of(usable.error()), ErrorKind::out_of_metadata_space) << usable.error().message();
  auto refused = pool().create_thin();
  ASSERT_FALSE(refused);
  EXPECT_EQ(kind_of(refused.error()), ErrorKind::out_of_metadata_space);
  // And the origin was not left suspended by the failed snapshot.
  auto info = ASSERT_OK(dm::info(v.name));
  EXPECT_FALSE(info->suspended);
}

TEST_F(ThinPoolTest, BeforeCreateSeesEveryIdFirstAndCanStopTheCreate) {
  std::vector<ThinId> seen;
  BeforeCreate record = [&](ThinId id) -> Status {
    seen.push_back(id);
    return {};
  };
  ThinVolume v = ASSERT_OK(pool().create_volume(tp_->name("vol"), kRawBytes, record)).value();
  EXPECT_EQ(seen, std::vector<ThinId>{v.id});
  ThinId snap = ASSERT_OK(pool().snapshot(v, record)).value();
  EXPECT_EQ(seen.back(), snap);

  // A caller that cannot write its intent stops the create: the id it was
  // shown never becomes a device, and is not handed out again.
  auto refused = pool().snapshot(v, [&](ThinId id) -> Status {
    seen.push_back(id);
    return fail("record intent", "catalog", EIO);
  });
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().err, EIO);
  ThinId skipped = seen.back();
  EXPECT_FALSE(pool().activate(skipped, tp_->name("ghost"), kRawBytes))
      << "thin id " << skipped << " exists although its intent failed";
  EXPECT_FALSE(ASSERT_OK(dm::info(v.name))->suspended);

  // A group: every id is shown before the first suspend, in order.
  ThinVolume w = ASSERT_OK(pool().create_volume(tp_->name("vol2"), kRawBytes)).value();
  seen.clear();
  auto group = ASSERT_OK(pool().snapshot_group({v, w}, record)).value();
  EXPECT_EQ(seen, group);
  EXPECT_GT(group.front(), skipped);
}

// A group's ids are reserved with one set_transaction_id message (one
// change of the pool's transaction id, its high-water mark past the
// group's last id) before any of them is created. A daemon killed after
// that message and before the creates is what a failing intent hook
// leaves: no thin device of the group, and a view opened afresh, as at a
// restart, hands out ids past the whole group, never one of it.
TEST_F(ThinPoolTest, AGroupReservesAllItsIdsWithOneTransactionChange) {
  ThinVolume a = ASSERT_OK(pool().create_volume(tp_->name("ga"), kRawBytes)).value();
  ThinVolume b = ASSERT_OK(pool().create_volume(tp_->name("gb"), kRawBytes)).value();
  ThinVolume c = ASSERT_OK(pool().create_volume(tp_->name("gc"), kRawBytes)).value();
  std::vector<std::uint64_t> txns;
  pool().on_transaction_change([&](std::uint64_t t) { txns.push_back(t); });
  const std::uint64_t before = pool().transaction_id();
  auto group = ASSERT_OK(pool().snapshot_group({a, b, c})).value();
  ASSERT_EQ(group.size(), 3u);
  EXPECT_EQ(txns.size(), 1u) << "one transaction-id change for the whole group";
  EXPECT_EQ(decode_txn(pool().transaction_id()).generation, decode_txn(before).generation + 1);
  EXPECT_GT(decode_txn(pool().transaction_id()).next_id, group.back());
  EXPECT_EQ(std::set<ThinId>(group.begin(), group.end()).size(), 3u);

  // Killed between the reservation and the creates: the hook fails on the
  // group's second id, after the message.
  std::vector<ThinId> shown;
  auto stopped = pool().snapshot_group({a, b, c}, [&](ThinId id) -> Status {
    shown.push_back(id);
    if (shown.size() == 2) return fail("record intent", "catalog", EIO);
    return {};
  });
  ASSERT_FALSE(stopped);
  ASSERT_EQ(shown.size(), 2u);
  const std::uint64_t after_stop = ASSERT_OK(pool().status())->transaction_id;
  // The mark covers all three ids the stopped group reserved, though the
  // hook saw only two of them.
  const ThinId mark = decode_txn(after_stop).next_id;
  EXPECT_GT(mark, shown.back() + 1);
  for (ThinId id : shown) {
    EXPECT_FALSE(pool().activate(id, tp_->name("ghost"), kRawBytes))
        << "thin id " << id << " exists although the group stopped before any create";
  }
  for (const auto& v : {a, b, c}) EXPECT_FALSE(ASSERT_OK(info(v.name))->suspended);

  auto restarted = ASSERT_OK(ThinPool::open(pool().name(), after_stop)).value();
  ThinId next = ASSERT_OK(restarted.snapshot(a)).value();
  EXPECT_GE(next, mark) << "an id of the stopped group was handed out again";
}

TEST_F(ThinPoolTest, AChangeBehindOurBackIsAStaleView) {
  std::uint64_t saved = pool().transaction_id();
  auto other = ASSERT_OK(ThinPool::open(pool().name()));
  ThinId theirs = ASSERT_OK(other->create_thin()).value();

  auto mine = pool().create_thin();
  ASSERT_FALSE(mine);
  EXPECT_EQ(kind_of(mine.error()), ErrorKind::stale_view) << mine.error().message();
  auto reopened = ThinPool::open(pool().name(), saved);
  ASSERT_FALSE(reopened);
  EXPECT_EQ(kind_of(reopened.error()), ErrorKind::stale_view);

  ASSERT_OK(pool().resync());
  ThinId id = ASSERT_OK(pool().create_thin()).value();
  EXPECT_NE(id, theirs);
}

TEST_F(ThinPoolTest, DeactivatingABusyDeviceSaysWhatHoldsIt) {
  ThinVolume v = ASSERT_OK(pool().create_volume(tp_->name("busy"), 320 * kMiB)).value();
  ASSERT_OK(make_fs(Fs::ext4, v.path()));
  {
    auto m = ASSERT_OK(Mount::mount(Fs::ext4, v.path(), tp_->dir() + "/mnt"));
    auto r = pool().deactivate(v.name, {.attempts = 3, .delay = std::chrono::milliseconds(10)});
    ASSERT_FALSE(r);
    EXPECT_EQ(kind_of(r.error()), ErrorKind::busy);
    EXPECT_NE(r.error().message().find(tp_->dir() + "/mnt"), std::string::npos)
        << r.error().message();
    // A delete of an active id is refused by the kernel.
    auto d = pool().delete_thin(v.id);
    ASSERT_FALSE(d);
  }
  ASSERT_OK(pool().resync());
  ASSERT_OK(pool().deactivate(v.name));
  EXPECT_FALSE(node_exists(v.path()));
  ASSERT_OK(pool().deactivate(v.name));  // idempotent
  ASSERT_OK(pool().delete_thin(v.id));
}

}  // namespace
}  // namespace stepsnap::dm::testing
