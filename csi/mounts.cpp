#include "csi/mounts.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace stepsnap::csi {

Result<std::optional<MountEntry>> mount_at(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return fail_errno("read", "/proc/self/mountinfo");
  std::ostringstream text;
  text << in.rdbuf();
  return find_mount(text.str(), path);
}

Result<dev_t> block_device_number(const std::string& device) {
  struct stat st {};
  if (::stat(device.c_str(), &st) != 0) return fail_errno("stat", device);
  if (!S_ISBLK(st.st_mode)) return fail("stat", device, ENOTBLK);
  return st.st_rdev;
}

Status mount_filesystem(const std::string& device, const std::string& target, const std::string& fs,
                        const MountOptions& options) {
  if (::mount(device.c_str(), target.c_str(), fs.c_str(), options.flags,
              options.data.empty() ? nullptr : options.data.c_str()) != 0) {
    return fail_errno("mount " + device + " (" + fs + ") at", target);
  }
  return {};
}

Status bind_mount(const std::string& source, const std::string& target, bool read_only) {
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return fail_errno("bind " + source + " at", target);
  }
  if (read_only &&
      ::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    auto e = fail_errno("make read-only the bind mount at", target);
    // Nothing half-made: a bind that should be read-only and is not goes.
    ::umount2(target.c_str(), MNT_DETACH);
    return e;
  }
  return {};
}

Status unmount(const std::string& target) {
  if (::umount2(target.c_str(), 0) != 0 && errno != EINVAL && errno != ENOENT) {
    return fail_errno("unmount", target);
  }
  return {};
}

}  // namespace stepsnap::csi
