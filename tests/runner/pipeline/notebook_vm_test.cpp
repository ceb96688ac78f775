// `runner pipeline run NOTEBOOK.ipynb` end to end, inside the scripts/vm
// guest (label vm): a real stepsnapd, the house-prices notebook on real
// clones, each step's marshal files in its post-snapshot and not in its
// pre-snapshot, metrics, a parameter override, restore from a step, a
// failing cell, and a bad notebook that creates nothing.
#include <gtest/gtest.h>

#include <algorithm>
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
const std::string kMarshal = ".house-prices.ipynb.kale.marshal.dir";

class NotebookVm : public StepsnapdFixture {
 protected:
  // The workspace volume holds the notebook; its mount is dir_/ws, where
  // runner also reads it (a notebook server has it mounted there).
  void make_volumes(const std::string& notebook_text, bool with_data) {
    ws_ = dir_ + "/ws";
    fs::create_directories(ws_);
    std::ofstream(ws_ + "/house-prices.ipynb") << notebook_text;
    make_volume("ws", {{"house-prices.ipynb", notebook_text}});
    if (!with_data) return;
    auto csv = sh("python3 " + kExample + "/make_data.py " + dir_ + "/houses.csv");
    ASSERT_EQ(csv.rc, 0) << csv.err;
    make_volume("data", {{"houses.csv", read_file(dir_ + "/houses.csv")}});
  }

  Output run(const std::string& args) {
    return sh(std::string(RUNNER_PATH) + " pipeline run " + ws_ + "/house-prices.ipynb --agent " +
              socket_ + " --volume ws:" + ws_ + " " + args);
  }

  json step(const std::string& pipeline, const std::string& run, const std::string& name) {
    return ok("step.status", {{"pipeline", pipeline}, {"run", run}, {"step", name}});
  }

  std::string view(const json& status, const char* phase) {
    const json& list = status[std::string(phase) + "_snapshots"];
    if (list.empty()) {
      ADD_FAILURE() << "no " << phase << " snapshot in " << status.dump();
      return "/nonexistent";
    }
    return mount_snapshot(list[0]);
  }

  std::string ws_;
};

TEST_F(NotebookVm, TheHousePricesNotebookRunsAsAPipelineWithItsVariablesInTheSnapshots) {
  ASSERT_NO_FATAL_FAILURE(make_volumes(read_file(kExample + "/house-prices.ipynb"), true));
  auto r1 = run("--run r1");
  ASSERT_EQ(r1.rc, 0) << r1.out << r1.err;
  for (const char* line : {"[1/4] read_data: started", "[4/4] evaluate: ok in", "4 steps: 4 ok",
                           "METRIC", "r2      0.974393"})
    EXPECT_NE(r1.out.find(line), std::string::npos) << line << "\n" << r1.out;

  // Each step's outputs appear in its post-snapshot, not in its pre.
  const std::pair<const char*, const char*> outputs[] = {{"read_data", "rows.dillpkl"},
                                                         {"preprocess", "x_train.dillpkl"},
                                                         {"train", "weights.npy"},
                                                         {"evaluate", "pipeline-metrics.json"}};
  for (const auto& [name, file] : outputs) {
    json s = step("house-prices-nb", "r1", name);
    EXPECT_EQ(s.value("exit_status", -1), 0) << name;
    std::string pre = view(s, "pre"), post = view(s, "post");
    EXPECT_FALSE(exists(pre + "/" + kMarshal + "/" + file)) << name << " pre has " << file;
    EXPECT_TRUE(exists(post + "/" + kMarshal + "/" + file)) << name << " post lacks " << file;
    EXPECT_TRUE(exists(pre + "/house-prices.ipynb")) << name;
  }
  // The metrics are recorded with the run: on evaluate's post-snapshots as
  // labels, and in run.show, the run's and the step's.
  json evaluate = step("house-prices-nb", "r1", "evaluate");
  ASSERT_FALSE(evaluate["post_snapshots"].empty());
  for (const auto& post : evaluate["post_snapshots"]) {
    json labels = ok("snapshot.show", {{"name", post}})["labels"];
    EXPECT_EQ(labels.value("metric.r2", "").rfind("0.974393", 0), 0u)
        << post << ": " << labels.dump();
    EXPECT_TRUE(labels.contains("metric.rmse_k")) << labels.dump();
  }
  EXPECT_FALSE(ok("snapshot.show", {{"name", evaluate["pre_snapshots"][0]}})["labels"].contains(
      "metric.r2"));
  json shown = ok("run.show", {{"pipeline", "house-prices-nb"}, {"run", "r1"}});
  EXPECT_EQ(shown["metrics"].value("r2", "").rfind("0.974393", 0), 0u) << shown["metrics"].dump();
  EXPECT_EQ(shown["metrics"].size(), 3u) << shown["metrics"].dump();
  for (const auto& s : shown["steps"]) {
    EXPECT_EQ(s.contains("metrics"), s["step"] == "evaluate") << s.dump();
  }

  // The step's snapshots name the notebook and its cells (the command).
  json train = step("house-prices-nb", "r1", "train");
  std::string command =
      ok("snapshot.show", {{"name", train["post_snapshots"][0]}})["step"].value("command", "");
  EXPECT_NE(command.find("--notebook " + ws_ + "/house-prices.ipynb"), std::string::npos)
      << command;
  EXPECT_NE(command.find("--cells 10"), std::string::npos) << command;
  // weights.npy is numpy's own format.
  std::string post = view(train, "post");
  auto npy = sh("python3 -c \"import numpy; print(numpy.load('" + post + "/" + kMarshal +
                "/weights.npy').shape)\"");
  EXPECT_EQ(npy.out, "(8,)\n") << npy.err;

  // Restore at train: the restored step loads its inputs from the marshal
  // folder of its pre-snapshot and reproduces the same metrics.
  auto r2 = run("--run r2 --restore r1 --from-step train");
  ASSERT_EQ(r2.rc, 0) << r2.out << r2.err;
  EXPECT_NE(r2.out.find("preprocess: restored"), std::string::npos) << r2.out;
  EXPECT_NE(r2.out.find("r2      0.974393"), std::string::npos) << r2.out;
  EXPECT_EQ(read_file(view(step("house-prices-nb", "r2", "train"), "pre") + "/" + kMarshal +
                      "/x_train.dillpkl"),
            read_file(view(step("house-prices-nb", "r1", "train"), "pre") + "/" + kMarshal +
                      "/x_train.dillpkl"));

  // A parameter override, typed as the cell's literal, changes the result.
  auto r3 = run("--run r3 --param TEST_FRACTION=0.5");
  ASSERT_EQ(r3.rc, 0) << r3.out << r3.err;
  EXPECT_EQ(r3.out.find("r2      0.974393"), std::string::npos) << r3.out;
  std::string metrics = read_file(view(step("house-prices-nb", "r3", "evaluate"), "post") + "/" +
                                  kMarshal + "/pipeline-metrics.json");
  EXPECT_NE(metrics.find("\"r2\""), std::string::npos) << metrics;
}

