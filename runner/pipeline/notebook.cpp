#include "runner/pipeline/notebook.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <regex>

namespace stepsnap::runner {

using json = nlohmann::json;

namespace {

tl::unexpected<Error> bad(const std::string& file, std::string what) {
  return tl::unexpected(Error{file, "", 0, std::move(what), "bad_notebook"});
}

// Kale's tag language (backend/kale/processors/nbprocessor.py, 0.7 and
// later): the section tags, the step tags, and the cluster settings.
const std::regex kStepTag("^(block|step):([_a-z][_a-z0-9]*)?$");
const std::regex kPrevTag("^prev:([_a-z][_a-z0-9]*)$");
const std::regex kLimitTag("^limit:([_a-z./-]+):([_a-zA-Z0-9.]+)$");
// A Kubernetes annotation or label key: segment[/segment].
const std::regex kAnnotationTag(
    "^(annotation|label):[a-zA-Z0-9]+([a-zA-Z0-9_.-]*[a-zA-Z0-9])?"
    "(/[a-zA-Z0-9]+([a-zA-Z0-9_.-]*[a-zA-Z0-9])?)?:.*$");
const std::regex kImageTag("^image:.+$");

constexpr const char* kSectionTags[] = {"imports", "functions", "pipeline-parameters",
                                        "pipeline-metrics", "skip"};

bool is_section_tag(const std::string& t) {
  return std::find(std::begin(kSectionTags), std::end(kSectionTags), t) != std::end(kSectionTags);
}

// True when the cell holds at least one line of Python that is not blank, a
// comment or an IPython magic / shell escape (those become comments).
bool has_code(const std::string& source) {
  std::size_t start = 0;
  while (start <= source.size()) {
    std::size_t end = source.find('\n', start);
    if (end == std::string::npos) end = source.size();
    std::size_t i = start;
    while (i < end && std::isspace(static_cast<unsigned char>(source[i]))) ++i;
    if (i < end && source[i] != '#' && source[i] != '%' && source[i] != '!') return true;
    start = end + 1;
  }
  return false;
}

std::string source_of(const json& s) {
  if (s.is_string()) return s.get<std::string>();
  std::string out;
  for (const auto& line : s) out += line.get<std::string>();
  return out;
}

}  // namespace

Result<Notebook> parse_notebook(const std::string& text, const std::string& file) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    return bad(file, std::string("not a notebook: not valid JSON (") + e.what() +
                         "); give an .ipynb file saved by Jupyter");
  }
  if (!doc.is_object() || !doc.contains("cells") || !doc.contains("nbformat"))
    return bad(file, "not a notebook: no \"cells\" and \"nbformat\"; give an .ipynb file");
  if (!doc["nbformat"].is_number_integer() || doc["nbformat"].get<int>() != 4)
    return bad(file, "nbformat " + doc["nbformat"].dump() +
                         " is not supported; save the notebook with Jupyter 4 or later "
                         "(nbformat 4)");
  if (!doc["cells"].is_array()) return bad(file, "\"cells\" is not an array; not a notebook");
  Notebook nb;
  if (auto meta = doc.find("metadata"); meta != doc.end() && meta->is_object()) {
    if (auto k = meta->find("kubeflow_notebook"); k != meta->end()) nb.kale_metadata = *k;
  }
  std::size_t index = 0;
  for (const auto& c : doc["cells"]) {
    NotebookCell cell;
    cell.index = index++;
    const bool ok_shape =
        c.is_object() && c.contains("cell_type") && c["cell_type"].is_string() &&
        c.contains("source") &&
        (c["source"].is_string() ||
         (c["source"].is_array() && std::all_of(c["source"].begin(), c["source"].end(),
                                                [](const json& l) { return l.is_string(); })));
    if (!ok_shape)
      return bad(file, "cell " + std::to_string(cell.index) +
                           ": not an nbformat 4 cell (needs \"cell_type\" and a string "
                           "\"source\"); save the notebook with Jupyter again");
    cell.type = c["cell_type"].get<std::string>();
    cell.source = source_of(c["source"]);
    if (auto meta = c.find("metadata"); meta != c.end() && meta->is_object()) {
      if (auto tags = meta->find("tags"); tags != meta->end() && tags->is_array()) {
        for (const auto& t : *tags) {
          if (!t.is_string())
            return bad(file, "cell " + std::to_string(cell.index) + ": tag " + t.dump() +
                                 " is not a string; fix the cell's tags");
          cell.tags.push_back(t.get<std::string>());
        }
      }
    }
    nb.cells.push_back(std::move(cell));
  }
  return nb;
}

