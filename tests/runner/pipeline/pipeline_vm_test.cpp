// `runner pipeline run` end to end, inside the scripts/vm guest (label vm):
// a real stepsnapd, the example pipeline on real clones, the contents of
// every step's snapshots, a failing middle step, and restore-from-step
// reproducing exactly what the step saw.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kExample = std::string(STEPSNAP_SOURCE_DIR) + "/examples/house-prices";

class PipelineVm : public StepsnapdFixture {
 protected:
  // The notebook's volumes: ws holds the example's code, data its CSV.
  void make_example_volumes() {
    std::vector<std::pair<std::string, std::string>> code;
    for (const auto& f : fs::directory_iterator(kExample + "/steps"))
      if (f.path().extension() == ".py")
        code.emplace_back("steps/" + f.path().filename().string(), read_file(f.path()));
    make_volume("ws", code);
    auto csv = sh("python3 " + kExample + "/make_data.py " + dir_ + "/houses.csv");
    ASSERT_EQ(csv.rc, 0) << csv.err;
    make_volume("data", {{"houses.csv", read_file(dir_ + "/houses.csv")}});
  }

  Output pipeline(const std::string& file, const std::string& args) {
    return sh(std::string(RUNNER_PATH) + " pipeline run " + file + " --agent " + socket_ + " " +
              args);
  }

  json step(const std::string& pipeline, const std::string& run, const std::string& name) {
    return ok("step.status", {{"pipeline", pipeline}, {"run", run}, {"step", name}});
  }

  // The mounted view of a step's snapshot of volume i (0: ws, 1: data).
  std::string view(const json& status, const char* phase, std::size_t i) {
    const json& list = status[std::string(phase) + "_snapshots"];
    if (list.size() <= i) {
      ADD_FAILURE() << "no " << phase << " snapshot " << i << " in " << status.dump();
      return "/nonexistent";
    }
    return mount_snapshot(list[i]);
  }

  // sha256 over every file's name and contents under dir.
  std::string tree_sum(const std::string& dir) {
    return sh("cd " + dir +
              " && find . -type f ! -path './lost+found/*' | LC_ALL=C sort | xargs -r sha256sum "
              "| sha256sum")
        .out;
  }
};

TEST_F(PipelineVm, TheExamplePipelineRunsWithEveryStepsSnapshotsHoldingItsBoundaries) {
  ASSERT_NO_FATAL_FAILURE(make_example_volumes());
  auto run = pipeline(kExample + "/pipeline.json", "--run r1");
  ASSERT_EQ(run.rc, 0) << run.out << run.err;
  for (const char* line :
       {"initial snapshot", "[1/4] read_data: started", "[4/4] evaluate: ok in", "4 steps: 4 ok"})
    EXPECT_NE(run.out.find(line), std::string::npos) << line << "\n" << run.out;

  // The initial snapshots belong to the run, phase initial, not to a step.
  json run_show = ok("run.show", {{"pipeline", "house-prices"}, {"run", "r1"}});
  ASSERT_EQ(run_show["initial_snapshots"].size(), 2u) << run_show.dump();
  EXPECT_EQ(run_show["initial_snapshots"][0]["step"].value("phase", ""), "initial");
  EXPECT_EQ(run_show["steps"].size(), 4u) << run_show.dump();

  // What each step hands on appears in its post-snapshot, not in its pre.
  const std::pair<const char*, const char*> outputs[] = {{"read_data", ".marshal/raw.json"},
                                                         {"preprocess", ".marshal/train.json"},
                                                         {"train", ".marshal/model.json"},
                                                         {"evaluate", ".marshal/metrics.json"}};
  for (const auto& [name, file] : outputs) {
    json s = step("house-prices", "r1", name);
    EXPECT_EQ(s.value("state", ""), "finished") << s.dump();
    EXPECT_EQ(s.value("exit_status", -1), 0) << name;
    EXPECT_FALSE(exists(view(s, "pre", 0) + "/" + file)) << name << " pre has " << file;
    EXPECT_TRUE(exists(view(s, "post", 0) + "/" + file)) << name << " post lacks " << file;
    // The data volume is only read.
    EXPECT_EQ(tree_sum(view(s, "pre", 1)), tree_sum(view(s, "post", 1))) << name;
  }
  json metrics = json::parse(read_file(view(step("house-prices", "r1", "evaluate"), "post", 0) +
                                       "/.marshal/metrics.json"));
  EXPECT_GT(metrics.value("r2", 0.0), 0.9) << metrics.dump();

  // The notebook's own volumes are untouched: only the run's clones changed.
  std::string ws = dir_ + "/mnt/ws-after";
  ASSERT_NO_FATAL_FAILURE(mount("/dev/mapper/" + pool_ + "-vol-ws", ws));
  EXPECT_FALSE(exists(ws + "/.marshal"));
}

