// Paths a CO hands the node service: the kubelet-directory rule and the
// mount table. Pure (the kernel side is mounts.h).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace stepsnap::csi {

// Whether `path` is absolute and, after lexical normalisation (".", "..",
// repeated "/"), strictly inside `dir` (itself normal, no trailing "/").
// "/var/lib/kubelet/../../etc" is not inside "/var/lib/kubelet", nor is
// "/var/lib/kubeletx".
bool is_inside(std::string_view dir, std::string_view path);

// One line of /proc/self/mountinfo.
struct MountEntry {
  unsigned major = 0, minor = 0;  // st_dev of the mounted filesystem
  std::string root;               // the path inside it that is mounted
  std::string mount_point;        // unescaped
  bool read_only = false;         // the mount's own ro flag
  std::string fs_type;
  std::string source;
};

// The topmost mount at `mount_point` (the last such line: later mounts
// cover earlier ones), or nullopt. Octal escapes (\040 for a space) in the
// table are decoded before comparing.
std::optional<MountEntry> find_mount(std::string_view mountinfo, std::string_view mount_point);

}  // namespace stepsnap::csi
