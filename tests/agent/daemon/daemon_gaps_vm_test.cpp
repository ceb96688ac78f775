// stepsnapd inside the scripts/vm guest (label vm), the paths the happy-path
// test does not reach: a pool filling up (pool.low_space, pool.out_of_space,
// a pre-snapshot that fails for want of space and kills its step before its
// command runs), steps surviving a restart, and the pool's transaction id
// and thin ids checked across restarts.
#include <fcntl.h>

#include <set>

#include "dm/pool_messages.h"
#include "dm/thin_ids.h"
#include "dm/thin_pool.h"
#include "runner/exec/cgroup.h"
#include "tests/support/step_spawn.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using namespace std::chrono_literals;
using json = nlohmann::json;
using DaemonFixture = StepsnapdFixture;

// Writes `mib` MiB of zeros at `offset_mib` straight to the device: dm-thin
// provisions a block for every write, zeros included.
Output write_mib(const std::string& dev, int offset_mib, int mib) {
  return sh("dd if=/dev/zero of=" + dev + " bs=1M seek=" + std::to_string(offset_mib) +
            " count=" + std::to_string(mib) + " oflag=direct conv=notrunc");
}

int run_step(const StepProcess& p) {
  if (::write(p.go, "g", 1) != 1) return -1;
  ::close(p.go);
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  return status;
}

class SmallPool : public DaemonFixture {
 protected:
  SmallPool() {
    // 40 MiB of data: 640 blocks of 64 KiB, quick to fill under emulation.
    data_size_ = "40M";
    extra_args_ = {"--pool-low-space-percent", "50"};
  }
};

TEST_F(SmallPool, LowSpaceIsReportedOnceWhenACreateCrossesTheThreshold) {
  json vol = ok("volume.create", {{"name", "big"}, {"size_bytes", 64 << 20}});
  std::string dev = vol.value("path", "");
  ASSERT_FALSE(dev.empty()) << vol.dump();

  ASSERT_EQ(write_mib(dev, 0, 12).rc, 0);  // 30% of the pool
  ok("snapshot.create", {{"volume", "big"}, {"name", "at30"}});
  EXPECT_TRUE(events_of("pool.low_space").empty()) << "reported below the threshold";

  ASSERT_EQ(write_mib(dev, 12, 12).rc, 0);  // 60%
  ok("snapshot.create", {{"volume", "big"}, {"name", "at60"}});
  auto low = events_of("pool.low_space");
  ASSERT_EQ(low.size(), 1u);
  EXPECT_EQ(low[0]["data"].value("pool", ""), pool_);
  EXPECT_GE(low[0]["data"].value("data_percent", 0), 50);
  EXPECT_LT(low[0]["data"].value("data_percent", 100), 100);
  EXPECT_EQ(low[0]["data"].value("threshold_percent", 0), 50);

  ok("snapshot.create", {{"volume", "big"}, {"name", "still60"}});
  EXPECT_EQ(events_of("pool.low_space").size(), 1u) << "once per crossing, not once per create";

  // The pool's use over time (the view's chart): one pool.usage per move,
  // none when a create changed nothing, one more after a delete frees space.
  auto usage = events_of("pool.usage");
  ASSERT_GE(usage.size(), 3u);
  double at30 = usage[usage.size() - 2]["data"].value("data_percent", 0.0);
  double at60 = usage.back()["data"].value("data_percent", 0.0);
  EXPECT_GE(at30, 29.0) << usage[usage.size() - 2].dump();
  EXPECT_GE(at60, 59.0) << usage.back().dump();
  EXPECT_EQ(usage.back()["data"].value("total_data_blocks", 0), 640) << usage.back().dump();
  ok("snapshot.delete", {{"name", "still60"}});
  ok("snapshot.delete", {{"name", "at60"}});
  ok("snapshot.delete", {{"name", "at30"}});
  ok("volume.delete", {{"name", "big"}});
  auto after = events_of("pool.usage");
  ASSERT_GT(after.size(), usage.size());
  EXPECT_LT(after.back()["data"].value("data_percent", 100.0), 1.0) << after.back().dump();
}

