#include "dm/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace stepsnap::dm {
namespace {

// LOOP_CONFIGURE (5.8+) sets fd, status and flags in one ioctl, so no other
// process can see a half-configured device.
int configure(int loop_fd, int file_fd, const std::string& file, const LoopOptions& o) {
  loop_config config{};
  config.fd = static_cast<__u32>(file_fd);
  config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (o.read_only ? LO_FLAGS_READ_ONLY : 0) |
                         (o.direct_io ? LO_FLAGS_DIRECT_IO : 0);
  std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
  if (::ioctl(loop_fd, LOOP_CONFIGURE, &config) == 0) return 0;
  if (errno != EINVAL && errno != ENOTTY) return errno;
  // Older kernels: two steps.
  if (::ioctl(loop_fd, LOOP_SET_FD, file_fd) != 0) return errno;
  loop_info64 info = config.info;
  if (::ioctl(loop_fd, LOOP_SET_STATUS64, &info) != 0) {
    int e = errno;
    ::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return e;
  }
  return 0;
}

}  // namespace

Result<LoopDevice> LoopDevice::attach(const std::string& file, const LoopOptions& options) {
  int mode = options.read_only ? O_RDONLY : O_RDWR;
  UniqueFd file_fd(::open(file.c_str(), mode | O_CLOEXEC | (options.direct_io ? O_DIRECT : 0)));
  if (!file_fd) return fail_errno("open loop backing file", file);
  struct stat st {};
  if (::fstat(file_fd.get(), &st) != 0) return fail_errno("stat loop backing file", file);

  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) return fail_errno("open", "/dev/loop-control");
  // GET_FREE and configure race with other processes doing the same: a
  // device taken in between answers EBUSY, and we ask for another.
  for (int attempt = 0; attempt < 20; ++attempt) {
    int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (n < 0) return fail_errno("LOOP_CTL_GET_FREE", "/dev/loop-control");
    std::string path = "/dev/loop" + std::to_string(n);
    UniqueFd loop_fd(::open(path.c_str(), mode | O_CLOEXEC));
    if (!loop_fd) return fail_errno("open loop device", path);
    int err = configure(loop_fd.get(), file_fd.get(), file, options);
    if (err == EBUSY) continue;
    if (err != 0) return fail("configure loop device", path + " on " + file, err);
    return LoopDevice(std::move(path), file, std::move(loop_fd),
                      static_cast<std::uint64_t>(st.st_size));
  }
  return fail("attach loop device", file, EBUSY, "every free loop device was taken first");
}

Result<LoopDevice> LoopDevice::create_file(const std::string& file, std::uint64_t size_bytes,
                                           const LoopOptions& options) {
  UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return fail_errno("create loop backing file", file);
  if (::ftruncate(fd.get(), static_cast<off_t>(size_bytes)) != 0) {
    return fail_errno("size loop backing file", file);
  }
  fd.reset();
  return attach(file, options);
}

}  // namespace stepsnap::dm
