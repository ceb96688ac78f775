// Snapshots and clones of real ext4 and xfs filesystems on a real dm-thin
// pool, checked by file checksums. Runs in the vm guest (label vm).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "assert_ok.h"
#include "common/unique_fd.h"
#include "dm/dm_task.h"
#include "dm/flush.h"
#include "dm/thin_pool.h"
#include "fs_helpers.h"
#include "test_pool.h"

namespace stepsnap::dm::testing {
namespace {

// xfs refuses filesystems under 300 MiB; thin volumes cost only what is written.
constexpr std::uint64_t kVolumeBytes = 320 * kMiB;

class ThinFsTest : public ::testing::TestWithParam<Fs> {
 protected:
  void SetUp() override {
    auto tp = TestPool::make();
    ASSERT_TRUE(tp) << tp.error().message();
    tp_ = std::move(*tp);
  }

  ThinPool& pool() { return tp_->pool(); }
  std::string mnt(const std::string& what) { return tp_->dir() + "/mnt-" + what; }

  // A formatted, active volume.
  ThinVolume new_volume(const std::string& what) {
    auto v = pool().create_volume(tp_->name(what), kVolumeBytes);
    EXPECT_TRUE(v) << v.error().message();
    if (!v) return {};
    auto fs = make_fs(GetParam(), v->path());
    EXPECT_TRUE(fs) << fs.error().message();
    return *v;
  }

  // Activates `id` read-only, mounts it and returns its tree; leaves nothing active.
  Tree tree_of(ThinId id, const std::string& what) {
    auto v = pool().activate(id, tp_->name(what), kVolumeBytes, {.read_only = true});
    EXPECT_TRUE(v) << v.error().message();
    if (!v) return {};
    Tree tree;
    {
      auto m = Mount::mount(GetParam(), v->path(), mnt(what), /*read_only=*/true);
      EXPECT_TRUE(m) << m.error().message();
      if (m) tree = checksum_tree(m->dir());
    }
    auto r = pool().deactivate(v->name);
    EXPECT_TRUE(r) << r.error().message();
    return tree;
  }