TEST_F(SmallPool, AFullPoolRefusesCreatesAndAFailedPreSnapshotKillsTheStepBeforeItsCommand) {
  json vol = ok("volume.create", {{"name", "ws"}, {"size_bytes", 64 << 20}});
  std::string dev = vol.value("path", "");
  ASSERT_FALSE(dev.empty()) << vol.dump();
  // More than the pool holds: the pool errors the write (error_if_no_space)
  // and switches to out_of_data_space.
  auto fill = write_mib(dev, 0, 64);
  EXPECT_NE(fill.rc, 0) << "64 MiB fitted in a 40 MiB pool";

  // A create refused for space: no_space, with the kind, and the event.
  json refused = call("snapshot.create", {{"volume", "ws"}, {"name", "nope"}});
  ASSERT_FALSE(refused.value("ok", true)) << refused.dump();
  EXPECT_EQ(refused["error"].value("code", ""), "no_space") << refused.dump();
  auto oos = events_of("pool.out_of_space");
  ASSERT_EQ(oos.size(), 1u);
  EXPECT_EQ(oos[0]["data"].value("kind", ""), "out_of_data_space") << oos[0].dump();
  EXPECT_EQ(oos[0]["data"].value("pool", ""), pool_);
  EXPECT_TRUE(ok("snapshot.list", {{"volume", "ws"}})["snapshots"].empty())
      << "a refused create left a record";

  // A step on that volume: its pre-snapshot cannot be taken, so it must be
  // killed while held, before the first instruction of its command.
  auto cg = runner::Cgroup::create("stepsnap/gaps-test/pre-" + std::to_string(::getpid()));
  ASSERT_TRUE(cg) << cg.error().message();
  const std::string marker = dir_ + "/the-command-ran";
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r1"},
                       {"step", "s1"},
                       {"cgroup", cg->path()},
                       {"volumes", {"ws"}},
                       {"policy", "pre"},
                       {"command", "touch " + marker}});
  StepProcess p = spawn_step(*cg, "echo ran > " + marker);
  ASSERT_GT(p.pid, 0);
  int status = run_step(p);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_FALSE(exists(marker)) << "the step ran its command without a pre-snapshot";

  json st = wait_step_over("p", "r1", "s1");
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump(2);
  EXPECT_NE(st.value("error", "").find("pre-snapshot failed"), std::string::npos) << st.dump(2);
  EXPECT_TRUE(st["pre_snapshots"].empty());

  bool error_event = false;
  for (const auto& e : events_of("error")) {
    if (e["data"].value("op", "") != "step.pre_snapshot") continue;
    error_event = true;
    EXPECT_EQ(e["data"].value("step", ""), "s1");
    EXPECT_TRUE(e["data"].value("killed", false)) << e.dump();
  }
  EXPECT_TRUE(error_event) << "no error event for the failed pre-snapshot";
  EXPECT_TRUE(events_of("step.started").empty()) << "a step without pre-snapshot was started";
  EXPECT_EQ(events_of("pool.out_of_space").size(), 2u) << "the step's snapshot reports it too";
}

// Without pinned tracer programs (--bpf-pin-dir ""): a restart cannot take
// over the steps under way, so it fails them (kill_9_phases_vm_test.cpp has
// the pinned restarts).
class Restarts : public DaemonFixture {
 protected:
  Restarts() { pin_bpf_ = false; }
};