// Block d reads its own cgroup's memory.max (cgroup v2, at /sys/fs/cgroup or,
// on hybrid hosts, /sys/fs/cgroup/unified) and records it as a metric.
const char* kReadMemoryMax = R"(import os
w = x + 1
own = [l.split("::", 1)[1] for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")][0]
root = [b for b in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup") if os.path.exists(b + "/cgroup.controllers")][0]
memory_max = int(open(root + own + "/memory.max").read())
)";

std::string small_notebook(const std::string& failing_source) {
  auto cell = [](const std::string& src, const std::vector<std::string>& tags) {
    return json{{"cell_type", "code"},
                {"metadata", {{"tags", tags}}},
                {"source", src},
                {"outputs", json::array()},
                {"execution_count", nullptr}};
  };
  return json{{"nbformat", 4},
              {"nbformat_minor", 5},
              {"metadata", {{"kubeflow_notebook", {{"pipeline_name", "fails"}}}}},
              {"cells",
               {cell("x = 41", {"block:a"}), cell(failing_source, {"block:b", "prev:a"}),
                cell("z = y", {"block:c", "prev:b"}),
                cell(kReadMemoryMax, {"block:d", "prev:a", "limit:memory:256Mi"}),
                cell("print(memory_max)", {"pipeline-metrics"})}}}
      .dump();
}

TEST_F(NotebookVm, AFailingCellFailsItsStepAndSkipsOnlyItsDependents) {
  ASSERT_NO_FATAL_FAILURE(make_volumes(small_notebook("y = x\nraise RuntimeError('boom')"), false));
  auto r = run("--run r1");
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("b: failed (exit 1)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("c: skipped: depends on failed step b"), std::string::npos) << r.out;
  // d ran under its limit:memory tag, as its cgroup's memory.max.
  EXPECT_NE(r.out.find("d: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memory_max  268435456"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("house-prices.ipynb cell 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("RuntimeError: boom"), std::string::npos) << r.err;
  json b = step("fails", "r1", "b");
  EXPECT_EQ(b.value("exit_status", -1), 1);
  // a's x is in b's pre-snapshot; b saved nothing.
  std::string pre = view(b, "pre");
  EXPECT_TRUE(exists(pre + "/" + kMarshal + "/x.dillpkl"));
  EXPECT_FALSE(exists(view(b, "post") + "/" + kMarshal + "/y.dillpkl"));
}

TEST_F(NotebookVm, ANotebookThatCannotBeAPipelineIsExit2AndCreatesNothing) {
  ASSERT_NO_FATAL_FAILURE(make_volumes(small_notebook("y = undefined_name"), false));
  auto r = run("--run r1");
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("cell 1 (block:b), line 1: step b uses 'undefined_name'"), std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  json volumes = ok("volume.list", json::object());
  EXPECT_EQ(volumes["volumes"].size(), 1u) << volumes.dump();  // only ws itself
  EXPECT_TRUE(ok("snapshot.list", json::object())["snapshots"].empty());
}

}  // namespace
}  // namespace stepsnap::testing
