// The command line of `runner pipeline run`, parsed into plain data.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "runner/exec/options.h"

namespace stepsnap::runner {

struct PipelineRunOptions {
  bool help = false;
  std::string file;
  std::string agent_socket = kDefaultAgentSocket;
  std::optional<std::string> run;  // default: generated from the clock
  // --restore RUN --from-step S: a new run starting at S on clones of RUN's
  // pre-snapshots of S.
  std::optional<std::string> restore_run;
  std::optional<std::string> from_step;
  // --parallel N: at most N steps at once; 0: the default (the number of
  // CPUs, at most 4).
  std::size_t parallel = 0;
  // --kfp-ui-metadata DIR: each step's mlpipeline-ui-metadata JSON goes to
  // DIR/STEP/mlpipeline-ui-metadata.json; links point at view_url.
  std::string kfp_ui_metadata_dir;
  std::string view_url = "http://127.0.0.1:9477";
  // Notebooks only (FILE ending in .ipynb): --volume NAME:MOUNT and
  // --param NAME=VALUE, in command-line order.
  std::vector<std::pair<std::string, std::string>> volumes;
  std::vector<std::pair<std::string, std::string>> params;
};

// The words after "pipeline run". Every error is one line, ready to print.
Result<PipelineRunOptions> parse_pipeline_run_options(const std::vector<std::string>& args);

std::string pipeline_run_help();

// `runner pipeline compile NOTEBOOK.ipynb [--volume NAME:MOUNT]... [--param NAME=VALUE]...`
Result<PipelineRunOptions> parse_pipeline_compile_options(const std::vector<std::string>& args);
std::string pipeline_compile_help();

}  // namespace stepsnap::runner
