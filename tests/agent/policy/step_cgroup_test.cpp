// StepCgroup against the running kernel's cgroup v2 hierarchy (label host,
// root): only cgroups beneath the agent's subtree are opened, and a kill
// reaches only the very cgroup that was registered.
#include "agent/policy/step_cgroup.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner/exec/cgroup.h"
#include "tests/agent/policy/cgroup_test_support.h"

namespace stepsnap::agent {
namespace {

using testing::CgroupTest;

TEST_F(CgroupTest, OpensAStepCgroupBeneathTheSubtreeWithItsInode) {
  auto& cg = make("p/r/s");
  auto step = StepCgroup::open(cg.path(), subtree_);
  ASSERT_TRUE(step) << step.error().message();
  EXPECT_EQ(step->id(), cg.id());
  EXPECT_EQ(step->populated(), false);
}

TEST_F(CgroupTest, EveryPathOutsideTheSubtreeIsRefused) {
  auto outside = runner::Cgroup::create(outside_name_ + "/victim");
  ASSERT_TRUE(outside) << outside.error().message();
  for (const std::string& path :
       {mount_, mount_ + "/system.slice", outside->path(), subtree_, subtree_ + "/",
        subtree_ + "/../" + outside_name_ + "/victim", subtree_ + "/./x", subtree_ + "x/y",
        std::string("relative/path")}) {
    auto step = StepCgroup::open(path, subtree_);
    ASSERT_FALSE(step) << path;
    EXPECT_EQ(step.error().err, EPERM) << path << ": " << step.error().message();
  }
}

TEST_F(CgroupTest, ASubtreeReachedThroughASymlinkIsRefused) {
  make("p/r/link");
  std::string link = "/tmp/stepsnap-authz-link-" + std::to_string(::getpid());
  ASSERT_EQ(::symlink(subtree_.c_str(), link.c_str()), 0);
  auto step = StepCgroup::open(link + "/p/r/link", link);
  ::unlink(link.c_str());
  ASSERT_FALSE(step);
  EXPECT_EQ(step.error().err, ELOOP) << step.error().message();
}

TEST_F(CgroupTest, AMissingCgroupIsNotFound) {
  auto step = StepCgroup::open(subtree_ + "/p/r/nobody", subtree_);
  ASSERT_FALSE(step);
  EXPECT_EQ(step.error().err, ENOENT);
}

TEST_F(CgroupTest, PopulatedSeesAProcessInside) {
  auto& cg = make("p/r/busy");
  pid_t pid = sleeper(cg);
  auto step = StepCgroup::open(cg.path(), subtree_);
  ASSERT_TRUE(step);
  EXPECT_EQ(step->populated(), true);
  ASSERT_TRUE(step->kill(step->id()));
  EXPECT_TRUE(killed(pid));
}

TEST_F(CgroupTest, ACgroupMadeAgainAtTheSamePathIsNeverKilledForTheOldStep) {
  auto& first = make("p/r/again");
  const std::string path = first.path();
  auto registered = StepCgroup::open(path, subtree_);
  ASSERT_TRUE(registered);
  const std::uint64_t registered_id = registered->id();
  ASSERT_TRUE(first.remove());
  auto second = runner::Cgroup::create(relative_ + "/p/r/again");
  ASSERT_TRUE(second) << second.error().message();
  pid_t pid = sleeper(*second);

  // Through the fd held since registration: that cgroup is gone.
  auto k = registered->kill(registered_id);
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().err, ENOENT) << k.error().message();
  // Opened again by path: another inode, refused.
  auto reopened = StepCgroup::open(path, subtree_);
  ASSERT_TRUE(reopened);
  ASSERT_NE(reopened->id(), registered_id);
  k = reopened->kill(registered_id);
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().err, ESTALE) << k.error().message();
  EXPECT_FALSE(killed(pid)) << "a process of the new cgroup was killed for the old step";

  ASSERT_TRUE(reopened->kill(reopened->id()));
  EXPECT_TRUE(killed(pid));
}

}  // namespace
}  // namespace stepsnap::agent
