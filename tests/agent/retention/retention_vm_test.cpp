// Retention against a real stepsnapd and dm-thin pool in the scripts/vm
// guest (label vm): runs of 20 pipelines, rules from the config and the
// API, gc --dry-run naming exactly what gc then deletes (from the catalog
// and from the pool), keep labels and clones that hold runs back, the
// events, rules surviving a restart, and a sweep started by the pool
// crossing its low-space threshold.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "dm/thin_pool.h"
#include "runner/exec/cgroup.h"
#include "tests/support/step_spawn.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using json = nlohmann::json;

std::string pipeline_name(int i) {
  return std::string("p") + (i < 10 ? "0" : "") + std::to_string(i);
}

class RetentionVm : public StepsnapdFixture {
 protected:
  RetentionVm() {
    // The timer off: only gc sweeps here. p05 has a rule of its own in the
    // config; the API's default rule must not replace it.
    extra_args_ = {"--gc-interval", "0", "--retention", "p05 keep-runs=3"};
  }

  // Every device of the run (its initial snapshots and clones), by name.
  std::set<std::string> make_run(const std::string& pipeline, const std::string& run) {
    json made = ok("run.create", {{"pipeline", pipeline}, {"run", run}, {"volumes", {"ws"}}});
    std::set<std::string> names;
    for (const char* key : {"initial_snapshots", "clones"})
      for (const auto& d : made.value(key, json::array())) names.insert(d.value("name", ""));
    for (const auto& d : made.value("initial_snapshots", json::array()))
      initial_[pipeline + "/" + run] = d.value("name", "");
    return names;
  }

  std::set<dm::ThinId> pool_ids() {
    auto pool = dm::ThinPool::open(pool_ + "-pool");
    if (!pool) return {};
    auto ids = pool->list_thin_ids();
    if (!ids) return {};
    return {ids->begin(), ids->end()};
  }

  std::set<std::string> catalog_names() {
    std::set<std::string> out;
    for (const char* op : {"volume.list", "snapshot.list"}) {
      json r = ok(op, json::object());
      for (const char* key : {"volumes", "snapshots"})
        for (const auto& d : r.value(key, json::array())) out.insert(d.value("name", ""));
    }
    return out;
  }

  std::map<std::string, std::string> initial_;  // "p00/r1" -> its initial snapshot

  static std::set<std::string> runs_in(const json& list) {
    std::set<std::string> out;
    for (const auto& r : list) out.insert(r.value("pipeline", "") + "/" + r.value("run", ""));
    return out;
  }
};

