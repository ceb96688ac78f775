#include "dm/suspend_guard.h"

#include <chrono>
#include <thread>
#include <utility>

#include "common/log.h"

namespace stepsnap::dm {

Result<SuspendGuard> SuspendGuard::suspend(std::string name, const SuspendOptions& options) {
  if (auto r = dm::suspend(name, options); !r) {
    // A suspend that fails part-way (e.g. the freeze succeeded, the ioctl
    // was interrupted) can leave the device suspended: resume to be sure.
    // Resuming a device that is not suspended is a no-op for the kernel.
    (void)dm::resume(name);
    return tl::unexpected(r.error());
  }
  return SuspendGuard(std::move(name));
}

SuspendGuard::SuspendGuard(SuspendGuard&& other) noexcept
    : name_(std::move(other.name_)), suspended_(std::exchange(other.suspended_, false)) {}

SuspendGuard& SuspendGuard::operator=(SuspendGuard&& other) noexcept {
  if (this != &other) {
    resume_or_log();
    name_ = std::move(other.name_);
    suspended_ = std::exchange(other.suspended_, false);
  }
  return *this;
}

SuspendGuard::~SuspendGuard() { resume_or_log(); }

Status SuspendGuard::resume() {
  if (!suspended_) return {};
  if (auto r = dm::resume(name_); !r) return r;
  suspended_ = false;
  return {};
}

void SuspendGuard::resume_or_log() noexcept {
  try {
    // A handful of tries: a resume can fail transiently (ENOMEM, EINTR) and
    // giving up leaves every process on the device hung.
    for (int attempt = 0; suspended_ && attempt < 5; ++attempt) {
      auto r = resume();
      if (r) return;
      log::error("suspend guard: " + r.error().message() + " (attempt " +
                 std::to_string(attempt + 1) + " of 5)");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (suspended_) log::error("suspend guard: device " + name_ + " LEFT SUSPENDED");
  } catch (...) {
    // Only allocation can throw here; there is nothing better to do.
  }
}

}  // namespace stepsnap::dm
