#include "runner/exec/mount_plan.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <map>

#include "common/unique_fd.h"
#include "runner/exec/sandbox_mounts.h"

namespace stepsnap::runner {
namespace fs = std::filesystem;

namespace {
// Where the cgroup tree is on every distribution (cgroup v2, or the tmpfs of
// a hybrid layout with v2 at unified/).
constexpr const char* kCgroupTree = "/sys/fs/cgroup";
}  // namespace

namespace {

// containerd's default spec: what a step may read but not write in /proc,
// and what it does not see at all (host-wide knobs and kernel memory).
constexpr const char* kReadOnlyPaths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                          "/proc/sysrq-trigger"};
constexpr const char* kMaskedPaths[] = {"/proc/acpi",
                                        "/proc/asound",
                                        "/proc/kcore",
                                        "/proc/keys",
                                        "/proc/latency_stats",
                                        "/proc/timer_list",
                                        "/proc/timer_stats",
                                        "/proc/sched_debug",
                                        "/proc/scsi",
                                        "/sys/firmware",
                                        "/sys/devices/virtual/powercap"};
// The step's own fresh tmpfs mounts: nothing of the host's shows there.
constexpr const char* kFreshDirs[] = {"/tmp", "/run"};
// stepsnapd's default state directory (catalog, loop-file pools): hidden
// wherever it is not already under a fresh tmpfs.
constexpr const char* kAgentStateDir = "/var/lib/stepsnap";

bool is_under(const fs::path& path, const fs::path& dir) {
  auto rel = path.lexically_relative(dir);
  return !rel.empty() && *rel.begin() != "..";
}

}  // namespace

