#include "runner/pipeline/pipeline_options.h"

#include <sys/stat.h>

#include <boost/program_options.hpp>
#include <sstream>

#include "common/names.h"

namespace stepsnap::runner {
namespace po = boost::program_options;

namespace {

Status check_name(const char* option, const std::string& value) {
  if (is_valid_name(value)) return {};
  return fail(std::string("bad --") + option, "'" + value + "'", 0, std::string(kNameRule));
}

bool is_ipynb(const std::string& path) {
  return path.size() > 6 && path.compare(path.size() - 6, 6, ".ipynb") == 0;
}

po::options_description notebook_description() {
  po::options_description d("for a notebook (FILE ending in .ipynb, docs/notebooks.md)");
  // clang-format off
  d.add_options()
    ("volume", po::value<std::vector<std::string>>()->value_name("NAME:MOUNT"),
     "a volume of the pipeline, mounted at MOUNT in every step (repeat); the one whose MOUNT "
     "holds the notebook is the workspace; adds to and wins over the notebook's "
     "kubeflow_notebook.volumes")
    ("param", po::value<std::vector<std::string>>()->value_name("NAME=VALUE"),
     "set a pipeline parameter (a variable of the pipeline-parameters cell), typed as the "
     "cell's value (repeat)");
  // clang-format on
  return d;
}

// --volume and --param into o; FILE must be a notebook to take them.
Status notebook_options(const po::variables_map& vm, PipelineRunOptions& o) {
  if (vm.count("volume")) {
    for (const auto& v : vm["volume"].as<std::vector<std::string>>()) {
      auto colon = v.find(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == v.size())
        return fail("bad --volume", "'" + v + "'", 0, "expected NAME:MOUNT, e.g. ws:/workspace");
      std::string name = v.substr(0, colon);
      if (auto s = check_name("volume", name); !s) return s;
      o.volumes.emplace_back(name, v.substr(colon + 1));
    }
  }
  if (vm.count("param")) {
    for (const auto& p : vm["param"].as<std::vector<std::string>>()) {
      auto eq = p.find('=');
      if (eq == std::string::npos || eq == 0)
        return fail("bad --param", "'" + p + "'", 0, "expected NAME=VALUE, e.g. --param epochs=5");
      o.params.emplace_back(p.substr(0, eq), p.substr(eq + 1));
    }
  }
  if ((!o.volumes.empty() || !o.params.empty()) && !is_ipynb(o.file))
    return fail("--volume and --param are for notebooks", o.file, 0,
                "a pipeline file names its volumes itself (docs/pipeline.md)");
  return {};
}

// Parses `options` plus one positional FILE; a parse error names the
// command whose --help to read.
Result<po::variables_map> parse_with_file(const std::vector<std::string>& args,
                                          const po::options_description& options,
                                          const std::string& command) {
  po::options_description all;
  all.add(options).add_options()("file", po::value<std::string>());
  po::positional_options_description positional;
  positional.add("file", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return fail(e.what(), "", 0, "see " + command + " --help");
  }
  return vm;
}

po::options_description pipeline_description() {
  po::options_description d("runner pipeline run options");
  // clang-format off
  d.add_options()
    ("help,h", "show this help")
    ("agent", po::value<std::string>()->value_name("SOCKET"),
     "stepsnapd's Unix socket (default /run/stepsnap/stepsnapd.sock)")
    ("run", po::value<std::string>()->value_name("R"),
     "id of the new run (default: run-YYYYMMDD-HHMMSS, UTC); must not exist yet")
    ("restore", po::value<std::string>()->value_name("RUN"),
     "start from an earlier run's state: with --from-step S, the new run's volumes are "
     "clones of RUN's pre-snapshots of S")
    ("from-step", po::value<std::string>()->value_name("S"),
     "with --restore: re-run S and every step after it; the steps before it are not re-run")
    ("parallel", po::value<std::string>()->value_name("N"),
     "run up to N steps at once, each as soon as every step it comes after is done "
     "(default: the number of CPUs, at most 4; 1: one at a time, in file order)")
    ("kfp-ui-metadata", po::value<std::string>()->value_name("DIR"),
     "write each step's KFP mlpipeline-ui-metadata JSON (its snapshots, linked to stepsnapd's "
     "view) to DIR/STEP/mlpipeline-ui-metadata.json; DIR must exist")
    ("view-url", po::value<std::string>()->value_name("URL"),
     "where those links point (default http://127.0.0.1:9477)");
  // clang-format on
  d.add(notebook_description());
  return d;
}

}  // namespace

Result<PipelineRunOptions> parse_pipeline_run_options(const std::vector<std::string>& args) {
  PipelineRunOptions o;
  auto vm = parse_with_file(args, pipeline_description(), "runner pipeline run");
  if (!vm) return tl::unexpected(vm.error());
  if (vm->count("help")) {
    o.help = true;
    return o;
  }
  if (!vm->count("file")) return fail("missing the pipeline FILE", "", 0, "see docs/pipeline.md");
  o.file = (*vm)["file"].as<std::string>();
  if (auto s = notebook_options(*vm, o); !s) return tl::unexpected(s.error());
  if (vm->count("agent")) o.agent_socket = (*vm)["agent"].as<std::string>();
  if (vm->count("run")) {
    o.run = (*vm)["run"].as<std::string>();
    if (auto s = check_name("run", *o.run); !s) return tl::unexpected(s.error());
  }
  if (vm->count("restore")) {
    o.restore_run = (*vm)["restore"].as<std::string>();
    if (auto s = check_name("restore", *o.restore_run); !s) return tl::unexpected(s.error());
  }
  if (vm->count("from-step")) {
    o.from_step = (*vm)["from-step"].as<std::string>();
    if (auto s = check_name("from-step", *o.from_step); !s) return tl::unexpected(s.error());
  }
  if (vm->count("parallel")) {
    const std::string n = (*vm)["parallel"].as<std::string>();
    if (n.empty() || n.size() > 2 || n.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(n) < 1 || std::stoul(n) > 64)
      return fail("bad --parallel", n, 0, "give a whole number of steps from 1 to 64");
    o.parallel = std::stoul(n);
  }
  if (vm->count("kfp-ui-metadata")) {
    o.kfp_ui_metadata_dir = (*vm)["kfp-ui-metadata"].as<std::string>();
    struct stat st {};
    if (o.kfp_ui_metadata_dir.empty() || ::stat(o.kfp_ui_metadata_dir.c_str(), &st) != 0 ||
        !S_ISDIR(st.st_mode))
      return fail("bad --kfp-ui-metadata", "'" + o.kfp_ui_metadata_dir + "'", 0,
                  "give an existing directory");
  }
  if (vm->count("view-url")) {
    o.view_url = (*vm)["view-url"].as<std::string>();
    if (o.view_url.rfind("http://", 0) != 0 && o.view_url.rfind("https://", 0) != 0)
      return fail("bad --view-url", o.view_url, 0, "expected http://HOST:PORT or https://...");
  }
  if (o.restore_run.has_value() != o.from_step.has_value())
    return fail("--restore RUN and --from-step S go together", "", 0,
                "give both to re-run from a step of an earlier run");
  if (o.restore_run && o.run && *o.run == *o.restore_run)
    return fail("bad --run", *o.run, 0, "a restore makes a new run; pick another id");
  return o;
}

std::string pipeline_run_help() {
  std::ostringstream out;
  out << "usage: runner pipeline run FILE [--agent SOCKET] [--run R] [--parallel N]\n"
         "                              [--restore RUN --from-step S]\n"
         "                              [--volume NAME:MOUNT]... [--param NAME=VALUE]...\n"
         "\n"
         "Runs a pipeline (FILE: JSON, see docs/pipeline.md; or a Kale-tagged notebook,\n"
         "NOTEBOOK.ipynb, see docs/notebooks.md) as one run, the Kale/Rok way:\n"
         "  1. snapshots every volume of the pipeline (the run's initial snapshots);\n"
         "  2. makes one writable clone of each for the run;\n"
         "  3. runs the steps in dependency order, each like `runner exec` with every\n"
         "     clone mounted, the .marshal folder in the workspace (the first volume) and a\n"
         "     pre- and post-snapshot of every volume; steps that do not depend on each\n"
         "     other run at the same time (--parallel);\n"
         "  4. prints a table: step, status, duration, pre and post snapshots.\n"
         "A failing step keeps its post-snapshot; the steps that depend on it are skipped,\n"
         "the others still run.\n"
         "\n"
         "--restore RUN --from-step S makes a new run whose clones come from RUN's\n"
         "pre-snapshots of S: S sees exactly what it saw in RUN, byte for byte. S and the\n"
         "steps after it run; the ones before it are shown as restored.\n"
         "\n"
         "Exit status: 0 when every step ran and exited 0; 1 when a step failed or was\n"
         "skipped; 125 when runner failed before the first step (bad file, agent not\n"
         "running, unknown volume, run exists); 2 when a notebook cannot become a pipeline\n"
         "(nothing was created; the line names the cell).\n"
         "\n"
      << pipeline_description();
  return out.str();
}

Result<PipelineRunOptions> parse_pipeline_compile_options(const std::vector<std::string>& args) {
  PipelineRunOptions o;
  po::options_description d("runner pipeline compile options");
  d.add_options()("help,h", "show this help");
  d.add(notebook_description());
  auto vm = parse_with_file(args, d, "runner pipeline compile");
  if (!vm) return tl::unexpected(vm.error());
  if (vm->count("help")) {
    o.help = true;
    return o;
  }
  if (!vm->count("file"))
    return fail("missing the NOTEBOOK.ipynb", "", 0, "see runner pipeline compile --help");
  o.file = (*vm)["file"].as<std::string>();
  if (!is_ipynb(o.file))
    return fail("runner pipeline compile takes a notebook", o.file, 0,
                "give a Kale-tagged NOTEBOOK.ipynb (a .json pipeline is already compiled)");
  if (auto s = notebook_options(*vm, o); !s) return tl::unexpected(s.error());
  return o;
}

std::string pipeline_compile_help() {
  std::ostringstream out;
  out << "usage: runner pipeline compile NOTEBOOK.ipynb [--volume NAME:MOUNT]...\n"
         "                                              [--param NAME=VALUE]...\n"
         "\n"
         "Prints the pipeline a Kale-tagged notebook becomes, as a pipeline file\n"
         "(docs/pipeline.md): one step per block, each a python3 process that runs the\n"
         "imports, functions and parameters cells, loads its inputs from the marshal\n"
         "folder, runs its cells and saves what later steps use. Needs no agent.\n"
         "Warnings go to stderr. Exit status: 0, or 2 when the notebook cannot become a\n"
         "pipeline (one line naming the cell). See docs/notebooks.md.\n"
         "\n"
      << notebook_description();
  return out.str();
}

}  // namespace stepsnap::runner
