// stepsnapd inside the scripts/vm guest (label vm): a hold nothing outside
// the agent can undo, and a step lifecycle that cannot leak. A held step
// continued with kill -CONT before its pre-snapshot is killed before its
// first instruction and recorded failed with the reason; step.unregister
// drops a registration that has not started; a registration whose cgroup
// stays empty past the lease, or whose cgroup is removed, expires.
#include <fcntl.h>
#include <sys/wait.h>

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

void go(StepProcess& p) {
  ASSERT_EQ(::write(p.go, "g", 1), 1);
  ::close(p.go);
  p.go = -1;
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

std::string cgroup_name(const std::string& what) {
  return "stepsnap/hold-test/" + what + "-" + std::to_string(::getpid());
}

using HoldDaemon = StepsnapdFixture;

// kill -CONT from anyone allowed to signal the step (its session, a shell's
// fg) used to run the step's command before its pre-snapshot. The
// pre-snapshot is kept waiting for real: a delete of a volume the test holds
// open retries for 10 s (EBUSY) with the pool's lock held.
TEST_F(HoldDaemon, AHeldStepContinuedFromOutsideIsKilledAndRecordedFailedWithTheReason) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  json busy = ok("volume.create", {{"name", "busy"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create(cgroup_name("cont"));
  ASSERT_TRUE(cg) << cg.error().message();
  const std::string marker = dir_ + "/the-command-ran";
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r1"},
                       {"step", "held"},
                       {"cgroup", cg->path()},
                       {"volumes", {"ws"}},
                       {"policy", "both"}});

  UniqueFd holder(::open(busy.value("path", "").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(holder);
  std::thread deleter([&] { call("volume.delete", {{"name", "busy"}}); });
  std::this_thread::sleep_for(500ms);  // the delete now holds the pool's lock

  StepProcess p = spawn_step(*cg, "echo ran > " + marker);
  ASSERT_GT(p.pid, 0);
  go(p);
  json st;
  for (int i = 0; i < 100; ++i) {
    st = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "held"}});
    if (st.value("state", "") == "holding") break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(st.value("state", ""), "holding") << st.dump(2);
  ASSERT_EQ(::kill(p.pid, SIGCONT), 0);

  int status = wait_for(p.pid, 20s);
  EXPECT_TRUE(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "status " << status;
  EXPECT_FALSE(exists(marker)) << "kill -CONT ran the step's command before its pre-snapshot";

  json over = wait_step_over("p", "r1", "held");
  EXPECT_EQ(over.value("state", ""), "failed") << over.dump(2);
  EXPECT_NE(over.value("error", "").find("continued from outside (SIGCONT)"), std::string::npos)
      << over.dump(2);
  bool reported = false;
  for (const auto& e : events_of("error")) {
    if (e["data"].value("step", "") != "held") continue;
    reported = true;
    EXPECT_EQ(e["data"].value("op", ""), "step.hold") << e.dump();
    EXPECT_NE(e["data"].value("message", "").find("SIGCONT"), std::string::npos) << e.dump();
  }
  EXPECT_TRUE(reported) << "no error event for the broken hold";
  EXPECT_TRUE(events_of("step.started").empty()) << "a broken hold was reported as started";

  holder = UniqueFd(-1);
  deleter.join();
  // The pre-snapshot that was waiting completes late; the step stays failed.
  std::this_thread::sleep_for(1s);
  json after = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "held"}});
  EXPECT_EQ(after.value("state", ""), "failed") << after.dump(2);
  EXPECT_TRUE(events_of("step.started").empty());
}

