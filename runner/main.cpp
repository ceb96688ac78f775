// runner: launches pipeline steps. `runner exec` is a step's entrypoint;
// `runner pipeline run` runs a whole pipeline (a JSON file or a Kale
// notebook) through it; `runner pipeline compile` shows what a notebook becomes.
#include <iostream>
#include <string>
#include <vector>

#include "runner/exec/exec.h"
#include "runner/exec/options.h"
#include "runner/pipeline/pipeline.h"

int main(int argc, char** argv) {
  using namespace stepsnap::runner;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << runner_help();
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "pipeline" && args.size() >= 2 && args[1] == "compile") {
    auto options = parse_pipeline_compile_options({args.begin() + 2, args.end()});
    if (!options) {
      std::cerr << "runner: " << options.error().message() << "\n";
      return 2;
    }
    if (options->help) {
      std::cout << pipeline_compile_help();
      return 0;
    }
    return compile_pipeline(*options);
  }
  if (args[0] == "pipeline") {
    if (args.size() < 2 || args[1] != "run") {
      std::cerr << "runner: expected 'runner pipeline run FILE' or 'runner pipeline compile "
                   "NOTEBOOK.ipynb' (see runner pipeline run --help)\n";
      return 2;
    }
    auto options = parse_pipeline_run_options({args.begin() + 2, args.end()});
    if (!options) {
      std::cerr << "runner: " << options.error().message() << "\n";
      return 125;
    }
    if (options->help) {
      std::cout << pipeline_run_help();
      return 0;
    }
    return run_pipeline(*options);
  }
  if (args[0] != "exec") {
    std::cerr << "runner: unknown command '" << args[0] << "' (see runner --help)\n";
    return 2;
  }
  auto options = parse_exec_options({args.begin() + 1, args.end()});
  if (!options) {
    std::cerr << "runner: " << options.error().message() << "\n";
    return 125;
  }
  if (options->help) {
    std::cout << exec_help();
    return 0;
  }
  return run_exec(*options);
}
