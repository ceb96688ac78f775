#include "runner/pipeline/pipeline_options.h"

#include <boost/program_options.hpp>
#include <sstream>

#include "common/names.h"

namespace stepsnap::runner {
namespace po = boost::program_options;

namespace {

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
     "with --restore: re-run S and every step after it; the steps before it are not re-run");
  // clang-format on
  return d;
}

Status check_name(const char* option, const std::string& value) {
  if (is_valid_name(value)) return {};
  return fail(std::string("bad --") + option, "'" + value + "'", 0, std::string(kNameRule));
}

}  // namespace

Result<PipelineRunOptions> parse_pipeline_run_options(const std::vector<std::string>& args) {
  PipelineRunOptions o;
  po::options_description d = pipeline_description();
  po::options_description all;
  all.add(d).add_options()("file", po::value<std::string>());
  po::positional_options_description positional;
  positional.add("file", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return fail(e.what(), "", 0, "see runner pipeline run --help");
  }
  if (vm.count("help")) {
    o.help = true;
    return o;
  }
  if (!vm.count("file")) return fail("missing the pipeline FILE", "", 0, "see docs/pipeline.md");
  o.file = vm["file"].as<std::string>();
  if (vm.count("agent")) o.agent_socket = vm["agent"].as<std::string>();
  if (vm.count("run")) {
    o.run = vm["run"].as<std::string>();
    if (auto s = check_name("run", *o.run); !s) return tl::unexpected(s.error());
  }
  if (vm.count("restore")) {
    o.restore_run = vm["restore"].as<std::string>();
    if (auto s = check_name("restore", *o.restore_run); !s) return tl::unexpected(s.error());
  }
  if (vm.count("from-step")) {
    o.from_step = vm["from-step"].as<std::string>();
    if (auto s = check_name("from-step", *o.from_step); !s) return tl::unexpected(s.error());
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
  out << "usage: runner pipeline run FILE [--agent SOCKET] [--run R]\n"
         "                              [--restore RUN --from-step S]\n"
         "\n"
         "Runs a pipeline (FILE: JSON, see docs/pipeline.md) as one run, the Kale/Rok way:\n"
         "  1. snapshots every volume of the pipeline (the run's initial snapshots);\n"
         "  2. makes one writable clone of each for the run;\n"
         "  3. runs the steps in dependency order, each like `runner exec` with every\n"
         "     clone mounted, the .marshal folder in the workspace (the first volume) and a\n"
         "     pre- and post-snapshot of every volume;\n"
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
         "running, unknown volume, run exists).\n"
         "\n"
      << pipeline_description();
  return out.str();
}

}  // namespace stepsnap::runner