TEST_F(Restarts, StepStateSurvivesARestartAndInterruptedStepsAreFailed) {
  json vol = ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  ASSERT_FALSE(vol.value("path", "").empty());
  auto cg1 = runner::Cgroup::create("stepsnap/gaps-test/done-" + std::to_string(::getpid()));
  auto cg2 = runner::Cgroup::create("stepsnap/gaps-test/open-" + std::to_string(::getpid()));
  ASSERT_TRUE(cg1 && cg2);

  // s1 runs to the end (post-snapshot, exit status 3).
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r1"},
                       {"step", "s1"},
                       {"cgroup", cg1->path()},
                       {"volumes", {"ws"}},
                       {"policy", "post"},
                       {"command", "exit 3"}});
  StepProcess p = spawn_step(*cg1, "exit 3");
  ASSERT_GT(p.pid, 0);
  int status = run_step(p);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3) << status;
  json before = wait_step_over("p", "r1", "s1");
  ASSERT_EQ(before.value("state", ""), "finished") << before.dump(2);
  ASSERT_EQ(before.value("exit_status", -1), 3);
  ASSERT_EQ(before["post_snapshots"].size(), 1u);

  // s2 is registered and never starts before the daemon dies.
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r1"},
                       {"step", "s2"},
                       {"cgroup", cg2->path()},
                       {"volumes", {"ws"}},
                       {"policy", "both"}});
  std::uint64_t last_seq = events().back()["seq"];
  stop_daemon(SIGKILL);
  ASSERT_NO_FATAL_FAILURE(start_daemon());

  json after = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "s1"}});
  for (const char* field :
       {"state", "exit_status", "policy", "cgroup", "volumes", "command", "registered", "started",
        "finished", "pre_snapshots", "post_snapshots", "snapshots"}) {
    EXPECT_EQ(after[field], before[field])
        << field << "\nbefore " << before.dump(2) << "\nafter " << after.dump(2);
  }
  json s2 = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "s2"}});
  EXPECT_EQ(s2.value("state", ""), "failed") << s2.dump(2);
  EXPECT_EQ(s2.value("error", ""), "stepsnapd restarted while the step was registered");

  int failed_steps = 0;
  for (const auto& e : events()) {
    if (e["seq"].get<std::uint64_t>() <= last_seq) continue;
    if (e["type"] != "agent.recovered") continue;
    EXPECT_NE(e["data"].value("action", ""), "resync_transaction_id")
        << "the pool did not change, yet the recorded transaction id differed: " << e.dump();
    if (e["data"].value("action", "") == "fail_step") {
      ++failed_steps;
      EXPECT_EQ(e["data"].value("step", ""), "s2");
      EXPECT_EQ(e["data"].value("was", ""), "registered");
    }
  }
  EXPECT_EQ(failed_steps, 1);

  json run = ok("run.show", {{"pipeline", "p"}, {"run", "r1"}});
  ASSERT_EQ(run["steps"].size(), 2u) << run.dump(2);
  EXPECT_EQ(run["steps"][0].value("state", ""), "finished");
  EXPECT_EQ(run["steps"][0]["snapshots"].size(), 1u);
  EXPECT_EQ(run["steps"][1].value("state", ""), "failed");

  // A failed step can be registered again: a new life for it.
  json again = ok("step.register", {{"pipeline", "p"},
                                    {"run", "r1"},
                                    {"step", "s2"},
                                    {"cgroup", cg2->path()},
                                    {"volumes", {"ws"}},
                                    {"policy", "none"}});
  EXPECT_EQ(again.value("state", ""), "registered");
}

