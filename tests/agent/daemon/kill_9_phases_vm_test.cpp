// stepsnapd killed with SIGKILL in each phase of a step (registered, held
// with its pre-snapshot under way, running, post-snapshot under way), then
// started again on the same catalog and the same pinned tracer programs. The
// contract is checked after each: the step's pre-snapshot holds what was
// written before it and none of its writes, its post-snapshot holds all of
// them and nothing written after its end, and the step is never run before
// its pre-snapshot, not even while no agent runs.
//
// A snapshot is kept waiting for real where a phase needs it: a delete of a
// volume the test holds open retries for 10 s (EBUSY) with the pool's lock
// held.
#include <fcntl.h>
#include <sys/wait.h>

#include <fstream>
#include <thread>

#include "common/unique_fd.h"
#include "protocol/api_client.h"
#include "runner/exec/cgroup.h"
#include "tests/support/step_spawn.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using namespace std::chrono_literals;
using json = nlohmann::json;

char proc_state(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? '?' : stat[close + 2];
}

// Raw wait status, or -1 if still alive after `limit` (then killed).
int wait_for(pid_t pid, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(50ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

class Kill9 : public StepsnapdFixture {
 protected:
  void SetUp() override {
    StepsnapdFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    json vol = ok("volume.create", {{"name", "ws"}, {"size_bytes", 64 << 20}});
    ASSERT_EQ(sh("mkfs.ext4 -q -F " + vol.value("path", "")).rc, 0);
    mnt_ = dir_ + "/mnt/ws";
    ASSERT_NO_FATAL_FAILURE(mount(vol.value("path", ""), mnt_));
    { std::ofstream(mnt_ + "/before") << "before\n"; }
    auto cg = runner::Cgroup::create("stepsnap/kill9-test/s-" + std::to_string(::getpid()) + "-" +
                                     std::to_string(++instance_));
    ASSERT_TRUE(cg) << cg.error().message();
    cg_.emplace(std::move(*cg));
  }
  void TearDown() override {
    if (holder_.get() >= 0) holder_ = UniqueFd(-1);
    if (deleter_.joinable()) deleter_.join();
    StepsnapdFixture::TearDown();
  }

  void register_step() {
    json reg = ok("step.register", {{"pipeline", "p"},
                                    {"run", "r1"},
                                    {"step", "s"},
                                    {"cgroup", cg_->path()},
                                    {"volumes", {"ws"}},
                                    {"policy", "both"},
                                    {"command", "writes out"}});
    ASSERT_EQ(reg.value("state", ""), "registered") << reg.dump(2);
  }
  // The step: writes `out` on the volume; with a gate, only once the gate
  // file exists.
  StepProcess spawn(bool gated) {
    std::string write = "echo step > " + mnt_ + "/out; sync";
    std::string script =
        gated ? "while [ ! -e " + dir_ + "/gate ]; do sleep 0.1; done; " + write : write;
    return spawn_step(*cg_, script);
  }
  static void go(StepProcess& p) {
    ASSERT_EQ(::write(p.go, "g", 1), 1);
    ::close(p.go);
    p.go = -1;
  }
  json status() { return ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "s"}}); }
  void wait_state(const std::string& state) {
    json st;
    for (int i = 0; i < 600; ++i) {
      st = status();
      if (st.value("state", "") == state) return;
      std::this_thread::sleep_for(50ms);
    }
    FAIL() << "never " << state << ": " << st.dump(2);
  }
  // Keeps the pool's lock taken for about 10 s: a delete of a volume held
  // open retries its EBUSY that long.
  void block_the_pool() {
    json busy = ok("volume.create", {{"name", "busy"}, {"size_bytes", 16 << 20}});
    holder_ = UniqueFd(::open(busy.value("path", "").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(holder_);
    // Its answer never comes: the daemon is killed under it.
    deleter_ = std::thread([socket = socket_] {
      if (auto c = protocol::ApiClient::connect(socket))
        (void)c->call("volume.delete", {{"name", "busy"}});
    });
    std::this_thread::sleep_for(500ms);
  }
  void kill_9_and_restart(const std::function<void()>& while_down = {}) {
    stop_daemon(SIGKILL);
    if (deleter_.joinable()) deleter_.join();  // its connection died with the daemon
    holder_ = UniqueFd(-1);
    if (while_down) while_down();
    ASSERT_NO_FATAL_FAILURE(start_daemon());
  }
  bool adopted() {
    for (const auto& e : events_of("agent.recovered"))
      if (e["data"].value("action", "") == "adopt_step" && e["data"].value("step", "") == "s")
        return true;
    return false;
  }
  // The contract, from the step's own snapshots.
  void check_contract(const json& st) {
    ASSERT_EQ(st.value("state", ""), "finished") << st.dump(2);
    EXPECT_EQ(st.value("exit_status", -1), 0) << st.dump(2);
    ASSERT_EQ(st["pre_snapshots"].size(), 1u) << st.dump(2);
    ASSERT_EQ(st["post_snapshots"].size(), 1u) << st.dump(2);
    std::string pre = mount_snapshot(st["pre_snapshots"][0]);
    std::string post = mount_snapshot(st["post_snapshots"][0]);
    EXPECT_EQ(read_file(pre + "/before"), "before\n");
    EXPECT_FALSE(exists(pre + "/out")) << "the pre-snapshot holds a write of the step";
    EXPECT_EQ(read_file(post + "/before"), "before\n");
    EXPECT_EQ(read_file(post + "/out"), "step\n") << "the post-snapshot misses the step's write";
    EXPECT_FALSE(exists(post + "/after")) << "the post-snapshot holds a write after the step";
    EXPECT_EQ(events_of("step.started").size(), 1u);
  }

  std::string mnt_;
  std::optional<runner::Cgroup> cg_;
  UniqueFd holder_{-1};
  std::thread deleter_;
  static inline int instance_ = 0;
};

TEST_F(Kill9, RegisteredTheStepIsAdoptedAndRunsWithItsSnapshots) {
  register_step();
  kill_9_and_restart();
  EXPECT_EQ(status().value("state", ""), "registered") << status().dump(2);
  EXPECT_TRUE(adopted());
  StepProcess p = spawn(false);
  ASSERT_GT(p.pid, 0);
  go(p);
  EXPECT_EQ(wait_for(p.pid, 60s), 0);
  check_contract(wait_step_over("p", "r1", "s"));
}

// The step's first exec comes while no agent runs: the pinned programs hold
// it, and a kill -CONT from outside still cannot run it.
TEST_F(Kill9, RegisteredTheStepStartsWhileNoAgentRunsAndIsHeldUntilItsPreSnapshot) {
  register_step();
  StepProcess p;
  kill_9_and_restart([&] {
    p = spawn(false);
    ASSERT_GT(p.pid, 0);
    go(p);
    for (int i = 0; i < 200 && proc_state(p.pid) != 'T'; ++i) std::this_thread::sleep_for(25ms);
    ASSERT_EQ(proc_state(p.pid), 'T') << "no agent ran and the step's first exec was not held";
    std::this_thread::sleep_for(300ms);
    EXPECT_FALSE(exists(mnt_ + "/out")) << "the step ran while no agent ran";
  });
  EXPECT_TRUE(adopted());
  EXPECT_EQ(wait_for(p.pid, 60s), 0);
  check_contract(wait_step_over("p", "r1", "s"));
}

TEST_F(Kill9, HeldWithThePreSnapshotUnderWayTheStepStaysHeldAndRunsAfterIt) {
  register_step();
  ASSERT_NO_FATAL_FAILURE(block_the_pool());
  StepProcess p = spawn(false);
  ASSERT_GT(p.pid, 0);
  go(p);
  ASSERT_NO_FATAL_FAILURE(wait_state("holding"));
  kill_9_and_restart([&] {
    // No agent: the pinned programs alone keep it stopped (and guarded: a
    // kill -CONT now kills it, tests/bpf PinnedTracerTest).
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(proc_state(p.pid), 'T') << "the held step was let go with its agent";
    EXPECT_FALSE(exists(mnt_ + "/out"));
  });
  EXPECT_TRUE(adopted());
  EXPECT_EQ(wait_for(p.pid, 60s), 0);
  check_contract(wait_step_over("p", "r1", "s"));
}

// The step ends while no agent runs: the restarted agent takes its
// post-snapshot before it serves anyone, so a write made once it serves is
// not in it.
TEST_F(Kill9, RunningTheStepEndsWhileNoAgentRunsAndGetsItsPostSnapshotAtStart) {
  register_step();
  StepProcess p = spawn(true);
  ASSERT_GT(p.pid, 0);
  go(p);
  ASSERT_NO_FATAL_FAILURE(wait_state("running"));
  kill_9_and_restart([&] {
    sh("touch " + dir_ + "/gate");
    EXPECT_EQ(wait_for(p.pid, 60s), 0);
  });
  EXPECT_TRUE(adopted());
  json st = status();
  EXPECT_EQ(st.value("state", ""), "finished") << "served before the post-snapshot: " << st.dump(2);
  { std::ofstream(mnt_ + "/after") << "after\n"; }
  ::sync();
  check_contract(wait_step_over("p", "r1", "s"));
}

TEST_F(Kill9, PostSnapshotUnderWayItIsTakenAfterTheRestart) {
  register_step();
  StepProcess p = spawn(true);
  ASSERT_GT(p.pid, 0);
  go(p);
  ASSERT_NO_FATAL_FAILURE(wait_state("running"));
  ASSERT_NO_FATAL_FAILURE(block_the_pool());
  sh("touch " + dir_ + "/gate");
  EXPECT_EQ(wait_for(p.pid, 60s), 0);
  ASSERT_NO_FATAL_FAILURE(wait_state("finishing"));
  kill_9_and_restart();
  EXPECT_TRUE(adopted());
  EXPECT_EQ(status().value("state", ""), "finished") << status().dump(2);
  { std::ofstream(mnt_ + "/after") << "after\n"; }
  ::sync();
  check_contract(wait_step_over("p", "r1", "s"));
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