TEST_F(RetentionVm, TwentyPipelinesKeepExactlyWhatTheRulesSay) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 8 << 20}});
  // Three runs of each of 20 pipelines, r1 the oldest.
  std::map<std::string, std::set<std::string>> devices;  // "p00/r1" -> names
  for (int i = 0; i < 20; ++i)
    for (const char* run : {"r1", "r2", "r3"})
      devices[pipeline_name(i) + "/" + run] = make_run(pipeline_name(i), run);
  ASSERT_EQ(devices.size(), 60u);
  for (const auto& [run, names] : devices) ASSERT_EQ(names.size(), 2u) << run;

  // A keep label pins p01's oldest run; a user's clone of p02's oldest
  // initial snapshot needs that run.
  ok("snapshot.label", {{"name", initial_["p01/r1"]}, {"labels", {{"pin", "yes"}}}});
  const std::string p02_snapshot = initial_["p02/r1"];
  ASSERT_FALSE(p02_snapshot.empty());
  ok("clone.create", {{"snapshot", p02_snapshot}, {"name", "users-copy"}});

  // The default rule keeps 2 runs; p03 keeps 1; p04 has a rule with no
  // limit (nothing of it goes); p05 keeps its config rule (3).
  ok("retention.set", {{"keep_runs", 2}, {"keep", {"pin"}}});
  ok("retention.set", {{"pipeline", "p03"}, {"keep_runs", 1}});
  ok("retention.set", {{"pipeline", "p04"}, {"keep", {"pin"}}});
  json shown = ok("retention.show", json::object());
  ASSERT_EQ(shown["rules"].size(), 4u) << shown.dump();
  for (const auto& r : shown["rules"]) {
    EXPECT_EQ(r.value("source", ""), r.value("pipeline", "") == "p05" ? "config" : "api")
        << r.dump();
  }

  std::set<std::string> expected = {"p00/r1", "p03/r1", "p03/r2"};
  for (int i = 6; i < 20; ++i) expected.insert(pipeline_name(i) + "/r1");

  const auto names_before = catalog_names();
  const auto ids_before = pool_ids();
  const auto events_before = events().size();

  // The dry run names exactly those runs and every device of each, and
  // deletes nothing.
  json dry = ok("gc", {{"dry_run", true}});
  EXPECT_TRUE(dry.value("dry_run", false));
  EXPECT_EQ(runs_in(dry["deleted"]), expected);
  for (const auto& r : dry["deleted"]) {
    std::string key = r.value("pipeline", "") + "/" + r.value("run", "");
    EXPECT_EQ(r["devices"].get<std::set<std::string>>(), devices[key]) << key;
  }
  std::set<std::string> kept = runs_in(dry["kept"]);
  EXPECT_EQ(kept, (std::set<std::string>{"p01/r1", "p02/r1"})) << dry["kept"].dump();
  EXPECT_EQ(catalog_names(), names_before);
  EXPECT_EQ(pool_ids(), ids_before);
  EXPECT_EQ(events().size(), events_before) << "a dry run emits nothing";

  // stepsnapctl says the same.
  Output cli = ctl("gc --dry-run");
  ASSERT_EQ(cli.rc, 0) << cli.err;
  EXPECT_NE(cli.out.find("would delete p00/r1"), std::string::npos) << cli.out;
  EXPECT_NE(cli.out.find("kept p01/r1 (pinned"), std::string::npos) << cli.out;
  EXPECT_NE(cli.out.find("would delete 34 devices of 17 runs"), std::string::npos) << cli.out;

  // The sweep deletes exactly those runs' devices, from the catalog and the pool.
  json swept = ok("gc", json::object());
  EXPECT_EQ(runs_in(swept["deleted"]), expected);
  std::set<std::string> gone;
  for (const auto& r : swept["deleted"]) {
    EXPECT_FALSE(r.contains("error")) << r.dump();
    for (const auto& n : r["devices"]) gone.insert(n.get<std::string>());
  }
  std::set<std::string> want_gone;
  for (const auto& run : expected) want_gone.insert(devices[run].begin(), devices[run].end());
  EXPECT_EQ(gone, want_gone);
  std::set<std::string> left = catalog_names();
  for (const auto& n : names_before) EXPECT_EQ(left.count(n), want_gone.count(n) ? 0u : 1u) << n;
  EXPECT_EQ(pool_ids().size(), ids_before.size() - want_gone.size());
  EXPECT_EQ(pool_ids().size(), left.size()) << "the pool and the catalog agree";

  // One retention.deleted per device, naming its run; one summary.
  auto deleted = events_of("retention.deleted");
  ASSERT_EQ(deleted.size(), want_gone.size());
  for (const auto& e : deleted) {
    const json& d = e["data"];
    std::string run = d.value("pipeline", "") + "/" + d.value("run", "");
    EXPECT_TRUE(expected.count(run)) << e.dump();
    EXPECT_TRUE(devices[run].count(d.value("device", ""))) << e.dump();
  }
  auto summary = events_of("retention.swept");
  ASSERT_EQ(summary.size(), 1u);
  EXPECT_EQ(summary[0]["data"].value("runs_deleted", 0), 17);
  EXPECT_EQ(summary[0]["data"].value("devices_deleted", 0), 34);
  EXPECT_EQ(summary[0]["data"].value("trigger", ""), "api");

  // Nothing more to do; the pinned and the needed runs are still whole.
  EXPECT_TRUE(ok("gc", {{"dry_run", true}})["deleted"].empty());
  for (const char* run : {"p01/r1", "p02/r1"})
    for (const auto& n : devices[run]) EXPECT_TRUE(left.count(n)) << n;

  // Deleting the user's clone frees p02/r1; the API rules survive a restart.
  ok("volume.delete", {{"name", "users-copy"}});
  ASSERT_EQ(stop_daemon(SIGTERM), 0);
  start_daemon();
  EXPECT_EQ(ok("retention.show", json::object())["rules"].size(), 4u);
  EXPECT_EQ(runs_in(ok("gc", {{"dry_run", true}})["deleted"]), (std::set<std::string>{"p02/r1"}));
}

