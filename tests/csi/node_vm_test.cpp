// stepsnap-csi's Node service with real mounts: stage, publish (read-write,
// read-only, block), and back, each call twice, and the paths it refuses.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/csi/csi_driver_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;

constexpr std::int64_t kMiB = 1 << 20;

class CsiNode : public CsiDriverFixture {};

bool is_mount_point(const std::string& path) { return sh("mountpoint -q " + path).rc == 0; }

TEST_F(CsiNode, StagePublishUnpublishUnstageWithRealMountsEachTwice) {
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("pvc-nb", 64 * kMiB, &vol));
  const std::string staging = staging_path("pvc-nb");
  const std::string rw = pod_path("pod-rw", "pvc-nb");
  const std::string ro = pod_path("pod-ro", "pvc-nb");

  // Publishing before staging is a precondition failure.
  EXPECT_RPC_CODE(publish("pvc-nb", staging, rw), FAILED_PRECONDITION);
  EXPECT_RPC_CODE(publish("pvc-nb", "", rw), FAILED_PRECONDITION);
  EXPECT_FALSE(exists(rw)) << "a refused publish left its target";

  ASSERT_RPC_OK(stage("pvc-nb", staging));
  ASSERT_RPC_OK(stage("pvc-nb", staging));
  EXPECT_TRUE(is_mount_point(staging));
  EXPECT_EQ(sh("findmnt -n -o SOURCE " + staging).out, "/dev/mapper/" + pool_ + "-vol-pvc-nb\n");

  ASSERT_RPC_OK(publish("pvc-nb", staging, rw));
  ASSERT_RPC_OK(publish("pvc-nb", staging, rw));
  EXPECT_EQ(sh("findmnt -n " + rw + " | wc -l").out, "1\n") << "a repeat mounted it again";
  ASSERT_EQ(sh("echo written-through-the-pod > " + rw + "/hello.txt && sync").rc, 0);

  // The same volume read-only into another pod: reads work, writes do not.
  ASSERT_RPC_OK(publish("pvc-nb", staging, ro, true));
  ASSERT_RPC_OK(publish("pvc-nb", staging, ro, true));
  EXPECT_EQ(read_file(ro + "/hello.txt"), "written-through-the-pod\n");
  auto refused = sh("touch " + ro + "/nope.txt");
  EXPECT_NE(refused.rc, 0);
  EXPECT_NE(refused.err.find("Read-only file system"), std::string::npos) << refused.err;
  // The same target asked read-write now: incompatible.
  EXPECT_RPC_CODE(publish("pvc-nb", staging, ro, false), ALREADY_EXISTS);
  // A reader-only access mode is read-only too.
  const std::string ro2 = pod_path("pod-ro2", "pvc-nb");
  ASSERT_RPC_OK(publish("pvc-nb", staging, ro2, false,
                        mount_cap("", v1::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY)));
  EXPECT_NE(sh("touch " + ro2 + "/nope").rc, 0);

  // What the pod wrote is in a snapshot taken now, and in a volume made
  // from that snapshot.
  v1::CreateSnapshotResponse snap;
  ASSERT_RPC_OK(create_snapshot("snapshot-nb", "pvc-nb", &snap));
  v1::VolumeContentSource from;
  from.mutable_snapshot()->set_snapshot_id("snapshot-nb");
  v1::CreateVolumeResponse restored;
  ASSERT_RPC_OK(create_volume("pvc-nb-restored", 0, &restored, {}, &from));
  std::string back = stage_and_publish("pvc-nb-restored", "pod-check");
  EXPECT_EQ(read_file(back + "/hello.txt"), "written-through-the-pod\n");

  // Back: each call twice; the targets go, the staging folder stays (the
  // kubelet's).
  for (const auto& target : {rw, ro, ro2}) {
    ASSERT_RPC_OK(unpublish("pvc-nb", target));
    ASSERT_RPC_OK(unpublish("pvc-nb", target));
    EXPECT_FALSE(exists(target)) << target;
  }
  EXPECT_TRUE(is_mount_point(staging)) << "unpublish took the staging mount";
  ASSERT_RPC_OK(unstage("pvc-nb", staging));
  ASSERT_RPC_OK(unstage("pvc-nb", staging));
  EXPECT_FALSE(is_mount_point(staging));
  EXPECT_TRUE(exists(staging));
  // Unmounted everywhere: the volume can go.
  EXPECT_RPC_OK(delete_volume("pvc-nb"));
  EXPECT_FALSE(exists("/dev/mapper/" + pool_ + "-vol-pvc-nb"));
}

TEST_F(CsiNode, AMountedVolumeIsNotDeletedAndUnknownVolumesAreNotFound) {
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("pvc-busy", 32 * kMiB, &vol));
  std::string target = stage_and_publish("pvc-busy", "pod-1");
  EXPECT_RPC_CODE(delete_volume("pvc-busy"), FAILED_PRECONDITION);
  EXPECT_TRUE(is_mount_point(target)) << "a refused delete touched the mount";

  EXPECT_RPC_CODE(stage("pvc-nope", staging_path("pvc-nope")), NOT_FOUND);
  EXPECT_RPC_CODE(publish("pvc-nope", staging_path("pvc-nope"), pod_path("pod-1", "pvc-nope")),
                  NOT_FOUND);
  EXPECT_RPC_CODE(unpublish("pvc-nope", pod_path("pod-1", "pvc-nope")), NOT_FOUND);
  EXPECT_RPC_CODE(unstage("pvc-nope", staging_path("pvc-nope")), NOT_FOUND);
  EXPECT_RPC_CODE(stage("", staging_path("pvc-busy")), INVALID_ARGUMENT);
  v1::NodeStageVolumeRequest no_cap;
  no_cap.set_volume_id("pvc-busy");
  no_cap.set_staging_target_path(staging_path("pvc-busy"));
  v1::NodeStageVolumeResponse out;
  EXPECT_RPC_CODE(call(node_stub_.get(), &v1::Node::Stub::NodeStageVolume, no_cap, &out),
                  INVALID_ARGUMENT);
  // Another volume onto a staging path in use.
  v1::CreateVolumeResponse other;
  ASSERT_RPC_OK(create_volume("pvc-other", 32 * kMiB, &other));
  EXPECT_RPC_CODE(stage("pvc-other", staging_path("pvc-busy")), ALREADY_EXISTS);
}

