// Cgroup against the running kernel's cgroup v2 hierarchy (label host).
#include "runner/exec/cgroup.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

namespace stepsnap::runner {
namespace {

std::string unique_name(const char* what) {
  return std::string("stepsnap-test/") + what + "-" + std::to_string(getpid());
}

TEST(Cgroup, IdIsTheDirectoryInode) {
  auto cg = Cgroup::create(unique_name("id"));
  ASSERT_TRUE(cg) << cg.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(cg->path().c_str(), &st), 0);
  EXPECT_EQ(cg->id(), st.st_ino);
}

TEST(Cgroup, SecondCreateOfSamePathIsRefused) {
  auto name = unique_name("twice");
  auto first = Cgroup::create(name);
  ASSERT_TRUE(first);
  auto second = Cgroup::create(name);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().err, EEXIST);
}

TEST(Cgroup, RemoveKillsEverythingInsideAndDeletesTheDirectory) {
  auto cg = Cgroup::create(unique_name("kill"));
  ASSERT_TRUE(cg) << cg.error().message();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  ASSERT_TRUE(cg->add_process(child));
  auto populated = cg->populated();
  ASSERT_TRUE(populated);
  EXPECT_TRUE(*populated);

  std::string path = cg->path();
  ASSERT_TRUE(cg->remove());
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Cgroup, RelativePathWithDotDotIsRefused) {
  auto cg = Cgroup::create("../escape");
  ASSERT_FALSE(cg);
  EXPECT_EQ(cg.error().err, EINVAL);
}

}  // namespace
}  // namespace stepsnap::runner
