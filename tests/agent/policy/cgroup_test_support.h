// Real cgroups for the agent's host tests: a subtree of its own per test
// process (<cgroup v2 mount>/stepsnap-authz-test-<pid>), standing in for
// the agent's stepsnap/, and a sibling outside it; both removed afterwards.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <list>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runner/exec/cgroup.h"

namespace stepsnap::agent::testing {

class CgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for cgroups";
    auto m = runner::cgroup2_mount_point();
    if (!m) GTEST_SKIP() << m.error().message();
    mount_ = *m;
    relative_ = "stepsnap-authz-test-" + std::to_string(::getpid());
    outside_name_ = "stepsnap-authz-outside-" + std::to_string(::getpid());
    subtree_ = mount_ + "/" + relative_;
  }
  void TearDown() override {
    for (pid_t pid : pids_) {
      if (pid <= 0) continue;  // reaped already (kill(-1) would be everyone)
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    cgroups_.clear();
    // Parents the runner's Cgroup made on the way, deepest first.
    for (const std::string& top : {subtree_, mount_ + "/" + outside_name_}) {
      for (const char* sub : {"/p/r", "/p", ""}) ::rmdir((top + sub).c_str());
    }
  }
  // A cgroup at <subtree>/<rel>, removed after the test.
  runner::Cgroup& make(const std::string& rel) {
    auto cg = runner::Cgroup::create(relative_ + "/" + rel);
    if (!cg) throw std::runtime_error(cg.error().message());
    cgroups_.push_back(std::move(*cg));
    return cgroups_.back();
  }
  // A process sleeping in cg; killed and reaped after the test.
  pid_t sleeper(const runner::Cgroup& cg) {
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::pause();
      ::_exit(0);
    }
    EXPECT_TRUE(cg.add_process(pid));
    pids_.push_back(pid);
    return pid;
  }
  // Whether pid ended by SIGKILL (waits for it), or is still alive (false).
  bool killed(pid_t pid) {
    int status = 0;
    // Killed processes are reaped at once; a live one is told apart by
    // signal 0, with no waiting on time.
    if (::kill(pid, 0) == 0) {
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == 0) {
        // Alive, or dying right now: cgroup.kill is asynchronous. Ask again
        // after the kernel has had the chance to deliver it.
        for (int i = 0; i < 1000 && r == 0; ++i) {
          ::usleep(1000);
          r = ::waitpid(pid, &status, WNOHANG);
        }
        if (r == 0) return false;
      }
    } else {
      ::waitpid(pid, &status, 0);
    }
    for (auto& p : pids_)
      if (p == pid) p = -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }

  std::string mount_, relative_, outside_name_, subtree_;
  std::list<runner::Cgroup> cgroups_;
  std::vector<pid_t> pids_;
};

}  // namespace stepsnap::agent::testing