TEST_F(RetentionVm, RulesAreCheckedAndShown) {
  json bad = call("retention.set", {{"pipeline", "p"}, {"keep_runs", 0}});
  EXPECT_EQ(bad["error"].value("code", ""), "invalid_value") << bad.dump();
  Output cli = ctl("retention set p --max-age 7y");
  EXPECT_EQ(cli.rc, 2);
  EXPECT_NE(cli.err.find("--max-age"), std::string::npos) << cli.err;
  cli = ctl("retention set p --keep-runs 4 --max-age 7d --keep golden");
  ASSERT_EQ(cli.rc, 0) << cli.err;
  EXPECT_NE(cli.out.find("1w"), std::string::npos) << cli.out;  // 7d, shown in weeks
  cli = ctl("retention clear p");
  ASSERT_EQ(cli.rc, 0) << cli.err;
  EXPECT_EQ(cli.out.find("golden"), std::string::npos) << cli.out;
}

// Real steps: a run whose step is still running is never swept, and the
// newest failed run (a step that exited 3) stays by keep-failed-runs;
// once the step is over its run goes.
TEST_F(RetentionVm, ARunningStepKeepsItsRunAndAFailedRunIsKept) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 16 << 20}});
  const std::string tag = std::to_string(::getpid());
  auto cg1 = runner::Cgroup::create("stepsnap/retention-test/failed-" + tag);
  auto cg2 = runner::Cgroup::create("stepsnap/retention-test/running-" + tag);
  ASSERT_TRUE(cg1 && cg2);

  make_run("p", "r1");
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r1"},
                       {"step", "a"},
                       {"cgroup", cg1->path()},
                       {"volumes", {"p.r1.ws"}},
                       {"policy", "both"},
                       {"command", "exit 3"}});
  StepProcess failing = spawn_step(*cg1, "exit 3");
  ASSERT_GT(failing.pid, 0);
  ASSERT_EQ(::write(failing.go, "g", 1), 1);
  ::close(failing.go);
  int status = 0;
  ::waitpid(failing.pid, &status, 0);
  ASSERT_EQ(wait_step_over("p", "r1", "a").value("exit_status", -1), 3);

  make_run("p", "r2");
  const std::string stop = dir_ + "/stop-step";
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r2"},
                       {"step", "b"},
                       {"cgroup", cg2->path()},
                       {"volumes", {"p.r2.ws"}},
                       {"policy", "both"}});
  StepProcess running = spawn_step(*cg2, "while [ ! -e " + stop + " ]; do sleep 0.2; done");
  ASSERT_GT(running.pid, 0);
  ASSERT_EQ(::write(running.go, "g", 1), 1);
  ::close(running.go);
  std::string state;
  for (int i = 0; i < 600 && state != "running"; ++i) {
    state = ok("step.status", {{"pipeline", "p"}, {"run", "r2"}, {"step", "b"}}).value("state", "");
    if (state != "running") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(state, "running");

  make_run("p", "r3");
  ok("retention.set", {{"pipeline", "p"}, {"keep_runs", 1}, {"keep_failed_runs", 1}});
  json swept = ok("gc", json::object());
  EXPECT_TRUE(swept["deleted"].empty()) << swept.dump();
  std::map<std::string, std::string> why;
  for (const auto& k : swept["kept"]) why[k.value("run", "")] = k.value("reason", "");
  EXPECT_NE(why["r1"].find("keep-failed-runs"), std::string::npos) << swept.dump();
  EXPECT_NE(why["r2"].find("step b is running"), std::string::npos) << swept.dump();

  // The step ends (exit 0, post-snapshots taken): now its run goes, whole.
  ASSERT_EQ(sh("touch " + stop).rc, 0);
  ::waitpid(running.pid, &status, 0);
  json b = wait_step_over("p", "r2", "b");
  ASSERT_EQ(b.value("state", ""), "finished") << b.dump();
  swept = ok("gc", json::object());
  ASSERT_EQ(runs_in(swept["deleted"]), (std::set<std::string>{"p/r2"})) << swept.dump();
  // Its initial snapshot, clone, pre- and post-snapshot.
  EXPECT_EQ(swept["deleted"][0]["devices"].size(), 4u) << swept.dump();
  EXPECT_TRUE(ok("snapshot.list", {{"pipeline", "p"}, {"run", "r2"}})["snapshots"].empty());
  EXPECT_EQ(ok("snapshot.list", {{"pipeline", "p"}, {"run", "r1"}})["snapshots"].size(), 3u);
}

