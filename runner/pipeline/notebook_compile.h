// A Kale notebook compiled into our PipelineSpec, so that `runner pipeline
// run NOTEBOOK.ipynb` goes through exactly the machinery of a JSON
// pipeline (initial snapshots, run clones, pre/post snapshots, restore).
//
// The tags are parsed here (notebook.h); which variables flow between steps
// is decided by the project's Python helper (python/stepsnap_kale/
// analysis.py, Python's own ast module), run as `python3 -m
// stepsnap_kale.analysis`. Each step's command runs python/stepsnap_kale/
// step.py on the notebook in the workspace clone (docs/notebooks.md).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "runner/pipeline/notebook.h"
#include "runner/pipeline/pipeline_spec.h"

namespace stepsnap::runner {

struct NotebookCompileOptions {
  std::string notebook;  // path to the .ipynb, on one of the volumes' mounts
  std::vector<std::pair<std::string, std::string>> volumes;  // --volume NAME:MOUNT, in order
  std::vector<std::pair<std::string, std::string>> params;   // --param NAME=VALUE, in order
  std::string python_dir;  // holds stepsnap_kale/; empty: find_python_dir()
};

struct CompiledNotebook {
  PipelineSpec spec;
  std::vector<std::string> warnings;  // one line each, ready to print
  // step name -> the pipeline-metrics variables it records
  std::vector<std::pair<std::string, std::vector<std::string>>> metrics;
};

// True for a path ending in ".ipynb": run and compile take the notebook path.
bool is_notebook_path(const std::string& path);

// Where stepsnap_kale/ is: $STEPSNAP_PYTHON_DIR, else
// <runner's dir>/../share/stepsnap/python (installed), else the source
// tree's python/ (a build tree). Empty when none holds it.
std::string find_python_dir();

// The Python analysis request for a notebook's tagged cells (see
// analysis.py's analyse()).
nlohmann::json analysis_request(const Notebook& nb, const KaleNotebook& kale,
                                const std::vector<std::pair<std::string, std::string>>& params);

// Reads, parses, analyses and compiles. Errors are one line naming the file
// and, where there is one, the cell ("FILE: cell 4 (block:train): ...").
Result<CompiledNotebook> compile_notebook(const NotebookCompileOptions& options);

}  // namespace stepsnap::runner