TEST_F(HoldDaemon, UnregisterDropsARegistrationThatHasNotStartedAndFreesItsName) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create(cgroup_name("unreg"));
  ASSERT_TRUE(cg) << cg.error().message();
  json reg = {{"pipeline", "p"},      {"run", "r1"},       {"step", "s1"},
              {"cgroup", cg->path()}, {"volumes", {"ws"}}, {"policy", "both"}};
  json ref = {{"pipeline", "p"}, {"run", "r1"}, {"step", "s1"}};
  ok("step.register", reg);
  json again = call("step.register", reg);
  EXPECT_EQ(again["error"].value("code", ""), "exists") << again.dump();

  json dropped = ok("step.unregister", ref);
  EXPECT_EQ(dropped.value("state", ""), "failed") << dropped.dump(2);
  EXPECT_NE(dropped.value("error", "").find("unregistered before it started"), std::string::npos)
      << dropped.dump(2);
  json st = ok("step.status", ref);
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump(2);
  EXPECT_EQ(ok("step.unregister", ref).value("state", ""), "failed") << "not idempotent";

  // The name and the cgroup are free again, and the new registration works:
  // its step runs and finishes.
  ok("step.register", reg);
  StepProcess p = spawn_step(*cg, "exit 0");
  ASSERT_GT(p.pid, 0);
  go(p);
  int status = wait_for(p.pid, 60s);
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(wait_step_over("p", "r1", "s1").value("state", ""), "finished");
  // Over: answered from the catalog once the step has left memory.
  EXPECT_EQ(ok("step.unregister", ref).value("state", ""), "finished");

  json unknown = call("step.unregister", {{"pipeline", "p"}, {"run", "r1"}, {"step", "nope"}});
  EXPECT_EQ(unknown["error"].value("code", ""), "not_found") << unknown.dump();
}

TEST_F(HoldDaemon, UnregisterOfAStartedStepIsRefusedAsBusy) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create(cgroup_name("busy"));
  ASSERT_TRUE(cg) << cg.error().message();
  json ref = {{"pipeline", "p"}, {"run", "r1"}, {"step", "long"}};
  json reg = ref;
  reg["cgroup"] = cg->path();
  reg["volumes"] = {"ws"};
  reg["policy"] = "post";
  ok("step.register", reg);
  const std::string gate = dir_ + "/gate";
  StepProcess p = spawn_step(*cg, "while [ ! -e " + gate + " ]; do sleep 0.1; done");
  ASSERT_GT(p.pid, 0);
  go(p);
  json st;
  for (int i = 0; i < 100; ++i) {
    st = ok("step.status", ref);
    if (st.value("state", "") == "running") break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(st.value("state", ""), "running") << st.dump(2);
  json refused = call("step.unregister", ref);
  EXPECT_EQ(refused["error"].value("code", ""), "busy") << refused.dump();
  EXPECT_NE(refused["error"].value("message", "").find("has started"), std::string::npos);
  sh("touch " + gate);
  EXPECT_EQ(wait_for(p.pid, 60s), 0);
  EXPECT_EQ(wait_step_over("p", "r1", "long").value("state", ""), "finished");
}

TEST_F(HoldDaemon, ARegistrationWhoseCgroupIsRemovedExpires) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create(cgroup_name("gone"));
  ASSERT_TRUE(cg) << cg.error().message();
  json ref = {{"pipeline", "p"}, {"run", "r1"}, {"step", "gone"}};
  json reg = ref;
  reg["cgroup"] = cg->path();
  reg["volumes"] = {"ws"};
  ok("step.register", reg);
  ASSERT_TRUE(cg->remove());
  json st = wait_step_over("p", "r1", "gone");
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump(2);
  EXPECT_NE(st.value("error", "").find("was removed"), std::string::npos) << st.dump(2);
  bool expired = false;
  for (const auto& e : events_of("error"))
    if (e["data"].value("op", "") == "step.expire" && e["data"].value("step", "") == "gone")
      expired = true;
  EXPECT_TRUE(expired) << "no step.expire error event";
}

