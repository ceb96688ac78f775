// A stepsnapd whose step tracer cannot start (issue #14 item 7), inside the
// scripts/vm guest (label vm): the bpf() system call is refused to it with a
// seccomp filter, a real kernel refusal. It must still start, serve volumes,
// and answer step.status and run.show from the catalog; step.register says
// why step snapshots are off.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

#include "runner/exec/cgroup.h"
#include "tests/support/step_spawn.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::agent::vmtest {
namespace {

using namespace stepsnap::testing;
using json = nlohmann::json;

// From now on this process and every child it forks get EPERM from bpf().
// Seccomp filters cannot be lifted: this test has an executable of its own.
bool refuse_bpf_from_now_on() {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_bpf, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

class NoTracerVm : public StepsnapdFixture {};

TEST_F(NoTracerVm, WithoutItsTracerTheAgentStillServesVolumesAndStepRecords) {
  ok("volume.create", {{"name", "ws"}, {"size_bytes", 8 << 20}});
  auto cg = runner::Cgroup::create("stepsnap/no-tracer-test/s-" + std::to_string(::getpid()));
  ASSERT_TRUE(cg) << cg.error().message();
  ok("step.register", {{"pipeline", "p"},
                       {"run", "r1"},
                       {"step", "s1"},
                       {"cgroup", cg->path()},
                       {"volumes", {"ws"}},
                       {"policy", "both"},
                       {"command", "true"}});
  StepProcess p = spawn_step(*cg, "true");
  ASSERT_GT(p.pid, 0);
  ASSERT_EQ(::write(p.go, "g", 1), 1);
  ::close(p.go);
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  json done = wait_step_over("p", "r1", "s1");
  ASSERT_EQ(done.value("state", ""), "finished") << done.dump();

  stop_daemon(SIGTERM);
  ASSERT_TRUE(refuse_bpf_from_now_on()) << "seccomp: " << std::strerror(errno);
  ASSERT_NO_FATAL_FAILURE(start_daemon());
  EXPECT_NE(read_file(log_path()).find("step snapshots are off"), std::string::npos)
      << "the log does not say the tracer failed";

  // Step records, from the catalog.
  json st = ok("step.status", {{"pipeline", "p"}, {"run", "r1"}, {"step", "s1"}});
  EXPECT_EQ(st.value("state", ""), "finished") << st.dump();
  EXPECT_EQ(st["pre_snapshots"].size(), 1u) << st.dump();
  EXPECT_EQ(st["post_snapshots"].size(), 1u) << st.dump();
  EXPECT_EQ(st["snapshots"].size(), 2u) << st.dump();
  json run = ok("run.show", {{"pipeline", "p"}, {"run", "r1"}});
  ASSERT_EQ(run["steps"].size(), 1u) << run.dump();
  EXPECT_EQ(run["steps"][0].value("state", ""), "finished");

  // Volumes, as ever.
  ok("snapshot.create", {{"volume", "ws"}, {"name", "ws.later"}});
  json vols = ok("volume.list", json::object());
  EXPECT_EQ(vols["volumes"].size(), 1u) << vols.dump();

  // A new step is refused, saying why.
  json refused = call("step.register", {{"pipeline", "p"},
                                        {"run", "r2"},
                                        {"step", "s1"},
                                        {"cgroup", cg->path()},
                                        {"volumes", {"ws"}}});
  EXPECT_FALSE(refused.value("ok", true)) << refused.dump();
  EXPECT_NE(refused["error"].value("message", "").find("step tracer did not start"),
            std::string::npos)
      << refused.dump();
}

}  // namespace
}  // namespace stepsnap::agent::vmtest
