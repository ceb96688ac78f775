// The cgroup of a registered step, held open from step.register to the end.
//
// step.register names a cgroup by path, and the agent freezes (the tracer's
// hold) and kills (a failed pre-snapshot, a restart) what is in it, as root.
// So a path is accepted only strictly beneath the agent's own subtree,
// <cgroup v2 mount>/stepsnap, opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) from that
// subtree's fd: no "..", no symlink, no other mount can lead out of it. The
// directory's inode (the cgroup id BPF sees) is remembered, and a kill goes
// through the fd held since registration, after checking the inode: a cgroup
// removed and made again at the same path is a different cgroup and is
// never killed for the old step.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"

namespace stepsnap::agent {

// "<cgroup v2 mount>/stepsnap", the only subtree step cgroups may be in
// (runner exec makes stepsnap/<pipeline>/<run>/<step> there).
Result<std::string> default_step_cgroup_subtree();

class StepCgroup {
 public:
  // Opens `path` (absolute) beneath `subtree`. EPERM: outside the subtree
  // (or the subtree itself); ENOENT: missing; ELOOP/EXDEV: a symlink or
  // another mount on the way; ENOTDIR / EINVAL: not a cgroup v2 directory.
  static Result<StepCgroup> open(const std::string& path, const std::string& subtree);

  const std::string& path() const { return path_; }
  // The directory's inode number: the cgroup id BPF programs see.
  std::uint64_t id() const { return id_; }
  int fd() const { return dir_.get(); }

  // Whether a process is in the cgroup or a descendant (cgroup.events).
  Result<bool> populated() const;
  // SIGKILL to every process of the cgroup, through the held fd, and only if
  // the directory is still the one with inode `expected_id`. ENOENT when the
  // cgroup was removed since (nothing left to kill), ESTALE on an inode
  // mismatch.
  Status kill(std::uint64_t expected_id) const;

 private:
  StepCgroup(std::string path, std::uint64_t id, UniqueFd dir)
      : path_(std::move(path)), id_(id), dir_(std::move(dir)) {}

  std::string path_;
  std::uint64_t id_ = 0;
  UniqueFd dir_;
};

}  // namespace stepsnap::agent
