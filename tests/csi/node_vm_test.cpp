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

// The calls in the order the external-provisioner, the kubelet and the
// external-snapshotter make them for a pod, then a second pod on a volume
// restored from the first pod's snapshot, and everything taken down again;
// the data checked at each point.
TEST_F(CsiNode, TheKubeletAndSidecarSequenceKeepsTheDataAtEachPoint) {
  // external-provisioner: CreateVolume for the PVC, topology of this node.
  v1::CreateVolumeRequest create;
  create.set_name("pvc-0a1b2c3d-aaaa-bbbb-cccc-000000000001");
  create.mutable_capacity_range()->set_required_bytes(48 * kMiB);
  *create.add_volume_capabilities() = mount_cap("ext4");
  (*create.mutable_parameters())["fsType"] = "ext4";
  (*create.mutable_parameters())["csi.storage.k8s.io/pvc/name"] = "workspace";
  (*create.mutable_parameters())["csi.storage.k8s.io/pvc/namespace"] = "kubeflow-user";
  (*create.mutable_accessibility_requirements()
        ->add_requisite()
        ->mutable_segments())["topology.stepsnap.csi.local/node"] = node_;
  v1::CreateVolumeResponse made;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::CreateVolume, create, &made));
  const std::string id = made.volume().volume_id();
  EXPECT_EQ(id, create.name());

  // kubelet: stage, then publish into the pod's folder with pod info.
  const std::string staging = staging_path(id);
  ASSERT_RPC_OK(stage(id, staging, mount_cap("ext4")));
  const std::string target = pod_path("11111111-2222-3333-4444-555555555555", id);
  v1::NodePublishVolumeRequest pub;
  pub.set_volume_id(id);
  pub.set_staging_target_path(staging);
  pub.set_target_path(target);
  *pub.mutable_volume_capability() = mount_cap("ext4");
  *pub.mutable_volume_context() = made.volume().volume_context();
  (*pub.mutable_volume_context())["csi.storage.k8s.io/pod.name"] = "train-step";
  (*pub.mutable_volume_context())["csi.storage.k8s.io/pod.namespace"] = "kubeflow-user";
  (*pub.mutable_volume_context())["csi.storage.k8s.io/pod.uid"] =
      "11111111-2222-3333-4444-555555555555";
  v1::NodePublishVolumeResponse published;
  ASSERT_RPC_OK(call(node_stub_.get(), &v1::Node::Stub::NodePublishVolume, pub, &published));
  ASSERT_EQ(
      sh("mkdir -p " + target + "/.marshal && echo 42 > " + target + "/.marshal/x.txt && sync").rc,
      0);

  // external-snapshotter: a VolumeSnapshot of the PVC while the pod runs.
  v1::CreateSnapshotResponse snap;
  ASSERT_RPC_OK(create_snapshot("snapshot-0a1b2c3d-0001", id, &snap));
  ASSERT_EQ(sh("echo 43 > " + target + "/.marshal/x.txt && sync").rc, 0);

  // A PVC with dataSource the snapshot, for a second pod.
  v1::VolumeContentSource from;
  from.mutable_snapshot()->set_snapshot_id(snap.snapshot().snapshot_id());
  v1::CreateVolumeResponse restored;
  ASSERT_RPC_OK(create_volume("pvc-0a1b2c3d-aaaa-bbbb-cccc-000000000002", 48 * kMiB, &restored,
                              {{"fsType", "ext4"}}, &from, mount_cap("ext4")));
  const std::string id2 = restored.volume().volume_id();
  std::string second = stage_and_publish(id2, "66666666-7777-8888-9999-000000000000");
  EXPECT_EQ(read_file(second + "/.marshal/x.txt"), "42\n") << "the snapshot's moment";
  EXPECT_EQ(read_file(target + "/.marshal/x.txt"), "43\n") << "the first pod's volume moved on";

  // Pods gone: unpublish, unstage, delete, in the kubelet's and the
  // provisioner's order; then the snapshot.
  for (const auto& [vol, path] : {std::pair{id2, second}, std::pair{id, target}}) {
    ASSERT_RPC_OK(unpublish(vol, path));
    ASSERT_RPC_OK(unstage(vol, staging_path(vol)));
    ASSERT_RPC_OK(delete_volume(vol));
    EXPECT_FALSE(exists("/dev/mapper/" + pool_ + "-vol-" + vol));
  }
  v1::DeleteSnapshotRequest del;
  del.set_snapshot_id(snap.snapshot().snapshot_id());
  v1::DeleteSnapshotResponse deleted;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::DeleteSnapshot, del, &deleted));
  EXPECT_TRUE(ok("volume.list", json::object())["volumes"].empty());
  EXPECT_TRUE(ok("snapshot.list", json::object())["snapshots"].empty());
}

}  // namespace
}  // namespace stepsnap::testing
