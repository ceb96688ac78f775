#include "dm/flush.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <cerrno>

#include "common/unique_fd.h"

namespace stepsnap::dm {

Status flush_device(const std::string& dm_name) {
  const std::string path = "/dev/mapper/" + dm_name;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return fail_errno("open for flush", path);
  if (::ioctl(fd.get(), BLKFLSBUF, 0) != 0) return fail_errno("flush (BLKFLSBUF)", path);
  return {};
}

}  // namespace stepsnap::dm
