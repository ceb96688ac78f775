// stepsnapd end to end, inside the scripts/vm guest (label vm): the real
// daemon on a loop-file pool in /tmp, driven through its socket and through
// stepsnapctl. Each TEST starts its own daemon, pool and temporary folder.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "dm/dm_task.h"
#include "protocol/api_client.h"
#include "runner/exec/cgroup.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

using namespace stepsnap::testing;

class DaemonVm : public StepsnapdFixture {};

TEST_F(DaemonVm, StepPreAndPostSnapshotsHoldExactlyTheStepsBoundaries) {
  json vol = ok("volume.create", {{"name", "ws"}, {"size_bytes", 64 << 20}});
  std::string dev = vol.value("path", "");
  ASSERT_FALSE(dev.empty()) << vol.dump();
  ASSERT_EQ(sh("mkfs.ext4 -q -F " + dev).rc, 0);
  std::string mnt = dir_ + "/mnt/ws";
  ASSERT_NO_FATAL_FAILURE(mount(dev, mnt));
  // Written before the step, not synced: the pre-snapshot's freeze flushes it.
  { std::ofstream(mnt + "/before") << "before\n"; }

  auto cg = runner::Cgroup::create("stepsnap/agent-test/step-" + std::to_string(::getpid()));
  ASSERT_TRUE(cg) << cg.error().message();
  json reg = ok("step.register", {{"pipeline", "p"},
                                  {"run", "r1"},
                                  {"step", "s1"},
                                  {"cgroup", cg->path()},
                                  {"volumes", {"ws"}},
                                  {"policy", "both"},
                                  {"command", "echo step > out"}});
  EXPECT_EQ(reg.value("state", ""), "registered");

  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(go[1]);
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(120);
    std::string script = "echo step > " + mnt + "/out; sync";
    ::execl("/bin/sh", "sh", "-c", script.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(go[0]);
  ASSERT_TRUE(cg->add_process(child));
  ASSERT_EQ(::write(go[1], "g", 1), 1);
  ::close(go[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  json st;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  do {
    st = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "s1"}});
    if (st.value("state", "") == "finished" || st.value("state", "") == "failed") break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < deadline);
  ASSERT_EQ(st.value("state", ""), "finished") << st.dump(2) << "\n"
                                               << read_file(dir_ + "/stepsnapd.log");
  EXPECT_EQ(st.value("exit_status", -1), 0);
  ASSERT_EQ(st["pre_snapshots"].size(), 1u);
  ASSERT_EQ(st["post_snapshots"].size(), 1u);
  std::string pre = st["pre_snapshots"][0], post = st["post_snapshots"][0];

  // Events: pre snapshot, step.started (held), post snapshot, step.finished.
  int created = 0, started = 0, finished = 0;
  long long held_ns = 0;
  for (const auto& e : events()) {
    std::string type = e["type"];
    if (type == "snapshot.created") {
      ++created;
      EXPECT_TRUE(e["data"].contains("pause_ns"));
    }
    if (type == "step.started") {
      ++started;
      held_ns = e["data"].value("held_ns", 0ll);
      EXPECT_GT(held_ns, 0) << e.dump();
    }
    if (type == "step.finished") {
      ++finished;
      EXPECT_EQ(e["data"].value("exit_status", -1), 0);
    }
  }
  std::cout << "step held " << held_ns / 1000 << " us for its pre-snapshot\n";
  EXPECT_EQ(created, 2);
  EXPECT_EQ(started, 1);
  EXPECT_EQ(finished, 1);

  json snap = ok("snapshot.show", {{"name", pre}});
  EXPECT_EQ(snap["step"].value("phase", ""), "pre");
  // Read after the release (Volumes::settle_group), before the post group
  // on the same worker: the volume maps at least what mkfs wrote.
  EXPECT_GT(snap.value("mapped_bytes", 0ull), 0ull) << snap.dump();
  EXPECT_EQ(snap["step"].value("command", ""), "echo step > out");
  json postsnap = ok("snapshot.show", {{"name", post}});
  EXPECT_EQ(postsnap["step"].value("exit_status", -1), 0);

  json pre_clone = ok("clone.create", {{"snapshot", pre}, {"name", "pre-view"}});
  json post_clone = ok("clone.create", {{"snapshot", post}, {"name", "post-view"}});
  ASSERT_NO_FATAL_FAILURE(mount(pre_clone["path"], dir_ + "/mnt/pre"));
  ASSERT_NO_FATAL_FAILURE(mount(post_clone["path"], dir_ + "/mnt/post"));
  EXPECT_EQ(read_file(dir_ + "/mnt/pre/before"), "before\n");
  EXPECT_FALSE(exists(dir_ + "/mnt/pre/out")) << "the pre-snapshot holds a write of the step";
  EXPECT_EQ(read_file(dir_ + "/mnt/post/before"), "before\n");
  EXPECT_EQ(read_file(dir_ + "/mnt/post/out"), "step\n");
  // The source volume is untouched by the clones.
  EXPECT_EQ(read_file(mnt + "/out"), "step\n");
}

