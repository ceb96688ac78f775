// stepsnap-csi's Identity and Controller services, end to end: the real
// binary over its socket, a real stepsnapd and dm-thin pool in the guest.
// Every create and delete is sent twice: the spec wants them idempotent.
#include <sys/stat.h>

#include "tests/csi/csi_driver_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;

constexpr std::int64_t kMiB = 1 << 20;

const std::string kTopologyKey = "topology.stepsnap.csi.local/node";

class CsiController : public CsiDriverFixture {};

TEST_F(CsiController, IdentityNamesThePluginAndIsReadyOnceStepsnapdAnswers) {
  v1::GetPluginInfoResponse info;
  ASSERT_RPC_OK(
      call(identity_.get(), &v1::Identity::Stub::GetPluginInfo, v1::GetPluginInfoRequest(), &info));
  EXPECT_EQ(info.name(), "stepsnap.csi.local");
  EXPECT_FALSE(info.vendor_version().empty());

  v1::GetPluginCapabilitiesResponse caps;
  ASSERT_RPC_OK(call(identity_.get(), &v1::Identity::Stub::GetPluginCapabilities,
                     v1::GetPluginCapabilitiesRequest(), &caps));
  std::set<int> services;
  for (const auto& c : caps.capabilities()) services.insert(c.service().type());
  EXPECT_EQ(services,
            (std::set<int>{v1::PluginCapability::Service::CONTROLLER_SERVICE,
                           v1::PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS}));

  v1::ProbeResponse probe;
  ASSERT_RPC_OK(call(identity_.get(), &v1::Identity::Stub::Probe, v1::ProbeRequest(), &probe));
  ASSERT_TRUE(probe.has_ready());
  EXPECT_TRUE(probe.ready().value());

  // A second driver whose stepsnapd is not there: up, but not ready.
  std::string lonely = dir_ + "/lonely.sock";
  pid_t other = start_driver(lonely, dir_ + "/no-such-agent.sock", dir_ + "/lonely.log");
  ASSERT_TRUE(exists(lonely)) << read_file(dir_ + "/lonely.log");
  auto stub = v1::Identity::NewStub(
      grpc::CreateChannel("unix://" + lonely, grpc::InsecureChannelCredentials()));
  v1::ProbeResponse not_ready;
  EXPECT_RPC_OK(call(stub.get(), &v1::Identity::Stub::Probe, v1::ProbeRequest(), &not_ready));
  ASSERT_TRUE(not_ready.has_ready());
  EXPECT_FALSE(not_ready.ready().value());
  // Its controller calls fail UNAVAILABLE (the CO retries), not INTERNAL.
  auto cstub = v1::Controller::NewStub(
      grpc::CreateChannel("unix://" + lonely, grpc::InsecureChannelCredentials()));
  v1::CreateVolumeRequest req;
  req.set_name("x");
  *req.add_volume_capabilities() = mount_cap();
  v1::CreateVolumeResponse out;
  EXPECT_RPC_CODE(call(cstub.get(), &v1::Controller::Stub::CreateVolume, req, &out), UNAVAILABLE);

  // SIGTERM: a clean exit that removes the socket.
  int status = stop_driver(other, SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(exists(lonely)) << "the socket outlived the driver";
}

TEST_F(CsiController, ASecondDriverOnALiveSocketIsRefusedAndAStaleOneIsTakenOver) {
  auto refused = sh(std::string(STEPSNAP_CSI_PATH) + " --endpoint unix://" + endpoint_ +
                    " --node-id " + node_ + " --agent-socket " + socket_);
  EXPECT_EQ(refused.rc, 1);
  EXPECT_NE(refused.err.find("another process serves it"), std::string::npos) << refused.err;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;

  // kill -9 leaves the socket file; the next start removes it and serves.
  stop_driver(driver_, SIGKILL);
  driver_ = -1;
  ASSERT_TRUE(exists(endpoint_));
  driver_ = start_driver(endpoint_, socket_, dir_ + "/csi.log");
  v1::ProbeResponse probe;
  for (int i = 0; i < 100; ++i) {
    if (call(identity_.get(), &v1::Identity::Stub::Probe, v1::ProbeRequest(), &probe).ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(probe.ready().value());
}

TEST_F(CsiController, CapabilitiesAndNodeInfoPinVolumesToThisNode) {
  v1::ControllerGetCapabilitiesResponse caps;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ControllerGetCapabilities,
                     v1::ControllerGetCapabilitiesRequest(), &caps));
  std::set<int> rpcs;
  for (const auto& c : caps.capabilities()) rpcs.insert(c.rpc().type());
  using R = v1::ControllerServiceCapability::RPC;
  EXPECT_EQ(rpcs, (std::set<int>{R::CREATE_DELETE_VOLUME, R::CREATE_DELETE_SNAPSHOT,
                                 R::LIST_SNAPSHOTS, R::CLONE_VOLUME, R::GET_CAPACITY}));

  v1::NodeGetInfoResponse info;
  ASSERT_RPC_OK(
      call(node_stub_.get(), &v1::Node::Stub::NodeGetInfo, v1::NodeGetInfoRequest(), &info));
  EXPECT_EQ(info.node_id(), node_);
  EXPECT_EQ(info.accessible_topology().segments().at(kTopologyKey), node_);

  v1::NodeGetCapabilitiesResponse ncaps;
  ASSERT_RPC_OK(call(node_stub_.get(), &v1::Node::Stub::NodeGetCapabilities,
                     v1::NodeGetCapabilitiesRequest(), &ncaps));
  ASSERT_EQ(ncaps.capabilities_size(), 1);
  EXPECT_EQ(ncaps.capabilities(0).rpc().type(),
            v1::NodeServiceCapability::RPC::STAGE_UNSTAGE_VOLUME);

  // GetCapacity: the pool's free bytes here, nothing for another node.
  v1::GetCapacityResponse here;
  ASSERT_RPC_OK(
      call(controller_.get(), &v1::Controller::Stub::GetCapacity, v1::GetCapacityRequest(), &here));
  EXPECT_GT(here.available_capacity(), 400 * kMiB) << "a 512 MiB pool, nearly empty";
  EXPECT_LE(here.available_capacity(), 512 * kMiB);
  v1::GetCapacityRequest elsewhere;
  (*elsewhere.mutable_accessible_topology()->mutable_segments())[kTopologyKey] = "node-b";
  v1::GetCapacityResponse there;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::GetCapacity, elsewhere, &there));
  EXPECT_EQ(there.available_capacity(), 0);

  // Written blocks are gone from the free space.
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("cap", 128 * kMiB, &vol, {}, nullptr, block_cap()));
  ASSERT_EQ(sh("dd if=/dev/urandom of=/dev/mapper/" + pool_ +
               "-vol-cap bs=1M count=64 oflag=direct status=none")
                .rc,
            0);
  v1::GetCapacityResponse after;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::GetCapacity,
                     v1::GetCapacityRequest(), &after));
  EXPECT_LE(after.available_capacity(), here.available_capacity() - 64 * kMiB);
}

