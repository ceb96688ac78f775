// ThinPool::list_thin_ids on a real pool in the vm guest: the ids read from
// a metadata snapshot are exactly the pool's, wherever they are (far from
// the allocation counter, made behind the view's back), the snapshot is
// released afterwards, and the list agrees with thin_ls from
// thin-provisioning-tools when it is installed.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "assert_ok.h"
#include "dm/dm_task.h"
#include "dm/pool_messages.h"
#include "dm/table.h"
#include "dm/thin_pool.h"
#include "test_pool.h"

namespace stepsnap::dm::testing {
namespace {

std::set<ThinId> as_set(const std::vector<ThinId>& v) { return {v.begin(), v.end()}; }

// The metadata device's node, from the pool's table ("major:minor").
std::string metadata_path(const ThinPool& pool) {
  auto lines = table(pool.name());
  if (!lines || lines->size() != 1) return {};
  auto t = parse_pool_target(lines->front());
  if (!t) return {};
  std::ifstream uevent("/sys/dev/block/" + t->metadata_dev + "/uevent");
  std::string line;
  while (std::getline(uevent, line)) {
    if (line.rfind("DEVNAME=", 0) == 0) return "/dev/" + line.substr(8);
  }
  return {};
}

bool executable(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IXUSR);
}

TEST(ThinPoolList, ListsEveryIdIncludingOnesFarFromTheCounterAndReleasesTheSnapshot) {
  auto tp = ASSERT_OK(TestPool::make(64 * kMiB, 8 * kMiB)).value();
  ThinPool& pool = tp->pool();
  EXPECT_TRUE(ASSERT_OK(pool.list_thin_ids())->empty()) << "a new pool has no thin ids";

  ThinId a = ASSERT_OK(pool.create_thin()).value();
  ThinId b = ASSERT_OK(pool.create_thin()).value();
  ThinId c = ASSERT_OK(pool.snapshot(a)).value();
  ASSERT_OK(pool.delete_thin(b));
  // Made behind the view's back, far above anything the counter handed out:
  // the kind of id a crash or another tool leaves, which probing near the
  // counter would never find.
  const ThinId far = 4000000;
  ASSERT_OK(create_thin(pool.name(), far));
  ASSERT_OK(pool.resync());

  std::uint64_t txn = pool.transaction_id();
  auto ids = ASSERT_OK(pool.list_thin_ids()).value();
  EXPECT_EQ(as_set(ids), (std::set<ThinId>{a, c, far}));
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));

  auto st = ASSERT_OK(pool.status()).value();
  EXPECT_FALSE(st.held_metadata_root) << "the metadata snapshot must be released";
  EXPECT_EQ(st.transaction_id, txn) << "listing is not a change";
  EXPECT_EQ(as_set(ASSERT_OK(pool.list_thin_ids()).value()), as_set(ids)) << "and it repeats";

  // The reference reader agrees.
  const std::string thin_ls = executable("/usr/sbin/thin_ls") ? "/usr/sbin/thin_ls" : "";
  std::string meta = metadata_path(pool);
  ASSERT_FALSE(meta.empty());
  if (!thin_ls.empty()) {
    ASSERT_OK(reserve_metadata_snap(pool.name()));
    std::set<ThinId> reference;
    FILE* p = ::popen((thin_ls + " --metadata-snap --no-headers -o DEV " + meta).c_str(), "r");
    ASSERT_NE(p, nullptr);
    unsigned long id = 0;
    while (std::fscanf(p, "%lu", &id) == 1) reference.insert(static_cast<ThinId>(id));
    int rc = ::pclose(p);
    ASSERT_OK(release_metadata_snap(pool.name()));
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(reference, as_set(ids)) << "thin_ls disagrees";
  } else {
    std::cout << "thin_ls not installed: no cross-check\n";
  }

  // While someone else holds the pool's one metadata snapshot, the list is
  // refused with a reason, and that snapshot is left alone.
  ASSERT_OK(reserve_metadata_snap(pool.name()));
  auto busy = pool.list_thin_ids();
  ASSERT_FALSE(busy);
  EXPECT_NE(busy.error().message().find("metadata snapshot may already be held"), std::string::npos)
      << busy.error().message();
  EXPECT_TRUE(ASSERT_OK(pool.status())->held_metadata_root);
  ASSERT_OK(release_metadata_snap(pool.name()));
  ASSERT_OK(pool.delete_thin(far));
}

TEST(ThinPoolList, ANameTooLongForDeviceMapperCostsNoIdAndNoTransaction) {
  auto tp = ASSERT_OK(TestPool::make(64 * kMiB, 8 * kMiB)).value();
  ThinPool& pool = tp->pool();
  std::uint64_t txn = pool.transaction_id();
  bool hook_ran = false;
  auto r = pool.create_volume(std::string(128, 'n'), 16 * kMiB, [&](ThinId) -> Status {
    hook_ran = true;
    return {};
  });
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("device-mapper allows at most 127"), std::string::npos)
      << r.error().message();
  EXPECT_FALSE(hook_ran) << "the intent hook ran for a name that cannot exist";
  EXPECT_EQ(ASSERT_OK(pool.status())->transaction_id, txn);
  EXPECT_TRUE(ASSERT_OK(pool.list_thin_ids())->empty());
}

}  // namespace
}  // namespace stepsnap::dm::testing
