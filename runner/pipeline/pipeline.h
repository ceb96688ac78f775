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
// FILE may be a Kale notebook (.ipynb): it is compiled first
// (notebook_compile.h); one that cannot be is exit 2, nothing created.
int run_pipeline(const PipelineRunOptions& options);

// `runner pipeline compile NOTEBOOK.ipynb`: prints the pipeline file the
// notebook becomes; 0, or 2 for a notebook that cannot become a pipeline.
int compile_pipeline(const PipelineRunOptions& options);

}  // namespace stepsnap::runner
