// File systems a step mounts itself, inside the scripts/vm guest (label vm):
// a real stepsnapd and runner, steps that loop-mount an image on their
// volume (directly, through an overlay over a clone folder, a loop inside a
// loop), write into it and exit without sync. The post-snapshot must hold
// every byte: the agent takes it only once the step's cgroup is empty, which
// is after the kernel tore down the step's mount namespace and flushed what
// was mounted in it (bpf/tracer.cpp). Loop devices a step leaves behind are
// detached first, or the step is reported as not exactly snapshotted.
//
// Mounting and attaching loop devices is beyond the default sandbox: these
// steps run with --cap-add SYS_ADMIN and --dev host (pipeline steps with
// "cap_add" and "dev"), and mount under their own /tmp, since the rest of
// the step's root is the host's, read-only.
//
// Each TEST repeats its step many times against one daemon (the fixture
// starts one per TEST): STEPSNAP_REPEAT overrides the count (default 20).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/support/stepsnapd_fixture.h"

namespace stepsnap::testing {
namespace {

using json = nlohmann::json;

int repeat() {
  const char* r = std::getenv("STEPSNAP_REPEAT");
  return r && std::atoi(r) > 0 ? std::atoi(r) : 20;
}

// What a step writes into its inner file: `bytes` of one letter, a new one
// each step so that a stale image from the step before is a miss too.
struct Payload {
  std::size_t bytes;
  char letter;
  std::string write_to(const std::string& file) const {
    return "head -c " + std::to_string(bytes) + " /dev/zero | tr \"\\0\" " + letter + " > " + file;
  }
};

// An ext4 image at `img` (sized for 8 MiB of data), loop-mounted at `at`.
std::string loop_mount(const std::string& img, const std::string& at, const std::string& size) {
  return "truncate -s " + size + " " + img + " && mkfs.ext4 -q -F " + img + " && mkdir -p " + at +
         " && mount -o loop " + img + " " + at;
}

class StepMountsVm : public StepsnapdFixture {
 protected:
  Output exec(const std::string& run, const std::string& step, const std::string& script,
              const std::string& extra = "") {
    return sh(std::string(RUNNER_PATH) + " exec --agent " + socket_ + " --pipeline p --run " + run +
              " --step " + step + " --volume ws:/data --cap-add SYS_ADMIN --dev host " + extra +
              " -- sh -c '" + script + "'");
  }

  json status(const std::string& run, const std::string& step) {
    return ok("step.status", {{"pipeline", "p"}, {"run", run}, {"step", step}});
  }

  // Clones `snapshot`, mounts it read-only, loop-mounts (read-only) each
  // image of `images` inside the one before, and compares `file` in the last
  // with the payload. Everything is unmounted and the clone deleted again.
  // Returns "" when every byte is there, else what was found.
  std::string check(const std::string& snapshot, const std::vector<std::string>& images,
                    const std::string& file, const Payload& want) {
    json clone = ok("clone.create", {{"snapshot", snapshot}, {"name", "check"}});
    // One shell for the whole chain (each process is slow under emulation);
    // whatever got mounted is unmounted on the way out.
    std::vector<std::string> at{dir_ + "/mnt/check"};
    for (std::size_t i = 0; i < images.size(); ++i)
      at.push_back(dir_ + "/mnt/check-" + std::to_string(i));
    std::string umounts;
    for (auto it = at.rbegin(); it != at.rend(); ++it)
      umounts += "umount " + *it + " 2>/dev/null; ";
    std::string script = "set -e; trap '" + umounts + "' EXIT; mkdir -p";
    for (const auto& a : at) script += " " + a;
    script += "; mount -o ro " + clone.value("path", "?") + " " + at[0] + "; ";
    for (std::size_t i = 0; i < images.size(); ++i)
      script += "mount -o loop,ro " + at[i] + "/" + images[i] + " " + at[i + 1] + "; ";
    std::string path = at.back() + "/" + file;
    script += "stat -c %s " + path + " >&2; head -c " + std::to_string(want.bytes) +
              " /dev/zero | tr \"\\0\" " + want.letter + " | cmp - " + path + "; echo same";
    auto r = sh("{ " + script + "; }");
    std::string problem;
    if (r.out != "same\n") {
      problem = "want " + std::to_string(want.bytes) + " bytes of '" + want.letter + "' in " +
                file + ": " + r.out + r.err;
    }
    EXPECT_TRUE(call("volume.delete", {{"name", "check"}}).value("ok", false));
    return problem;
  }

