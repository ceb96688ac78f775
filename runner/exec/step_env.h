// The step's environment: built, not inherited. runner's own environment
// may hold anything (a CI token, SSH_AUTH_SOCK, the agent socket's path);
// the step gets a few variables that describe the terminal and locale, and
// what --env-file and --env give.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace stepsnap::runner {

using EnvList = std::vector<std::pair<std::string, std::string>>;

// Taken from runner's environment when set there: PATH, TERM, LANG,
// LANGUAGE, TZ and every LC_*.
bool env_allowed_from_runner(const std::string& name);

// runner_env ("K=V" strings) filtered by the allow-list, PATH defaulted to
// containerd's default when absent, HOME set to /root for uid 0 and / for
// any other uid, then `given` (--env-file and --env, in order) on top: a
// later value of a name replaces an earlier one in place.
std::vector<std::string> step_environment(const std::vector<std::string>& runner_env,
                                          const EnvList& given, uid_t uid);

// --env-file FILE: one NAME=VALUE per line, taken literally (no quotes,
// no expansion); blank lines and lines starting with # are skipped. A
// line without '=' or with an empty name is an error naming the line.
Result<EnvList> read_env_file(const std::string& path);

}  // namespace stepsnap::runner
