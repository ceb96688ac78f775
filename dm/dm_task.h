// The literal kernel layer: one function per device-mapper ioctl, run in
// process through libdevmapper's dm_task_* API (never by shelling out).
//
// Every function returns the kernel's errno and the device name on failure.
// Functions that make or remove a device node (create, resume, remove) wait on
// a udev cookie where udev runs; where it does not (DM_DISABLE_UDEV=1, no udev
// daemon) libdevmapper creates /dev/mapper/<name> itself (see libdm_setup.cpp).
// No policy lives here: no retries, no id allocation, no rollback.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace stepsnap::dm {

// One line of a device-mapper table, in 512-byte sectors.
struct Target {
  std::uint64_t start = 0;
  std::uint64_t length = 0;
  std::string type;    // "thin-pool", "thin", "linear", ...
  std::string params;  // the target's own argument string (or status text)
};

struct DeviceInfo {
  bool suspended = false;
  bool live_table = false;
  bool inactive_table = false;
  bool read_only = false;
  bool deferred_remove = false;
  std::int32_t open_count = 0;
  std::uint32_t major = 0;
  std::uint32_t minor = 0;
  std::uint32_t event_nr = 0;
};

struct SuspendOptions {
  // Flush: wait for in-flight I/O to complete instead of requeueing it
  // (false = DM_NOFLUSH_FLAG, what a pool reload wants).
  bool flush = true;
  // Lockfs: freeze the filesystem on the device first (freeze_bdev), so its
  // dirty data and journal reach the device before it stops.
  // false = DM_SKIP_LOCKFS_FLAG.
  bool lockfs = true;
};

struct CreateOptions {
  bool read_only = false;
};

// /dev/mapper/<name>
std::string mapper_path(const std::string& name);

// The kernel's DM_NAME_LEN is 128 bytes with the terminating NUL.
inline constexpr std::size_t kMaxDmNameBytes = 127;
// EINVAL, one line naming the device, when `name` is empty or longer than
// kMaxDmNameBytes. Checked before any kernel call that names a new device, so
// a name that cannot exist never gets as far as an id reservation.
Status check_dm_name(const std::string& name);

// DM_DEVICE_CREATE with a table: creates, loads and resumes in one task.
Status create_device(const std::string& name, const std::vector<Target>& table,
                     const CreateOptions& options = {});
// DM_DEVICE_RELOAD: loads the inactive table; it goes live on resume().
Status load_table(const std::string& name, const std::vector<Target>& table);
Status suspend(const std::string& name, const SuspendOptions& options = {});
Status resume(const std::string& name);
// deferred: the kernel removes the device when its last opener closes it
// instead of failing with EBUSY now.
Status remove_device(const std::string& name, bool deferred = false);
// DM_DEVICE_TARGET_MSG at sector 0; returns the target's reply (often empty).
Result<std::string> message(const std::string& name, const std::string& text);
// ENXIO when the device does not exist.
Result<DeviceInfo> info(const std::string& name);
bool exists(const std::string& name);
struct StatusOptions {
  // false = DM_NOFLUSH_FLAG on the status ioctl. dm-thin's pool_status
  // (and dm-cache's, dm-clone's) commits the pool's metadata before
  // reporting unless that flag is set: a metadata write and a flush of the
  // metadata device per read. The numbers it reports come from the
  // in-core metadata either way (the transaction id as last set, the
  // space maps with this transaction's allocations), so a read that only
  // wants them needs no commit.
  bool commit_metadata = true;
};

// DM_DEVICE_STATUS: one Target per table line, params = the status text.
Result<std::vector<Target>> status(const std::string& name, const StatusOptions& options = {});
// DM_DEVICE_TABLE: the live table.
Result<std::vector<Target>> table(const std::string& name);
// DM_DEVICE_LIST: the names of every device-mapper device.
Result<std::vector<std::string>> list_devices();

}  // namespace stepsnap::dm
