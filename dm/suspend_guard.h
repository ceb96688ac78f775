// Owner of one suspended device-mapper device: while it lives the device is
// suspended, and whatever path leaves the scope (return, error, exception)
// resumes it. A suspended device blocks every process touching it, so this
// is the only way dm/ suspends anything.
#pragma once

#include <string>

#include "common/error.h"
#include "dm/dm_task.h"

namespace stepsnap::dm {

class SuspendGuard {
 public:
  // Suspends `name`. With the default options the filesystem on it is frozen
  // and flushed first, so the device holds everything written before.
  static Result<SuspendGuard> suspend(std::string name, const SuspendOptions& options = {});

  SuspendGuard(SuspendGuard&& other) noexcept;
  SuspendGuard& operator=(SuspendGuard&& other) noexcept;
  SuspendGuard(const SuspendGuard&) = delete;
  SuspendGuard& operator=(const SuspendGuard&) = delete;
  // Resumes if still suspended, retrying briefly; a failure is logged, since
  // a destructor cannot report it (call resume() to see errors).
  ~SuspendGuard();

  // Idempotent. On failure the guard stays armed and the destructor retries.
  Status resume();
  const std::string& name() const { return name_; }
  bool suspended() const { return suspended_; }

 private:
  explicit SuspendGuard(std::string name) : name_(std::move(name)), suspended_(true) {}
  void resume_or_log() noexcept;

  std::string name_;
  bool suspended_ = false;
};

}  // namespace stepsnap::dm
