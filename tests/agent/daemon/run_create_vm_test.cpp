// run.create, a run's volumes as one operation (issue #14 item 6), inside
// the scripts/vm guest (label vm): the initial snapshots of all the run's
// volumes are one instant, a failure in a later part leaves nothing behind,
// and two runs started in the same second get two ids.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "dm/dm_task.h"
#include "dm/thin_pool.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using json = nlohmann::json;

// The decimal number in the first sector of a block device, read past the
// page cache; -1 when it cannot be read.
long long counter_at(const std::string& dev) {
  int fd = ::open(dev.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return -1;
  void* buf = std::aligned_alloc(4096, 4096);
  ssize_t n = ::pread(fd, buf, 4096, 0);
  ::close(fd);
  long long value = -1;
  if (n >= 16) value = std::atoll(std::string(static_cast<char*>(buf), 16).c_str());
  std::free(buf);
  return value;
}

class RunCreateVm : public StepsnapdFixture {
 protected:
  std::string volume(const std::string& name) {
    json v = ok("volume.create", {{"name", name}, {"size_bytes", 8 << 20}});
    return v.value("path", "");
  }
  std::set<dm::ThinId> pool_ids() {
    auto pool = dm::ThinPool::open(pool_ + "-pool");
    if (!pool) return {};
    auto ids = pool->list_thin_ids();
    if (!ids) return {};
    return {ids->begin(), ids->end()};
  }
};

// A writer puts 1, 2, 3, ... first into volume a, then into volume b, with
// direct I/O. Snapshots of one instant see a equal to b or one ahead of it;
// separate snapshots one after the other would see b run ahead of a.
TEST_F(RunCreateVm, TheRunsInitialSnapshotsAreOneInstantAcrossItsVolumes) {
  const std::string a = volume("a"), b = volume("b");
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  const std::string stop = dir_ + "/stop-writer";
  const std::string one =
      "printf %016d $i | dd bs=512 count=1 conv=sync,notrunc oflag=direct "
      "status=none of=";
  const std::string script =
      "i=0; while [ ! -e " + stop + " ]; do i=$((i+1)); " + one + a + "; " + one + b + "; done";
  pid_t writer = ::fork();
  if (writer == 0) {
    ::execl("/bin/sh", "sh", "-c", script.c_str(), nullptr);
    ::_exit(127);
  }
  ASSERT_GT(writer, 0);
  for (int i = 0; i < 600 && counter_at(a) < 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GE(counter_at(a), 3) << "the writer did not get going";

  json made = ok("run.create", {{"pipeline", "p"}, {"volumes", {"a", "b"}}});
  sh("touch " + stop);
  int status = 0;
  ::waitpid(writer, &status, 0);

  ASSERT_EQ(made["clones"].size(), 2u) << made.dump();
  ASSERT_EQ(made["initial_snapshots"].size(), 2u) << made.dump();
  const long long in_a = counter_at(made["clones"][0].value("path", ""));
  const long long in_b = counter_at(made["clones"][1].value("path", ""));
  std::cout << "run clones: a holds " << in_a << ", b holds " << in_b << "\n";
  EXPECT_GE(in_a, 3);
  EXPECT_TRUE(in_a == in_b || in_a == in_b + 1)
      << "a holds " << in_a << ", b holds " << in_b << ": not one instant";

  const std::string run = made.value("run", "");
  EXPECT_EQ(run.rfind("run-", 0), 0u) << run;
  for (const auto& s : made["initial_snapshots"]) {
    EXPECT_EQ(s["step"].value("phase", ""), "initial") << s.dump();
    EXPECT_EQ(s["step"].value("run", ""), run) << s.dump();
  }
  for (const auto& c : made["clones"]) {
    EXPECT_EQ(c["run_clone"].value("run", ""), run) << c.dump();
  }
  for (const auto& e : events_of("snapshot.created")) {
    EXPECT_EQ(e["data"].value("group_size", 0), 2) << e.dump();
  }
  // run.clone finds the run's clones: the same devices, not new ones.
  json again = ok("run.clone", {{"pipeline", "p"}, {"run", run}, {"volume", "b"}});
  EXPECT_EQ(again.value("name", ""), made["clones"][1].value("name", ""));
}

TEST_F(RunCreateVm, TwoRunsInTheSameSecondGetTwoIdsAndAGivenIdIsNeverReused) {
  ASSERT_FALSE(volume("ws").empty());
  json first = ok("run.create", {{"pipeline", "p"}, {"volumes", {"ws"}}});
  json second = ok("run.create", {{"pipeline", "p"}, {"volumes", {"ws"}}});
  const std::string r1 = first.value("run", ""), r2 = second.value("run", "");
  ASSERT_FALSE(r1.empty());
  ASSERT_FALSE(r2.empty());
  EXPECT_NE(r1, r2);
  EXPECT_NE(first["clones"][0].value("name", ""), second["clones"][0].value("name", ""));

  json clash = call("run.create", {{"pipeline", "p"}, {"run", r1}, {"volumes", {"ws"}}});
  EXPECT_FALSE(clash.value("ok", true)) << clash.dump();
  EXPECT_EQ(clash["error"].value("code", ""), "exists") << clash.dump();
  EXPECT_NE(clash["error"].value("message", "").find("pick another run id"), std::string::npos)
      << clash.dump();
}

// The third volume's clone cannot be activated (a device of its dm name is
// already there: an error target, built into dm-mod), after the group snapshot and two clones were
// made: every one of them goes, no row and no event is left, and the same run can then be made once
// the name is free.
TEST_F(RunCreateVm, AFailingLaterPartLeavesNothingBehind) {
  for (const char* v : {"a", "b", "c"}) ASSERT_FALSE(volume(v).empty());
  const std::set<dm::ThinId> ids_before = pool_ids();
  ASSERT_EQ(ids_before.size(), 3u);
  const std::string planted = pool_ + "-vol-p.rx.c";
  auto made = dm::create_device(planted, {dm::Target{0, 16, "error", ""}});
  ASSERT_TRUE(made) << made.error().message();

  json failed =
      call("run.create", {{"pipeline", "p"}, {"run", "rx"}, {"volumes", {"a", "b", "c"}}});
  ASSERT_FALSE(failed.value("ok", true)) << failed.dump();
  std::cout << "refused: " << failed["error"].value("message", "") << "\n";

  EXPECT_EQ(pool_ids(), ids_before) << "a thin device of the failed run is left in the pool";
  json snaps = ok("snapshot.list", json::object());
  EXPECT_TRUE(snaps["snapshots"].empty()) << snaps.dump();
  json vols = ok("volume.list", json::object());
  EXPECT_EQ(vols["volumes"].size(), 3u) << vols.dump();
  auto names = dm::list_devices();
  ASSERT_TRUE(names);
  for (const auto& n : *names) {
    if (n.rfind(pool_ + "-vol-p.rx.", 0) == 0) {
      EXPECT_EQ(n, planted) << n << " is left active";
    }
  }
  EXPECT_TRUE(events_of("snapshot.created").empty());
  EXPECT_TRUE(events_of("clone.created").empty());

  ASSERT_TRUE(dm::remove_device(planted));
  json retry = ok("run.create", {{"pipeline", "p"}, {"run", "rx"}, {"volumes", {"a", "b", "c"}}});
  EXPECT_EQ(retry["clones"].size(), 3u) << retry.dump();
  EXPECT_EQ(retry["initial_snapshots"].size(), 3u) << retry.dump();
  EXPECT_EQ(pool_ids().size(), 9u);
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
