// dm/metadata_mappings.h on a real pool in the vm guest: the mappings read
// in process from a held metadata snapshot are exactly what thin_dump
// --metadata-snap prints for the same devices, and the delta between a
// snapshot and its base is exactly the blocks written, and discarded, in
// between.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <set>
#include <vector>

#include "assert_ok.h"
#include "common/unique_fd.h"
#include "dm/metadata_mappings.h"
#include "dm/thin_mappings.h"
#include "dm/thin_pool.h"
#include "test_pool.h"

namespace stepsnap::dm::testing {
namespace {

constexpr std::uint64_t kBlock = 64 * 1024;  // the test pool's block size

void write_block(int fd, std::uint64_t block, char fill) {
  std::vector<char> data(kBlock, fill);
  ASSERT_EQ(::pwrite(fd, data.data(), kBlock, static_cast<off_t>(block * kBlock)),
            static_cast<ssize_t>(kBlock));
}

std::set<std::uint64_t> blocks_of(const std::vector<BlockMapping>& runs) {
  std::set<std::uint64_t> out;
  for (const auto& r : runs) {
    for (std::uint64_t i = 0; i < r.length; ++i) out.insert(r.virt + i);
  }
  return out;
}

TEST(MetadataMappingsVm, EqualThinDumpAndTheDeltaIsWhatWasWritten) {
  auto tp = ASSERT_OK(TestPool::make(128 * kMiB, 8 * kMiB)).value();
  ThinPool& pool = tp->pool();
  const std::uint64_t size = 64 * kMiB;
  auto vol = ASSERT_OK(pool.create_volume(tp->name("vol"), size)).value();
  {
    UniqueFd fd(::open(vol.path().c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    // 700 blocks: more than one leaf of the device's btree holds (about
    // 250), so the walk goes through an internal node.
    for (std::uint64_t b = 0; b < 700; ++b) write_block(fd.get(), b, 'a');
    ASSERT_EQ(::fsync(fd.get()), 0);
  }
  ThinId s0 = ASSERT_OK(pool.snapshot(vol)).value();

  std::set<std::uint64_t> written;
  std::uint64_t discard[2] = {600 * kBlock, 10 * kBlock};  // blocks 600-609
  {
    UniqueFd fd(::open(vol.path().c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    for (std::uint64_t b = 3; b < 700; b += 37) {
      if (b >= 600 && b < 610) continue;
      write_block(fd.get(), b, 'b');
      written.insert(b);
    }
    for (std::uint64_t b = 900; b < 905; ++b) {
      write_block(fd.get(), b, 'c');
      written.insert(b);
    }
    ASSERT_EQ(::fsync(fd.get()), 0);
    ASSERT_EQ(::ioctl(fd.get(), BLKDISCARD, discard), 0) << "discard blocks 600-609";
  }
  ThinId s1 = ASSERT_OK(pool.snapshot(vol)).value();

  auto held = ASSERT_OK(pool.hold_metadata_snapshot()).value();
  auto st = ASSERT_OK(pool.status()).value();
  ASSERT_TRUE(st.held_metadata_root);
  const std::string meta = ASSERT_OK(pool.metadata_device_path()).value();
  auto reader = ASSERT_OK(open_metadata_device(meta)).value();

  for (ThinId id : {s0, s1, vol.id}) {
    auto ours = ASSERT_OK(thin_mappings_in_snapshot(reader, *st.held_metadata_root, id)).value();
    auto dumped = ASSERT_OK(dump_thin_mappings(meta, id)).value();
    EXPECT_EQ(ours, dumped) << "thin id " << id;
  }
  auto base = ASSERT_OK(thin_mappings_in_snapshot(reader, *st.held_metadata_root, s0)).value();
  auto snap = ASSERT_OK(thin_mappings_in_snapshot(reader, *st.held_metadata_root, s1)).value();
  EXPECT_EQ(blocks_of(base).size(), 700u);
  auto delta = mapping_delta(snap, base);
  EXPECT_EQ(blocks_of(delta.changed), written);
  EXPECT_EQ(delta.unmapped, (std::vector<BlockRange>{{600, 10}}));

  ASSERT_OK(pool.deactivate(vol.name));
}

}  // namespace
}  // namespace stepsnap::dm::testing