  // Runs `steps` steps of one run, each writing a payload through `script`
  // and exiting without sync, and checks each step's post-snapshot.
  // Returns the number of misses (each one reported).
  int run_and_check(const std::string& run, int steps,
                    const std::function<std::string(const Payload&)>& script,
                    const std::vector<std::string>& images, const std::string& file,
                    const std::vector<std::size_t>& sizes) {
    int misses = 0;
    for (int i = 0; i < steps; ++i) {
      Payload p{sizes[static_cast<std::size_t>(i) % sizes.size()], static_cast<char>('A' + i % 26)};
      std::string step = "s" + std::to_string(i + 1);
      auto out = exec(run, step, script(p));
      EXPECT_EQ(out.rc, 0) << step << ": " << out.err;
      if (out.rc != 0) return ++misses;
      EXPECT_EQ(out.err.find("post-snapshot may not"), std::string::npos) << out.err;
      json st = status(run, step);
      EXPECT_EQ(st.value("exact", false), true) << st.dump();
      if (st["post_snapshots"].size() != 1u) {
        ADD_FAILURE() << "no post-snapshot: " << st.dump();
        return ++misses;
      }
      std::string problem = check(st["post_snapshots"][0], images, file, p);
      if (!problem.empty()) {
        ++misses;
        ADD_FAILURE() << step << " (" << p.bytes << " bytes): " << problem;
      }
    }
    return misses;
  }
};

// The reproduction: mkfs an image on the volume, loop-mount it,
// write 1 MiB or 8 MiB into it, exit without sync or umount.
TEST_F(StepMountsVm, ALoopMountedImageIsCompleteInThePostSnapshot) {
  make_volume("ws", {});
  int n = repeat();
  auto script = [](const Payload& p) {
    return loop_mount("/data/img", "/tmp/inner", "24M") + " && " + p.write_to("/tmp/inner/f");
  };
  EXPECT_EQ(run_and_check("one", n, script, {"img"}, "f", {1u << 20}), 0) << "1 MiB, of " << n;
  EXPECT_EQ(run_and_check("eight", n, script, {"img"}, "f", {8u << 20}), 0) << "8 MiB, of " << n;
}

// The image in an overlay mounted over a clone folder: lower and upper on
// the clone, the loop's backing file an overlay file.
TEST_F(StepMountsVm, AnImageInAnOverlayOverACloneFolderIsCompleteInThePostSnapshot) {
  make_volume("ws", {});
  int n = repeat();
  auto script = [](const Payload& p) {
    return "mkdir -p /data/lower /data/upper /data/work /data/merged && "
           "mount -t overlay overlay -o lowerdir=/data/lower,upperdir=/data/upper,"
           "workdir=/data/work /data/merged && " +
           loop_mount("/data/merged/img", "/tmp/inner", "24M") + " && " +
           p.write_to("/tmp/inner/f");
  };
  EXPECT_EQ(run_and_check("ovl", n, script, {"upper/img"}, "f", {1u << 20, 8u << 20}), 0)
      << "of " << n;
}

// A loop inside a loop: the outer image on the clone, the inner image in the
// outer's file system.
TEST_F(StepMountsVm, ALoopInsideALoopIsCompleteInThePostSnapshot) {
  make_volume("ws", {});
  int n = repeat();
  auto script = [](const Payload& p) {
    return loop_mount("/data/outer.img", "/tmp/outer", "40M") + " && " +
           loop_mount("/tmp/outer/inner.img", "/tmp/inner", "24M") + " && " +
           p.write_to("/tmp/inner/f");
  };
  EXPECT_EQ(run_and_check("nest", n, script, {"outer.img", "inner.img"}, "f", {1u << 20, 8u << 20}),
            0)
      << "of " << n;
}

// The loop device whose backing file is named `name`, or "". (Read from
// here, outside the step's mount namespace, the kernel shows the file's
// path from its mount's root: only the name is sure.)
std::string loop_backed_by(const std::string& name) {
  for (const auto& e : std::filesystem::directory_iterator("/sys/block")) {
    std::ifstream in(e.path() / "loop/backing_file");
    std::string backing;
    if (std::getline(in, backing) && backing.size() > name.size() &&
        backing.compare(backing.size() - name.size() - 1, std::string::npos, "/" + name) == 0)
      return "/dev/" + e.path().filename().string();
  }
  return "";
}

bool loop_bound(const std::string& dev) {
  return exists("/sys/block/" + dev.substr(dev.rfind('/') + 1) + "/loop/backing_file");
}

// losetup without autoclear: the device would outlive the step, keep the
// clone's file system alive and the clone busy. The agent detaches it.
TEST_F(StepMountsVm, ALoopDeviceLeftAttachedIsDetachedBeforeThePostSnapshot) {
  make_volume("ws", {});
  Payload p{1u << 20, 'L'};
  // The device's name comes back on stdout: the step cannot write the
  // test's folder under the host's /tmp.
  auto out = exec("r1", "s1",
                  "truncate -s 24M /data/img && d=$(losetup -f --show /data/img) && echo $d && "
                  "mkfs.ext4 -q -F $d && mkdir -p /tmp/inner && mount $d /tmp/inner && " +
                      p.write_to("/tmp/inner/f"));
  ASSERT_EQ(out.rc, 0) << out.err;
  std::string dev = out.out;
  ASSERT_FALSE(dev.empty());
  dev.pop_back();
  EXPECT_FALSE(loop_bound(dev)) << dev << " is still attached after the step";

  json st = status("r1", "s1");
  EXPECT_EQ(st.value("exact", false), true) << st.dump();
  auto finished = events_of("step.finished");
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0]["data"].value("exact", false), true) << finished[0].dump();
  bool told = false;
  for (const auto& e : events_of("snapshot.created")) {
    const json step = e["data"].value("step", json::object());
    if (!step.is_object()) continue;
    for (const auto& d : step.value("detached_loop_devices", json::array()))
      told |= d.get<std::string>().rfind(dev + " ", 0) == 0;
  }
  EXPECT_TRUE(told) << "the post-snapshot's event names the detached device";
  EXPECT_EQ(check(st["post_snapshots"][0], {"img"}, "f", p), "");
  // Nothing holds the clone any more: it can go.
  EXPECT_TRUE(call("volume.delete", {{"name", "p.r1.ws"}}).value("ok", false));
}

