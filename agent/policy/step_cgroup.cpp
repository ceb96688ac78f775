#include "agent/policy/step_cgroup.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "common/cgroup_files.h"

namespace stepsnap::agent {

namespace {

UniqueFd openat2_fd(int dirfd, const std::string& path, std::uint64_t flags,
                    std::uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.resolve = resolve;
  return UniqueFd(static_cast<int>(::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how)));
}

bool on_cgroup2(int fd) {
  struct statfs fs {};
  return ::fstatfs(fd, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

// A step's cgroup as runner makes it: relative to the subtree, one or more
// components, no "." or ".." (the request parser refuses those too).
bool plain_relative(std::string_view rel) {
  if (rel.empty() || rel.front() == '/') return false;
  std::size_t start = 0;
  while (start <= rel.size()) {
    auto end = rel.find('/', start);
    if (end == std::string_view::npos) end = rel.size();
    auto part = rel.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

Result<std::string> default_step_cgroup_subtree() {
  auto mount = cgroup2_mount_point();
  if (!mount) return tl::unexpected(mount.error());
  return *mount + "/stepsnap";
}

Result<StepCgroup> StepCgroup::open(const std::string& path, const std::string& subtree) {
  const std::string rule = "step cgroups must be beneath " + subtree + " (runner exec makes " +
                           subtree + "/<pipeline>/<run>/<step>)";
  std::string prefix = subtree + "/";
  if (path.compare(0, prefix.size(), prefix) != 0 ||
      !plain_relative(std::string_view(path).substr(prefix.size()))) {
    return fail("use cgroup", path, EPERM, rule);
  }
  // The subtree itself is reached from / without following any symlink, so
  // that the boundary is the real directory.
  UniqueFd root = openat2_fd(AT_FDCWD, subtree, O_PATH | O_DIRECTORY | O_CLOEXEC,
                             RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  if (!root) {
    if (errno == ENOSYS) return fail_errno("openat2 (Linux 5.6 or newer needed)", subtree);
    return fail_errno("open step cgroup subtree", subtree);
  }
  if (!on_cgroup2(root.get())) {
    return fail("use cgroup subtree", subtree, EINVAL, "it is not on the cgroup v2 file system");
  }
  UniqueFd dir =
      openat2_fd(root.get(), path.substr(prefix.size()), O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
  if (!dir) {
    int err = errno;
    if (err == ENOENT)
      return fail("use cgroup", path, ENOENT, "no such cgroup directory; create it first");
    if (err == ELOOP || err == EXDEV)
      return fail("use cgroup", path, err,
                  "a symlink or another mount is on the way; " + rule + ", as plain directories");
    return fail("use cgroup", path, err);
  }
  if (!on_cgroup2(dir.get())) {
    return fail("use cgroup", path, EINVAL, "it is not a cgroup v2 directory");
  }
  struct stat st {};
  if (::fstat(dir.get(), &st) != 0) return fail_errno("stat cgroup", path);
  return StepCgroup(path, st.st_ino, std::move(dir));
}

Result<bool> StepCgroup::populated() const {
  // Through the fd: the path may name another directory by now.
  UniqueFd events(::openat(dir_.get(), "cgroup.events", O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!events) return fail_errno("read", path_ + "/cgroup.events");
  char buf[256];
  ssize_t n = ::read(events.get(), buf, sizeof buf - 1);
  if (n < 0) return fail_errno("read", path_ + "/cgroup.events");
  std::string_view text(buf, static_cast<std::size_t>(n));
  auto at = text.find("populated ");
  if (at == std::string_view::npos)
    return fail("parse", path_ + "/cgroup.events", EINVAL, "no 'populated' line");
  return text.substr(at + 10, 1) == "1";
}

Status StepCgroup::kill(std::uint64_t expected_id) const {
  struct stat st {};
  if (::fstat(dir_.get(), &st) != 0) return fail_errno("stat cgroup", path_);
  if (st.st_ino != expected_id) {
    return fail("kill cgroup", path_, ESTALE,
                "its inode is " + std::to_string(st.st_ino) + ", the step's was " +
                    std::to_string(expected_id) + "; not killed");
  }
  UniqueFd control(::openat(dir_.get(), "cgroup.kill", O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  if (control) {
    if (::write(control.get(), "1", 1) != 1) return fail_errno("write", path_ + "/cgroup.kill");
    return {};
  }
  int err = errno;
  // A removed cgroup keeps our fd but loses its files: nothing is left in it.
  UniqueFd events(::openat(dir_.get(), "cgroup.events", O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!events) {
    return fail("kill cgroup", path_, ENOENT,
                "the step's cgroup was removed; nothing is left to kill");
  }
  if (err != ENOENT) return fail("open", path_ + "/cgroup.kill", err);
  // Kernels before 5.14 have no cgroup.kill: the freeze-and-walk fallback,
  // on the directory this fd holds (its /proc/self/fd link), not the path.
  return kill_cgroup("/proc/self/fd/" + std::to_string(dir_.get()));
}

}  // namespace stepsnap::agent
