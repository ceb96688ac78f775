// The step sandbox with a real stepsnapd, its pool and a step's clone,
// inside the scripts/vm guest (label vm): what a root step reaches.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;

class SandboxVm : public StepsnapdFixture {
 protected:
  Output exec(const std::string& run, const std::string& script, const std::string& extra = "") {
    return sh(std::string(RUNNER_PATH) + " exec --agent " + socket_ + " --pipeline p --run " + run +
              " --step s --volume ws:/workspace --volume data:/data:ro " + extra + " -- sh -c '" +
              script + "'");
  }
  // "<major> <minor>" of a block device on the host.
  static std::string numbers_of(const std::string& dev) {
    struct stat st {};
    if (::stat(dev.c_str(), &st) != 0) return "0 0";
    return std::to_string(major(st.st_rdev)) + " " + std::to_string(minor(st.st_rdev));
  }
};

TEST_F(SandboxVm, RootStepReachesNeitherThePoolNorTheSocketAndCannotRemountItsClones) {
  make_volume("ws", {{"seed", "seed\n"}});
  make_volume("data", {{"input", "in\n"}});
  // The run's clone, made now so that the test knows its device.
  json clone = ok("run.clone", {{"pipeline", "p"}, {"run", "r1"}, {"volume", "ws"}});
  std::string clone_dev = clone.value("path", "");
  ASSERT_FALSE(clone_dev.empty()) << clone.dump();
  std::string pool_dev = "/dev/mapper/" + pool_ + "-pool";
  ASSERT_TRUE(exists(pool_dev));

  std::string script =
      // the pool, the clones and the volumes: no device node, none that opens
      "test -e " + pool_dev +
      " || echo no-pool-node; "
      "test -e " +
      clone_dev +
      " || echo no-clone-node; "
      "ls /dev/mapper >/dev/null 2>&1 || echo no-dev-mapper; "
      "mknod /tmp/pool b " +
      numbers_of(pool_dev) +
      " && "
      "(head -c 1 /tmp/pool >/dev/null 2>&1 || echo pool-node-opens-nothing); "
      "mknod /workspace/clone b " +
      numbers_of(clone_dev) +
      " && "
      "(head -c 1 /workspace/clone >/dev/null 2>&1 || echo clone-node-opens-nothing); "
      "rm -f /workspace/clone; "
      // the agent's socket
      "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect(\\\"" +
      socket_ +
      "\\\")\" 2>/dev/null || echo no-socket; "
      "test -e /run/stepsnap || echo no-run-stepsnap; "
      // the clones: writable where asked, and their mounts are fixed
      "echo w > /workspace/written && echo wrote-clone; "
      "echo w > /data/x 2>/dev/null || echo data-ro; "
      "mount -o remount,rw /data 2>/dev/null || echo remount-data-refused; "
      "mount -o remount,ro /workspace 2>/dev/null || echo remount-ws-refused; "
      "umount -l /workspace 2>/dev/null || echo umount-refused; "
      "mount " +
      clone_dev +
      " /tmp 2>/dev/null || echo mount-refused; "
      // the host
      "touch /etc/stepsnap-x 2>/dev/null || echo etc-ro; "
      "grep -E \"^(NoNewPrivs|CapEff)\" /proc/self/status";
  auto out = exec("r1", script);
  ASSERT_EQ(out.rc, 0) << out.err;
  EXPECT_EQ(out.out,
            "no-pool-node\nno-clone-node\nno-dev-mapper\npool-node-opens-nothing\n"
            "clone-node-opens-nothing\nno-socket\nno-run-stepsnap\nwrote-clone\ndata-ro\n"
            "remount-data-refused\nremount-ws-refused\numount-refused\nmount-refused\netc-ro\n"
            "CapEff:\t00000000a80425fb\nNoNewPrivs:\t1\n");
  EXPECT_FALSE(exists("/etc/stepsnap-x"));

  // The write landed in the clone, and the post-snapshot holds it.
  json st = wait_step_over("p", "r1", "s");
  ASSERT_EQ(st["post_snapshots"].size(), 2u) << st.dump();
  bool found = false;
  for (const auto& snap : st["post_snapshots"]) {
    std::string at = mount_snapshot(snap);
    found |= exists(at + "/written") && read_file(at + "/written") == "w\n";
  }
  EXPECT_TRUE(found) << st.dump();
}

TEST_F(SandboxVm, UserStepWritesOnlyWhereItsUserMay) {
  make_volume("ws", {});
  make_volume("data", {});
  // The clone's root directory belongs to root: a --user step makes its
  // folder through a root step first, as an image's entrypoint would.
  auto prep = exec("r1", "mkdir /workspace/mine && chown 1000:1000 /workspace/mine");
  ASSERT_EQ(prep.rc, 0) << prep.err;
  auto out = sh(std::string(RUNNER_PATH) + " exec --agent " + socket_ +
                " --pipeline p --run r1 --step u --user 1000 --volume ws:/workspace "
                "--marshal mine/.marshal -- sh -c 'id -u; echo x > /workspace/mine/f && "
                "echo wrote-own; echo x > /workspace/f 2>/dev/null || echo root-dir-refused'");
  ASSERT_EQ(out.rc, 0) << out.err;
  EXPECT_EQ(out.out, "1000\nwrote-own\nroot-dir-refused\n");
}

}  // namespace
}  // namespace stepsnap::testing
