// The step sandbox against the running kernel (label host): a root step run
// by `runner exec --no-agent`, observed from inside and from the host.
// Clones and the agent's socket with a real stepsnapd: sandbox_vm_test.cpp.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {
namespace fs = std::filesystem;

struct Outcome {
  int code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

constexpr const char* kPython = "/usr/bin/python3";

// A Python snippet calling the raw system call `nr` with zero arguments
// and printing "<name> <errno name>" ("<name> ok" if it worked).
std::string try_syscall(const std::string& name, int nr, const std::string& args = "") {
  return "r = libc.syscall(" + std::to_string(nr) + (args.empty() ? "" : ", " + args) +
         "); print('" + name + "', 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()])\n";
}

class Sandbox : public ::testing::Test {
 protected:
  void SetUp() override {
    // Not under /tmp: the step has a /tmp of its own.
    dir_ = fs::path("/var/tmp") / ("runner-sandbox-" + std::to_string(::getpid()) + "-" +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // `[prefix] runner exec --no-agent <args>`, stdout and stderr captured.
  Outcome run(const std::string& args, const std::string& prefix = "") {
    std::string cmd = prefix + std::string(RUNNER_PATH) + " exec --no-agent " + args + " >" +
                      (dir_ / "out").string() + " 2>" + (dir_ / "err").string() + " </dev/null";
    int status = std::system(cmd.c_str());
    Outcome o;
    o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    o.out = slurp(dir_ / "out");
    o.err = slurp(dir_ / "err");
    return o;
  }
  // A Python script run as the step.
  Outcome python(const std::string& script, const std::string& args = "") {
    std::ofstream(dir_ / "step.py") << script;
    return run(args + " -- " + kPython + " " + (dir_ / "step.py").string());
  }
  // The test's folder as a writable volume at its own path.
  std::string shared() const { return "--volume " + dir_.string() + ":" + dir_.string() + " "; }

  fs::path dir_;
};

std::string status_field(const std::string& status, const std::string& field) {
  std::istringstream in(status);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) {
      auto v = line.substr(field.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      v.erase(v.find_last_not_of(" \t") + 1);
      return v;
    }
  return "";
}

TEST_F(Sandbox, RootStepHasContainerdsCapabilitiesNoNewPrivsAndSeccomp) {
  auto o = run("-- cat /proc/self/status");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(status_field(o.out, "Uid"), "0\t0\t0\t0");
  EXPECT_EQ(status_field(o.out, "CapEff"), "00000000a80425fb");
  EXPECT_EQ(status_field(o.out, "CapPrm"), "00000000a80425fb");
  EXPECT_EQ(status_field(o.out, "CapBnd"), "00000000a80425fb");
  EXPECT_EQ(status_field(o.out, "CapAmb"), "0000000000000000");
  EXPECT_EQ(status_field(o.out, "NoNewPrivs"), "1");
  EXPECT_EQ(status_field(o.out, "Seccomp"), "2");  // a filter
}

TEST_F(Sandbox, CapAddAndCapDropChangeTheSet) {
  auto o = run("--cap-drop NET_RAW --cap-drop mknod --cap-add SYS_PTRACE -- cat /proc/self/status");
  ASSERT_EQ(o.code, 0) << o.err;
  // a80425fb - NET_RAW (bit 13) - MKNOD (bit 27) + SYS_PTRACE (bit 19)
  EXPECT_EQ(status_field(o.out, "CapEff"), "00000000a00c05fb");
  o = run("--cap-drop ALL -- cat /proc/self/status");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(status_field(o.out, "CapEff"), "0000000000000000");
  EXPECT_EQ(status_field(o.out, "CapBnd"), "0000000000000000");
}

TEST_F(Sandbox, UserStepRunsAsThatUserWithNoCapability) {
  auto o = run("--user 65534:65533 -- cat /proc/self/status");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(status_field(o.out, "Uid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(status_field(o.out, "Gid"), "65533\t65533\t65533\t65533");
  EXPECT_EQ(status_field(o.out, "Groups"), "65533");
  EXPECT_EQ(status_field(o.out, "CapEff"), "0000000000000000");
  EXPECT_EQ(status_field(o.out, "CapPrm"), "0000000000000000");
  EXPECT_EQ(status_field(o.out, "CapBnd"), "00000000a80425fb");
  EXPECT_EQ(status_field(o.out, "NoNewPrivs"), "1");
}

TEST_F(Sandbox, ForbiddenSystemCallsFailWithEperm) {
  // x86_64 numbers. Arguments are zero or harmless: without the filter,
  // each would fail with EFAULT or EINVAL, or succeed, but not with EPERM
  // (CAP_SYS_ADMIN and friends are already gone, so the kernel would say
  // EPERM for some; the filter's EPERM is seen first either way, and
  // unshare(CLONE_NEWUSER) and perf_event_open need no capability at all).
  std::string script =
      "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n" +
      try_syscall("bpf", 321, "0, 0, 0") +
      try_syscall("mount", 165, "b'none', b'/tmp', b'tmpfs', 0, 0") +
      try_syscall("umount2", 166, "b'/proc', 2") + try_syscall("pivot_root", 155, "b'.', b'.'") +
      try_syscall("unshare_user", 272, "0x10000000") + try_syscall("setns", 308, "0, 0") +
      try_syscall("perf_event_open", 298, "0, 0, -1, -1, 0") +
      try_syscall("finit_module", 313, "0, b'', 0") +
      try_syscall("open_by_handle_at", 304, "0, 0, 0") + try_syscall("keyctl", 250, "0, 0") +
      try_syscall("add_key", 248, "b'user', b'k', 0, 0, 0") + try_syscall("clone3", 435, "0, 0") +
      try_syscall("userfaultfd", 323, "0") + try_syscall("io_uring_setup", 425, "1, 0") +
      // allowed: what a normal step does
      try_syscall("getpid", 39) +
      "import subprocess\n"
      "print('fork', subprocess.run(['true']).returncode)\n";
  auto o = python(script);
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out,
            "bpf EPERM\nmount EPERM\numount2 EPERM\npivot_root EPERM\nunshare_user EPERM\n"
            "setns EPERM\nperf_event_open EPERM\nfinit_module EPERM\nopen_by_handle_at EPERM\n"
            "keyctl EPERM\nadd_key EPERM\nclone3 ENOSYS\nuserfaultfd EPERM\n"
            "io_uring_setup EPERM\ngetpid ok\nfork 0\n");
  // unshare(1) and mount(8) as a user would meet them.
  o =
      run("-- sh -c 'unshare -U true || echo unshare-refused; "
          "mount -t tmpfs none /tmp 2>/dev/null || echo mount-refused'");
  EXPECT_EQ(o.out, "unshare-refused\nmount-refused\n") << o.err;
}

TEST_F(Sandbox, HostFilesystemIsReadOnlyAndProcSysTooButTmpIsWritable) {
  std::string marker = "/etc/stepsnap-sandbox-" + std::to_string(::getpid());
  // /run first: mount(8) makes /run/mount when it tries.
  auto o = run("-- sh -c 'ls -A /run; touch " + marker +
               " 2>/dev/null || echo etc-ro; "
               "echo x > /usr/stepsnap-x 2>/dev/null || echo usr-ro; "
               "echo h > /proc/sys/kernel/hostname 2>/dev/null || echo proc-sys-ro; "
               "echo h > /proc/sysrq-trigger 2>/dev/null || echo sysrq-ro; "
               "echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null || echo sys-ro; "
               "test -s /proc/kcore || echo kcore-masked; "
               "mount -o remount,rw / 2>/dev/null || echo remount-refused; "
               "echo ok > /tmp/f && cat /tmp/f; test -d /etc && echo etc-visible'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out,
            "etc-ro\nusr-ro\nproc-sys-ro\nsysrq-ro\nsys-ro\nkcore-masked\nremount-refused\nok\n"
            "etc-visible\n");
  EXPECT_FALSE(fs::exists(marker));
  EXPECT_FALSE(fs::exists("/usr/stepsnap-x"));
}

TEST_F(Sandbox, RootStepCannotLeaveOrChangeItsCgroup) {
  // runner_exec_test tries harder (with CAP_SYS_ADMIN); this is the default.
  auto o =
      run("-- sh -c 'echo $$ > /sys/fs/cgroup/cgroup.procs 2>/dev/null || echo move-refused; "
          "mkdir /sys/fs/cgroup/x 2>/dev/null || echo no-child; "
          "echo 1 > /sys/fs/cgroup/cgroup.max.descendants 2>/dev/null || echo limits-ro; "
          "grep ^0:: /proc/self/cgroup'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "move-refused\nno-child\nlimits-ro\n0::/\n");
}

TEST_F(Sandbox, DevIsMinimalAndDeviceNodesTheStepMakesOpenNothing) {
  // The host's root device: a block device a root step must not read.
  struct stat root {};
  ASSERT_EQ(::stat("/", &root), 0);
  std::string major = std::to_string(major(root.st_dev)),
              minor = std::to_string(minor(root.st_dev));
  auto o = run(shared() +
               "-- sh -c 'ls -A /dev | tr \"\\n\" \" \"; echo; "
               "echo x > /dev/null && head -c 4 /dev/zero | wc -c; "
               "mknod /dev/disk b " +
               major + " " + minor +
               " 2>/dev/null || echo dev-ro; "
               "mknod /tmp/disk b " +
               major + " " + minor +
               " && "
               "(head -c 1 /tmp/disk >/dev/null 2>&1 || echo tmp-nodev); "
               "mknod " +
               (dir_ / "disk").string() + " b " + major + " " + minor +
               " && "
               "(head -c 1 " +
               (dir_ / "disk").string() + " >/dev/null 2>&1 || echo volume-nodev)'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out,
            "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \n"
            "4\ndev-ro\ntmp-nodev\nvolume-nodev\n");
}

TEST_F(Sandbox, TheAgentsSocketDirectoryIsUnreachable) {
  // A listening socket where stepsnapd keeps its own; made for the test if
  // the host has none there.
  bool made_dir = !fs::exists("/run/stepsnap");
  fs::create_directories("/run/stepsnap");
  std::string path = "/run/stepsnap/sandbox-test-" + std::to_string(::getpid()) + ".sock";
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);

  auto o = python(
      "import socket\n"
      "s = socket.socket(socket.AF_UNIX)\n"
      "try:\n"
      "    s.connect('" +
      path +
      "')\n"
      "    print('connected')\n"
      "except OSError as e:\n"
      "    print(type(e).__name__)\n");
  ::close(listener);
  ::unlink(path.c_str());
  if (made_dir) ::rmdir("/run/stepsnap");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "FileNotFoundError\n");
}

TEST_F(Sandbox, OnlyStdinStdoutAndStderrAreOpen) {
  // runner is given open descriptors 3, 7 and 9 without close-on-exec.
  auto o = run("-- sh -c 'ls /proc/$$/fd | tr \"\\n\" \" \"'",
               "exec 3</dev/null 7</etc/hostname 9>/dev/null; ");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "0 1 2 ");
}

TEST_F(Sandbox, EnvironmentIsTheAllowListPlusEnvAndEnvFile) {
  std::ofstream(dir_ / "env") << "# settings\nB=from-file\nA=from-file\n";
  auto o = run("--env-file " + (dir_ / "env").string() + " --env A=1 -- /usr/bin/env",
               "env -i PATH=/usr/bin:/bin LANG=C.UTF-8 CI_TOKEN=secret "
               "SSH_AUTH_SOCK=/run/agent HOME=/home/op ");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "PATH=/usr/bin:/bin\nLANG=C.UTF-8\nHOME=/root\nB=from-file\nA=1\n");
}

TEST_F(Sandbox, RootfsIsTheStepsReadOnlyRoot) {
  // A root of one static busybox.
  fs::path rootfs = dir_ / "rootfs";
  fs::create_directories(rootfs / "bin");
  fs::copy_file("/bin/busybox", rootfs / "bin/busybox");
  auto o = run("--rootfs " + rootfs.string() +
               " -- /bin/busybox sh -c '/bin/busybox ls / | /bin/busybox tr \"\\n\" \" \"; "
               "/bin/busybox touch /x 2>/dev/null || echo ro; "
               "/bin/busybox test -e /usr/bin/python3 || echo no-host-usr'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "bin dev proc run tmp ro\nno-host-usr\n");
  EXPECT_FALSE(fs::exists(rootfs / "x"));
}

TEST_F(Sandbox, NormalStepStillWorks) {
  // Python from the host's /usr, writing its volume, at runner's directory
  // when the step's root shows it.
  auto o = run(shared() + "--workdir " + dir_.string() + " -- " + kPython +
               " -c 'import os, numpy; open(\"out\", \"w\").write(os.getcwd())'");
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(slurp(dir_ / "out"), dir_.string());
  o = run("-- pwd", "cd /usr/share && ");
  EXPECT_EQ(o.out, "/usr/share\n") << o.err;
}

TEST_F(Sandbox, BadSandboxOptionsAreOneLine) {
  for (const std::string args :
       {"--user root -- true", "--cap-add SUPERPOWER -- true", "--rootfs /nonexistent -- true",
        "--dev all -- true", "--env-file /nonexistent -- true"}) {
    auto o = run(args);
    EXPECT_EQ(o.code, 125) << args;
    std::string last = o.err.substr(o.err.rfind("runner:"));
    EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << o.err;
  }
}

}  // namespace