TEST_F(PipelineVm, AFailingStepKeepsItsPostSnapshotAndStopsOnlyItsDependents) {
  make_volume("ws", {});
  std::string file = dir_ + "/failing.json";
  std::ofstream(file) << R"({"pipeline": "fails", "volumes": [{"name": "ws", "mount": "/w"}],
    "workdir": "/w",
    "steps": [
      {"name": "a", "command": ["sh", "-c", "echo a > .marshal/a"]},
      {"name": "b", "command": ["sh", "-c", "echo half > .marshal/b; exit 3"], "after": ["a"]},
      {"name": "c", "command": ["sh", "-c", "echo c > .marshal/c"], "after": ["b"]},
      {"name": "d", "command": ["sh", "-c", "cat .marshal/a .marshal/b > .marshal/d"], "after": ["a"]}
    ]})";
  // One at a time: d reads what b left, and only the file order puts b first.
  auto run = pipeline(file, "--run r1 --parallel 1");
  EXPECT_EQ(run.rc, 1) << run.out << run.err;
  EXPECT_NE(run.out.find("b: failed (exit 3)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("post-snapshot kept"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("c: skipped: depends on failed step b"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("d: ok"), std::string::npos) << run.out;

  json b = step("fails", "r1", "b");
  EXPECT_EQ(b.value("exit_status", -1), 3);
  EXPECT_EQ(read_file(view(b, "post", 0) + "/.marshal/b"), "half\n");
  json c = call("step.status", {{"pipeline", "fails"}, {"run", "r1"}, {"step", "c"}});
  EXPECT_FALSE(c.value("ok", true)) << "c never ran, so it was never registered";
  // d ran after b failed and saw b's partial output: one clone per run.
  EXPECT_EQ(read_file(view(step("fails", "r1", "d"), "post", 0) + "/.marshal/d"), "a\nhalf\n");
  // The agent still shows c, from the plan runner gave with run.create.
  json shown = call("run.show", {{"pipeline", "fails"}, {"run", "r1"}});
  ASSERT_TRUE(shown.value("ok", false)) << shown.dump();
  std::map<std::string, json> by;
  for (const auto& s : shown["result"]["steps"]) by[s["step"]] = s;
  EXPECT_EQ(by["c"].value("state", ""), "skipped") << shown.dump();
  EXPECT_EQ(by["c"].value("because", ""), "b") << shown.dump();
  EXPECT_EQ(by["c"]["after"], json::array({"b"})) << shown.dump();
}

// --parallel: b and c write the same volume at the same time; each one's
// snapshots still hold exactly its boundaries, and the join's pre-snapshot
// holds both.
TEST_F(PipelineVm, ParallelStepsOnOneVolumeKeepExactSnapshots) {
  make_volume("ws", {});
  std::string file = dir_ + "/diamond.json";
  std::ofstream(file) << R"({"pipeline": "diamond", "volumes": [{"name": "ws", "mount": "/w"}],
    "workdir": "/w",
    "steps": [
      {"name": "a", "command": ["sh", "-c", "echo a > a"]},
      {"name": "b", "command": ["sh", "-c", "echo b1 > b; sleep 3; echo b2 >> b"], "after": ["a"]},
      {"name": "c", "command": ["sh", "-c", "echo c1 > c; sleep 3; echo c2 >> c"], "after": ["a"]},
      {"name": "d", "command": ["sh", "-c", "cat a b c > d"], "after": ["b", "c"]}
    ]})";
  auto run = pipeline(file, "--run r1 --parallel 2");
  ASSERT_EQ(run.rc, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("4 steps: 4 ok"), std::string::npos) << run.out;

  json b = step("diamond", "r1", "b"), c = step("diamond", "r1", "c");
  // They ran at the same time: each started before the other finished.
  EXPECT_LT(b.value("started", ""), c.value("finished", "")) << b.dump() << c.dump();
  EXPECT_LT(c.value("started", ""), b.value("finished", "")) << b.dump() << c.dump();
  // Each pre-snapshot lacks the step's own file; each post holds all of it.
  EXPECT_FALSE(exists(view(b, "pre", 0) + "/b"));
  EXPECT_FALSE(exists(view(c, "pre", 0) + "/c"));
  EXPECT_EQ(read_file(view(b, "post", 0) + "/b"), "b1\nb2\n");
  EXPECT_EQ(read_file(view(c, "post", 0) + "/c"), "c1\nc2\n");
  // The join starts from both.
  json d = step("diamond", "r1", "d");
  EXPECT_EQ(read_file(view(d, "pre", 0) + "/b"), "b1\nb2\n");
  EXPECT_EQ(read_file(view(d, "pre", 0) + "/c"), "c1\nc2\n");
  EXPECT_EQ(read_file(view(d, "post", 0) + "/d"), "a\nb1\nb2\nc1\nc2\n");
  for (const json* s : {&b, &c, &d}) EXPECT_TRUE((*s).value("exact", false)) << s->dump();
}

