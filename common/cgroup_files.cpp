#include "common/cgroup_files.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/unique_fd.h"

namespace stepsnap {
namespace fs = std::filesystem;

Status write_control_file(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open", path);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    return fail_errno("write", path);
  return {};
}

Result<std::string> cgroup2_mount_point() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return fail_errno("open", "/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "... <mount point> <options> [optional fields] - <fstype> <source> ..."
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype;
    tail >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, devno, root, mount_point;
    head >> id >> parent >> devno >> root >> mount_point;
    return mount_point;
  }
  return fail("find", "cgroup2 mount", ENOENT,
              "mount cgroup v2: mount -t cgroup2 none /sys/fs/cgroup");
}

Result<bool> cgroup_populated(const std::string& dir) {
  std::ifstream in(dir + "/cgroup.events");
  if (!in) return fail_errno("read", dir + "/cgroup.events");
  std::string key;
  int value = 0;
  while (in >> key >> value) {
    if (key == "populated") return value != 0;
  }
  return fail("parse", dir + "/cgroup.events", EINVAL, "no 'populated' line");
}

Status kill_cgroup(const std::string& dir) {
  if (write_control_file(dir + "/cgroup.kill", "1")) return {};
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return fail("kill cgroup", dir, ENOENT, "no such cgroup directory");
  (void)write_control_file(dir + "/cgroup.freeze", "1");
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->path().filename() != "cgroup.procs") continue;
    std::ifstream procs(it->path());
    pid_t pid;
    while (procs >> pid) ::kill(pid, SIGKILL);
  }
  (void)write_control_file(dir + "/cgroup.freeze", "0");
  return {};
}

}  // namespace stepsnap
