// What the daemon may change because it made it (ownership.h).
#include "agent/daemon/ownership.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "tests/agent/test_db.h"

namespace stepsnap::agent {
namespace {

using testing::TempDir;

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(MakeOwnedDirs, AnExistingDirectoryKeepsItsMode) {
  // --socket /tmp/x.sock: /tmp exists (1777) and must stay as it is.
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 01777), 0);
  auto made = make_owned_dirs(dir.path(), 0755);
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_TRUE(made->empty());
  EXPECT_EQ(mode_of(dir.path()), 01777u);
}

TEST(MakeOwnedDirs, OnlyTheDirectoriesItMadeGetTheMode) {
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 01777), 0);
  const std::string deep = dir.path() + "/run/stepsnap";
  auto made = make_owned_dirs(deep, 0750);
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_EQ(*made, (std::vector<std::string>{dir.path() + "/run", deep}));
  EXPECT_EQ(mode_of(dir.path() + "/run"), 0750u);
  EXPECT_EQ(mode_of(deep), 0750u);
  EXPECT_EQ(mode_of(dir.path()), 01777u);
}

TEST(MakeOwnedDirs, AFileInTheWayIsNamed) {
  TempDir dir;
  std::ofstream(dir.file("f")) << "x";
  auto made = make_owned_dirs(dir.file("f"), 0755);
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().err, ENOTDIR);
}

// A metadata device as the kernel leaves it: magic at 32, transaction id at
// 48, little endian (struct thin_disk_superblock).
void write_superblock(const std::string& path, std::uint64_t magic, std::uint64_t txn) {
  std::string block(4096, '\0');
  for (int i = 0; i < 8; ++i) {
    block[32 + i] = static_cast<char>((magic >> (8 * i)) & 0xff);
    block[48 + i] = static_cast<char>((txn >> (8 * i)) & 0xff);
  }
  std::ofstream(path, std::ios::binary) << block;
}

TEST(ThinPoolSuperblock, APoolsMetadataIsRecognisedWithItsTransactionId) {
  TempDir dir;
  write_superblock(dir.file("meta"), 27022010, 16777218);
  auto sb = thin_pool_superblock(dir.file("meta"));
  ASSERT_TRUE(sb) << sb.error().message();
  ASSERT_TRUE(*sb);
  EXPECT_EQ(**sb, 16777218u);
}

TEST(ThinPoolSuperblock, AnEmptyOrForeignDeviceHasNone) {
  TempDir dir;
  write_superblock(dir.file("zeros"), 0, 0);
  write_superblock(dir.file("other"), 0xEF53, 7);
  std::ofstream(dir.file("short")) << "tiny";
  for (const char* f : {"zeros", "other", "short"}) {
    auto sb = thin_pool_superblock(dir.file(f));
    ASSERT_TRUE(sb) << sb.error().message();
    EXPECT_FALSE(*sb) << f;
  }
  EXPECT_FALSE(thin_pool_superblock(dir.file("missing")));
}

}  // namespace
}  // namespace stepsnap::agent
