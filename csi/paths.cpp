#include "csi/paths.h"

#include <filesystem>
#include <sstream>
#include <vector>

namespace stepsnap::csi {

bool is_inside(std::string_view dir, std::string_view path) {
  if (path.empty() || path[0] != '/') return false;
  std::string normal = std::filesystem::path(path).lexically_normal().string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  return normal.size() > dir.size() + 1 && normal.compare(0, dir.size(), dir) == 0 &&
         normal[dir.size()] == '/';
}

namespace {

std::string unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::optional<MountEntry> find_mount(std::string_view mountinfo, std::string_view mount_point) {
  std::optional<MountEntry> found;
  std::istringstream in{std::string(mountinfo)};
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount-point options [optional...] - type source super-options
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.size() < 10) continue;
    if (unescape(f[4]) != mount_point) continue;
    std::size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 2 >= f.size()) continue;
    MountEntry e;
    if (std::sscanf(f[2].c_str(), "%u:%u", &e.major, &e.minor) != 2) continue;
    e.root = unescape(f[3]);
    e.mount_point = unescape(f[4]);
    std::string options = "," + f[5] + ",";
    e.read_only = options.find(",ro,") != std::string::npos;
    e.fs_type = f[dash + 1];
    e.source = unescape(f[dash + 2]);
    found = e;
  }
  return found;
}

}  // namespace stepsnap::csi
