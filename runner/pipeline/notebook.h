// A Jupyter notebook (nbformat 4) and Kale's cell tags, parsed into plain
// data: which cells are imports, functions, pipeline parameters and
// metrics, and which cells make up each step (docs/notebooks.md).
//
// Pure: no file, no process. Every error is one line, "FILE: cell N (TAG):
// what is wrong; what to do", where N is the cell's index in the file's
// "cells" array (from 0, markdown cells counted) and TAG its first tag.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace stepsnap::runner {

struct NotebookCell {
  std::size_t index = 0;  // position in the notebook's "cells" array
  std::string type;       // "code", "markdown", "raw"
  std::string source;     // the lines joined
  std::vector<std::string> tags;
};

struct Notebook {
  std::vector<NotebookCell> cells;
  // The "kubeflow_notebook" metadata object Kale keeps its settings in;
  // null when absent.
  nlohmann::json kale_metadata;
};

// Reads nbformat 4 JSON. Anything else (not JSON, not a notebook, another
// nbformat) is a one-line error naming file.
Result<Notebook> parse_notebook(const std::string& text, const std::string& file);

// One pipeline step: a block:NAME (or step:NAME) and the cells that follow it.
struct KaleStep {
  std::string name;
  std::vector<std::string> prev;              // prev:NAME tags, each an earlier step
  std::vector<std::size_t> cells;             // its code cells, in notebook order
  std::optional<std::uint64_t> memory_bytes;  // limit:memory:VALUE
};

struct KaleNotebook {
  std::vector<std::size_t> imports;     // imports cells (and untagged ones after them)
  std::vector<std::size_t> functions;   // functions cells (and ...)
  std::vector<std::size_t> parameters;  // pipeline-parameters cells
  std::vector<std::size_t> metrics;     // pipeline-metrics cells
  std::vector<KaleStep> steps;          // in notebook order
  // One line each: cluster-only tags that change nothing on a node, cells
  // before the first tag (not part of the pipeline).
  std::vector<std::string> warnings;
};

// Applies Kale's tag language to the notebook's code cells. Errors: an
// unknown tag, two step names on one cell, prev: naming no earlier block
// (or the block itself), a block name used again after another block,
// a block tag after the pipeline-metrics cells, a block with no code, a
// limit value that is not a quantity, no block at all.
Result<KaleNotebook> parse_kale_tags(const Notebook& nb, const std::string& file);

// "cell 4 (block:train)": how errors name a cell.
std::string cell_label(const Notebook& nb, std::size_t index);

// A Kubernetes quantity ("2Gi", "512Mi", "1G", "1000000") in bytes.
std::optional<std::uint64_t> parse_quantity(const std::string& text);

}  // namespace stepsnap::runner
