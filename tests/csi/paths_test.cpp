// The kubelet-directory rule and the mount table reader.
#include "csi/paths.h"

#include <gtest/gtest.h>

namespace stepsnap::csi {
namespace {

TEST(CsiPaths, OnlyPathsStrictlyInsideTheKubeletDirPass) {
  const std::string k = "/var/lib/kubelet";
  EXPECT_TRUE(is_inside(k, "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pv/mount"));
  EXPECT_TRUE(is_inside(k, "/var/lib/kubelet//plugins/./x/"));
  EXPECT_FALSE(is_inside(k, "/var/lib/kubelet"));
  EXPECT_FALSE(is_inside(k, "/var/lib/kubelet/"));
  EXPECT_FALSE(is_inside(k, "/var/lib/kubeletx/pods"));
  EXPECT_FALSE(is_inside(k, "/var/lib/kubelet/../../../etc"));
  EXPECT_FALSE(is_inside(k, "/var/lib/kubelet/pods/../../kubelet2"));
  EXPECT_FALSE(is_inside(k, "var/lib/kubelet/pods"));
  EXPECT_FALSE(is_inside(k, "/etc"));
  EXPECT_FALSE(is_inside(k, ""));
}

TEST(CsiPaths, TheTopmostMountAtAPathIsFoundWithEscapesDecoded) {
  const std::string table =
      "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
      "40 22 253:3 / /var/lib/kubelet/st rw,relatime shared:5 - ext4 /dev/mapper/p-vol-a rw\n"
      "41 22 253:3 / /var/lib/kubelet/pods/my\\040pod ro,relatime shared:5 - ext4 "
      "/dev/mapper/p-vol-a rw\n"
      "42 40 253:4 / /var/lib/kubelet/st rw master:3 - xfs /dev/mapper/p-vol-b rw,nouuid\n"
      "43 22 0:5 /dm-7 /var/lib/kubelet/dev/blk rw,nosuid - devtmpfs udev rw\n";
  auto st = find_mount(table, "/var/lib/kubelet/st");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->minor, 4u) << "the later mount covers the earlier";
  EXPECT_EQ(st->fs_type, "xfs");
  EXPECT_EQ(st->source, "/dev/mapper/p-vol-b");
  auto pod = find_mount(table, "/var/lib/kubelet/pods/my pod");
  ASSERT_TRUE(pod);
  EXPECT_TRUE(pod->read_only);
  EXPECT_EQ(pod->major, 253u);
  auto blk = find_mount(table, "/var/lib/kubelet/dev/blk");
  ASSERT_TRUE(blk);
  EXPECT_EQ(blk->root, "/dm-7");
  EXPECT_FALSE(blk->read_only);
  EXPECT_FALSE(find_mount(table, "/var/lib/kubelet"));
}

}  // namespace
}  // namespace stepsnap::csi
