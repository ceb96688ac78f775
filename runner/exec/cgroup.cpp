#include "runner/exec/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/cgroup_files.h"
#include "common/log.h"

namespace stepsnap::runner {
namespace fs = std::filesystem;

Result<Cgroup> Cgroup::create(const std::string& relative_path) {
  if (relative_path.empty() || relative_path.front() == '/' ||
      relative_path.find("..") != std::string::npos)
    return fail("create cgroup", relative_path, EINVAL, "give a relative path without '..'");
  auto mount = cgroup2_mount_point();
  if (!mount) return tl::unexpected(mount.error());
  fs::path path = fs::path(*mount) / relative_path;

  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return fail("create cgroup parent", path.parent_path().string(), ec.value());
  if (::mkdir(path.c_str(), 0755) != 0) return fail_errno("create cgroup", path.string());

  UniqueFd dir(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  struct stat st {};
  if (!dir || ::fstat(dir.get(), &st) != 0) {
    auto err = fail_errno("open cgroup", path.string());
    ::rmdir(path.c_str());
    return err;
  }
  return Cgroup(path.string(), st.st_ino, std::move(dir));
}

Cgroup::Cgroup(Cgroup&& other) noexcept
    : path_(std::exchange(other.path_, {})), id_(other.id_), dir_(std::move(other.dir_)) {}

Cgroup& Cgroup::operator=(Cgroup&& other) noexcept {
  if (this != &other) {
    (void)remove();
    path_ = std::exchange(other.path_, {});
    id_ = other.id_;
    dir_ = std::move(other.dir_);
  }
  return *this;
}

Cgroup::~Cgroup() {
  if (auto s = remove(); !s) log::warn("cgroup cleanup: " + s.error().message());
}

Status Cgroup::add_process(pid_t pid) const {
  return write_control_file(path_ + "/cgroup.procs", std::to_string(pid));
}

Result<bool> Cgroup::populated() const { return cgroup_populated(path_); }

Status Cgroup::kill() const { return kill_cgroup(path_); }

Status Cgroup::wait_empty(std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto p = populated();
    if (!p) return tl::unexpected(p.error());
    if (!*p) return {};
    if (std::chrono::steady_clock::now() >= deadline)
      return fail("wait for empty cgroup", path_, ETIMEDOUT);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status Cgroup::remove() {
  if (path_.empty()) return {};
  if (auto p = populated(); p && *p) {
    if (auto s = kill(); !s) return s;
    if (auto s = wait_empty(std::chrono::seconds(10)); !s) return s;
  }
  // Children first: rmdir of a cgroup with child cgroups fails with EBUSY.
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::end(it);
       it.increment(ec))
    if (it->is_directory()) dirs.push_back(it->path());
  for (auto d = dirs.rbegin(); d != dirs.rend(); ++d) ::rmdir(d->c_str());
  if (::rmdir(path_.c_str()) != 0 && errno != ENOENT) return fail_errno("remove cgroup", path_);
  path_.clear();
  dir_.reset();
  return {};
}

}  // namespace stepsnap::runner
