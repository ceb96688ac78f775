// What `runner pipeline run` prints: a line when a step starts and ends, a
// live "running" line for long steps on a terminal, and the final table.
// Pure functions returning strings (no trailing newline), so they unit-test;
// the caller writes them and owns the clock.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace stepsnap::runner {

enum class StepState {
  ok,        // ran and exited 0
  failed,    // ran (or tried to) and exited non-zero
  skipped,   // not run: a step it depends on failed
  restored,  // not re-run: its post-snapshot from an earlier run was restored
  not_run,   // not run: the pipeline was stopped (signal) before it
};

struct StepResult {
  std::string name;
  StepState state = StepState::ok;
  int exit_code = 0;    // failed: `runner exec`'s exit status (124, 125, 128+N...)
  double seconds = 0;   // ok, failed: wall-clock time of the step
  std::string because;  // skipped: the failed step it depends on
  std::vector<std::string> pre_snapshots;   // one per volume, volume order
  std::vector<std::string> post_snapshots;  // one per volume, volume order
  // A notebook step's pipeline-metrics, as it recorded them: name, value.
  std::vector<std::pair<std::string, std::string>> metrics;
};

// "[2/4]"; the position is padded to the width of total ("[ 2/12]") so that
// lines stay aligned. position is 1-based, in execution order.
std::string step_counter(std::size_t position, std::size_t total);

// "3.2 s", "42.0 s", "2 min 05 s", "1 h 02 min". Negative counts as 0.
std::string format_duration(double seconds);

// What an exit status of `runner exec` means, for a failed step:
// "exit 1", "timed out, exit 124", "killed by SIGKILL, exit 137", ...
std::string describe_exit(int exit_code);

// "[2/4] preprocess: started"
std::string start_line(std::size_t position, std::size_t total, const std::string& step);

// "[2/4] preprocess: ok in 3.2 s"
// "[2/4] preprocess: failed (exit 1) in 0.4 s; post-snapshot kept: NAME[, NAME]"
// "[3/4] train: skipped: depends on failed step preprocess"
// "[1/4] read_data: restored: not re-run"
// "[4/4] evaluate: not run: the pipeline was stopped"
std::string end_line(std::size_t position, std::size_t total, const StepResult& result);

// The line for a step still running, redrawn by the caller (e.g. once a
// second on a terminal, as "\r" + line + "\033[K"):
// "[2/4] train: running 12 s |". frame picks the spinner character (| / - \),
// so consecutive frames turn it. Elapsed time is shown in whole seconds.
std::string running_line(std::size_t position, std::size_t total, const std::string& step,
                         double elapsed_seconds, unsigned frame);

// "ok", "failed (exit 1)", "skipped", "restored", "not run".
std::string status_text(const StepResult& result);

// The final table, one row per step in the order given (execution order),
// columns step, status, duration, pre snapshot(s), post snapshot(s). A step
// with several snapshots (one per volume) takes one line per snapshot. When
// the table would be wider than `width`, each step instead takes one line
// for step/status/duration followed by indented "pre:" and "post:" lines
// with the snapshot names. Ends with the count line (see summary_counts).
std::string summary_table(const std::vector<StepResult>& results, std::size_t width = 100);

// The metrics the steps recorded, under the table: "METRIC  VALUE  STEP"
// rows, in execution order; empty when no step recorded any.
std::string metrics_table(const std::vector<StepResult>& results);

// "4 steps: 2 ok, 1 failed, 1 skipped" (states with zero steps left out).
std::string summary_counts(const std::vector<StepResult>& results);

}  // namespace stepsnap::runner
