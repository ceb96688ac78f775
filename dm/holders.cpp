#include "dm/holders.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/text.h"

namespace stepsnap::dm {
namespace {

std::string read_line(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::vector<std::string> holder_names(const std::string& dev) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/sys/dev/block/" + dev + "/holders", ec)) {
    std::string name = entry.path().filename();
    std::string dm_name = read_line("/sys/block/" + name + "/dm/name");
    out.push_back(dm_name.empty() ? name : name + " (" + dm_name + ")");
  }
  return out;
}

// Field 3 of mountinfo is "major:minor", field 5 the mount point.
std::vector<std::string> mount_points(const std::string& dev) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, majmin, root, point;
    fields >> id >> parent >> majmin >> root >> point;
    if (majmin == dev) out.push_back(point);
  }
  return out;
}

}  // namespace

std::string describe_holders(std::uint32_t major, std::uint32_t minor, std::int32_t open_count) {
  std::string dev = std::to_string(major) + ":" + std::to_string(minor);
  std::vector<std::string> parts;
  if (auto holders = holder_names(dev); !holders.empty()) {
    parts.push_back("held by " + join(holders, ", "));
  }
  if (auto mounts = mount_points(dev); !mounts.empty()) {
    parts.push_back("mounted at " + join(mounts, ", "));
  }
  std::string count = "open count " + std::to_string(open_count);
  if (parts.empty()) return count + " (holder unknown: a process has it open)";
  parts.push_back(count);
  return join(parts, "; ");
}

}  // namespace stepsnap::dm