Result<std::vector<MountOp>> build_mount_plan(const ExecOptions& options) {
  using K = MountOp::Kind;
  std::vector<MountOp> volumes;
  std::vector<fs::path> targets;
  for (const auto& v : options.volumes) {
    if (v.target.empty() || v.target.front() != '/')
      return fail("bad --volume", v.name + ":" + v.target, EINVAL,
                  "the mount path must be absolute");
    fs::path target = fs::path(v.target).lexically_normal();
    if (!target.has_filename() && target != "/") target = target.parent_path();  // "/x/" -> "/x"
    if (target == "/" || target == "/proc")
      return fail("bad --volume", v.name + ":" + v.target, EINVAL,
                  "cannot mount a volume over / or /proc");
    if (is_under(target, kCgroupTree))
      return fail(
          "bad --volume", v.name + ":" + v.target, EINVAL,
          std::string("the step's ") + kCgroupTree + " is its read-only cgroup; mount elsewhere");
    if (v.fstype.empty())
      volumes.push_back({K::bind, v.name, target.string()});
    else
      volumes.push_back({K::mount_device, v.name, target.string(), v.fstype});
    if (v.read_only) volumes.push_back({K::remount_ro, "", target.string()});
    targets.push_back(target);
  }
  for (const auto& dir : options.host_dirs) {
    volumes.push_back({K::bind, dir, dir});
    targets.push_back(fs::path(dir));
  }

  std::vector<MountOp> plan{{K::make_private, "", "/"},
                            {K::new_root, options.sandbox.rootfs.value_or("/"), "/"}};
  // Mount points on the step's root must exist before it turns read-only;
  // one under a fresh tmpfs or another volume is made when it is mounted.
  for (const char* dir : {"/proc", "/dev", "/tmp", "/run"})
    plan.push_back({K::mount_point, "", dir});
  for (std::size_t i = 0; i < targets.size(); ++i) {
    bool later = false;
    for (const char* fresh : kFreshDirs) later |= is_under(targets[i], fresh);
    for (std::size_t j = 0; j < i; ++j) later |= is_under(targets[i], targets[j]);
    if (!later) plan.push_back({K::mount_point, "", targets[i].string()});
  }
  plan.push_back({K::read_only_root, "", "/"});
  // The cgroup tree before the volumes: a volume under it could not be
  // mounted on a read-only cgroup2 anyway, and is refused above.
  plan.push_back({K::cgroup, "cgroup2", kCgroupTree});
  plan.push_back({K::proc, "proc", "/proc"});
  for (const char* p : kReadOnlyPaths) plan.push_back({K::read_only, "", p});
  for (const char* p : kMaskedPaths) plan.push_back({K::mask, "", p});
  plan.push_back({K::dev, options.sandbox.host_dev ? "host" : "minimal", "/dev"});
  for (const char* dir : kFreshDirs) plan.push_back({K::tmpfs, "", dir});
  // The agent's socket and state: unreachable even where runner was told
  // of a socket outside /run.
  std::vector<fs::path> hidden{kAgentStateDir};
  fs::path socket_dir = fs::path(options.agent_socket).lexically_normal().parent_path();
  if (socket_dir.is_absolute() && socket_dir != "/") hidden.push_back(socket_dir);
  for (const auto& dir : hidden) {
    bool fresh = false;
    for (const char* f : kFreshDirs) fresh |= is_under(dir, f) || dir == f;
    if (!fresh) plan.push_back({K::hide, "", dir.string()});
  }
  plan.insert(plan.end(), volumes.begin(), volumes.end());
  plan.push_back({K::pivot, "", "/"});

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
    case MountOp::Kind::new_root:
      return "stage " + op.source + " as the step's root";
    case MountOp::Kind::mount_point:
      return "create mount point " + op.target;
    case MountOp::Kind::read_only_root:
      return "make the step's root read-only";
    case MountOp::Kind::read_only:
      return "make " + op.target + " read-only";
    case MountOp::Kind::mask:
      return "mask " + op.target;
    case MountOp::Kind::tmpfs:
      return "mount tmpfs at " + op.target;
    case MountOp::Kind::hide:
      return "hide " + op.target;
    case MountOp::Kind::dev:
      return "mount the " + op.source + " /dev";
    case MountOp::Kind::pivot:
      return "pivot_root into the step's root";
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

// A snapshot of a clone that a step running beside this one shares
// freezes the clone for its frozen window, and the kernel refuses to mount
// a frozen block device (EBUSY, "Can't mount, blockdev is frozen" in
// get_tree_bdev). The freeze ends with the snapshot's resume: wait it out,
// bounded, rather than fail the step. Other EBUSY causes fail after the
// bound with the same errno. (Seen once, in a --parallel 4 diamond run:
// "mount ext4 ... Device or resource busy" while the other middle step's
// pre-snapshot ran; not reproduced in a test.)
int mount_waiting_out_a_freeze(const char* source, const char* target, const char* fstype,
                               const char* data) {
  constexpr int kAttempts = 1500;  // 30 s of 20 ms waits
  for (int attempt = 1;; ++attempt) {
    if (::mount(source, target, fstype, MS_NODEV | MS_NOSUID, data) == 0) return 0;
    if (errno != EBUSY || attempt == kAttempts) return -1;
    const struct timespec wait { 0, 20'000'000 };
    ::nanosleep(&wait, nullptr);
  }
}

// Where the interpreter is: before new_root, paths are the host's; from
// new_root to pivot, the step's paths under the staged root; after pivot,
// the step's own.
struct PlanState {
  std::string root;
  std::map<std::size_t, UniqueFd> bind_sources;  // by index in the plan
  std::string at(const std::string& target) const {
    return root.empty() ? target : (target == "/" ? root : root + target);
  }
};

Status run_one(const MountOp& op, std::size_t index, PlanState& state) {
  std::string path = state.at(op.target);
  const char* target = path.c_str();
  switch (op.kind) {
    case MountOp::Kind::make_private:
      if (::mount(nullptr, target, nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return fail_errno("make mounts private", op.target);
      return {};
    case MountOp::Kind::bind: {
      if (auto s = ensure_mount_point(path); !s) return s;
      int source = state.bind_sources.at(index).get();
      if (::move_mount(source, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0)
        return fail_errno("bind " + op.source + " to", op.target);
      return {};
    }
    case MountOp::Kind::mount_device: {
      if (auto s = ensure_mount_point(path); !s) return s;
      // A clone carries its origin's XFS UUID; XFS refuses a second mount of
      // one UUID unless told the copy is deliberate.
      const char* data = op.fstype == "xfs" ? "nouuid" : nullptr;
      if (mount_waiting_out_a_freeze(op.source.c_str(), target, op.fstype.c_str(), data) != 0)
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
      if (auto s = detach(path); !s) return s;
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
      if (auto s = detach(path); !s) return s;
      if (::mount(op.source.c_str(), target, "cgroup2",
                  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        return fail_errno("mount the step's cgroup read-only at", op.target);
      return {};
    }
    case MountOp::Kind::mkdir: {
      std::error_code ec;
      fs::create_directories(path, ec);
      if (ec) return fail("create", op.target, ec.value());
      return {};
    }
    case MountOp::Kind::new_root:
      if (auto s = stage_root(op.source); !s) return s;
      state.root = kStage;
      return {};
    case MountOp::Kind::mount_point:
      return ensure_mount_point(path);
    case MountOp::Kind::read_only_root:
      return make_tree_read_only(path);
    case MountOp::Kind::read_only:
      return bind_read_only(path);
    case MountOp::Kind::mask:
      return mask_path(path);
    case MountOp::Kind::tmpfs:
      return mount_tmpfs(path, op.target == "/tmp" ? 01777 : 0755, false);
    case MountOp::Kind::hide: {
      struct stat st {};
      if (::stat(target, &st) != 0 || !S_ISDIR(st.st_mode)) return {};
      return mount_tmpfs(path, 0755, true);
    }
    case MountOp::Kind::dev:
      return op.source == "host" ? mount_host_dev(path) : mount_minimal_dev(path);
    case MountOp::Kind::pivot:
      if (auto s = pivot_into(path); !s) return s;
      state.root.clear();
      return {};
  }
  return fail("run mount plan", describe(op), EINVAL);
}

}  // namespace

Status run_mount_plan(const std::vector<MountOp>& plan) {
  PlanState state;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].kind != MountOp::Kind::bind) continue;
    // A detached copy of the source tree, taken while the host's paths are
    // all still in view (the staged root hides /tmp).
    UniqueFd tree(::open_tree(AT_FDCWD, plan[i].source.c_str(),
                              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
    if (!tree) return fail_errno("bind " + plan[i].source + " to", plan[i].target);
    // nodev and nosuid, as on a mounted clone: a device node the step makes
    // there (it holds CAP_MKNOD) opens nothing.
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) != 0)
      return fail_errno("make nodev and nosuid the bind of " + plan[i].source + " to",
                        plan[i].target);
    state.bind_sources.emplace(i, std::move(tree));
  }
  for (std::size_t i = 0; i < plan.size(); ++i) {
    if (auto s = run_one(plan[i], i, state); !s) return s;
  }
  return {};
}

}  // namespace stepsnap::runner
