#include "dm/dm_task.h"

#include <libdevmapper.h>
#include <sys/stat.h>

#include <cerrno>
#include <memory>

#include "dm/libdm_setup.h"

namespace stepsnap::dm {
namespace {

struct TaskDeleter {
  void operator()(dm_task* t) const { dm_task_destroy(t); }
};
using Task = std::unique_ptr<dm_task, TaskDeleter>;

const char* op_name(int type) {
  switch (type) {
    case DM_DEVICE_CREATE:
      return "dm create";
    case DM_DEVICE_RELOAD:
      return "dm load table";
    case DM_DEVICE_SUSPEND:
      return "dm suspend";
    case DM_DEVICE_RESUME:
      return "dm resume";
    case DM_DEVICE_REMOVE:
      return "dm remove";
    case DM_DEVICE_TARGET_MSG:
      return "dm message";
    case DM_DEVICE_INFO:
      return "dm info";
    case DM_DEVICE_STATUS:
      return "dm status";
    case DM_DEVICE_TABLE:
      return "dm table";
    case DM_DEVICE_LIST:
      return "dm list";
  }
  return "dm task";
}

Result<Task> make_task(int type, const std::string& name) {
  if (!name.empty()) {
    if (auto r = check_dm_name(name); !r) return tl::unexpected(r.error().context(op_name(type)));
  }
  ensure_libdm_ready();
  Task task(dm_task_create(type));
  if (!task) return fail(op_name(type), name, ENOMEM, "dm_task_create");
  if (!name.empty() && !dm_task_set_name(task.get(), name.c_str())) {
    return fail(op_name(type), name, EINVAL, "invalid device name");
  }
  return task;
}

// libdevmapper keeps the ioctl's errno; 0 means it failed before the ioctl
// (argument checks), which we report as EINVAL rather than "Success".
Status run(dm_task* task, int type, const std::string& name) {
  if (dm_task_run(task)) return {};
  int err = dm_task_get_errno(task);
  return fail(op_name(type), name, err != 0 ? err : EINVAL);
}

Status add_targets(dm_task* task, int type, const std::string& name,
                   const std::vector<Target>& table) {
  for (const Target& t : table) {
    if (!dm_task_add_target(task, t.start, t.length, t.type.c_str(), t.params.c_str())) {
      return fail(op_name(type), name, EINVAL, "bad target: " + t.type + " " + t.params);
    }
  }
  return {};
}

// Runs a task that adds or removes a /dev/mapper node. With udev the cookie
// makes us wait until its rules ran; without, dm_udev_wait() and
// dm_task_update_nodes() make libdevmapper do the mknod/unlink it stacked.
Status run_with_cookie(dm_task* task, int type, const std::string& name) {
  uint32_t cookie = 0;
  if (!dm_task_set_cookie(task, &cookie, 0)) {
    return fail(op_name(type), name, EIO, "dm_task_set_cookie");
  }
  Status status = run(task, type, name);
  // The cookie is waited for even after a failure: libdm created its
  // semaphore and udev may still have an event in flight.
  dm_udev_wait(cookie);
  dm_task_update_nodes();
  return status;
}

// Belt and braces for nodes: if neither udev nor the library made the node
// (udev running but its rules missing, for instance), make it now.
Status ensure_node(const std::string& name, int type) {
  struct stat st {};
  if (::stat(mapper_path(name).c_str(), &st) == 0) return {};
  if (!dm_mknodes(name.c_str()) || ::stat(mapper_path(name).c_str(), &st) != 0) {
    return fail(op_name(type), name, ENOENT, "no node at " + mapper_path(name));
  }
  return {};
}

Result<std::vector<Target>> targets_of(int type, const std::string& name, bool no_flush = false) {
  auto task = make_task(type, name);
  if (!task) return tl::unexpected(task.error());
  // libdevmapper turns this into DM_NOFLUSH_FLAG on any ioctl (_flatten in
  // libdm-iface.c), which dm-ioctl's retrieve_status hands the target as
  // DM_STATUS_NOFLUSH_FLAG.
  if (no_flush && !dm_task_no_flush(task->get())) {
    return fail(op_name(type), name, EINVAL, "dm_task_no_flush");
  }
  if (auto r = run(task->get(), type, name); !r) return tl::unexpected(r.error());
  dm_info di{};
  if (!dm_task_get_info(task->get(), &di) || !di.exists) return fail(op_name(type), name, ENXIO);
  std::vector<Target> out;
  void* next = nullptr;
  do {
    uint64_t start = 0, length = 0;
    char* target_type = nullptr;
    char* params = nullptr;
    next = dm_get_next_target(task->get(), next, &start, &length, &target_type, &params);
    if (target_type) out.push_back({start, length, target_type, params ? params : ""});
  } while (next);
  return out;
}

}  // namespace

std::string mapper_path(const std::string& name) { return std::string(dm_dir()) + "/" + name; }

Status check_dm_name(const std::string& name) {
  if (name.empty()) return fail("dm name", "\"\"", EINVAL, "a device needs a name");
  if (name.size() > kMaxDmNameBytes) {
    return fail("dm name", name, EINVAL,
                "is " + std::to_string(name.size()) + " bytes; device-mapper allows at most " +
                    std::to_string(kMaxDmNameBytes) + ": use a shorter pool or volume name");
  }
  return {};
}

Status create_device(const std::string& name, const std::vector<Target>& table,
                     const CreateOptions& options) {
  auto task = make_task(DM_DEVICE_CREATE, name);
  if (!task) return tl::unexpected(task.error());
  if (auto r = add_targets(task->get(), DM_DEVICE_CREATE, name, table); !r) return r;
  if (options.read_only) dm_task_set_ro(task->get());
  // libdm runs create, load and resume; on a failed load it removes the
  // half-made device again, so there is nothing for us to clean up.
  if (auto r = run_with_cookie(task->get(), DM_DEVICE_CREATE, name); !r) return r;
  return ensure_node(name, DM_DEVICE_CREATE);
}

Status load_table(const std::string& name, const std::vector<Target>& table) {
  auto task = make_task(DM_DEVICE_RELOAD, name);
  if (!task) return tl::unexpected(task.error());
  if (auto r = add_targets(task->get(), DM_DEVICE_RELOAD, name, table); !r) return r;
  return run(task->get(), DM_DEVICE_RELOAD, name);
}

Status suspend(const std::string& name, const SuspendOptions& options) {
  auto task = make_task(DM_DEVICE_SUSPEND, name);
  if (!task) return tl::unexpected(task.error());
  if (!options.flush) dm_task_no_flush(task->get());
  if (!options.lockfs) dm_task_skip_lockfs(task->get());
  return run(task->get(), DM_DEVICE_SUSPEND, name);
}

Status resume(const std::string& name) {
  auto task = make_task(DM_DEVICE_RESUME, name);
  if (!task) return tl::unexpected(task.error());
  return run_with_cookie(task->get(), DM_DEVICE_RESUME, name);
}

Status remove_device(const std::string& name, bool deferred) {
  auto task = make_task(DM_DEVICE_REMOVE, name);
  if (!task) return tl::unexpected(task.error());
  if (deferred) dm_task_deferred_remove(task->get());
  // No dm_task_retry_remove(): retries on EBUSY are policy, owned by the
  // caller (ThinPool::deactivate), which can say what holds the device.
  return run_with_cookie(task->get(), DM_DEVICE_REMOVE, name);
}

Result<std::string> message(const std::string& name, const std::string& text) {
  auto task = make_task(DM_DEVICE_TARGET_MSG, name);
  if (!task) return tl::unexpected(task.error());
  if (!dm_task_set_sector(task->get(), 0) || !dm_task_set_message(task->get(), text.c_str())) {
    return fail("dm message", name, ENOMEM, text);
  }
  if (auto r = run(task->get(), DM_DEVICE_TARGET_MSG, name); !r) {
    Error e = r.error();
    e.detail = "\"" + text + "\"";
    return tl::unexpected(e);
  }
  const char* reply = dm_task_get_message_response(task->get());
  return std::string(reply ? reply : "");
}

Result<DeviceInfo> info(const std::string& name) {
  auto task = make_task(DM_DEVICE_INFO, name);
  if (!task) return tl::unexpected(task.error());
  if (auto r = run(task->get(), DM_DEVICE_INFO, name); !r) return tl::unexpected(r.error());
  dm_info di{};
  if (!dm_task_get_info(task->get(), &di)) return fail("dm info", name, EIO);
  if (!di.exists) return fail("dm info", name, ENXIO);
  DeviceInfo out;
  out.suspended = di.suspended != 0;
  out.live_table = di.live_table != 0;
  out.inactive_table = di.inactive_table != 0;
  out.read_only = di.read_only != 0;
  out.deferred_remove = di.deferred_remove != 0;
  out.open_count = di.open_count;
  out.major = di.major;
  out.minor = di.minor;
  out.event_nr = di.event_nr;
  return out;
}

bool exists(const std::string& name) { return info(name).has_value(); }

Result<std::vector<Target>> status(const std::string& name, const StatusOptions& options) {
  return targets_of(DM_DEVICE_STATUS, name, !options.commit_metadata);
}

Result<std::vector<Target>> table(const std::string& name) {
  return targets_of(DM_DEVICE_TABLE, name);
}

Result<std::vector<std::string>> list_devices() {
  auto task = make_task(DM_DEVICE_LIST, "");
  if (!task) return tl::unexpected(task.error());
  if (auto r = run(task->get(), DM_DEVICE_LIST, "(all)"); !r) return tl::unexpected(r.error());
  std::vector<std::string> out;
  dm_names* names = dm_task_get_names(task->get());
  if (!names || names->dev == 0) return out;  // no devices at all
  for (;;) {
    out.emplace_back(names->name);
    if (names->next == 0) break;
    names = reinterpret_cast<dm_names*>(reinterpret_cast<char*>(names) + names->next);
  }
  return out;
}

}  // namespace stepsnap::dm
