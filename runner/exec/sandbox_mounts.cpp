#include "runner/exec/sandbox_mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "common/unique_fd.h"

namespace stepsnap::runner {
namespace fs = std::filesystem;

namespace {

bool exists(const std::string& path, struct stat* st) { return ::lstat(path.c_str(), st) == 0; }

// A lazy unmount of whatever is at path; none there is fine.
void detach(const std::string& path) { (void)::umount2(path.c_str(), MNT_DETACH); }

Status bind_node(const std::string& host, const std::string& at) {
  struct stat st {};
  if (!exists(host, &st)) return {};  // a host without it: the step has none either
  UniqueFd placeholder(::open(at.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666));
  if (!placeholder) return fail_errno("create device placeholder", at);
  if (::mount(host.c_str(), at.c_str(), nullptr, MS_BIND, nullptr) != 0)
    return fail_errno("bind " + host + " to", at);
  return {};
}

}  // namespace

Status stage_root(const std::string& source) {
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) return fail_errno("use as the step's root", source);
  if (!S_ISDIR(st.st_mode))
    return fail("use as the step's root", source, ENOTDIR, "--rootfs must be a directory");
  if (::mount("tmpfs", kStagingTmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") != 0)
    return fail_errno("mount staging tmpfs at", kStagingTmp);
  if (::mkdir(kStage, 0755) != 0) return fail_errno("create", kStage);
  if (::mount(source.c_str(), kStage, nullptr, MS_BIND | MS_REC, nullptr) != 0)
    return fail_errno("bind the step's root " + source + " to", kStage);
  return {};
}

Status make_tree_read_only(const std::string& path) {
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  if (::syscall(SYS_mount_setattr, AT_FDCWD, path.c_str(), AT_RECURSIVE, &attr, sizeof(attr)) !=
      0) {
    auto e = fail_errno("make the step's root read-only at", path);
    if (errno == ENOSYS) e.value().detail = "needs mount_setattr (Linux 5.12 or newer)";
    return e;
  }
  return {};
}

Status bind_read_only(const std::string& path) {
  struct stat st {};
  if (!exists(path, &st)) return {};
  if (::mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
    return fail_errno("bind onto itself", path);
  if (::mount(nullptr, path.c_str(), nullptr,
              MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return fail_errno("make read-only", path);
  return {};
}

Status mask_path(const std::string& path) {
  struct stat st {};
  if (!exists(path, &st)) return {};
  if (S_ISDIR(st.st_mode)) return mount_tmpfs(path, 0755, true);
  if (::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr) != 0)
    return fail_errno("mask with /dev/null", path);
  return {};
}

Status mount_tmpfs(const std::string& path, unsigned mode, bool read_only) {
  char data[32];
  std::snprintf(data, sizeof(data), "mode=%04o", mode);
  unsigned long flags = MS_NOSUID | MS_NODEV | (read_only ? MS_RDONLY : 0);
  if (::mount("tmpfs", path.c_str(), "tmpfs", flags, data) != 0)
    return fail_errno("mount tmpfs at", path);
  return {};
}

Status mount_minimal_dev(const std::string& path) {
  // The host's /dev goes, not just hidden below: a step that could unmount
  // the tmpfs would otherwise find every device of the node under it.
  detach(path);
  if (::mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755") != 0)
    return fail_errno("mount tmpfs for the step's /dev at", path);
  for (const char* node : {"null", "zero", "full", "random", "urandom", "tty"})
    if (auto s = bind_node(std::string("/dev/") + node, path + "/" + node); !s) return s;
  std::string pts = path + "/pts";
  if (::mkdir(pts.c_str(), 0755) != 0) return fail_errno("create", pts);
  // A devpts of the step's own: ptys it opens are not the host's.
  if (::mount("devpts", pts.c_str(), "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620") != 0)
    return fail_errno("mount devpts at", pts);
  std::string shm = path + "/shm";
  if (::mkdir(shm.c_str(), 0755) != 0) return fail_errno("create", shm);
  if (auto s = mount_tmpfs(shm, 01777, false); !s) return s;
  for (auto [link, to] :
       {std::pair{"ptmx", "pts/ptmx"}, std::pair{"fd", "/proc/self/fd"},
        std::pair{"stdin", "/proc/self/fd/0"}, std::pair{"stdout", "/proc/self/fd/1"},
        std::pair{"stderr", "/proc/self/fd/2"}}) {
    std::string at = path + "/" + link;
    if (::symlink(to, at.c_str()) != 0) return fail_errno("create symlink", at);
  }
  // Nothing more can be created in /dev: a node made by the step (it has
  // CAP_MKNOD, as in containerd's default set) only on its nodev mounts.
  if (::mount(nullptr, path.c_str(), nullptr,
              MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, nullptr) != 0)
    return fail_errno("make read-only", path);
  return {};
}

Status mount_host_dev(const std::string& path) {
  detach(path);
  if (::mount("/dev", path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
    return fail_errno("bind the host's /dev to", path);
  return {};
}

Status pivot_into(const std::string& new_root) {
  // pivot_root(".", "."), as runc does: the old root ends up on top of the
  // new one and is detached at once, with no directory needed for it.
  if (::chdir(new_root.c_str()) != 0) return fail_errno("change to the step's root", new_root);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return fail_errno("pivot_root into", new_root);
  if (::umount2(".", MNT_DETACH) != 0) return fail_errno("detach the old root from", new_root);
  if (::chdir("/") != 0) return fail_errno("change to", "/");
  return {};
}

}  // namespace stepsnap::runner
