// One-time libdevmapper set-up, done before the first dm_task: its log goes to
// our logger, and its node handling is chosen for the machine we run on.
// Internal to dm/.
#pragma once

namespace stepsnap::dm {

// Idempotent and thread-safe.
void ensure_libdm_ready();

// True when libdevmapper synchronises with a running udev through cookies;
// false when it makes /dev/mapper nodes itself (no udev, DM_DISABLE_UDEV=1).
bool udev_sync_enabled();

}  // namespace stepsnap::dm