// A loop device still open when the step is over (here by this test, as a
// namespace held from outside the step would): the agent cannot vouch for
// what its file system has not written back, and says so everywhere.
TEST_F(StepMountsVm, ALoopDeviceStillOpenMarksThePostSnapshotNotExact) {
  make_volume("ws", {});
  // The step waits for `go`, which it sees through its read-only view of
  // the host (not under /tmp, which is the step's own); its loop device is
  // found from the host by its backing file.
  std::string go = "/var/tmp/stepsnap-go-" + std::to_string(::getpid());
  std::string image = "held-" + std::to_string(::getpid()) + ".img";
  Output out;
  std::thread step([&] {
    out = exec("r1", "s1",
               "truncate -s 8M /data/" + image + " && losetup -f /data/" + image +
                   " && while [ ! -e " + go + " ]; do sleep 0.1; done");
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  std::string dev;
  while ((dev = loop_backed_by(image)).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  UniqueFd holder;
  if (!dev.empty()) holder.reset(::open(dev.c_str(), O_RDONLY | O_CLOEXEC));
  std::ofstream(go) << "go\n";
  step.join();
  std::filesystem::remove(go);
  ASSERT_FALSE(dev.empty()) << "the step never attached its loop device: " << out.err;
  ASSERT_TRUE(holder) << dev;

  EXPECT_EQ(out.rc, 0) << "the step's own outcome stands: " << out.err;
  EXPECT_NE(out.err.find("post-snapshot may not hold every write"), std::string::npos) << out.err;
  EXPECT_NE(out.err.find(dev), std::string::npos) << out.err;
  json st = status("r1", "s1");
  EXPECT_EQ(st.value("exact", true), false) << st.dump();
  EXPECT_NE(st.value("not_exact_reason", "").find(dev), std::string::npos) << st.dump();
  ASSERT_EQ(st["post_snapshots"].size(), 1u) << "the post-snapshot is still taken";
  json snap = ok("snapshot.show", {{"name", st["post_snapshots"][0]}});
  EXPECT_EQ(snap["labels"].value("stepsnap.exact", ""), "false") << snap.dump();
  auto finished = events_of("step.finished");
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0]["data"].value("exact", true), false) << finished[0].dump();

  // The agent marked it to go with its last user: that is us.
  EXPECT_TRUE(loop_bound(dev));
  holder.reset();
  EXPECT_FALSE(loop_bound(dev)) << dev << " stayed attached after its last close";
}

// `runner pipeline run` runs each step through exec's code: the same wait,
// seen from a pipeline file; the next step sees what the first one wrote.
TEST_F(StepMountsVm, APipelineStepsLoopMountedImageIsCompleteInItsPostSnapshot) {
  make_volume("ws", {});
  Payload p{8u << 20, 'P'};
  std::string file = dir_ + "/pipeline.json";
  std::string write =
      loop_mount("/data/img", "/tmp/inner", "24M") + " && " + p.write_to("/tmp/inner/f");
  // Mounting needs CAP_SYS_ADMIN and the loop devices the host's /dev.
  json cap_add = json::array({"SYS_ADMIN"});
  json spec = {{"pipeline", "mounts"},
               {"volumes", {{{"name", "ws"}, {"mount", "/data"}}}},
               {"steps",
                {{{"name", "write"},
                  {"command", {"sh", "-c", write}},
                  {"after", json::array()},
                  {"cap_add", cap_add},
                  {"dev", "host"}},
                 {{"name", "read"},
                  {"cap_add", cap_add},
                  {"dev", "host"},
                  {"command",
                   {"sh", "-c",
                    "mkdir -p /tmp/again && mount -o loop,ro /data/img /tmp/again && "
                    "test $(wc -c < /tmp/again/f) = " +
                        std::to_string(p.bytes)}},
                  {"after", {"write"}}}}}};
  std::ofstream(file) << spec.dump();
  auto run =
      sh(std::string(RUNNER_PATH) + " pipeline run " + file + " --agent " + socket_ + " --run r1");
  ASSERT_EQ(run.rc, 0) << run.out << run.err;
  json st = ok("step.status", {{"pipeline", "mounts"}, {"run", "r1"}, {"step", "write"}});
  EXPECT_EQ(st.value("exact", false), true) << st.dump();
  ASSERT_EQ(st["post_snapshots"].size(), 1u) << st.dump();
  EXPECT_EQ(check(st["post_snapshots"][0], {"img"}, "f", p), "");
}

}  // namespace
}  // namespace stepsnap::testing