TEST_F(CsiController, CreateVolumeIsIdempotentByNameAndRefusesOtherParameters) {
  v1::CreateVolumeResponse first, second;
  ASSERT_RPC_OK(create_volume("pvc-data", 64 * kMiB, &first));
  ASSERT_RPC_OK(create_volume("pvc-data", 64 * kMiB, &second));
  EXPECT_EQ(first.volume().volume_id(), "pvc-data");
  EXPECT_EQ(second.volume().volume_id(), first.volume().volume_id());
  EXPECT_EQ(first.volume().capacity_bytes(), 64 * kMiB);
  ASSERT_EQ(first.volume().accessible_topology_size(), 1);
  EXPECT_EQ(first.volume().accessible_topology(0).segments().at(kTopologyKey), node_);
  EXPECT_EQ(first.volume().volume_context().at("fsType"), "ext4");
  // One device in the pool, with an ext4 on it.
  json listed = ok("volume.list", json::object());
  ASSERT_EQ(listed["volumes"].size(), 1u) << listed.dump();
  EXPECT_EQ(sh("blkid -o value -s TYPE /dev/mapper/" + pool_ + "-vol-pvc-data").out, "ext4\n");

  v1::CreateVolumeResponse other;
  EXPECT_RPC_CODE(create_volume("pvc-data", 128 * kMiB, &other), ALREADY_EXISTS);
  EXPECT_RPC_CODE(create_volume("pvc-data", 64 * kMiB, &other, {{"fsType", "xfs"}}),
                  ALREADY_EXISTS);
  EXPECT_RPC_CODE(create_volume("pvc-data", 64 * kMiB, &other, {}, nullptr, block_cap()),
                  ALREADY_EXISTS)
      << "an ext4 volume asked again as a raw device";

  // Malformed requests.
  EXPECT_RPC_CODE(create_volume("", 64 * kMiB, &other), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(create_volume("pvc-x", 64 * kMiB, &other, {{"replicas", "3"}}), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(create_volume("pvc-x", 64 * kMiB, &other, {{"fsType", "btrfs"}}),
                  INVALID_ARGUMENT);
  EXPECT_RPC_CODE(
      create_volume("pvc-x", 64 * kMiB, &other, {}, nullptr,
                    mount_cap("", v1::VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER)),
      INVALID_ARGUMENT);
  v1::CreateVolumeRequest no_caps;
  no_caps.set_name("pvc-x");
  EXPECT_RPC_CODE(call(controller_.get(), &v1::Controller::Stub::CreateVolume, no_caps, &other),
                  INVALID_ARGUMENT);
  v1::CreateVolumeRequest backwards;
  backwards.set_name("pvc-x");
  *backwards.add_volume_capabilities() = mount_cap();
  backwards.mutable_capacity_range()->set_required_bytes(20 * kMiB);
  backwards.mutable_capacity_range()->set_limit_bytes(10 * kMiB);
  EXPECT_RPC_CODE(call(controller_.get(), &v1::Controller::Stub::CreateVolume, backwards, &other),
                  OUT_OF_RANGE);
  // Only this node can hold it.
  v1::CreateVolumeRequest elsewhere;
  elsewhere.set_name("pvc-x");
  *elsewhere.add_volume_capabilities() = mount_cap();
  (*elsewhere.mutable_accessibility_requirements()
        ->add_requisite()
        ->mutable_segments())[kTopologyKey] = "node-b";
  EXPECT_RPC_CODE(call(controller_.get(), &v1::Controller::Stub::CreateVolume, elsewhere, &other),
                  RESOURCE_EXHAUSTED);
  EXPECT_EQ(ok("volume.list", json::object())["volumes"].size(), 1u) << "a refusal made a device";

  // An xfs volume and a raw one (block only).
  v1::CreateVolumeResponse xfs, raw;
  ASSERT_RPC_OK(create_volume("pvc-xfs", 320 * kMiB, &xfs, {{"fsType", "xfs"}}));
  EXPECT_EQ(sh("blkid -o value -s TYPE /dev/mapper/" + pool_ + "-vol-pvc-xfs").out, "xfs\n");
  ASSERT_RPC_OK(create_volume("pvc-raw", 16 * kMiB, &raw, {}, nullptr, block_cap()));
  EXPECT_EQ(raw.volume().volume_context().at("fsType"), "none");
  EXPECT_NE(sh("blkid /dev/mapper/" + pool_ + "-vol-pvc-raw").rc, 0) << "no filesystem";

  // ValidateVolumeCapabilities.
  v1::ValidateVolumeCapabilitiesRequest validate;
  validate.set_volume_id("pvc-data");
  *validate.add_volume_capabilities() = mount_cap("ext4");
  v1::ValidateVolumeCapabilitiesResponse confirmed;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ValidateVolumeCapabilities, validate,
                     &confirmed));
  EXPECT_TRUE(confirmed.has_confirmed()) << confirmed.message();
  *validate.mutable_volume_capabilities(0) = mount_cap("xfs");
  v1::ValidateVolumeCapabilitiesResponse refused;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ValidateVolumeCapabilities, validate,
                     &refused));
  EXPECT_FALSE(refused.has_confirmed());
  EXPECT_FALSE(refused.message().empty());
  validate.set_volume_id("pvc-nope");
  EXPECT_RPC_CODE(call(controller_.get(), &v1::Controller::Stub::ValidateVolumeCapabilities,
                       validate, &refused),
                  NOT_FOUND);

  // Delete, twice; an unknown id is already deleted.
  EXPECT_RPC_OK(delete_volume("pvc-data"));
  EXPECT_RPC_OK(delete_volume("pvc-data"));
  EXPECT_RPC_OK(delete_volume("pvc-never-made"));
  EXPECT_RPC_CODE(delete_volume(""), INVALID_ARGUMENT);
  EXPECT_FALSE(exists("/dev/mapper/" + pool_ + "-vol-pvc-data"));
  // The name is free again.
  ASSERT_RPC_OK(create_volume("pvc-data", 128 * kMiB, &other));
  EXPECT_EQ(other.volume().capacity_bytes(), 128 * kMiB);
}

