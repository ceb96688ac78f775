// A pipeline file (`runner pipeline run FILE`), parsed and checked into plain
// data. The format is documented in docs/pipeline.md.
//
// Everything here is pure: no file but the one load_pipeline reads, no
// kernel. Every error is one line, "FILE: JSON.PATH: what is wrong; what to
// do", ready to print.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "runner/exec/options.h"

namespace stepsnap::runner {

struct PipelineVolume {
  std::string name;   // a volume name (common/names.h)
  std::string mount;  // absolute, normalized: no trailing or doubled '/'
  bool read_only = false;
};

struct PipelineStep {
  std::string name;
  std::vector<std::string> command;                      // non-empty; command[0] non-empty
  std::vector<std::string> after;                        // names of steps that must finish first
  std::vector<std::pair<std::string, std::string>> env;  // in file order
  std::optional<std::string> workdir;                    // overrides the pipeline's
  std::optional<double> timeout_seconds;
  std::optional<std::uint64_t> memory_bytes;  // the step cgroup's memory.max
  SnapshotPhases snapshots;
  // "user", "cap_add", "cap_drop", "dev": runner exec's --user, --cap-add,
  // --cap-drop and --dev for this step.
  SandboxOptions sandbox;
};

struct PipelineSpec {
  std::string pipeline;
  std::vector<PipelineVolume> volumes;  // volumes[0] is the workspace
  std::vector<PipelineStep> steps;      // in file order
  std::optional<std::string> workdir;
  std::vector<std::pair<std::string, std::string>> env;  // in file order
  std::string marshal = kDefaultMarshalDir;              // relative to volumes[0].mount
};

// Parses and checks a pipeline file's text. file_for_errors starts every
// error message. Invalid JSON reports the line and column of the problem.
Result<PipelineSpec> parse_pipeline(const std::string& text, const std::string& file_for_errors);

// Reads `path` and parses it; errors start with `path`.
Result<PipelineSpec> load_pipeline(const std::string& path);

// Indices into spec.steps in an order where every step comes after each step
// it names in `after`. Stable: whenever several steps are ready, the one
// earliest in the file goes first (a file already in order runs as written).
// A cycle is an error naming it ("a -> b -> a").
Result<std::vector<std::size_t>> execution_order(const PipelineSpec& spec);

// The steps that depend on step i, directly or through other steps, in
// execution order; i itself is not included. These are the steps to skip
// when step i fails.
std::vector<std::size_t> dependents_of(const PipelineSpec& spec, std::size_t i);

// The index of the step named `name`, if any.
std::optional<std::size_t> find_step(const PipelineSpec& spec, const std::string& name);

// The step's environment: the pipeline's env, then the step's (a key the step
// sets again replaces the pipeline's value, keeping its position).
std::vector<std::pair<std::string, std::string>> step_env(const PipelineSpec& spec, std::size_t i);

// The step's working directory: its own, else the pipeline's, else none.
std::optional<std::string> step_workdir(const PipelineSpec& spec, std::size_t i);

// The `runner exec` options that run step i of run `run` with the agent:
// pipeline/run/step names, every volume (name, mount, read_only) in order,
// workdir, env, timeout, snapshots, marshal and command. Everything else
// keeps ExecOptions' defaults; the caller sets agent_socket, or no_agent and
// host directories as volume names.
ExecOptions step_exec_options(const PipelineSpec& spec, std::size_t i, const std::string& run);

// The spec as a pipeline file (docs/pipeline.md) that parse_pipeline reads
// back into the same spec: what `runner pipeline compile` prints.
std::string pipeline_to_json(const PipelineSpec& spec);

}  // namespace stepsnap::runner
