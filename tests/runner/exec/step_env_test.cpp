// The step's environment is built from an allow-list and the options
// (label unit).
#include "runner/exec/step_env.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

namespace stepsnap::runner {
namespace {

using Env = std::vector<std::string>;

TEST(StepEnv, OnlyAllowedVariablesComeFromRunner) {
  Env runner{"PATH=/opt/bin:/usr/bin",
             "TERM=xterm",
             "LANG=C.UTF-8",
             "LC_ALL=C",
             "TZ=UTC",
             "SSH_AUTH_SOCK=/run/user/0/agent",
             "CI_TOKEN=secret",
             "HOME=/home/op",
             "LD_PRELOAD=/x.so",
             "PATHOLOGICAL=1"};
  EXPECT_EQ(step_environment(runner, {}, 0),
            (Env{"PATH=/opt/bin:/usr/bin", "TERM=xterm", "LANG=C.UTF-8", "LC_ALL=C", "TZ=UTC",
                 "HOME=/root"}));
}

TEST(StepEnv, PathAndHomeHaveDefaults) {
  EXPECT_EQ(step_environment({}, {}, 1000),
            (Env{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}));
}

TEST(StepEnv, GivenVariablesWinAndALaterOneReplacesAnEarlier) {
  EXPECT_EQ(step_environment({"PATH=/usr/bin"},
                             {{"A", "1"}, {"PATH", "/x"}, {"HOME", "/w"}, {"A", "2"}}, 0),
            (Env{"PATH=/x", "HOME=/w", "A=2"}));
}

TEST(StepEnv, EnvFileLinesCommentsAndErrors) {
  std::string path = "/tmp/step-env-test-" + std::to_string(::getpid());
  std::ofstream(path) << "# a comment\n\nA=1\nB=x=y\r\nEMPTY=\nQUOTED=\"kept\"\n";
  auto env = read_env_file(path);
  ASSERT_TRUE(env) << env.error().message();
  EXPECT_EQ(*env, (EnvList{{"A", "1"}, {"B", "x=y"}, {"EMPTY", ""}, {"QUOTED", "\"kept\""}}));

  std::ofstream(path) << "A=1\nnot a variable\n";
  env = read_env_file(path);
  ASSERT_FALSE(env);
  EXPECT_NE(env.error().message().find(path + ":2"), std::string::npos) << env.error().message();
  ::unlink(path.c_str());

  env = read_env_file(path);
  ASSERT_FALSE(env);
  EXPECT_NE(env.error().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace stepsnap::runner