TEST_F(CsiController, SnapshotsAndClonesCarryTheDataOfTheirMoment) {
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("pvc-ws", 64 * kMiB, &vol));
  std::string ws = stage_and_publish("pvc-ws", "pod-1");
  ASSERT_EQ(sh("echo before > " + ws + "/data.txt").rc, 0);

  v1::CreateSnapshotResponse snap, again;
  ASSERT_RPC_OK(create_snapshot("snapshot-1", "pvc-ws", &snap));
  ASSERT_RPC_OK(create_snapshot("snapshot-1", "pvc-ws", &again));
  EXPECT_EQ(snap.snapshot().snapshot_id(), "snapshot-1");
  EXPECT_EQ(again.snapshot().snapshot_id(), "snapshot-1");
  EXPECT_EQ(snap.snapshot().source_volume_id(), "pvc-ws");
  EXPECT_TRUE(snap.snapshot().ready_to_use());
  EXPECT_EQ(snap.snapshot().size_bytes(), 64 * kMiB);
  EXPECT_GT(snap.snapshot().creation_time().seconds(), 1700000000);
  EXPECT_EQ(snap.snapshot().creation_time().seconds(), again.snapshot().creation_time().seconds());
  EXPECT_EQ(ok("snapshot.list", {{"volume", "pvc-ws"}})["snapshots"].size(), 1u);

  ASSERT_EQ(sh("echo after > " + ws + "/data.txt && sync").rc, 0);

  // Errors of CreateSnapshot.
  v1::CreateVolumeResponse other_vol;
  ASSERT_RPC_OK(create_volume("pvc-other", 16 * kMiB, &other_vol));
  v1::CreateSnapshotResponse refused;
  EXPECT_RPC_CODE(create_snapshot("snapshot-1", "pvc-other", &refused), ALREADY_EXISTS);
  EXPECT_RPC_CODE(create_snapshot("snapshot-x", "pvc-nope", &refused), NOT_FOUND);
  EXPECT_RPC_CODE(create_snapshot("", "pvc-ws", &refused), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(create_snapshot("snapshot-x", "", &refused), INVALID_ARGUMENT);
  EXPECT_RPC_CODE(create_snapshot("pvc-other", "pvc-ws", &refused), ALREADY_EXISTS)
      << "a snapshot may not take a volume's name";

  // A volume from the snapshot holds "before"; twice gives the same one.
  v1::VolumeContentSource from_snap;
  from_snap.mutable_snapshot()->set_snapshot_id("snapshot-1");
  v1::CreateVolumeResponse restored, restored_again;
  ASSERT_RPC_OK(create_volume("pvc-restored", 64 * kMiB, &restored, {}, &from_snap));
  ASSERT_RPC_OK(create_volume("pvc-restored", 64 * kMiB, &restored_again, {}, &from_snap));
  EXPECT_EQ(restored.volume().volume_id(), "pvc-restored");
  EXPECT_EQ(restored.volume().content_source().snapshot().snapshot_id(), "snapshot-1");
  EXPECT_EQ(restored.volume().capacity_bytes(), 64 * kMiB);
  std::string r = stage_and_publish("pvc-restored", "pod-2");
  EXPECT_EQ(read_file(r + "/data.txt"), "before\n");

  // A clone of the live volume (CLONE_VOLUME) holds "after".
  v1::VolumeContentSource from_vol;
  from_vol.mutable_volume()->set_volume_id("pvc-ws");
  v1::CreateVolumeResponse cloned, cloned_again;
  ASSERT_RPC_OK(create_volume("pvc-cloned", 0, &cloned, {}, &from_vol));
  ASSERT_RPC_OK(create_volume("pvc-cloned", 0, &cloned_again, {}, &from_vol));
  EXPECT_EQ(cloned.volume().content_source().volume().volume_id(), "pvc-ws");
  std::string c = stage_and_publish("pvc-cloned", "pod-3");
  EXPECT_EQ(read_file(c + "/data.txt"), "after\n");
  // No passing snapshot stays behind.
  for (const auto& s : ok("snapshot.list", json::object())["snapshots"])
    EXPECT_EQ(s.value("name", "").find("clonesrc"), std::string::npos) << s.dump();
  // The clone is its own: writing it leaves the source alone.
  ASSERT_EQ(sh("echo clone > " + c + "/data.txt && sync").rc, 0);
  EXPECT_EQ(read_file(ws + "/data.txt"), "after\n");

  // Errors of a sourced CreateVolume.
  v1::CreateVolumeResponse bad;
  v1::VolumeContentSource nope;
  nope.mutable_snapshot()->set_snapshot_id("snapshot-nope");
  EXPECT_RPC_CODE(create_volume("pvc-bad", 0, &bad, {}, &nope), NOT_FOUND);
  nope.mutable_volume()->set_volume_id("pvc-nope");
  EXPECT_RPC_CODE(create_volume("pvc-bad", 0, &bad, {}, &nope), NOT_FOUND);
  EXPECT_RPC_CODE(create_volume("pvc-bad", 128 * kMiB, &bad, {}, &from_snap), OUT_OF_RANGE)
      << "a volume from a source keeps its size";
  EXPECT_RPC_CODE(create_volume("pvc-bad", 0, &bad, {{"fsType", "xfs"}}, &from_snap),
                  INVALID_ARGUMENT)
      << "a volume from a source keeps its filesystem";
  EXPECT_RPC_CODE(create_volume("pvc-restored", 64 * kMiB, &bad, {}, &from_vol), ALREADY_EXISTS)
      << "the same name from another source";

  // ListSnapshots: two more, then pages of one.
  ASSERT_RPC_OK(create_snapshot("snapshot-2", "pvc-ws", &snap));
  ASSERT_RPC_OK(create_snapshot("snapshot-3", "pvc-other", &snap));
  std::vector<std::string> seen;
  v1::ListSnapshotsRequest page;
  page.set_max_entries(1);
  for (int i = 0; i < 10; ++i) {
    v1::ListSnapshotsResponse got;
    ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ListSnapshots, page, &got));
    ASSERT_LE(got.entries_size(), 1);
    for (const auto& e : got.entries()) seen.push_back(e.snapshot().snapshot_id());
    if (got.next_token().empty()) break;
    page.set_starting_token(got.next_token());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"snapshot-1", "snapshot-2", "snapshot-3"}));

  v1::ListSnapshotsRequest by_volume;
  by_volume.set_source_volume_id("pvc-ws");
  v1::ListSnapshotsResponse of_ws;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ListSnapshots, by_volume, &of_ws));
  ASSERT_EQ(of_ws.entries_size(), 2);
  for (const auto& e : of_ws.entries()) EXPECT_EQ(e.snapshot().source_volume_id(), "pvc-ws");
  by_volume.set_source_volume_id("pvc-nope");
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ListSnapshots, by_volume, &of_ws));
  EXPECT_EQ(of_ws.entries_size(), 0);

  v1::ListSnapshotsRequest by_id;
  by_id.set_snapshot_id("snapshot-3");
  v1::ListSnapshotsResponse one;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ListSnapshots, by_id, &one));
  ASSERT_EQ(one.entries_size(), 1);
  EXPECT_EQ(one.entries(0).snapshot().source_volume_id(), "pvc-other");
  by_id.set_snapshot_id("snapshot-nope");
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ListSnapshots, by_id, &one));
  EXPECT_EQ(one.entries_size(), 0);

  v1::ListSnapshotsRequest bad_token;
  bad_token.set_starting_token("not a token!");
  v1::ListSnapshotsResponse none;
  EXPECT_RPC_CODE(call(controller_.get(), &v1::Controller::Stub::ListSnapshots, bad_token, &none),
                  ABORTED);

  // DeleteSnapshot, twice; the volume made from it lives on.
  v1::DeleteSnapshotRequest del;
  del.set_snapshot_id("snapshot-1");
  v1::DeleteSnapshotResponse deleted;
  EXPECT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::DeleteSnapshot, del, &deleted));
  EXPECT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::DeleteSnapshot, del, &deleted));
  del.set_snapshot_id("");
  EXPECT_RPC_CODE(call(controller_.get(), &v1::Controller::Stub::DeleteSnapshot, del, &deleted),
                  INVALID_ARGUMENT);
  EXPECT_EQ(read_file(r + "/data.txt"), "before\n");
  by_id.set_snapshot_id("snapshot-1");
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::ListSnapshots, by_id, &one));
  EXPECT_EQ(one.entries_size(), 0);
}