class TimerRetentionVm : public RetentionVm {
 protected:
  TimerRetentionVm() { extra_args_ = {"--gc-interval", "2", "--retention", "* keep-runs=1"}; }
};

// --gc-interval: with nobody asking, the sweep comes by itself.
TEST_F(TimerRetentionVm, TheTimerSweeps) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 8 << 20}});
  auto first = make_run("p", "r1");
  auto second = make_run("p", "r2");
  std::vector<json> swept;
  for (int i = 0; i < 600; ++i) {
    swept.clear();
    for (const auto& e : events_of("retention.swept"))
      if (e["data"].value("runs_deleted", 0) > 0) swept.push_back(e);
    if (!swept.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(swept.size(), 1u) << "no timer sweep deleted r1 within 60 s";
  EXPECT_EQ(swept[0]["data"].value("trigger", ""), "timer");
  std::set<std::string> left = catalog_names();
  for (const auto& n : first) EXPECT_FALSE(left.count(n)) << n;
  for (const auto& n : second) EXPECT_TRUE(left.count(n)) << n;
}

class LowSpaceRetentionVm : public RetentionVm {
 protected:
  LowSpaceRetentionVm() {
    // 40 MiB of data: quick to fill under emulation. No timer: only the
    // low-space event can start the sweep.
    data_size_ = "40M";
    extra_args_ = {
        "--pool-low-space-percent", "50", "--gc-interval", "0", "--retention", "* keep-runs=1"};
  }
};

TEST_F(LowSpaceRetentionVm, CrossingTheThresholdSweeps) {
  json vol = ok("volume.create", {{"name", "ws"}, {"size_bytes", 64 << 20}});
  const std::string dev = vol.value("path", "");
  ASSERT_FALSE(dev.empty());
  auto write_mib = [&](int offset, int mib) {
    return sh("dd if=/dev/urandom of=" + dev + " bs=1M seek=" + std::to_string(offset) +
              " count=" + std::to_string(mib) + " oflag=direct conv=notrunc status=none")
        .rc;
  };
  ASSERT_EQ(write_mib(0, 12), 0);  // 30%
  auto first = make_run("p", "r1");
  ASSERT_EQ(first.size(), 2u);
  EXPECT_TRUE(events_of("retention.swept").empty());
  ASSERT_EQ(write_mib(12, 12), 0);  // 60%: the next create crosses 50%
  auto second = make_run("p", "r2");
  ASSERT_EQ(events_of("pool.low_space").size(), 1u);

  std::vector<json> swept;
  for (int i = 0; i < 600 && swept.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    swept = events_of("retention.swept");
  }
  ASSERT_EQ(swept.size(), 1u) << "no sweep after pool.low_space";
  EXPECT_EQ(swept[0]["data"].value("trigger", ""), "low_space");
  EXPECT_EQ(swept[0]["data"].value("runs_deleted", 0), 1);
  std::set<std::string> left = catalog_names();
  for (const auto& n : first)
    EXPECT_FALSE(left.count(n)) << n << " of the older run is still there";
  for (const auto& n : second) EXPECT_TRUE(left.count(n)) << n << " of the newest run went";
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
