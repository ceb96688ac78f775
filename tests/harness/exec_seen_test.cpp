// Harness proof for the host label: a real BPF program on the running kernel
// sees a real exec.
#include <linux/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "exec_seen.h"
#include "exec_seen.skel.h"

namespace {

struct SkelDeleter {
  void operator()(exec_seen* s) const { exec_seen::destroy(s); }
};
struct RingDeleter {
  void operator()(ring_buffer* r) const { ring_buffer__free(r); }
};

int collect(void* ctx, void* data, size_t size) {
  if (size < sizeof(exec_seen_event)) return 0;
  auto* seen = static_cast<std::vector<exec_seen_event>*>(ctx);
  exec_seen_event e;
  std::memcpy(&e, data, sizeof(e));
  seen->push_back(e);
  return 0;
}

TEST(HarnessBpf, SeesExecOfChildProcess) {
  std::unique_ptr<exec_seen, SkelDeleter> skel(exec_seen::open());
  ASSERT_TRUE(skel) << "open BPF skeleton";
  skel->rodata->parent_tgid = static_cast<__u32>(getpid());
  ASSERT_EQ(exec_seen::load(skel.get()), 0) << "load BPF program (are you root?)";
  ASSERT_EQ(exec_seen::attach(skel.get()), 0) << "attach tp_btf/sched_process_exec";

  std::vector<exec_seen_event> seen;
  std::unique_ptr<ring_buffer, RingDeleter> ring(
      ring_buffer__new(bpf_map__fd(skel->maps.events), collect, &seen, nullptr));
  ASSERT_TRUE(ring);

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    execl("/bin/true", "true", nullptr);
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);

  for (int i = 0; i < 20 && seen.empty(); ++i) ring_buffer__poll(ring.get(), 100);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].pid, static_cast<__u32>(child));
  EXPECT_EQ(seen[0].ppid, static_cast<__u32>(getpid()));
  EXPECT_STREQ(seen[0].comm, "true");
}

}  // namespace
