#include "dm/libdm_setup.h"

#include <libdevmapper.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "common/log.h"

namespace stepsnap::dm {
namespace {

bool g_udev_sync = false;

// libdevmapper's syslog-style levels (its private _LOG_* values); the high
// bits of `level` carry flags such as "also to stderr".
constexpr int kLibdmFatal = 2;
constexpr int kLibdmWarn = 4;

__attribute__((format(printf, 5, 6))) void log_bridge(int level, const char* file, int line,
                                                      int /*dm_errno_or_class*/, const char* format,
                                                      ...) {
  level &= 0x7;
  // Every failed ioctl already comes back to our caller as an Error with its
  // errno, so libdm's own "ioctl failed" lines are debug detail here; without
  // this an EBUSY retry loop would print a hundred error lines.
  log::Level ours = level <= kLibdmFatal ? log::Level::error : log::Level::debug;
  if (ours < log::level()) return;
  char text[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  std::string where =
      level <= kLibdmWarn ? std::string(" (") + file + ":" + std::to_string(line) + ")" : "";
  log::write(ours, std::string("libdevmapper: ") + text + where);
}

}  // namespace

void ensure_libdm_ready() {
  static std::once_flag once;
  std::call_once(once, [] {
    dm_log_with_errno_init(&log_bridge);
    // libdevmapper honours DM_DISABLE_UDEV itself, but a daemon started on a
    // node without udev (a VM, a minimal container host) must not wait on
    // cookies nobody will complete: turn sync off and let libdm mknod the
    // /dev/mapper nodes itself. Where udev runs, cookies keep us from racing
    // its rules, and the library fallback stays on so a node always exists.
    bool disabled = std::getenv("DM_DISABLE_UDEV") != nullptr;
    bool udev_running = ::access("/run/udev/control", F_OK) == 0;
    if (disabled || !udev_running) {
      dm_udev_set_sync_support(0);
      dm_udev_set_checking(0);
    }
    g_udev_sync = dm_udev_get_sync_support() != 0;
    log::debug(std::string("dm: udev sync ") + (g_udev_sync ? "on" : "off (library makes nodes)"));
  });
}

bool udev_sync_enabled() {
  ensure_libdm_ready();
  return g_udev_sync;
}

}  // namespace stepsnap::dm
