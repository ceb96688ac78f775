// What `runner pipeline run` prints, as strings (label unit).
#include "runner/pipeline/pipeline_report.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace stepsnap::runner {
namespace {

StepResult ok(std::string name, double seconds, std::vector<std::string> pre = {},
              std::vector<std::string> post = {}) {
  StepResult r;
  r.name = std::move(name);
  r.state = StepState::ok;
  r.seconds = seconds;
  r.pre_snapshots = std::move(pre);
  r.post_snapshots = std::move(post);
  return r;
}

StepResult failed(std::string name, int code, double seconds, std::vector<std::string> post = {}) {
  StepResult r = ok(std::move(name), seconds, {}, std::move(post));
  r.state = StepState::failed;
  r.exit_code = code;
  return r;
}

StepResult other(std::string name, StepState state, std::string because = {}) {
  StepResult r;
  r.name = std::move(name);
  r.state = state;
  r.because = std::move(because);
  return r;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

TEST(PipelineReport, Counter) {
  EXPECT_EQ(step_counter(2, 4), "[2/4]");
  EXPECT_EQ(step_counter(2, 12), "[ 2/12]");
  EXPECT_EQ(step_counter(12, 12), "[12/12]");
}

TEST(PipelineReport, Durations) {
  EXPECT_EQ(format_duration(0), "0.0 s");
  EXPECT_EQ(format_duration(3.24), "3.2 s");
  EXPECT_EQ(format_duration(42.04), "42.0 s");
  EXPECT_EQ(format_duration(59.96), "1 min 00 s");
  EXPECT_EQ(format_duration(125.4), "2 min 05 s");
  EXPECT_EQ(format_duration(3599.6), "1 h 00 min");
  EXPECT_EQ(format_duration(3725), "1 h 02 min");
  EXPECT_EQ(format_duration(-1), "0.0 s");
}

TEST(PipelineReport, ExitCodes) {
  EXPECT_EQ(describe_exit(1), "exit 1");
  EXPECT_EQ(describe_exit(124), "timed out, exit 124");
  EXPECT_EQ(describe_exit(125), "runner error, exit 125");
  EXPECT_EQ(describe_exit(126), "cannot execute, exit 126");
  EXPECT_EQ(describe_exit(127), "command not found, exit 127");
  EXPECT_EQ(describe_exit(137), "killed by SIGKILL, exit 137");
  EXPECT_EQ(describe_exit(143), "killed by SIGTERM, exit 143");
  EXPECT_EQ(describe_exit(128 + 40), "killed by signal 40, exit 168");
  EXPECT_EQ(describe_exit(255), "exit 255");
}

TEST(PipelineReport, StartAndEndLines) {
  EXPECT_EQ(start_line(2, 4, "preprocess"), "[2/4] preprocess: started");
  EXPECT_EQ(end_line(2, 4, ok("preprocess", 3.2)), "[2/4] preprocess: ok in 3.2 s");
  EXPECT_EQ(end_line(2, 4, failed("preprocess", 1, 0.4, {"snap-ws"})),
            "[2/4] preprocess: failed (exit 1) in 0.4 s; post-snapshot kept: snap-ws");
  EXPECT_EQ(end_line(2, 4, failed("preprocess", 1, 0.4, {"snap-ws", "snap-data"})),
            "[2/4] preprocess: failed (exit 1) in 0.4 s; post-snapshots kept: snap-ws, "
            "snap-data");
  EXPECT_EQ(end_line(2, 4, failed("preprocess", 124, 300)),
            "[2/4] preprocess: failed (timed out, exit 124) in 5 min 00 s");
  EXPECT_EQ(end_line(3, 4, other("train", StepState::skipped, "preprocess")),
            "[3/4] train: skipped: depends on failed step preprocess");
  EXPECT_EQ(end_line(1, 4, other("read_data", StepState::restored)),
            "[1/4] read_data: restored: not re-run");
  EXPECT_EQ(end_line(4, 4, other("evaluate", StepState::not_run)),
            "[4/4] evaluate: not run: the pipeline was stopped");
}

TEST(PipelineReport, RunningLineTurnsItsSpinner) {
  EXPECT_EQ(running_line(2, 4, "train", 12.7, 0), "[2/4] train: running 12 s |");
  EXPECT_EQ(running_line(2, 4, "train", 12.7, 1), "[2/4] train: running 12 s /");
  EXPECT_EQ(running_line(2, 4, "train", 12.7, 2), "[2/4] train: running 12 s -");
  EXPECT_EQ(running_line(2, 4, "train", 12.7, 3), "[2/4] train: running 12 s \\");
  EXPECT_EQ(running_line(2, 4, "train", 12.7, 4), "[2/4] train: running 12 s |");
  EXPECT_EQ(running_line(2, 4, "train", 125, 0), "[2/4] train: running 2 min 05 s |");
  EXPECT_EQ(running_line(2, 4, "train", 3725, 0), "[2/4] train: running 1 h 02 min 05 s |");
  EXPECT_EQ(running_line(2, 4, "train", -3, 0), "[2/4] train: running 0 s |");
}

TEST(PipelineReport, Counts) {
  EXPECT_EQ(summary_counts({}), "0 steps");
  EXPECT_EQ(summary_counts({ok("a", 1)}), "1 step: 1 ok");
  EXPECT_EQ(summary_counts({ok("a", 1), failed("b", 1, 1), other("c", StepState::skipped, "b"),
                            other("d", StepState::skipped, "b"), other("e", StepState::restored)}),
            "5 steps: 1 ok, 1 failed, 2 skipped, 1 restored");
}

TEST(PipelineReport, TableSideBySideWithOneSnapshotPerLine) {
  std::vector<StepResult> results = {
      ok("read_data", 1.23, {"hp.r1.read_data.ws.pre", "hp.r1.read_data.data.pre"},
         {"hp.r1.read_data.ws.post", "hp.r1.read_data.data.post"}),
      failed("preprocess", 1, 0.4, {"hp.r1.preprocess.ws.post"}),
      other("train", StepState::skipped, "preprocess"),
  };
  auto table = summary_table(results);
  auto l = lines(table);
  ASSERT_EQ(l.size(), 6u) << table;
  EXPECT_EQ(l[0], "STEP        STATUS           DURATION  PRE SNAPSHOT              POST SNAPSHOT");
  EXPECT_EQ(l[1],
            "read_data   ok               1.2 s     hp.r1.read_data.ws.pre    "
            "hp.r1.read_data.ws.post");
  EXPECT_EQ(l[2],
            "                                       hp.r1.read_data.data.pre  "
            "hp.r1.read_data.data.post");
  EXPECT_EQ(l[3],
            "preprocess  failed (exit 1)  0.4 s     -                         "
            "hp.r1.preprocess.ws.post");
  EXPECT_EQ(l[4], "train       skipped          -         -                         -");
  EXPECT_EQ(l[5], "3 steps: 1 ok, 1 failed, 1 skipped");
  for (const auto& line : l) {
    EXPECT_LE(line.size(), 100u) << line;
    EXPECT_TRUE(line.empty() || line.back() != ' ') << "'" << line << "'";
  }
}

TEST(PipelineReport, TooWideTablePutsSnapshotsUnderTheirStep) {
  std::string pre = "house-prices.run-20261123-011847.preprocess.workspace.pre";
  std::string post = "house-prices.run-20261123-011847.preprocess.workspace.post";
  std::vector<StepResult> results = {ok("preprocess", 3.2, {pre, "d.pre"}, {post, "d.post"}),
                                     other("train", StepState::not_run)};
  auto table = summary_table(results);
  auto l = lines(table);
  ASSERT_EQ(l.size(), 6u) << table;
  EXPECT_EQ(l[0], "STEP        STATUS   DURATION");
  EXPECT_EQ(l[1], "preprocess  ok       3.2 s");
  EXPECT_EQ(l[2], "    pre:  " + pre + ", d.pre");
  EXPECT_EQ(l[3], "    post: " + post + ", d.post");
  EXPECT_EQ(l[4], "train       not run  -");
  EXPECT_EQ(l[5], "2 steps: 1 ok, 1 not run");
  // The same table fits side by side when the terminal is wide enough.
  EXPECT_EQ(lines(summary_table(results, 200)).size(), 5u);
}

}  // namespace
}  // namespace stepsnap::runner

namespace stepsnap::runner {
namespace {

TEST(PipelineReport, MetricsTableUnderTheSummary) {
  std::vector<StepResult> results = {ok("train", 1.0), ok("evaluate", 1.0)};
  EXPECT_EQ(metrics_table(results), "");
  results[1].metrics = {{"r2", "0.974393"}, {"rmse_k", "30.438462"}};
  EXPECT_EQ(metrics_table(results),
            "METRIC  VALUE      STEP\n"
            "r2      0.974393   evaluate\n"
            "rmse_k  30.438462  evaluate");
}

}  // namespace
}  // namespace stepsnap::runner
