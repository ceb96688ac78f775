// The step's capability set is pure logic: checked here (label unit).
#include "runner/exec/capabilities.h"

#include <gtest/gtest.h>
#include <linux/capability.h>

namespace stepsnap::runner {
namespace {

CapMask bit(int cap) { return CapMask{1} << cap; }

TEST(Capabilities, DefaultIsContainerdsSet) {
  // What `docker run` shows as CapEff for a root container.
  EXPECT_EQ(default_capabilities(), 0xa80425fbULL);
  EXPECT_EQ(capability_names(default_capabilities()),
            "CHOWN,DAC_OVERRIDE,FOWNER,FSETID,KILL,SETGID,SETUID,SETPCAP,NET_BIND_SERVICE,NET_RAW,"
            "SYS_CHROOT,MKNOD,AUDIT_WRITE,SETFCAP");
}

TEST(Capabilities, NamesMatchTheKernelsNumbers) {
  EXPECT_EQ(capability_number("CHOWN").value(), CAP_CHOWN);
  EXPECT_EQ(capability_number("SYS_ADMIN").value(), CAP_SYS_ADMIN);
  EXPECT_EQ(capability_number("cap_sys_admin").value(), CAP_SYS_ADMIN);
  EXPECT_EQ(capability_number("BPF").value(), CAP_BPF);
  EXPECT_EQ(capability_number("CHECKPOINT_RESTORE").value(), CAP_CHECKPOINT_RESTORE);
  EXPECT_EQ(all_capabilities(), (CapMask{1} << (CAP_LAST_CAP + 1)) - 1);
}

TEST(Capabilities, AddAndDropChangeTheDefault) {
  auto m = step_capabilities({"NET_ADMIN"}, {"NET_RAW", "CAP_MKNOD"});
  ASSERT_TRUE(m);
  EXPECT_EQ(*m,
            (default_capabilities() | bit(CAP_NET_ADMIN)) & ~bit(CAP_NET_RAW) & ~bit(CAP_MKNOD));
  EXPECT_EQ(step_capabilities({}, {"ALL"}).value(), 0u);
  EXPECT_EQ(step_capabilities({"ALL"}, {}).value(), all_capabilities());
  // An add wins over a drop, whatever their order on the command line.
  EXPECT_EQ(step_capabilities({"SYS_PTRACE"}, {"ALL"}).value(), bit(CAP_SYS_PTRACE));
}

TEST(Capabilities, UnknownNameIsOneLineNamingIt) {
  auto m = step_capabilities({"SUPERPOWER"}, {});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("SUPERPOWER"), std::string::npos);
  EXPECT_EQ(m.error().message().find('\n'), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::runner
