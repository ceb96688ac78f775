// The mount plan is data: checked here without a kernel (label unit).
#include "runner/exec/mount_plan.h"

#include <gtest/gtest.h>

namespace stepsnap::runner {
namespace {
using K = MountOp::Kind;

ExecOptions with_volumes(std::vector<VolumeOption> volumes) {
  ExecOptions o;
  o.volumes = std::move(volumes);
  return o;
}

TEST(MountPlan, PrivateFirstThenCgroupThenVolumesThenProcThenMarshal) {
  auto plan = build_mount_plan(
      with_volumes({{"/srv/ws", "/home/jovyan", false}, {"/srv/data", "/data", true}}));
  ASSERT_TRUE(plan) << plan.error().message();
  std::vector<MountOp> want{{K::make_private, "", "/"},
                            {K::cgroup, "cgroup2", "/sys/fs/cgroup"},
                            {K::bind, "/srv/ws", "/home/jovyan"},
                            {K::bind, "/srv/data", "/data"},
                            {K::remount_ro, "", "/data"},
                            {K::proc, "proc", "/proc"},
                            {K::mkdir, "", "/home/jovyan/.marshal"}};
  EXPECT_EQ(*plan, want);
}

TEST(MountPlan, MarshalMustStayInsideTheWorkspace) {
  auto o = with_volumes({{"/srv/ws", "/ws", false}});
  o.marshal = "../escape";
  EXPECT_FALSE(build_mount_plan(o));
  o.marshal = "/ws/sub/.m";
  auto plan = build_mount_plan(o);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->back(), (MountOp{K::mkdir, "", "/ws/sub/.m"}));
}

TEST(MountPlan, RefusesRelativeRootAndProcTargets) {
  EXPECT_FALSE(build_mount_plan(with_volumes({{"/srv/ws", "ws", false}})));
  EXPECT_FALSE(build_mount_plan(with_volumes({{"/srv/ws", "/", false}})));
  EXPECT_FALSE(build_mount_plan(with_volumes({{"/srv/ws", "/proc/", false}})));
}

TEST(MountPlan, RefusesTargetsInTheCgroupTree) {
  for (std::string target : {"/sys/fs/cgroup", "/sys/fs/cgroup/", "/sys/fs/cgroup/unified/x"}) {
    auto plan = build_mount_plan(with_volumes({{"/srv/ws", target, false}}));
    ASSERT_FALSE(plan) << target;
    EXPECT_NE(plan.error().message().find("read-only cgroup"), std::string::npos)
        << plan.error().message();
  }
  EXPECT_TRUE(build_mount_plan(with_volumes({{"/srv/ws", "/sys/fs/cgroupish", false}})));
}

TEST(MountPlan, ReadOnlyWorkspaceCannotHoldTheMarshalFolder) {
  auto plan = build_mount_plan(with_volumes({{"/srv/ws", "/ws", true}}));
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().err, EROFS);
}

}  // namespace
}  // namespace stepsnap::runner
