#include "agent/policy/post_settle.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "common/log.h"
#include "common/unique_fd.h"

namespace stepsnap::agent {
namespace {

struct BoundLoop {
  std::string name;  // "loop3"
  dev_t dev = 0;
  dev_t backing_dev = 0;   // st_dev of the backing file
  dev_t backing_rdev = 0;  // st_rdev of the backing file (a loop over a block device)
  std::uint64_t backing_ino = 0;
  std::string backing_file;  // as sysfs shows it: the path inside the step's namespace
};

std::string path_of(const BoundLoop& l) { return "/dev/" + l.name; }

std::optional<std::string> read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

// loop_info64 carries device numbers in the kernel's own encoding
// (huge_encode_dev), which is not glibc's dev_t: decode it explicitly.
dev_t decode_kernel_dev(std::uint64_t d) {
  unsigned major = static_cast<unsigned>((d & 0xfff00) >> 8);
  unsigned minor = static_cast<unsigned>((d & 0xff) | ((d >> 12) & 0xfff00));
  return makedev(major, minor);
}

// Opens /dev/loopN and makes sure it is the device sysfs named (a /dev that
// is not devtmpfs could say otherwise).
UniqueFd open_loop(const std::string& name, dev_t dev) {
  UniqueFd fd(::open(("/dev/" + name).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fd;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISBLK(st.st_mode) || st.st_rdev != dev) {
    log::warn("post-snapshot: /dev/" + name + " is not the loop device sysfs names; skipped");
    return UniqueFd();
  }
  return fd;
}

std::optional<loop_info64> loop_status(int fd) {
  loop_info64 info{};
  if (::ioctl(fd, LOOP_GET_STATUS64, &info) != 0) return std::nullopt;
  return info;
}

// Every loop device bound to a file right now. The loop/ folder in sysfs
// exists only while a device is bound.
std::vector<BoundLoop> bound_loops() {
  std::vector<BoundLoop> out;
  DIR* dir = ::opendir("/sys/block");
  if (!dir) return out;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind("loop", 0) != 0) continue;
    std::string sys = "/sys/block/" + name;
    auto backing = read_line(sys + "/loop/backing_file");
    if (!backing) continue;
    auto dev_text = read_line(sys + "/dev");
    unsigned major = 0, minor = 0;
    if (!dev_text || std::sscanf(dev_text->c_str(), "%u:%u", &major, &minor) != 2) continue;
    BoundLoop l{.name = name, .dev = makedev(major, minor), .backing_file = *backing};
    UniqueFd fd = open_loop(name, l.dev);
    if (!fd) continue;  // ENXIO: being detached right now
    auto info = loop_status(fd.get());
    if (!info) continue;
    l.backing_dev = decode_kernel_dev(info->lo_device);
    l.backing_rdev = decode_kernel_dev(info->lo_rdevice);
    l.backing_ino = info->lo_inode;
    out.push_back(std::move(l));
  }
  ::closedir(dir);
  return out;
}

bool still_bound(const BoundLoop& l) {
  return read_line("/sys/block/" + l.name + "/loop/backing_file").has_value();
}

// LOOP_CLR_FD on a device nobody else has open detaches it at once (or, on
// kernels since 6.10, when we close it, before close() returns: the release
// runs as our task work). With other openers it only sets autoclear, and the
// device goes with its last opener. So: clear, close, and look.
bool detach(const BoundLoop& l) {
  UniqueFd fd = open_loop(l.name, l.dev);
  if (!fd) return !still_bound(l);
  // The device is pinned by our fd now; make sure it is still bound to the
  // file we found, not reused for another after a detach we did not see.
  auto info = loop_status(fd.get());
  if (!info || decode_kernel_dev(info->lo_device) != l.backing_dev ||
      info->lo_inode != l.backing_ino)
    return !still_bound(l);
  if (::ioctl(fd.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO)
    log::warn("post-snapshot: LOOP_CLR_FD " + path_of(l) + ": " + std::strerror(errno));
  fd.reset();
  return !still_bound(l);
}

// The loops that sit on the targets: backed by a file on a target (or by a
// target itself), or by a file on (or the device of) a loop already found.
// Returns, for each, the target it leads down to.
std::map<std::string, std::string> loops_on(const std::vector<BoundLoop>& loops,
                                            const std::map<dev_t, std::string>& targets) {
  std::map<dev_t, std::string> below = targets;  // device -> target name
  std::map<std::string, std::string> found;      // loop name -> target name
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& l : loops) {
      if (found.count(l.name)) continue;
      auto it = below.find(l.backing_dev);
      if (it == below.end()) it = below.find(l.backing_rdev);
      if (it == below.end()) continue;
      found[l.name] = it->second;
      below[l.dev] = it->second;
      grew = true;
    }
  }
  return found;
}

std::string describe(const BoundLoop& l, const std::string& target) {
  return path_of(l) + " (backing file " + l.backing_file + ", on " + target + ")";
}

}  // namespace

SettleReport settle_before_post_snapshot(const std::vector<SettleTarget>& targets,
                                         std::chrono::milliseconds patience) {
  SettleReport report;
  std::map<dev_t, std::string> devices;
  for (const auto& t : targets) {
    struct stat st {};
    if (::stat(t.path.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
      devices[st.st_rdev] = t.name;
    } else {
      log::warn("post-snapshot: " + t.path + " of " + t.name +
                " is not a block device here; not checked for loop devices left on it");
    }
  }
  auto deadline = std::chrono::steady_clock::now() + patience;
  auto pause = std::chrono::milliseconds(10);
  auto wait = [&] {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(200));
    return true;
  };

  // Innermost first: a loop whose device backs another loop of ours is
  // busy until that one is gone, so each pass detaches only the leaves.
  std::vector<BoundLoop> left;
  std::map<std::string, std::string> ours;
  for (;;) {
    auto loops = bound_loops();
    ours = loops_on(loops, devices);
    left.clear();
    for (const auto& l : loops)
      if (ours.count(l.name)) left.push_back(l);
    if (left.empty()) break;
    bool progress = false;
    for (const auto& l : left) {
      bool is_leaf = std::none_of(left.begin(), left.end(), [&](const BoundLoop& o) {
        return o.backing_dev == l.dev || o.backing_rdev == l.dev;
      });
      if (!is_leaf) continue;
      if (detach(l)) {
        report.detached.push_back(describe(l, ours[l.name]));
        progress = true;
      }
    }
    if (!progress && !wait()) break;
  }
  for (const auto& l : left) {
    report.not_exact.push_back(
        "loop device " + describe(l, ours[l.name]) +
        " is still open after every process of the step exited (mounted in a mount namespace "
        "held from outside the step's cgroup, or opened by another process), so what its "
        "filesystem had not written back is not in the post-snapshot; unmount it, and it "
        "detaches on its last close");
  }
  return report;
}

}  // namespace stepsnap::agent
