// Owner of one loop device backed by a file: the way development machines,
// the demo and the tests get block devices for a pool.
//
// The device is configured with LO_FLAGS_AUTOCLEAR: the kernel detaches it
// when its last opener closes it. So it lives while this object (which holds
// an fd) or anything stacked on it (a dm pool) keeps it open, and it can
// never leak past both.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"

namespace stepsnap::dm {

struct LoopOptions {
  bool read_only = false;
  // O_DIRECT on the backing file: no double caching of the pool's data in
  // the page cache. Needs the backing filesystem to support it (tmpfs does
  // not, so it is off by default).
  bool direct_io = false;
};

class LoopDevice {
 public:
  // Attaches an existing file.
  static Result<LoopDevice> attach(const std::string& file, const LoopOptions& options = {});
  // Creates a new sparse file of `size_bytes`, then attaches it. An existing
  // file is EEXIST: it is never truncated (it may hold a pool's data).
  static Result<LoopDevice> create_file(const std::string& file, std::uint64_t size_bytes,
                                        const LoopOptions& options = {});

  LoopDevice(LoopDevice&&) noexcept = default;
  LoopDevice& operator=(LoopDevice&&) noexcept = default;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  // Closes our fd; autoclear detaches once nothing else holds the device.
  ~LoopDevice() = default;

  const std::string& path() const { return path_; }  // "/dev/loop3"
  const std::string& file() const { return file_; }
  int fd() const { return fd_.get(); }
  std::uint64_t size_bytes() const { return size_bytes_; }

 private:
  LoopDevice(std::string path, std::string file, UniqueFd fd, std::uint64_t size)
      : path_(std::move(path)), file_(std::move(file)), fd_(std::move(fd)), size_bytes_(size) {}

  std::string path_;
  std::string file_;
  UniqueFd fd_;
  std::uint64_t size_bytes_ = 0;
};

}  // namespace stepsnap::dm