std::string cell_label(const Notebook& nb, std::size_t index) {
  std::string tag = "untagged";
  if (index < nb.cells.size() && !nb.cells[index].tags.empty()) tag = nb.cells[index].tags.front();
  return "cell " + std::to_string(index) + " (" + tag + ")";
}

std::optional<std::uint64_t> parse_quantity(const std::string& text) {
  static const std::regex re("^([0-9]+)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?$");
  std::smatch m;
  if (!std::regex_match(text, m, re)) return std::nullopt;
  std::uint64_t n = 0;
  try {
    n = std::stoull(m[1].str());
  } catch (const std::exception&) {
    return std::nullopt;
  }
  static const std::map<std::string, std::uint64_t> unit = {
      {"", 1},
      {"Ki", 1ull << 10},
      {"Mi", 1ull << 20},
      {"Gi", 1ull << 30},
      {"Ti", 1ull << 40},
      {"Pi", 1ull << 50},
      {"k", 1000},
      {"K", 1000},
      {"M", 1000 * 1000},
      {"G", 1000ull * 1000 * 1000},
      {"T", 1000ull * 1000 * 1000 * 1000},
      {"P", 1000ull * 1000 * 1000 * 1000 * 1000}};
  std::uint64_t u = unit.at(m[2].str());
  if (n != 0 && u > UINT64_MAX / n) return std::nullopt;
  return n * u;
}