TEST_F(CsiNode, PathsOutsideTheKubeletDirectoryAreRefused) {
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("pvc-p", 32 * kMiB, &vol));
  const std::string outside = dir_ + "/elsewhere";
  std::filesystem::create_directories(outside);
  EXPECT_RPC_CODE(stage("pvc-p", outside), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(stage("pvc-p", kubelet_ + "/../elsewhere"), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(stage("pvc-p", kubelet_), INVALID_ARGUMENT);
  // A symlink inside the kubelet dir that leads out of it.
  ASSERT_EQ(::symlink(outside.c_str(), (kubelet_ + "/pods/escape").c_str()), 0);
  EXPECT_RPC_CODE(stage("pvc-p", kubelet_ + "/pods/escape"), INVALID_ARGUMENT);
  EXPECT_FALSE(is_mount_point(outside));

  std::string staging = staging_path("pvc-p");
  ASSERT_RPC_OK(stage("pvc-p", staging));
  EXPECT_RPC_CODE(publish("pvc-p", staging, outside + "/mount"), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(publish("pvc-p", staging, "/etc/stepsnap-csi-test"), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(publish("pvc-p", staging, kubelet_ + "/pods/escape/mount"), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(unpublish("pvc-p", "/etc"), INVALID_ARGUMENT);
  EXPECT_FALSE(exists(outside + "/mount"));
  EXPECT_FALSE(exists("/etc/stepsnap-csi-test"));
}

TEST_F(CsiNode, BlockModeBindsTheDeviceNodeIntoThePod) {
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("pvc-blk", 16 * kMiB, &vol, {}, nullptr, block_cap()));
  const std::string staging = staging_path("pvc-blk");
  const std::string target = pod_path("pod-blk", "pvc-blk");
  // A raw volume cannot be mounted.
  EXPECT_RPC_CODE(stage("pvc-blk", staging, mount_cap()), FAILED_PRECONDITION);

  ASSERT_RPC_OK(stage("pvc-blk", staging, block_cap()));
  ASSERT_RPC_OK(stage("pvc-blk", staging, block_cap()));
  ASSERT_RPC_OK(publish("pvc-blk", staging, target, false, block_cap()));
  ASSERT_RPC_OK(publish("pvc-blk", staging, target, false, block_cap()));
  struct stat st {};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  struct stat dev {};
  ASSERT_EQ(::stat(("/dev/mapper/" + pool_ + "-vol-pvc-blk").c_str(), &dev), 0);
  EXPECT_EQ(st.st_rdev, dev.st_rdev);

  // Bytes written through the pod's device are the volume's, and a
  // snapshot's and its clone's.
  ASSERT_EQ(sh("printf stepsnap-block | dd of=" + target +
               " bs=512 conv=sync,notrunc "
               "oflag=direct status=none")
                .rc,
            0);
  v1::CreateSnapshotResponse snap;
  ASSERT_RPC_OK(create_snapshot("snapshot-blk", "pvc-blk", &snap));
  v1::VolumeContentSource from;
  from.mutable_snapshot()->set_snapshot_id("snapshot-blk");
  v1::CreateVolumeResponse clone;
  ASSERT_RPC_OK(create_volume("pvc-blk-clone", 0, &clone, {}, &from, block_cap()));
  EXPECT_EQ(clone.volume().volume_context().at("fsType"), "none");
  EXPECT_EQ(sh("head -c 14 /dev/mapper/" + pool_ + "-vol-pvc-blk-clone").out, "stepsnap-block");

  // Read-only block is refused: a read-only bind does not stop writes to a
  // device node.
  EXPECT_RPC_CODE(publish("pvc-blk", staging, pod_path("pod-blk-ro", "pvc-blk"), true, block_cap()),
                  FAILED_PRECONDITION);

  ASSERT_RPC_OK(unpublish("pvc-blk", target));
  ASSERT_RPC_OK(unpublish("pvc-blk", target));
  EXPECT_FALSE(exists(target));
  ASSERT_RPC_OK(unstage("pvc-blk", staging));
  EXPECT_RPC_OK(delete_volume("pvc-blk"));
}

TEST_F(CsiNode, AnXfsCloneMountsBesideItsOrigin) {
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("pvc-x", 320 * kMiB, &vol, {{"fsType", "xfs"}}));
  std::string a = stage_and_publish("pvc-x", "pod-a");
  ASSERT_EQ(sh("echo xfs-data > " + a + "/f && sync").rc, 0);
  v1::VolumeContentSource from;
  from.mutable_volume()->set_volume_id("pvc-x");
  v1::CreateVolumeResponse clone;
  ASSERT_RPC_OK(create_volume("pvc-x-clone", 0, &clone, {}, &from));
  EXPECT_EQ(clone.volume().volume_context().at("fsType"), "xfs");
  std::string b = stage_and_publish("pvc-x-clone", "pod-b");
  EXPECT_EQ(read_file(b + "/f"), "xfs-data\n") << "same UUID as its origin, mounted with nouuid";
}

}  // namespace
}  // namespace stepsnap::testing
