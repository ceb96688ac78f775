// A pool that runs out of data space (issue #14 item 8), inside the
// scripts/vm guest (label vm): the write that does not fit fails at once
// instead of waiting out the kernel's no_space_timeout (60 s), the agent
// reports pool.low_space and pool.out_of_space and refuses snapshots with
// the reason, and deleting a volume gives the space back: the pool is
// writable again and new volumes and snapshots work.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dm/dm_task.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using json = nlohmann::json;

Output write_mib(const std::string& dev, int offset_mib, int mib) {
  return sh("dd if=/dev/zero of=" + dev + " bs=1M seek=" + std::to_string(offset_mib) +
            " count=" + std::to_string(mib) + " oflag=direct conv=notrunc");
}

class FullPool : public StepsnapdFixture {
 protected:
  FullPool() {
    data_size_ = "40M";  // 640 blocks of 64 KiB
    extra_args_ = {"--pool-low-space-percent", "50"};
  }
  // The pool's thin devices that are active, by dm name.
  std::vector<std::string> thin_devices() {
    std::vector<std::string> out;
    if (auto names = dm::list_devices()) {
      for (const auto& n : *names)
        if (n.rfind(pool_ + "-vol-", 0) == 0) out.push_back(n);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string pool_mode() {
    json vols = ok("volume.list", json::object());
    return vols["pool"].value("mode", "");
  }
};

TEST_F(FullPool, TheWriteThatDoesNotFitFailsAtOnceAndDeletingGivesTheSpaceBack) {
  // The pool errors I/O when it is full rather than queueing it.
  auto table = dm::table(pool_ + "-pool");
  ASSERT_TRUE(table && table->size() == 1);
  EXPECT_NE(table->front().params.find("error_if_no_space"), std::string::npos)
      << table->front().params;

  json vol = ok("volume.create", {{"name", "big"}, {"size_bytes", 64 << 20}});
  const std::string dev = vol.value("path", "");
  ASSERT_FALSE(dev.empty()) << vol.dump();
  ASSERT_EQ(write_mib(dev, 0, 24).rc, 0);  // 60%
  ok("snapshot.create", {{"volume", "big"}, {"name", "at60"}});
  EXPECT_EQ(events_of("pool.low_space").size(), 1u);

  const auto t0 = std::chrono::steady_clock::now();
  auto fill = write_mib(dev, 24, 40);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(fill.rc, 0) << "64 MiB fitted in a 40 MiB pool";
  std::cout << "the write past the pool's end failed after " << seconds << " s\n";
  EXPECT_EQ(pool_mode(), "out_of_data_space");

  json refused = call("snapshot.create", {{"volume", "big"}, {"name", "nope"}});
  ASSERT_FALSE(refused.value("ok", true)) << refused.dump();
  EXPECT_EQ(refused["error"].value("code", ""), "no_space") << refused.dump();
  EXPECT_NE(refused["error"].value("message", "").find("out_of_data_space"), std::string::npos)
      << refused.dump();
  auto oos = events_of("pool.out_of_space");
  ASSERT_EQ(oos.size(), 1u);
  EXPECT_EQ(oos[0]["data"].value("kind", ""), "out_of_data_space") << oos[0].dump();

  // Deleting the volume and its snapshot frees their blocks: the pool
  // leaves out_of_data_space by itself and takes new work.
  ok("snapshot.delete", {{"name", "at60"}});
  ok("volume.delete", {{"name", "big"}});
  EXPECT_EQ(pool_mode(), "rw");
  json again = ok("volume.create", {{"name", "again"}, {"size_bytes", 32 << 20}});
  ASSERT_FALSE(again.value("path", "").empty()) << again.dump();
  EXPECT_EQ(write_mib(again.value("path", ""), 0, 16).rc, 0) << "the pool did not take writes";
  ok("snapshot.create", {{"volume", "again"}, {"name", "works"}});
}

// run.create on a full pool: refused for space, with nothing of it left:
// no run volume, no snapshot, no device, and the run's name is free again
// once there is space.
TEST_F(FullPool, RunCreateOnAFullPoolLeavesNothingHalfMade) {
  json vol = ok("volume.create", {{"name", "ws"}, {"size_bytes", 64 << 20}});
  const std::string dev = vol.value("path", "");
  ASSERT_FALSE(dev.empty()) << vol.dump();
  ok("volume.create", {{"name", "data"}, {"size_bytes", 8 << 20}});
  EXPECT_NE(write_mib(dev, 0, 64).rc, 0) << "64 MiB fitted in a 40 MiB pool";
  ASSERT_EQ(pool_mode(), "out_of_data_space");
  json volumes_before = ok("volume.list", json::object())["volumes"];
  json snapshots_before = ok("snapshot.list", json::object())["snapshots"];
  auto devices_before = thin_devices();

  json refused =
      call("run.create", {{"pipeline", "p"}, {"run", "r1"}, {"volumes", {"ws", "data"}}});
  ASSERT_FALSE(refused.value("ok", true)) << refused.dump();
  std::cout << "refused: " << refused["error"].dump() << "\n";
  EXPECT_EQ(refused["error"].value("code", ""), "no_space") << refused.dump();
  EXPECT_EQ(ok("volume.list", json::object())["volumes"], volumes_before);
  EXPECT_EQ(ok("snapshot.list", json::object())["snapshots"], snapshots_before);
  EXPECT_EQ(thin_devices(), devices_before);

  // Space back: the same run is made whole.
  ok("volume.delete", {{"name", "ws"}});
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 8 << 20}});
  ASSERT_EQ(pool_mode(), "rw");
  json made = ok("run.create", {{"pipeline", "p"}, {"run", "r1"}, {"volumes", {"ws", "data"}}});
  EXPECT_EQ(made.value("run", ""), "r1") << made.dump();
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
