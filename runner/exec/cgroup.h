// Owner of one cgroup v2 directory: a step's cgroup.
//
// The id is the directory's inode number, which is what BPF programs see as
// the cgroup id (bpf_get_current_cgroup_id, task->cgroups->dfl_cgrp->kn->id).
// The destructor kills whatever is left inside and removes the directory, so a
// step's cgroup never outlives the object that made it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "common/cgroup_files.h"
#include "common/error.h"
#include "common/unique_fd.h"

namespace stepsnap::runner {

using stepsnap::cgroup2_mount_point;

class Cgroup {
 public:
  // Creates <cgroup2 mount>/<relative_path>, making missing parents. An
  // existing directory is an error (EEXIST): two steps never share a cgroup.
  static Result<Cgroup> create(const std::string& relative_path);

  Cgroup(Cgroup&& other) noexcept;
  Cgroup& operator=(Cgroup&& other) noexcept;
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  ~Cgroup();

  const std::string& path() const { return path_; }
  std::uint64_t id() const { return id_; }
  // O_PATH|O_DIRECTORY fd, as clone3(CLONE_INTO_CGROUP) wants it.
  int dir_fd() const { return dir_.get(); }

  Status add_process(pid_t pid) const;
  // "populated 1" in cgroup.events: some process of this cgroup or a
  // descendant is still alive. The authoritative "step is over" signal.
  Result<bool> populated() const;
  // SIGKILL to every process inside, descendants included (cgroup.kill, with
  // a cgroup.procs walk as fallback on kernels older than 5.14).
  Status kill() const;
  Status wait_empty(std::chrono::milliseconds timeout) const;
  // kill(), wait until empty, rmdir. Idempotent.
  Status remove();

 private:
  Cgroup(std::string path, std::uint64_t id, UniqueFd dir)
      : path_(std::move(path)), id_(id), dir_(std::move(dir)) {}

  std::string path_;
  std::uint64_t id_ = 0;
  UniqueFd dir_;
};

}  // namespace stepsnap::runner