// The pool changed while the daemon was down: a thin id made in the id
// scheme (the transaction id bumped) and one made outside it far below the
// counter (no bump, the way a lost record leaves one). The start says the
// pool moved on, and recovery finds both although neither is within the
// probes near the counter: the new one is kept as foreign, the leak deleted.
TEST_F(Restarts, APoolChangedWhileDownIsReconciledAndLeaksAnywhereAreFound) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  ASSERT_EQ(stop_daemon(SIGTERM), 0);

  // First, a consistent history of a pool that handed out ids up to 4999:
  // the pool's id scheme and the catalog's counter both at 5000.
  constexpr std::uint32_t kCounter = 5000;
  constexpr std::uint32_t kLeak = 3;
  std::uint32_t foreign = 0;
  {
    auto pool = dm::ThinPool::open(pool_ + "-pool");
    ASSERT_TRUE(pool) << pool.error().message();
    std::uint64_t t0 = pool->transaction_id();
    std::uint64_t t1 = dm::encode_txn({dm::decode_txn(t0).generation + 1, kCounter});
    ASSERT_TRUE(dm::set_transaction_id(pool_ + "-pool", t0, t1));
    auto moved = sh("sqlite3 " + dir_ + "/state/catalog.db \"UPDATE pools SET next_thin_id = " +
                    std::to_string(kCounter) + ", transaction_id = " + std::to_string(t1) + "\"");
    ASSERT_EQ(moved.rc, 0) << moved.err;
    ASSERT_TRUE(pool->resync());
    // Then the changes behind the daemon's back.
    ASSERT_TRUE(dm::create_thin(pool_ + "-pool", kLeak));
    auto id = pool->create_thin();  // bumps the transaction id
    ASSERT_TRUE(id) << id.error().message();
    foreign = *id;
    ASSERT_EQ(foreign, kCounter);
  }
  ASSERT_NO_FATAL_FAILURE(start_daemon());

  bool resync = false, reported = false, deleted = false;
  for (const auto& e : events_of("agent.recovered")) {
    const json& d = e["data"];
    std::string action = d.value("action", "");
    if (action == "resync_transaction_id") resync = true;
    if (action == "report_foreign_thin" && d.value("thin_id", 0u) == foreign) reported = true;
    if (action == "delete_thin" && d.value("thin_id", 0u) == kLeak) {
      deleted = true;
      EXPECT_TRUE(d.value("ok", false)) << e.dump();
    }
  }
  EXPECT_TRUE(resync) << "a pool changed while stepsnapd was down went unremarked";
  EXPECT_TRUE(reported) << "the id made while stepsnapd was down was not reported";
  EXPECT_TRUE(deleted) << "the leaked id " << kLeak << ", far below the counter, was not found";
  EXPECT_NE(read_file(log_path()).find("(metadata snapshot)"), std::string::npos)
      << "recovery did not list the pool's ids";

  auto pool = dm::ThinPool::open(pool_ + "-pool");
  ASSERT_TRUE(pool);
  auto ids = pool->list_thin_ids();
  ASSERT_TRUE(ids) << ids.error().message();
  std::set<std::uint32_t> have(ids->begin(), ids->end());
  EXPECT_FALSE(have.count(kLeak)) << "the leak is still in the pool";
  EXPECT_TRUE(have.count(foreign)) << "a foreign id was deleted";
  // And the daemon goes on past both: the next volume gets a new id.
  json next = ok("volume.create", {{"name", "after"}, {"size_bytes", 16 << 20}});
  EXPECT_GT(next.value("thin_id", 0u), foreign) << next.dump();
}

TEST_F(Restarts, APoolOlderThanTheCatalogIsRefusedWithOneLineSayingWhatToDo) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  ASSERT_EQ(stop_daemon(SIGTERM), 0);
  {
    // Roll the pool's transaction id back a generation, as restoring an
    // older copy of its metadata would.
    auto pool = dm::ThinPool::open(pool_ + "-pool");
    ASSERT_TRUE(pool);
    std::uint64_t now = pool->transaction_id();
    dm::TxnView v = dm::decode_txn(now);
    ASSERT_GT(v.generation, 0u);
    std::uint64_t older = dm::encode_txn({v.generation - 1, v.next_id});
    ASSERT_TRUE(dm::set_transaction_id(pool_ + "-pool", now, older));
  }
  std::size_t log_before = read_file(log_path()).size();
  int status = start_daemon_expecting_failure();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  std::string log = read_file(log_path()).substr(log_before);
  auto at = log.find("cannot start");
  ASSERT_NE(at, std::string::npos) << log;
  std::string line = log.substr(at, log.find('\n', at) - at);
  std::cout << "refused: " << line << "\n";
  EXPECT_NE(line.find(pool_ + "-pool"), std::string::npos) << line;
  EXPECT_NE(line.find("older than the catalog"), std::string::npos) << line;
  // The advice names the safe ways out, and following none of it can wipe
  // the pool: moving the catalog away is called useless, not recommended.
  EXPECT_NE(line.find("restore the metadata that matches"), std::string::npos) << line;
  EXPECT_NE(line.find("the catalog backup that matches this pool"), std::string::npos) << line;
  EXPECT_EQ(line.find("move that catalog away to start over"), std::string::npos) << line;
}

class ShortHold : public DaemonFixture {
 protected:
  ShortHold() { extra_args_ = {"--hold-timeout", "1"}; }
};