Result<KaleNotebook> parse_kale_tags(const Notebook& nb, const std::string& file) {
  KaleNotebook k;
  // The section an untagged cell continues: Kale's "previous step name".
  // `skip` never becomes it, so an untagged cell after a skipped one joins
  // the section before the skip.
  enum class Section { none, imports, functions, parameters, metrics, step };
  Section current = Section::none;
  std::size_t current_step = 0;
  std::map<std::string, std::size_t> step_index;  // name -> k.steps index
  std::map<std::string, std::size_t> step_cell;   // name -> its first cell

  for (const auto& cell : nb.cells) {
    if (cell.type != "code") continue;  // markdown and raw cells are prose
    const std::string where = file + ": " + cell_label(nb, cell.index);
    std::vector<std::string> roles;  // section tags and step names
    std::vector<std::string> prevs;
    std::optional<std::uint64_t> memory;
    std::vector<std::string> cluster;
    for (const auto& t : cell.tags) {
      std::smatch m;
      if (is_section_tag(t)) {
        roles.push_back(t);
      } else if (std::regex_match(t, m, kStepTag)) {
        // Kale's extension may save an empty "block:"; it names nothing.
        if (m[2].length() > 0) roles.push_back("block:" + m[2].str());
      } else if (std::regex_match(t, m, kPrevTag)) {
        prevs.push_back(m[1].str());
      } else if (std::regex_match(t, m, kLimitTag)) {
        if (m[1].str() == "memory") {
          memory = parse_quantity(m[2].str());
          if (!memory)
            return bad(where, "tag " + t +
                                  ": the memory limit is not a quantity; write e.g. "
                                  "limit:memory:512Mi or limit:memory:2G");
        } else {
          cluster.push_back(t);
        }
      } else if (std::regex_match(t, kAnnotationTag) || std::regex_match(t, kImageTag)) {
        cluster.push_back(t);
      } else {
        return bad(where, "unknown tag \"" + t +
                              "\"; Kale's tags are imports, functions, pipeline-parameters, "
                              "pipeline-metrics, skip, block:NAME, step:NAME, prev:NAME, "
                              "limit:RES:VAL, annotation:K:V, label:K:V, image:IMG "
                              "(NAME: [_a-z][_a-z0-9]*)");
      }
    }
    if (roles.size() > 1)
      return bad(where, "has " + std::to_string(roles.size()) +
                            " section tags; keep one of imports, functions, "
                            "pipeline-parameters, pipeline-metrics, skip, block:NAME per cell");
    const std::string role = roles.empty() ? "" : roles.front();
    if (role == "skip") continue;

    auto apply_step_tags = [&](KaleStep& step) -> Status {
      for (const auto& p : prevs) {
        if (p == step.name)
          return bad(where, "prev:" + p +
                                " makes the block depend on itself, a cycle; name an earlier "
                                "block");
        if (!step_index.count(p))
          return bad(where, "prev:" + p + " names no block defined above this cell; tag an " +
                                "earlier cell block:" + p + " or fix the name");
        if (std::find(step.prev.begin(), step.prev.end(), p) == step.prev.end())
          step.prev.push_back(p);
      }
      if (memory) step.memory_bytes = memory;
      for (const auto& t : cluster)
        k.warnings.push_back(where + ": tag " + t +
                             " is a cluster setting with no node equivalent; ignored");
      return {};
    };
    auto refuse_step_tags = [&]() -> Status {
      if (!prevs.empty())
        return bad(where, "prev:" + prevs.front() +
                              " on a cell that is not a block; put it on the block:NAME cell");
      if (memory || !cluster.empty())
        k.warnings.push_back(where +
                             ": limit, annotation, label and image tags apply to blocks; "
                             "ignored on this cell");
      return {};
    };

    if (role.empty()) {
      // Untagged (or only prev:/limit: tags): continues the section above.
      switch (current) {
        case Section::none:
          if (has_code(cell.source))
            k.warnings.push_back(where +
                                 ": code before the first tagged cell is not part of the "
                                 "pipeline; tag it (imports, block:NAME, ...) to use it");
          continue;
        case Section::imports:
          k.imports.push_back(cell.index);
          break;
        case Section::functions:
          k.functions.push_back(cell.index);
          break;
        case Section::parameters:
          k.parameters.push_back(cell.index);
          break;
        case Section::metrics:
          k.metrics.push_back(cell.index);
          break;
        case Section::step: {
          KaleStep& step = k.steps[current_step];
          if (auto s = apply_step_tags(step); !s) return tl::unexpected(s.error());
          step.cells.push_back(cell.index);
          continue;
        }
      }
      if (auto s = refuse_step_tags(); !s) return tl::unexpected(s.error());
      continue;
    }
    if (role.rfind("block:", 0) != 0) {
      if (auto s = refuse_step_tags(); !s) return tl::unexpected(s.error());
      if (role == "imports") {
        k.imports.push_back(cell.index);
        current = Section::imports;
      } else if (role == "functions") {
        k.functions.push_back(cell.index);
        current = Section::functions;
      } else if (role == "pipeline-parameters") {
        k.parameters.push_back(cell.index);
        current = Section::parameters;
      } else {
        k.metrics.push_back(cell.index);
        current = Section::metrics;
      }
      continue;
    }

    const std::string name = role.substr(6);
    if (current == Section::metrics)
      return bad(where,
                 "a block after the pipeline-metrics cells; the metrics cells come last in the "
                 "notebook, move them to the end");
    if (auto it = step_index.find(name); it != step_index.end()) {
      if (!(current == Section::step && current_step == it->second))
        return bad(where, "a second block named " + name + " (the first starts at " +
                              cell_label(nb, step_cell[name]) +
                              "); rename one, or move the cells together");
      if (auto s = apply_step_tags(k.steps[it->second]); !s) return tl::unexpected(s.error());
      k.steps[it->second].cells.push_back(cell.index);
      continue;
    }
    KaleStep step;
    step.name = name;
    if (auto s = apply_step_tags(step); !s) return tl::unexpected(s.error());
    step.cells.push_back(cell.index);
    step_index[name] = k.steps.size();
    step_cell[name] = cell.index;
    current_step = k.steps.size();
    current = Section::step;
    k.steps.push_back(std::move(step));
  }

  if (k.steps.empty())
    return bad(file,
               "no cell is tagged block:NAME (or step:NAME); tag the first cell of each step");
  for (const auto& step : k.steps) {
    bool code = std::any_of(step.cells.begin(), step.cells.end(),
                            [&](std::size_t i) { return has_code(nb.cells[i].source); });
    if (!code)
      return bad(file + ": " + cell_label(nb, step_cell[step.name]),
                 "block " + step.name + " has no code; add code to it or remove its tag");
  }
  return k;
}

}  // namespace stepsnap::runner
