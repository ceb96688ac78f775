#include "runner/exec/fs_probe.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"

namespace stepsnap::runner {

namespace {

// Where each filesystem keeps its magic, from the on-disk formats:
// ext2/3/4 s_magic 0xEF53 at 1024+56; XFS "XFSB" at 0; btrfs "_BHRfS_M" at
// 64 KiB + 64.
struct Magic {
  const char* fstype;
  off_t offset;
  const char* bytes;
  std::size_t length;
};
constexpr Magic kMagics[] = {
    {"ext4", 1024 + 56, "\x53\xEF", 2},
    {"xfs", 0, "XFSB", 4},
    {"btrfs", 65536 + 64, "_BHRfS_M", 8},
};

}  // namespace

Result<std::string> probe_filesystem(const std::string& device) {
  UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open", device);
  for (const auto& m : kMagics) {
    char buf[8] = {};
    ssize_t n = ::pread(fd.get(), buf, m.length, m.offset);
    if (n < 0) return fail_errno("read the superblock of", device);
    if (static_cast<std::size_t>(n) == m.length && std::memcmp(buf, m.bytes, m.length) == 0)
      return std::string(m.fstype);
  }
  return fail("find a filesystem on", device, ENOMEDIUM,
              "no ext4, xfs or btrfs superblock; make one first, e.g. "
              "stepsnapctl volume create NAME SIZE --filesystem ext4");
}

}  // namespace stepsnap::runner