TEST_F(DaemonVm, CtlVolumeRoundTripAndABadNameChangesNothing) {
  auto created = ctl("volume create v2 16M --label team=ml");
  ASSERT_EQ(created.rc, 0) << created.err;
  auto list = ctl("volume list");
  ASSERT_EQ(list.rc, 0) << list.err;
  EXPECT_NE(list.out.find("NAME"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("v2"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("team=ml"), std::string::npos) << list.out;
  auto before = ctl("--json volume list");
  ASSERT_EQ(before.rc, 0);
  json j = json::parse(before.out);
  ASSERT_EQ(j["volumes"].size(), 1u);
  auto seq_before = events().size();

  auto bad = ctl("volume create a/b 16M");
  EXPECT_EQ(bad.rc, 1);
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  EXPECT_NE(bad.err.find("a/b"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("invalid_value"), std::string::npos) << bad.err;
  auto after = ctl("--json volume list");
  EXPECT_EQ(json::parse(after.out)["volumes"], j["volumes"]);
  EXPECT_EQ(events().size(), seq_before) << "a refused request made an event";

  auto dup = ctl("volume create v2 16M");
  EXPECT_EQ(dup.rc, 1);
  EXPECT_NE(dup.err.find("exists"), std::string::npos) << dup.err;

  auto del = ctl("volume delete v2");
  ASSERT_EQ(del.rc, 0) << del.err;
  auto empty = ctl("--json volume list");
  EXPECT_TRUE(json::parse(empty.out)["volumes"].empty()) << empty.out;
  EXPECT_FALSE(dm::exists(pool_ + "-vol-v2"));
  auto missing = ctl("volume delete v2");
  EXPECT_EQ(missing.rc, 1);
  EXPECT_NE(missing.err.find("not_found"), std::string::npos) << missing.err;
}

TEST_F(DaemonVm, SigtermLeavesVolumesActiveAndARestartServesThemAgain) {
  ok("volume.create", {{"name", "keep"}, {"size_bytes", 16 << 20}});
  int status = stop_daemon(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(dm::exists(pool_ + "-vol-keep"));
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  json list = ok("volume.list", json::object());
  ASSERT_EQ(list["volumes"].size(), 1u);
  EXPECT_EQ(list["volumes"][0].value("state", ""), "created");
}

// kill -9 during a loop of snapshots, restart: nothing suspended, catalog and
// pool agree (every snapshot the catalog lists can be cloned), and a
// subscriber resuming from its last seq sees no gap.
TEST_F(DaemonVm, Kill9DuringSnapshotsRecoversWithoutGapsOrSuspendedDevices) {
  json vol = ok("volume.create", {{"name", "loop"}, {"size_bytes", 32 << 20}});
  ASSERT_EQ(sh("mkfs.ext4 -q -F " + std::string(vol["path"])).rc, 0);
  std::uint64_t last_seen = 0;
  for (const auto& e : events()) last_seen = e["seq"];

  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> stop{false};
    std::thread loop([&] {
      auto c = protocol::ApiClient::connect(socket_);
      if (!c) return;
      for (int i = 0; !stop && i < 200; ++i) {
        auto r = c->call("snapshot.create", {{"volume", "loop"}});
        if (!r) return;
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(700 + 400 * round));
    stop_daemon(SIGKILL);
    stop = true;
    loop.join();
    ASSERT_NO_FATAL_FAILURE(start_daemon());

    auto names = dm::list_devices();
    ASSERT_TRUE(names);
    for (const auto& n : *names) {
      if (n.rfind(pool_, 0) != 0) continue;
      auto info = dm::info(n);
      ASSERT_TRUE(info);
      EXPECT_FALSE(info->suspended) << n << " left suspended";
    }
    // No gap: every seq after last_seen, consecutive.
    auto all = events();
    std::uint64_t expect = last_seen + 1;
    for (const auto& e : all) {
      std::uint64_t seq = e["seq"];
      if (seq <= last_seen) continue;
      EXPECT_EQ(seq, expect) << "gap in the event stream";
      expect = seq + 1;
    }
    if (!all.empty()) last_seen = all.back()["seq"];
  }
  int recovered = 0;
  for (const auto& e : events()) recovered += e["type"] == "agent.recovered";
  std::cout << "agent.recovered events after 3 kill -9: " << recovered << "\n";
  // Catalog and pool agree: every listed snapshot is a real thin device.
  json snaps = ok("snapshot.list", {{"volume", "loop"}});
  ASSERT_GT(snaps["snapshots"].size(), 0u);
  int k = 0;
  for (const auto& s : snaps["snapshots"]) {
    EXPECT_EQ(s.value("state", ""), "created") << s.dump();
    if (k++ % 7 != 0) continue;  // a sample: each clone costs a device
    std::string name = "chk" + std::to_string(k);
    ok("clone.create", {{"snapshot", s["name"]}, {"name", name}});
    ok("volume.delete", {{"name", name}});
  }
}

}  // namespace
}  // namespace stepsnap::agent
