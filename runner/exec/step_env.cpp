#include "runner/exec/step_env.h"

#include <cerrno>
#include <fstream>

namespace stepsnap::runner {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

void put(std::vector<std::string>& env, const std::string& name, const std::string& value) {
  for (auto& kv : env) {
    if (kv.compare(0, name.size() + 1, name + "=") == 0) {
      kv = name + "=" + value;
      return;
    }
  }
  env.push_back(name + "=" + value);
}

}  // namespace

bool env_allowed_from_runner(const std::string& name) {
  for (const char* allowed : {"PATH", "TERM", "LANG", "LANGUAGE", "TZ"})
    if (name == allowed) return true;
  return name.rfind("LC_", 0) == 0;
}

std::vector<std::string> step_environment(const std::vector<std::string>& runner_env,
                                          const EnvList& given, uid_t uid) {
  std::vector<std::string> env;
  for (const auto& kv : runner_env) {
    auto eq = kv.find('=');
    if (eq != std::string::npos && env_allowed_from_runner(kv.substr(0, eq))) env.push_back(kv);
  }
  bool has_path = false;
  for (const auto& kv : env) has_path |= kv.rfind("PATH=", 0) == 0;
  if (!has_path) env.push_back(std::string("PATH=") + kDefaultPath);
  put(env, "HOME", uid == 0 ? "/root" : "/");
  for (const auto& [name, value] : given) put(env, name, value);
  return env;
}

Result<EnvList> read_env_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail_errno("read --env-file", path);
  EnvList env;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.front() == '#') continue;
    auto eq = line.find('=');
    if (eq == 0 || eq == std::string::npos)
      return fail("bad --env-file", path + ":" + std::to_string(number), EINVAL,
                  "expected NAME=VALUE, a comment (#) or a blank line");
    env.emplace_back(line.substr(0, eq), line.substr(eq + 1));
  }
  return env;
}

}  // namespace stepsnap::runner
