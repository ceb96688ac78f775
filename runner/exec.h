// `runner exec`: one pipeline step, start to finish. Returns the exit status
// runner itself exits with (see exec_help() for the table).
#pragma once

#include "runner/options.h"

namespace stepsnap::runner {

int run_exec(const ExecOptions& options);

}  // namespace stepsnap::runner