// A registration is leased to the connection that made it: runner keeps its
// connection open for the whole step, so a runner that dies before it put a
// process in the cgroup leaves nothing registered behind.
TEST_F(HoldDaemon, ARegistrationWhoseConnectionClosesBeforeAProcessEnteredExpires) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create(cgroup_name("conn"));
  ASSERT_TRUE(cg) << cg.error().message();
  json ref = {{"pipeline", "p"}, {"run", "r1"}, {"step", "orphan"}};
  json reg = ref;
  reg["cgroup"] = cg->path();
  reg["volumes"] = {"ws"};
  {
    auto c = protocol::ApiClient::connect(socket_);
    ASSERT_TRUE(c) << c.error().message();
    auto r = c->request("step.register", reg);
    ASSERT_TRUE(r) << r.error().message();
  }  // the registering connection closes here, its cgroup still empty
  // The daemon's lease is 60 s: an expiry well before it is the connection's.
  auto t0 = std::chrono::steady_clock::now();
  json st;
  for (int i = 0; i < 200; ++i) {
    st = ok("step.status", ref);
    if (st.value("state", "") == "failed") break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump(2);
  EXPECT_NE(st.value("error", "").find("the connection that registered it closed"),
            std::string::npos)
      << st.dump(2);
  bool expired = false;
  for (const auto& e : events_of("error"))
    if (e["data"].value("op", "") == "step.expire" && e["data"].value("step", "") == "orphan")
      expired = true;
  EXPECT_TRUE(expired) << "no step.expire error event";

  // "lease": "time" (stepsnapctl's): the connection closing changes nothing.
  reg["lease"] = "time";
  {
    auto c = protocol::ApiClient::connect(socket_);
    ASSERT_TRUE(c) << c.error().message();
    auto r = c->request("step.register", reg);
    ASSERT_TRUE(r) << r.error().message();
  }
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(ok("step.status", ref).value("state", ""), "registered");
  ok("step.unregister", ref);
}

TEST_F(HoldDaemon, ARegistrationWhoseConnectionClosesWithAProcessInItsCgroupGoesOn) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create(cgroup_name("conn-proc"));
  ASSERT_TRUE(cg) << cg.error().message();
  json ref = {{"pipeline", "p"}, {"run", "r1"}, {"step", "kept"}};
  json reg = ref;
  reg["cgroup"] = cg->path();
  reg["volumes"] = {"ws"};
  StepProcess p;
  {
    auto c = protocol::ApiClient::connect(socket_);
    ASSERT_TRUE(c) << c.error().message();
    auto r = c->request("step.register", reg);
    ASSERT_TRUE(r) << r.error().message();
    p = spawn_step(*cg, "exit 0");  // in its cgroup, not exec'd yet
    ASSERT_GT(p.pid, 0);
  }
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(ok("step.status", ref).value("state", ""), "registered");
  go(p);
  int status = wait_for(p.pid, 60s);
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(wait_step_over("p", "r1", "kept").value("state", ""), "finished");
}

class ShortLease : public StepsnapdFixture {
 protected:
  ShortLease() { extra_args_ = {"--step-lease", "1"}; }
};

TEST_F(ShortLease, ARegistrationWhoseCgroupGetsNoProcessExpiresAndFreesItsName) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create(cgroup_name("lease"));
  ASSERT_TRUE(cg) << cg.error().message();
  json ref = {{"pipeline", "p"}, {"run", "r1"}, {"step", "idle"}};
  json reg = ref;
  reg["cgroup"] = cg->path();
  reg["volumes"] = {"ws"};
  ok("step.register", reg);
  json st = wait_step_over("p", "r1", "idle");
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump(2);
  EXPECT_NE(st.value("error", "").find("within the step lease (1 s)"), std::string::npos)
      << st.dump(2);
  bool expired = false;
  for (const auto& e : events_of("error"))
    if (e["data"].value("op", "") == "step.expire" && e["data"].value("step", "") == "idle")
      expired = true;
  EXPECT_TRUE(expired) << "no step.expire error event";
  // Its name and cgroup are free: a new registration works. The agent
  // refuses a cgroup that already has processes, so the step's process
  // joins right after the registration (milliseconds, well inside the 1 s
  // lease); once it is in, the lease no longer runs.
  ok("step.register", reg);
  StepProcess p = spawn_step(*cg, "exit 7");
  ASSERT_GT(p.pid, 0);
  go(p);
  int status = wait_for(p.pid, 60s);
  EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 7) << status;
  json done = wait_step_over("p", "r1", "idle");
  EXPECT_EQ(done.value("state", ""), "finished") << done.dump(2);
  EXPECT_EQ(done.value("exit_status", -1), 7);
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
