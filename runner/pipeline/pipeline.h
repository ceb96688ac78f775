// runner/pipeline/: a whole pipeline run through runner/exec. Uses
// runner/exec (and protocol/ through it).
//
// `runner pipeline run`: one run of a pipeline, the Kale/Rok flow. Initial
// snapshots of the pipeline's volumes, one clone of each for the run, then
// every step in dependency order through run_exec_with (the same code as
// `runner exec`), progress lines, and the summary table.
#pragma once

#include "runner/pipeline/pipeline_options.h"

namespace stepsnap::runner {

// Returns runner's exit status (see pipeline_run_help()).
int run_pipeline(const PipelineRunOptions& options);

}  // namespace stepsnap::runner