  std::unique_ptr<TestPool> tp_;
};

TEST_P(ThinFsTest, DataWrittenBeforeASnapshotIsInItDataWrittenAfterIsNot) {
  ThinVolume origin = new_volume("origin");
  auto m = Mount::mount(GetParam(), origin.path(), mnt("origin"));
  ASSERT_TRUE(m) << m.error().message();
  // No sync: the snapshot's freeze must flush the page cache itself.
  ASSERT_TRUE(write_file(*m / "before", 3 * kMiB, 1));
  Tree before = checksum_tree(m->dir());

  auto snap = pool().snapshot(origin);
  ASSERT_TRUE(snap) << snap.error().message();

  ASSERT_TRUE(write_file(*m / "after", kMiB, 2));
  ASSERT_TRUE(write_file(*m / "before", 3 * kMiB, 3));  // overwritten after the snapshot
  ::sync();

  EXPECT_EQ(tree_of(*snap, "snap"), before);
  Tree now = checksum_tree(m->dir());
  EXPECT_EQ(now.size(), 2u);
  EXPECT_NE(now["before"], before["before"]);
}

TEST_P(ThinFsTest, CloneIsWritableAndTouchesNeitherOriginNorSnapshot) {
  ThinVolume origin = new_volume("origin");
  auto m = Mount::mount(GetParam(), origin.path(), mnt("origin"));
  ASSERT_TRUE(m) << m.error().message();
  ASSERT_TRUE(write_file(*m / "data", 2 * kMiB, 10));
  auto snap = pool().snapshot(origin);
  ASSERT_TRUE(snap) << snap.error().message();
  Tree origin_tree = checksum_tree(m->dir());

  auto clone = pool().clone(*snap, tp_->name("clone"), kVolumeBytes);
  ASSERT_TRUE(clone) << clone.error().message();
  Tree clone_tree;
  {
    auto c = Mount::mount(GetParam(), clone->path(), mnt("clone"));
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(checksum_tree(c->dir()), origin_tree);
    ASSERT_TRUE(write_file(*c / "data", 2 * kMiB, 11));
    ASSERT_TRUE(write_file(*c / "new", kMiB, 12));
    clone_tree = checksum_tree(c->dir());
  }
  EXPECT_NE(clone_tree, origin_tree);

  EXPECT_EQ(checksum_tree(m->dir()), origin_tree);
  EXPECT_EQ(tree_of(*snap, "snap"), origin_tree);
  // And the clone kept its own writes across a remount.
  auto c = Mount::mount(GetParam(), clone->path(), mnt("clone"));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(checksum_tree(c->dir()), clone_tree);
}

TEST_P(ThinFsTest, SnapshotOfASnapshotHoldsTheSameData) {
  ThinVolume origin = new_volume("origin");
  Tree first;
  ThinId snap1 = 0;
  {
    auto m = Mount::mount(GetParam(), origin.path(), mnt("origin"));
    ASSERT_TRUE(m) << m.error().message();
    ASSERT_TRUE(write_file(*m / "one", kMiB, 20));
    first = checksum_tree(m->dir());
    auto s = pool().snapshot(origin);
    ASSERT_TRUE(s) << s.error().message();
    snap1 = *s;
    ASSERT_TRUE(write_file(*m / "two", kMiB, 21));
  }
  // snap1 is inactive: snapshotted without any suspend.
  auto snap2 = pool().snapshot(snap1);
  ASSERT_TRUE(snap2) << snap2.error().message();
  EXPECT_NE(*snap2, snap1);
  EXPECT_EQ(tree_of(snap1, "snap1"), first);
  EXPECT_EQ(tree_of(*snap2, "snap2"), first);
}

TEST_P(ThinFsTest, DeletingTheOriginLeavesItsSnapshotsReadable) {
  ThinVolume origin = new_volume("origin");
  Tree t1, t2;
  ThinId s1 = 0, s2 = 0;
  {
    auto m = Mount::mount(GetParam(), origin.path(), mnt("origin"));
    ASSERT_TRUE(m) << m.error().message();
    ASSERT_TRUE(write_file(*m / "a", 2 * kMiB, 30));
    t1 = checksum_tree(m->dir());
    s1 = ASSERT_OK(pool().snapshot(origin)).value();
    ASSERT_TRUE(write_file(*m / "b", 2 * kMiB, 31));
    t2 = checksum_tree(m->dir());
    s2 = ASSERT_OK(pool().snapshot(origin)).value();
  }
  ASSERT_OK(pool().deactivate(origin.name));
  ASSERT_OK(pool().delete_thin(origin.id));
  EXPECT_EQ(tree_of(s1, "s1"), t1);
  EXPECT_EQ(tree_of(s2, "s2"), t2);
}

// A writer updates a generation counter on volume 0, then 1, then 2, in a
// loop. A group snapshot stops all three at one instant, so what it holds is
// a prefix of that sequence: g0 >= g1 >= g2 >= g0 - 1. Snapshots taken one
// after another would let a later volume run ahead (g2 > g0).
TEST_P(ThinFsTest, GroupSnapshotOfThreeVolumesIsConsistent) {
  std::vector<ThinVolume> volumes;
  std::vector<Mount> mounts;
  std::vector<Tree> static_trees;
  for (int i = 0; i < 3; ++i) {
    volumes.push_back(new_volume("v" + std::to_string(i)));
    auto m = Mount::mount(GetParam(), volumes.back().path(), mnt("v" + std::to_string(i)));
    ASSERT_TRUE(m) << m.error().message();
    mounts.push_back(std::move(*m));
    ASSERT_TRUE(write_file(mounts.back() / "static", kMiB, 40 + i));
    std::ofstream(mounts.back() / "gen") << std::string(20, '0');
    static_trees.push_back(checksum_tree(mounts.back().dir()));
  }

  std::atomic<bool> stop{false};
  std::thread writer([&] {
    // One fixed-width pwrite in place per update: a freeze waits for a write
    // in progress, so a snapshot sees the old or the new number, never a
    // truncated file (open(O_TRUNC) then write would be two steps).
    for (std::uint64_t g = 1; !stop; ++g) {
      char text[21];
      std::snprintf(text, sizeof text, "%020llu", static_cast<unsigned long long>(g));
      for (auto& m : mounts) {
        UniqueFd fd(::open((m / "gen").c_str(), O_WRONLY | O_CLOEXEC));
        if (!fd || ::pwrite(fd.get(), text, 20, 0) != 20) ADD_FAILURE() << "write gen " << g;
      }
    }
  });

  std::vector<std::vector<ThinId>> groups;
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto ids = pool().snapshot_group(volumes);
    if (!ids) {
      stop = true;
      writer.join();
      FAIL() << ids.error().message();
    }
    groups.push_back(*ids);
  }
  stop = true;
  writer.join();

