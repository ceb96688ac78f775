#include "agent/daemon/ownership.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <filesystem>

#include "common/unique_fd.h"
#include "dm/thin_metadata.h"

namespace stepsnap::agent {

namespace fs = std::filesystem;

Result<std::vector<std::string>> make_owned_dirs(const std::string& dir, mode_t mode) {
  std::vector<std::string> missing;
  std::error_code ec;
  for (fs::path p = fs::path(dir).lexically_normal(); !p.empty() && p != p.root_path();
       p = p.parent_path()) {
    if (p.filename().empty()) continue;  // a trailing slash
    if (fs::exists(fs::symlink_status(p, ec))) break;
    missing.insert(missing.begin(), p.string());
  }
  std::vector<std::string> made;
  for (const auto& d : missing) {
    // mkdir with the mode, then chmod past the umask. EEXIST: made by
    // someone else since we looked, so not ours to chmod.
    if (::mkdir(d.c_str(), mode) != 0) {
      if (errno == EEXIST) continue;
      return fail_errno("create directory", d);
    }
    if (::chmod(d.c_str(), mode) != 0) return fail_errno("chmod", d);
    made.push_back(d);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return fail_errno("create directory", dir);
  if (!S_ISDIR(st.st_mode)) return fail("create directory", dir, ENOTDIR, "it is not a directory");
  return made;
}

Result<std::optional<std::uint64_t>> thin_pool_superblock(const std::string& device) {
  UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("read superblock of", device);
  std::array<std::uint8_t, 64> head{};
  ssize_t n = ::pread(fd.get(), head.data(), head.size(), 0);
  if (n < 0) return fail_errno("read superblock of", device);
  if (n < static_cast<ssize_t>(head.size())) return std::optional<std::uint64_t>();
  auto le64 = [&](std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | head[at + static_cast<std::size_t>(i)];
    return v;
  };
  // Layout of struct thin_disk_superblock (drivers/md/dm-thin-metadata.c):
  // csum, flags, blocknr, uuid[16], then magic at 32 and version, then
  // trans_id at 48.
  if (le64(32) != dm::kThinSuperblockMagic) return std::optional<std::uint64_t>();
  return std::optional<std::uint64_t>(le64(48));
}

}  // namespace stepsnap::agent