// --hold-timeout: a pre-snapshot that cannot be taken in time ends with the
// step killed while it is still held, never resumed first. The snapshot is
// kept waiting for real: a delete of a volume the test holds open retries
// for 10 s (EBUSY) with the pool's kernel lock held.
TEST_F(ShortHold, APreSnapshotLateForTheHoldTimeoutKillsTheStepWhileHeld) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  json busy = ok("volume.create", {{"name", "busy"}, {"size_bytes", 16 << 20}});
  auto cg = runner::Cgroup::create("stepsnap/gaps-test/hold-" + std::to_string(::getpid()));
  ASSERT_TRUE(cg) << cg.error().message();
  const std::string marker = dir_ + "/the-command-ran";
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r1"},
                       {"step", "slow"},
                       {"cgroup", cg->path()},
                       {"volumes", {"ws"}},
                       {"policy", "pre"}});

  UniqueFd holder(::open(busy.value("path", "").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(holder);
  std::thread deleter([&] { call("volume.delete", {{"name", "busy"}}); });
  std::this_thread::sleep_for(500ms);  // the delete now holds the pool's lock

  StepProcess p = spawn_step(*cg, "echo ran > " + marker);
  ASSERT_GT(p.pid, 0);
  auto t0 = std::chrono::steady_clock::now();
  int status = run_step(p);
  auto took = std::chrono::steady_clock::now() - t0;
  std::cout << "held step killed after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_FALSE(exists(marker)) << "the step ran its command without a pre-snapshot";
  EXPECT_LT(took, 8s) << "killed only when the snapshot came, not at the hold timeout";

  json st = wait_step_over("p", "r1", "slow");
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump(2);
  EXPECT_NE(st.value("error", "").find("hold timeout (1 s)"), std::string::npos) << st.dump(2);
  bool killed = false;
  for (const auto& e : events_of("error")) {
    if (e["data"].value("step", "") == "slow") killed = e["data"].value("killed", false);
  }
  EXPECT_TRUE(killed);
  EXPECT_TRUE(events_of("step.started").empty());

  holder = UniqueFd(-1);
  deleter.join();
  // The group snapshot that was waiting for the pool is taken late, of a
  // volume the killed step never touched; it is recorded, and the step
  // stays failed (it is never released into running).
  json snaps;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  do {
    snaps = ok("snapshot.list", {{"volume", "ws"}})["snapshots"];
    if (!snaps.empty()) break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < deadline);
  std::this_thread::sleep_for(500ms);
  json after = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "slow"}});
  EXPECT_EQ(after.value("state", ""), "failed") << after.dump(2);
  EXPECT_EQ(after["pre_snapshots"].size(), snaps.size()) << after.dump(2);
  EXPECT_TRUE(events_of("step.started").empty());
}

class NameLengths : public DaemonFixture {
 protected:
  NameLengths() { long_pool_name_ = true; }
};

// "<pool>-vol-<name>" with a 63-byte pool name and a 63-byte volume name is
// 131 bytes, past device-mapper's 127: refused with one line before any
// kernel call, so nothing is recorded, reserved or announced.
TEST_F(NameLengths, ADmNameTooLongIsRefusedBeforeAnyKernelCall) {
  auto pool = dm::ThinPool::open(pool_ + "-pool");
  ASSERT_TRUE(pool) << pool.error().message();
  std::uint64_t txn = pool->transaction_id();
  std::size_t events_before = events().size();

  json r = call("volume.create", {{"name", std::string(63, 'v')}, {"size_bytes", 16 << 20}});
  ASSERT_FALSE(r.value("ok", true)) << r.dump();
  std::string message = r["error"].value("message", "");
  EXPECT_EQ(r["error"].value("code", ""), "invalid_value") << r.dump();
  EXPECT_NE(message.find("131 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("at most 127"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;

  auto st = pool->status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->transaction_id, txn) << "the refused name cost a transaction";
  EXPECT_EQ(events().size(), events_before) << "a refused create made an event";
  EXPECT_TRUE(ok("volume.list", json::object())["volumes"].empty());
  // A name that fits still works on this pool.
  ok("volume.create", {{"name", std::string(58, 'v')}, {"size_bytes", 16 << 20}});
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