  for (const auto& ids : groups) {
    std::vector<std::uint64_t> gen;
    for (int i = 0; i < 3; ++i) {
      auto v = pool().activate(ids[i], tp_->name("g" + std::to_string(i)), kVolumeBytes,
                               {.read_only = true});
      ASSERT_TRUE(v) << v.error().message();
      {
        auto m = Mount::mount(GetParam(), v->path(), mnt("g" + std::to_string(i)), true);
        ASSERT_TRUE(m) << m.error().message();
        std::string text = read_file(*m / "gen").value_or("");
        gen.push_back(text.empty() ? 0 : std::stoull(text));
        EXPECT_EQ(checksum_tree(m->dir()).at("static"), static_trees[i].at("static"));
      }
      ASSERT_OK(pool().deactivate(v->name));
    }
    SCOPED_TRACE("generations " + std::to_string(gen[0]) + " " + std::to_string(gen[1]) + " " +
                 std::to_string(gen[2]));
    EXPECT_GT(gen[0], 0u);
    EXPECT_GE(gen[0], gen[1]);
    EXPECT_GE(gen[1], gen[2]);
    EXPECT_GE(gen[2] + 1, gen[0]);
  }
}

// Sectors written to a block device so far (field 7 of its sysfs stat),
// found by device number: /dev/mapper entries are nodes, not links.
std::uint64_t sectors_written(const std::string& device_path) {
  struct stat st {};
  if (::stat(device_path.c_str(), &st) != 0) return 0;
  std::ifstream stat_file("/sys/dev/block/" + std::to_string(major(st.st_rdev)) + ":" +
                          std::to_string(minor(st.st_rdev)) + "/stat");
  std::uint64_t field = 0, value = 0;
  for (int i = 0; i < 7 && (stat_file >> field); ++i) value = field;
  return value;
}

TEST_P(ThinFsTest, TheFlushWritesBackAMountedFilesystemWithoutSuspendingIt) {
  ThinVolume origin = new_volume("origin");
  auto m = Mount::mount(GetParam(), origin.path(), mnt("origin"));
  ASSERT_TRUE(m) << m.error().message();
  ASSERT_TRUE(write_file(*m / "dirty", 16 * kMiB, 4));  // in the page cache only
  std::uint64_t before = sectors_written(origin.path());

  ASSERT_OK(flush_device(origin.name));
  // The filesystem's dirty data reached the device, though the flush named
  // only the device and not the mount.
  std::uint64_t after = sectors_written(origin.path());
  ASSERT_GT(before, 0u) << "no write count for " << origin.path();
  EXPECT_GE(after - before, 16 * kMiB / 512);
  auto info = dm::info(origin.name);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_FALSE(info->suspended);

  // A snapshot reports both parts; the flushed data is in it.
  ASSERT_TRUE(write_file(*m / "more", 4 * kMiB, 5));
  Tree tree = checksum_tree(m->dir());
  SnapshotTimes times;
  auto snap = pool().snapshot(origin, {}, &times);
  ASSERT_TRUE(snap) << snap.error().message();
  EXPECT_GT(times.flush.count(), 0);
  EXPECT_GT(times.frozen.count(), 0);
  EXPECT_EQ(tree_of(*snap, "snap"), tree);
}

INSTANTIATE_TEST_SUITE_P(Dm, ThinFsTest, ::testing::Values(Fs::ext4, Fs::xfs),
                         [](const auto& info) { return to_string(info.param); });

}  // namespace
}  // namespace stepsnap::dm::testing