TEST_F(PipelineVm, RestoreFromAStepShowsItExactlyWhatItSawTheFirstTime) {
  ASSERT_NO_FATAL_FAILURE(make_example_volumes());
  ASSERT_EQ(pipeline(kExample + "/pipeline.json", "--run r1").rc, 0);
  auto again = pipeline(kExample + "/pipeline.json", "--run r2 --restore r1 --from-step train");
  ASSERT_EQ(again.rc, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("read_data: restored"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("preprocess: restored"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("train: ok"), std::string::npos) << again.out;
  json shown = call("run.show", {{"pipeline", "house-prices"}, {"run", "r2"}});
  ASSERT_TRUE(shown.value("ok", false)) << shown.dump();
  EXPECT_EQ(shown["result"].value("restored_from", ""), "r1") << shown.dump();
  std::map<std::string, json> by;
  for (const auto& s : shown["result"]["steps"]) by[s["step"]] = s;
  EXPECT_EQ(by["read_data"].value("state", ""), "restored") << shown.dump();
  EXPECT_EQ(by["preprocess"].value("state", ""), "restored") << shown.dump();

  json first = step("house-prices", "r1", "train"), second = step("house-prices", "r2", "train");
  for (std::size_t v = 0; v < 2; ++v) {
    std::string a = tree_sum(view(first, "pre", v)), b = tree_sum(view(second, "pre", v));
    EXPECT_EQ(a, b) << "volume " << v;
    EXPECT_EQ(a.size(), 68u) << a;  // a real sha256 line, not an empty tree
  }
  // The steps are deterministic, so the re-run's results match too.
  EXPECT_EQ(
      read_file(view(step("house-prices", "r1", "evaluate"), "post", 0) + "/.marshal/metrics.json"),
      read_file(view(step("house-prices", "r2", "evaluate"), "post", 0) +
                "/.marshal/metrics.json"));
  // read_data and preprocess did not run again in r2.
  EXPECT_FALSE(
      call("step.status", {{"pipeline", "house-prices"}, {"run", "r2"}, {"step", "preprocess"}})
          .value("ok", true));

  // Restoring from a run or step that does not exist is one line, exit 125.
  auto bad = pipeline(kExample + "/pipeline.json", "--restore nope --from-step train");
  EXPECT_EQ(bad.rc, 125);
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  auto taken = pipeline(kExample + "/pipeline.json", "--run r1");
  EXPECT_EQ(taken.rc, 125);
  EXPECT_NE(taken.err.find("pick another --run"), std::string::npos) << taken.err;
}

}  // namespace
}  // namespace stepsnap::testing
