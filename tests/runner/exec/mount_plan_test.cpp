// The mount plan is data: checked here without a kernel (label unit).
#include "runner/exec/mount_plan.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace stepsnap::runner {
namespace {
using K = MountOp::Kind;

ExecOptions with_volumes(std::vector<VolumeOption> volumes) {
  ExecOptions o;
  o.volumes = std::move(volumes);
  return o;
}

TEST(MountPlan, StagedRootThenReadOnlyThenFreshMountsThenVolumesThenPivotThenMarshal) {
  auto plan = build_mount_plan(with_volumes({{"/srv/ws", "/home/jovyan", false},
                                             {"/srv/data", "/data", true},
                                             {"/srv/in", "/home/jovyan/in", false},
                                             {"/srv/t", "/tmp/t", false}}));
  ASSERT_TRUE(plan) << plan.error().message();
  std::vector<MountOp> want{{K::make_private, "", "/"},
                            {K::new_root, "/", "/"},
                            {K::mount_point, "", "/proc"},
                            {K::mount_point, "", "/dev"},
                            {K::mount_point, "", "/tmp"},
                            {K::mount_point, "", "/run"},
                            // not /home/jovyan/in (inside the first volume), not /tmp/t
                            {K::mount_point, "", "/home/jovyan"},
                            {K::mount_point, "", "/data"},
                            {K::read_only_root, "", "/"},
                            {K::cgroup, "cgroup2", "/sys/fs/cgroup"},
                            {K::proc, "proc", "/proc"},
                            {K::read_only, "", "/proc/bus"},
                            {K::read_only, "", "/proc/fs"},
                            {K::read_only, "", "/proc/irq"},
                            {K::read_only, "", "/proc/sys"},
                            {K::read_only, "", "/proc/sysrq-trigger"},
                            {K::mask, "", "/proc/acpi"},
                            {K::mask, "", "/proc/asound"},
                            {K::mask, "", "/proc/kcore"},
                            {K::mask, "", "/proc/keys"},
                            {K::mask, "", "/proc/latency_stats"},
                            {K::mask, "", "/proc/timer_list"},
                            {K::mask, "", "/proc/timer_stats"},
                            {K::mask, "", "/proc/sched_debug"},
                            {K::mask, "", "/proc/scsi"},
                            {K::mask, "", "/sys/firmware"},
                            {K::mask, "", "/sys/devices/virtual/powercap"},
                            {K::dev, "minimal", "/dev"},
                            {K::tmpfs, "", "/tmp"},
                            {K::tmpfs, "", "/run"},
                            {K::hide, "", "/var/lib/stepsnap"},
                            {K::bind, "/srv/ws", "/home/jovyan"},
                            {K::bind, "/srv/data", "/data"},
                            {K::remount_ro, "", "/data"},
                            {K::bind, "/srv/in", "/home/jovyan/in"},
                            {K::bind, "/srv/t", "/tmp/t"},
                            {K::pivot, "", "/"},
                            {K::mkdir, "", "/home/jovyan/.marshal"}};
  EXPECT_EQ(*plan, want);
}

TEST(MountPlan, HostDirsAreBoundAtTheirOwnPathAfterTheVolumes) {
  auto o = with_volumes({{"/srv/ws", "/ws", false}});
  o.host_dirs = {"/tmp/stepsnap-metrics-x", "/srv/out"};
  auto plan = build_mount_plan(o);
  ASSERT_TRUE(plan) << plan.error().message();
  auto at = [&](const MountOp& op) { return std::find(plan->begin(), plan->end(), op); };
  ASSERT_NE(at({K::bind, "/srv/ws", "/ws"}), plan->end());
  EXPECT_EQ(at({K::bind, "/srv/ws", "/ws"}) + 1,
            at({K::bind, "/tmp/stepsnap-metrics-x", "/tmp/stepsnap-metrics-x"}));
  EXPECT_NE(at({K::mount_point, "", "/srv/out"}), plan->end());  // not under /tmp
  EXPECT_EQ(at({K::mount_point, "", "/tmp/stepsnap-metrics-x"}), plan->end());
  EXPECT_EQ(plan->back(), (MountOp{K::mkdir, "", "/ws/.marshal"}));
}

TEST(MountPlan, RootfsHostDevAndTheAgentsSocketDirectory) {
  auto o = with_volumes({});
  o.sandbox.rootfs = "/srv/image";
  o.sandbox.host_dev = true;
  o.agent_socket = "/srv/agent/stepsnapd.sock";
  auto plan = build_mount_plan(o);
  ASSERT_TRUE(plan) << plan.error().message();
  auto has = [&](const MountOp& op) {
    return std::find(plan->begin(), plan->end(), op) != plan->end();
  };
  EXPECT_EQ((*plan)[1], (MountOp{K::new_root, "/srv/image", "/"}));
  EXPECT_TRUE(has({K::dev, "host", "/dev"}));
  EXPECT_TRUE(has({K::hide, "", "/srv/agent"}));
  EXPECT_TRUE(has({K::hide, "", "/var/lib/stepsnap"}));
  // The default socket's directory is under the step's fresh /run already.
  o.agent_socket = "/run/stepsnap/stepsnapd.sock";
  plan = build_mount_plan(o);
  ASSERT_TRUE(plan);
  EXPECT_FALSE(has({K::hide, "", "/run/stepsnap"}));
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