class CsiSmallPool : public CsiDriverFixture {
 protected:
  CsiSmallPool() { data_size_ = "40M"; }  // 640 blocks of 64 KiB
};

TEST_F(CsiSmallPool, AFullPoolIsResourceExhausted) {
  v1::CreateVolumeResponse vol;
  ASSERT_RPC_OK(create_volume("pvc-big", 64 * kMiB, &vol, {}, nullptr, block_cap()));
  // More than the pool holds: the pool errors the write and goes
  // out_of_data_space.
  auto fill = sh("dd if=/dev/zero of=/dev/mapper/" + pool_ +
                 "-vol-pvc-big bs=1M count=64 oflag=direct conv=notrunc status=none");
  EXPECT_NE(fill.rc, 0) << "64 MiB fitted in a 40 MiB pool";

  v1::CreateSnapshotResponse snap;
  EXPECT_RPC_CODE(create_snapshot("snapshot-full", "pvc-big", &snap), RESOURCE_EXHAUSTED);
  v1::CreateSnapshotResponse again;
  EXPECT_RPC_CODE(create_snapshot("snapshot-full", "pvc-big", &again), RESOURCE_EXHAUSTED);
  v1::CreateVolumeResponse more;
  EXPECT_RPC_CODE(create_volume("pvc-more", 16 * kMiB, &more), RESOURCE_EXHAUSTED);
  v1::GetCapacityResponse capacity;
  ASSERT_RPC_OK(call(controller_.get(), &v1::Controller::Stub::GetCapacity,
                     v1::GetCapacityRequest(), &capacity));
  EXPECT_EQ(capacity.available_capacity(), 0);
  EXPECT_TRUE(ok("snapshot.list", json::object())["snapshots"].empty())
      << "a refusal left a record";
}

}  // namespace
}  // namespace stepsnap::testing
