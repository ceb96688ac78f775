#include "runner/exec/mount_plan.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>

namespace stepsnap::runner {
namespace fs = std::filesystem;

namespace {
// Where the cgroup tree is on every distribution (cgroup v2, or the tmpfs of
// a hybrid layout with v2 at unified/).
constexpr const char* kCgroupTree = "/sys/fs/cgroup";
}  // namespace

Result<std::vector<MountOp>> build_mount_plan(const ExecOptions& options) {
  using K = MountOp::Kind;
  // The cgroup tree first: a volume under it could not be mounted on a
  // read-only cgroup2 anyway, and is refused below with its reason.
  std::vector<MountOp> plan{{K::make_private, "", "/"}, {K::cgroup, "cgroup2", kCgroupTree}};
  for (const auto& v : options.volumes) {
    if (v.target.empty() || v.target.front() != '/')
      return fail("bad --volume", v.name + ":" + v.target, EINVAL,
                  "the mount path must be absolute");
    fs::path target = fs::path(v.target).lexically_normal();
    if (!target.has_filename() && target != "/") target = target.parent_path();  // "/x/" -> "/x"
    if (target == "/" || target == "/proc")
      return fail("bad --volume", v.name + ":" + v.target, EINVAL,
                  "cannot mount a volume over / or /proc");
    auto in_cgroup_tree = target.lexically_relative(kCgroupTree);
    if (!in_cgroup_tree.empty() && *in_cgroup_tree.begin() != "..")
      return fail(
          "bad --volume", v.name + ":" + v.target, EINVAL,
          std::string("the step's ") + kCgroupTree + " is its read-only cgroup; mount elsewhere");
    if (v.fstype.empty())
      plan.push_back({K::bind, v.name, target.string()});
    else
      plan.push_back({K::mount_device, v.name, target.string(), v.fstype});
    if (v.read_only) plan.push_back({K::remount_ro, "", target.string()});
  }
  // After the volumes, so a volume mounted at / or under /proc can't hide it.
  plan.push_back({K::proc, "proc", "/proc"});

  // The marshal folder lives in the workspace volume (the first one), so the
  // next step of the run, which mounts the same clone, finds it.
  if (!options.volumes.empty()) {
    const auto& workspace = options.volumes.front();
    fs::path marshal = fs::path(options.marshal);
    if (marshal.is_relative()) marshal = fs::path(workspace.target) / marshal;
    marshal = marshal.lexically_normal();
    auto rel = marshal.lexically_relative(fs::path(workspace.target).lexically_normal());
    if (rel.empty() || *rel.begin() == "..")
      return fail("bad --marshal", options.marshal, EINVAL,
                  "the marshal folder must be inside the workspace volume " + workspace.target);
    if (workspace.read_only)
      return fail("bad --marshal", options.marshal, EROFS,
                  "the workspace volume " + workspace.target + " is mounted read-only");
    plan.push_back({K::mkdir, "", marshal.string()});
  }
  return plan;
}

std::string describe(const MountOp& op) {
  switch (op.kind) {
    case MountOp::Kind::make_private:
      return "make " + op.target + " private";
    case MountOp::Kind::bind:
      return "bind " + op.source + " to " + op.target;
    case MountOp::Kind::mount_device:
      return "mount " + op.fstype + " on " + op.source + " at " + op.target;
    case MountOp::Kind::remount_ro:
      return "make " + op.target + " read-only";
    case MountOp::Kind::proc:
      return "mount proc at " + op.target;
    case MountOp::Kind::cgroup:
      return "mount the step's cgroup read-only at " + op.target;
    case MountOp::Kind::mkdir:
      return "create " + op.target;
  }
  return "?";
}

namespace {

// A missing mount point is created, as `mkdir -p` would: on the filesystem
// below it, so an empty directory stays there after the step (the host's,
// when the path is outside every volume).
Status ensure_mount_point(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return {};
    return fail("mount volume at", path, ENOTDIR, "the mount point must be a directory");
  }
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec)
    return fail("create mount point", path, ec.value(),
                "create it beforehand, or mount under a writable directory");
  return {};
}

// Lazily unmounts whatever is mounted at path, with everything under it; a
// path that is no mount point is left as it is.
Status detach(const std::string& path) {
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL)
    return fail_errno("unmount the host's", path);
  return {};
}

Status run_one(const MountOp& op) {
  const char* target = op.target.c_str();
  switch (op.kind) {
    case MountOp::Kind::make_private:
      if (::mount(nullptr, target, nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return fail_errno("make mounts private", op.target);
      return {};
    case MountOp::Kind::bind: {
      if (auto s = ensure_mount_point(op.target); !s) return s;
      if (::mount(op.source.c_str(), target, nullptr, MS_BIND | MS_REC, nullptr) != 0)
        return fail_errno("bind " + op.source + " to", op.target);
      return {};
    }
    case MountOp::Kind::mount_device: {
      if (auto s = ensure_mount_point(op.target); !s) return s;
      // A clone carries its origin's XFS UUID; XFS refuses a second mount of
      // one UUID unless told the copy is deliberate.
      const char* data = op.fstype == "xfs" ? "nouuid" : nullptr;
      if (::mount(op.source.c_str(), target, op.fstype.c_str(), MS_NODEV | MS_NOSUID, data) != 0)
        return fail_errno("mount " + op.fstype + " on " + op.source + " at", op.target);
      return {};
    }
    case MountOp::Kind::remount_ro:
      // A bind remount replaces every per-mount flag: keep the device
      // mount's nosuid and nodev (and add them to read-only host folders).
      if (::mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                  nullptr) != 0)
        return fail_errno("make read-only", op.target);
      return {};
    case MountOp::Kind::proc:
      // The host's procfs goes, not only hidden below the fresh one: a step
      // that unmounted /proc would otherwise find the host's processes and
      // their namespaces (a way back into the host's cgroup namespace).
      if (auto s = detach(op.target); !s) return s;
      if (::mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        return fail_errno("mount proc at", op.target);
      return {};
    case MountOp::Kind::cgroup: {
      // No cgroup tree on this host (no sysfs): nothing the step could write.
      struct stat st {};
      if (::stat(target, &st) != 0 && errno == ENOENT) return {};
      // The host's tree (and on hybrid hosts its v1 hierarchies) goes; a
      // cgroup2 mounted from inside the step's cgroup namespace shows the
      // step's own cgroup as its root, read-only so the step cannot change
      // its limits or make child cgroups. Even remounted writable it offers
      // no way out: the kernel refuses moves out of the namespace's root.
      if (auto s = detach(op.target); !s) return s;
      if (::mount(op.source.c_str(), target, "cgroup2",
                  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        return fail_errno("mount the step's cgroup read-only at", op.target);
      return {};
    }
    case MountOp::Kind::mkdir: {
      std::error_code ec;
      fs::create_directories(op.target, ec);
      if (ec) return fail("create", op.target, ec.value());
      return {};
    }
  }
  return fail("run mount plan", describe(op), EINVAL);
}

}  // namespace

Status run_mount_plan(const std::vector<MountOp>& plan) {
  for (const auto& op : plan) {
    if (auto s = run_one(op); !s) return s;
  }
  return {};
}

}  // namespace stepsnap::runner
