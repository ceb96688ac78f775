// The pure mapping of CSI requests onto stepsnapd's terms.
#include "csi/parameters.h"

#include <gtest/gtest.h>
#include <sys/mount.h>

#include "common/names.h"

namespace stepsnap::csi {
namespace {

using ::csi::v1::CapacityRange;
using ::csi::v1::VolumeCapability;
using grpc::StatusCode;

VolumeCapability mount_cap(
    const std::string& fs = "",
    VolumeCapability::AccessMode::Mode mode = VolumeCapability::AccessMode::SINGLE_NODE_WRITER) {
  VolumeCapability c;
  c.mutable_mount()->set_fs_type(fs);
  c.mutable_access_mode()->set_mode(mode);
  return c;
}

VolumeCapability block_cap() {
  VolumeCapability c;
  c.mutable_block();
  c.mutable_access_mode()->set_mode(VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return c;
}

Capabilities caps(std::initializer_list<VolumeCapability> list) {
  Capabilities out;
  for (const auto& c : list) *out.Add() = c;
  return out;
}

CapacityRange range(std::int64_t required, std::int64_t limit) {
  CapacityRange r;
  r.set_required_bytes(required);
  r.set_limit_bytes(limit);
  return r;
}

TEST(CsiParameters, KubernetesNamesAreTheirOwnIdsAndOthersAreHashed) {
  EXPECT_EQ(device_name_for("pvc-2f1e0c4c-1b7e-4b8e-9a55-0d1c6f3a9e11"),
            "pvc-2f1e0c4c-1b7e-4b8e-9a55-0d1c6f3a9e11");
  std::string odd = device_name_for("my volume/with slashes");
  EXPECT_EQ(odd.rfind("csi-", 0), 0u) << odd;
  EXPECT_EQ(odd.size(), 20u);
  EXPECT_TRUE(is_valid_name(odd));
  EXPECT_EQ(odd, device_name_for("my volume/with slashes")) << "the same name, the same id";
  EXPECT_NE(odd, device_name_for("my volume/with slashes2"));
  std::string longest(kMaxIdLength, 'a');
  EXPECT_EQ(device_name_for(longest), longest);
  EXPECT_EQ(device_name_for(longest + "a").rfind("csi-", 0), 0u);
  // Room for the clone's passing snapshot within the name rule.
  EXPECT_TRUE(is_valid_name(longest + std::string(kCloneSourceSuffix)));
}

TEST(CsiParameters, FilesystemComesFromFsTypeThenTheCapabilityThenExt4) {
  Parameters none;
  EXPECT_EQ(*filesystem_for(none, caps({mount_cap()})), "ext4");
  EXPECT_EQ(*filesystem_for(none, caps({mount_cap("xfs")})), "xfs");
  EXPECT_EQ(*filesystem_for(none, caps({block_cap()})), "none") << "block only: a raw device";
  Parameters xfs;
  xfs["fsType"] = "xfs";
  EXPECT_EQ(*filesystem_for(xfs, caps({mount_cap()})), "xfs");
  EXPECT_EQ(*filesystem_for(xfs, caps({block_cap()})), "xfs");
  Parameters sidecar;
  sidecar["csi.storage.k8s.io/pvc/name"] = "data";
  EXPECT_EQ(*filesystem_for(sidecar, caps({mount_cap()})), "ext4") << "sidecar keys are ignored";
}

TEST(CsiParameters, BadParametersAreInvalidArguments) {
  Parameters unknown;
  unknown["replicas"] = "3";
  auto r = filesystem_for(unknown, caps({mount_cap()}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.error().message.find("replicas"), std::string::npos) << r.error().message;

  Parameters btrfs;
  btrfs["fsType"] = "btrfs";
  EXPECT_EQ(filesystem_for(btrfs, caps({mount_cap()})).error().code, StatusCode::INVALID_ARGUMENT);
  Parameters ext4;
  ext4["fsType"] = "ext4";
  EXPECT_EQ(filesystem_for(ext4, caps({mount_cap("xfs")})).error().code,
            StatusCode::INVALID_ARGUMENT);
  Parameters raw;
  raw["fsType"] = "none";
  EXPECT_EQ(filesystem_for(raw, caps({mount_cap()})).error().code, StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(filesystem_for(Parameters(), caps({mount_cap("ext4"), mount_cap("xfs")})).error().code,
            StatusCode::INVALID_ARGUMENT);
}

TEST(CsiParameters, OnlySingleNodeAccessModesWithAnAccessTypePass) {
  EXPECT_TRUE(check_capability(mount_cap()));
  EXPECT_TRUE(check_capability(block_cap()));
  EXPECT_TRUE(
      check_capability(mount_cap("", VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY)));
  auto multi =
      check_capability(mount_cap("", VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER));
  ASSERT_FALSE(multi);
  EXPECT_EQ(multi.error().code, StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(multi.error().message.find("MULTI_NODE_MULTI_WRITER"), std::string::npos);
  VolumeCapability no_type;
  no_type.mutable_access_mode()->set_mode(VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  EXPECT_FALSE(check_capability(no_type));
  VolumeCapability no_mode;
  no_mode.mutable_mount();
  EXPECT_FALSE(check_capability(no_mode));
  EXPECT_EQ(check_capabilities(Capabilities()).error().code, StatusCode::INVALID_ARGUMENT);
}

TEST(CsiParameters, ARawVolumeCannotBeMountedAndAFsTypeMustMatch) {
  EXPECT_TRUE(check_capability_fits(block_cap(), "none"));
  EXPECT_FALSE(check_capability_fits(mount_cap(), "none"));
  EXPECT_TRUE(check_capability_fits(mount_cap(), "xfs"));
  EXPECT_FALSE(check_capability_fits(mount_cap("ext4"), "xfs"));
}

TEST(CsiParameters, SizesRoundUpToMiBWithinTheLimit) {
  EXPECT_EQ(*size_for(nullptr), kDefaultVolumeBytes);
  auto r = range(1, 0);
  EXPECT_EQ(*size_for(&r), 1u << 20);
  r = range(100 << 20, 0);
  EXPECT_EQ(*size_for(&r), 100u << 20);
  r = range((100 << 20) + 1, 0);
  EXPECT_EQ(*size_for(&r), 101u << 20);
  r = range(0, 10 << 20);
  EXPECT_EQ(*size_for(&r), 10u << 20) << "the default, capped at the limit";
  r = range(1000, 4096);
  EXPECT_EQ(*size_for(&r), 4096u) << "rounding stops at the limit, in whole sectors";
  r = range(20 << 20, 10 << 20);
  EXPECT_EQ(size_for(&r).error().code, StatusCode::OUT_OF_RANGE);
  r = range(1000, 1000);
  EXPECT_EQ(size_for(&r).error().code, StatusCode::OUT_OF_RANGE) << "no whole sector fits";
  r = range(-1, 0);
  EXPECT_EQ(size_for(&r).error().code, StatusCode::INVALID_ARGUMENT);
  r = range(std::int64_t{1} << 51, 0);
  EXPECT_EQ(size_for(&r).error().code, StatusCode::OUT_OF_RANGE);
}

TEST(CsiParameters, AnExistingSizeFitsARangeWhenBetweenItsEnds) {
  auto r = range(10 << 20, 20 << 20);
  EXPECT_TRUE(size_fits(10 << 20, &r));
  EXPECT_TRUE(size_fits(20 << 20, &r));
  EXPECT_FALSE(size_fits(9 << 20, &r));
  EXPECT_FALSE(size_fits(21 << 20, &r));
  EXPECT_TRUE(size_fits(1, nullptr));
}

TEST(CsiParameters, SourceLabelsNameTheKindAndId) {
  EXPECT_EQ(source_label(nullptr), "none");
  ::csi::v1::VolumeContentSource s;
  s.mutable_snapshot()->set_snapshot_id("snap-1");
  EXPECT_EQ(source_label(&s), "snapshot:snap-1");
  s.mutable_volume()->set_volume_id("pvc-1");
  EXPECT_EQ(source_label(&s), "volume:pvc-1");
}

TEST(CsiParameters, MountFlagsSplitIntoBitsAndData) {
  google::protobuf::RepeatedPtrField<std::string> flags;
  for (const char* f : {"noatime", "nosuid", "discard", "data=ordered", "rw"}) *flags.Add() = f;
  auto o = mount_options(flags, "ext4", false);
  EXPECT_EQ(o.flags, static_cast<unsigned long>(MS_NOATIME | MS_NOSUID));
  EXPECT_EQ(o.data, "discard,data=ordered");
  auto ro = mount_options(flags, "ext4", true);
  EXPECT_TRUE(ro.flags & MS_RDONLY);
  auto x = mount_options({}, "xfs", false);
  EXPECT_EQ(x.data, "nouuid") << "an xfs clone must mount beside its origin";
}

}  // namespace
}  // namespace stepsnap::csi
