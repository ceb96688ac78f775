// agent/catalog/: the persistent record (SQLite) and the pure reconcile
// planner. Uses common/ only.
//
// The catalog: the agent's persistent record of pools, thin devices (volumes,
// snapshots, clones), their labels and step metadata, and the intent log of
// every kernel operation.
//
// The rule that makes crash recovery a pure function (see reconcile.h): the
// agent calls begin_create()/begin_delete() and gets the record committed
// *before* it touches the kernel, then finish_*() or abort_*() after. A device
// row is therefore always in one of: creating (intent written, kernel result
// unknown), created, deleting (intent written), faulty (we know something is
// wrong and said so). This is containerd devmapper's transition() pattern.
//
// Thin ids are allocated here, per pool, from a counter that only grows: an
// id is never reused, so a stale reference can never reach a newer device.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/catalog/sqlite_db.h"
#include "common/error.h"
#include "common/names.h"

namespace stepsnap::agent {

// dm-thin device ids are 24-bit.
inline constexpr std::uint32_t kMaxThinId = (1u << 24) - 1;

enum class DeviceKind { volume, snapshot, clone };
enum class DeviceState { creating, created, deleting, faulty };
enum class Phase { initial, pre, post };
enum class OperationKind { create, remove };
enum class OperationState { pending, done, failed, rolled_back, completed_by_recovery };

std::string_view to_string(DeviceKind k);
std::string_view to_string(DeviceState s);
std::string_view to_string(Phase p);
std::string_view to_string(OperationKind k);
std::string_view to_string(OperationState s);
std::optional<DeviceKind> parse_device_kind(std::string_view s);
std::optional<DeviceState> parse_device_state(std::string_view s);
std::optional<Phase> parse_phase(std::string_view s);

struct PoolSpec {
  std::string name;
  std::string data_device;
  std::string metadata_device;
  std::uint64_t block_bytes = 64 * 1024;
};

struct PoolRecord {
  std::int64_t id = 0;
  std::string name;
  std::string data_device;
  std::string metadata_device;
  std::uint64_t block_bytes = 0;
  std::uint32_t next_thin_id = 1;
  std::int64_t created_ns = 0;
  // The pool's dm transaction id after the agent's last change to it; none
  // until first recorded. Handed to dm::ThinPool::open at start.
  std::optional<std::uint64_t> transaction_id;
};

// What a step snapshot records about the step at its boundary.
struct StepInfo {
  std::string pipeline;
  std::string run;
  std::string step;
  Phase phase = Phase::pre;
  std::string command;
  std::optional<int> exit_status;  // post snapshots only
};

// A pipeline run's clone of one volume (run.clone). Kept in its own catalog
// column: the only thing that makes a device a run's clone.
struct RunCloneKey {
  std::string pipeline;
  std::string run;
  std::string volume;

  // "<pipeline>/<run>/<volume>": the column's value.
  std::string text() const { return pipeline + "/" + run + "/" + volume; }
  bool operator==(const RunCloneKey&) const = default;
};

struct DeviceRecord {
  std::int64_t id = 0;
  std::int64_t pool_id = 0;
  std::string name;
  DeviceKind kind = DeviceKind::volume;
  std::uint32_t thin_id = 0;
  // The device this one shares blocks with: a snapshot's volume, a clone's
  // snapshot. Null for a fresh volume, or once the origin was deleted.
  std::optional<std::int64_t> origin_id;
  // Lineage: the snapshot taken of the same origin just before this one, so
  // a volume's snapshots read as a version history.
  std::optional<std::int64_t> parent_id;
  DeviceState state = DeviceState::creating;
  // The device-mapper name: for a created device the name it is active
  // under (empty when inactive); for a creating one the name it is being
  // activated under, written with the intent so that recovery can find (and
  // remove) a device a crash left active before the create was committed.
  std::string dm_name;
  std::uint64_t size_bytes = 0;
  std::uint64_t mapped_bytes = 0;
  std::int64_t created_ns = 0;
  std::string fault;  // why the device is faulty
  Labels labels;
  std::optional<StepInfo> step;
  // Who made it (SO_PEERCRED uid); 0 for the daemon's own devices and rows
  // from before schema version 3.
  std::uint32_t owner_uid = 0;
  std::optional<RunCloneKey> run_clone;
  // The identity a send stream carries (32 hex digits), given at creation
  // and kept by receive (docs/send-receive.md).
  std::string uuid;
  // Set on a snapshot made by receive: JSON naming the source node, pool,
  // snapshot name and parent uuid. Empty otherwise.
  std::string received_from;
};

struct CreateSpec {
  std::int64_t pool_id = 0;
  std::string name;
  DeviceKind kind = DeviceKind::volume;
  std::optional<std::int64_t> origin_id;
  std::uint64_t size_bytes = 0;  // 0 for snapshots/clones: the origin's size
  Labels labels;
  std::optional<StepInfo> step;
  // The id the pool reserved for this device (dm::ThinPool hands it to its
  // BeforeCreate hook, which is where the agent calls begin_create). The
  // pool's counter here moves past it. Without it the catalog picks the next
  // id itself.
  std::optional<std::uint32_t> thin_id;
  std::uint32_t owner_uid = 0;
  // Set by run.clone only; a second device with the same key is EEXIST.
  std::optional<RunCloneKey> run_clone;
  // The dm name the device will be activated under (volumes and clones;
  // empty for snapshots, which stay inactive). Recorded before the kernel
  // call: see DeviceRecord::dm_name.
  std::string dm_name;
  // The origin may still be `creating`: it is made by the same operation
  // (run.create clones the run's initial snapshots before committing
  // either), which finishes or rolls back both together.
  bool origin_in_same_operation = false;
  // Receive (docs/send-receive.md): the sender's uuid instead of a new one,
  // where it came from, and a snapshot with no origin on this pool whose
  // parent is `parent_id` (the base of an incremental stream) or nothing.
  std::optional<std::string> uuid;
  std::string received_from;
  std::optional<std::int64_t> parent_id;
};

// A fresh random uuid: 32 lower-case hex digits (/dev/urandom).
std::string new_device_uuid();

// Returned by begin_*; handed back to finish_*/abort_*.
struct Intent {
  std::int64_t operation_id = 0;
  std::int64_t device_id = 0;
  std::uint32_t thin_id = 0;
  std::optional<std::uint32_t> origin_thin_id;
};

// What start-up recovery reads of a device row (Catalog::device_rows,
// reconcile.h): the columns the planner decides on, no labels, no step row.
struct DeviceRow {
  std::int64_t id = 0;
  std::uint32_t thin_id = 0;
  DeviceKind kind = DeviceKind::volume;
  DeviceState state = DeviceState::creating;
  std::string name;
  std::string dm_name;
};

struct OperationRecord {
  std::int64_t id = 0;
  std::int64_t pool_id = 0;
  OperationKind kind = OperationKind::create;
  std::optional<std::int64_t> device_id;
  std::string device_name;
  std::uint32_t thin_id = 0;
  OperationState state = OperationState::pending;
  std::int64_t started_ns = 0;
  std::optional<std::int64_t> finished_ns;
  std::string detail;
};

// A registered step as the catalog keeps it. State and policy are the names
// of agent/step_state.h and the API (the schema checks them); the catalog
// does not interpret them beyond "terminal or not".
struct StepRecord {
  std::string pipeline;
  std::string run;
  std::string step;
  std::string cgroup;
  std::uint64_t cgroup_id = 0;
  std::string policy = "both";
  std::vector<std::string> volumes;
  std::string command;
  Labels labels;
  std::string state = "registered";
  std::optional<int> exit_status;
  std::string error;
  std::int64_t registered_ns = 0;
  std::int64_t started_ns = 0;   // 0: not started
  std::int64_t finished_ns = 0;  // 0: not finished
  std::int64_t held_ns = 0;
  std::vector<std::string> pre_snapshots;
  std::vector<std::string> post_snapshots;

  bool terminal() const { return state == "finished" || state == "failed"; }
};

// What runner pipeline planned for a run, given with run.create: every step
// with the steps it runs after, and the ones restored from an earlier run
// (not re-run). Lets a run's readers show the steps that never registered:
// skipped after a failure, restored, or not started yet.
struct PlannedStep {
  std::string step;
  std::vector<std::string> after;
};
struct RunPlanRecord {
  std::string pipeline;
  std::string run;
  std::vector<PlannedStep> steps;
  std::vector<std::string> restored;
  std::string restored_from;  // the run the restored steps come from; empty: none
};

// A pipeline run as list_runs() names it.
struct RunKey {
  std::string pipeline;
  std::string run;
  std::int64_t first_ns = 0;  // earliest registration or snapshot
};

// A page of list_runs(): the runs that come after `after` in its order, at
// most limit.
struct RunFilter {
  std::optional<RunKey> after;
  std::optional<std::size_t> limit;
};

struct DeviceFilter {
  std::optional<std::int64_t> pool_id;
  std::optional<DeviceKind> kind;
  // Any of these kinds (empty: any); volume.list asks for volumes and clones.
  std::vector<DeviceKind> kinds;
  std::optional<std::int64_t> origin_id;
  std::optional<std::string> pipeline;
  std::optional<std::string> run;
  std::optional<std::string> step;
  // Paging, in id order: rows with an id above after_id, at most limit.
  std::optional<std::int64_t> after_id;
  std::optional<std::size_t> limit;
};

class Catalog {
 public:
  // Creates the schema or migrates an older one, in one transaction.
  static Result<Catalog> open(std::shared_ptr<Database> db);
  // Over a read-only connection (Database::open_read_only): no migration;
  // refuses a schema other than the latest, which the writer made.
  static Result<Catalog> open_read_only(std::shared_ptr<Database> db);
  static int latest_schema_version();
  Result<int> schema_version();

  Database& db() { return *db_; }

  Result<PoolRecord> add_pool(const PoolSpec& spec);
  Result<std::optional<PoolRecord>> find_pool(const std::string& name);
  Result<PoolRecord> get_pool(std::int64_t id);

  // Intent before the kernel call: allocates the thin id, inserts the device
  // as `creating` and a pending operation. Fails with EEXIST on a taken name,
  // ENOENT on a missing origin, EBUSY on an origin that is not `created`,
  // ENOSPC when the pool's 24-bit id space is used up.
  Result<Intent> begin_create(const CreateSpec& spec);
  // The kernel call worked: the device is `created`.
  Status finish_create(const Intent& intent, const std::string& dm_name,
                       std::uint64_t mapped_bytes = 0);
  // The kernel call failed. If the thin device exists anyway it is kept and
  // marked faulty (never forgotten); otherwise the record goes.
  Status abort_create(const Intent& intent, const Error& why, bool device_exists);

  // Intent before deleting: the device becomes `deleting`. EBUSY if another
  // operation on it is under way.
  Result<Intent> begin_delete(std::int64_t device_id);
  Status finish_delete(const Intent& intent);
  // Delete failed (EBUSY, say): a device that still exists goes back to
  // `created`; one that is gone anyway loses its record.
  Status abort_delete(const Intent& intent, const Error& why, bool device_exists);

  Result<DeviceRecord> get_device(std::int64_t id);
  Result<std::optional<DeviceRecord>> find_device(std::int64_t pool_id, const std::string& name);
  Result<std::vector<DeviceRecord>> list_devices(const DeviceFilter& filter = {});
  // The device with that uuid in the pool, any state.
  Result<std::optional<DeviceRecord>> find_device_by_uuid(std::int64_t pool_id,
                                                          const std::string& uuid);
  // The newest `created` snapshot of a device (ids only grow, so the
  // highest), without listing the others; none when it has none.
  Result<std::optional<DeviceRecord>> newest_snapshot(std::int64_t origin_id);
  // The names of a device's earlier versions, nearest first (its parent,
  // the parent's parent, ...), at most max: one indexed walk, no list.
  Result<std::vector<std::string>> lineage(std::int64_t device_id, std::size_t max);
  // Whether anything in the pool belongs to the run: a run clone, a step
  // snapshot, a registered step or a plan naming (pipeline, run).
  Result<bool> run_exists(std::int64_t pool_id, const std::string& pipeline,
                          const std::string& run);
  // The run's clone of a volume, by the run_clone column alone.
  Result<std::optional<DeviceRecord>> find_run_clone(std::int64_t pool_id, const RunCloneKey& key);

  // Names of the devices with those ids (any kind or state); ids with no
  // device are left out.
  Result<std::map<std::int64_t, std::string>> device_names(const std::vector<std::int64_t>& ids);
  // The run's clones (run.clone's), by the run_clone index, in id order.
  Result<std::vector<DeviceRecord>> list_run_clones(const std::string& pipeline,
                                                    const std::string& run);

  Status set_mapped_bytes(std::int64_t device_id, std::uint64_t bytes);
  Status set_dm_name(std::int64_t device_id, const std::string& dm_name);
  Status set_labels(std::int64_t device_id, const Labels& labels);

  // Used by recovery (reconcile.h actions).
  // Every device row of the pool as recovery needs it, in id order: one
  // query of six columns (device_rows.cpp). list_devices would read each
  // row's labels and step row too, two more queries a row: at 100,000
  // snapshots that read was most of a 340 s start and of the daemon's peak
  // memory (docs/benchmarks.md).
  Result<std::vector<DeviceRow>> device_rows(std::int64_t pool_id);
  Result<std::vector<OperationRecord>> pending_operations(std::int64_t pool_id);
  Status close_operation(std::int64_t operation_id, OperationState state,
                         const std::string& detail);
  Status mark_faulty(std::int64_t device_id, const std::string& reason);
  Status mark_created(std::int64_t device_id);
  Status drop_device(std::int64_t device_id);
  // Raises the pool's counter to at least `next` (never lowers it).
  Status advance_thin_id(std::int64_t pool_id, std::uint32_t next);
  // Records the pool's dm transaction id after a change (see PoolRecord).
  Status set_transaction_id(std::int64_t pool_id, std::uint64_t txn);

  // Steps. save_step inserts or replaces the row of (pipeline, run, step):
  // registering a finished step again starts a new life for it.
  Status save_step(const StepRecord& step);
  Result<std::optional<StepRecord>> find_step(const std::string& pipeline, const std::string& run,
                                              const std::string& step);
  // Every step of a run, by step name.
  Result<std::vector<StepRecord>> list_steps(const std::string& pipeline, const std::string& run);
  // Every (pipeline, run) the catalog knows from a step, a step snapshot or a
  // plan, newest first by the earliest time recorded for it; one page of
  // them with a RunFilter.
  Result<std::vector<RunKey>> list_runs(const RunFilter& filter = {});
  // One run's key as list_runs gives it (a page's `after`); none when the
  // catalog knows nothing of the run.
  Result<std::optional<RunKey>> find_run_key(const std::string& pipeline, const std::string& run);
  // A run's plan (run_plans.cpp); none for runs made without one.
  Status save_run_plan(const RunPlanRecord& plan);
  Result<std::optional<RunPlanRecord>> find_run_plan(const std::string& pipeline,
                                                     const std::string& run);
  // Steps not finished or failed (after a restart: the ones whose watch died).
  Result<std::vector<StepRecord>> unfinished_steps();

 private:
  explicit Catalog(std::shared_ptr<Database> db) : db_(std::move(db)) {}
  // The device whose `column` (name or uuid: both unique in a pool) is value.
  Result<std::optional<DeviceRecord>> find_device_by(std::int64_t pool_id, const char* column,
                                                     const std::string& value);
  Status migrate();
  Result<Labels> load_labels(std::int64_t device_id);
  Result<std::optional<StepInfo>> load_step(std::int64_t device_id);
  Result<DeviceRecord> fill(DeviceRecord record);
  // The device in the first row of a query over kDeviceColumns (none when
  // it has no row), filled with its labels and step.
  Result<std::optional<DeviceRecord>> first_device(Statement& st);
  // Every device a query over kDeviceColumns gives, filled by fill_all.
  Result<std::vector<DeviceRecord>> all_devices(Statement& st);
  // fill() for a whole list, in a few statements (labels and step records
  // by chunks of ids).
  Status fill_all(std::vector<DeviceRecord>& rows);
  Result<std::vector<StepRecord>> query_steps(const std::string& where,
                                              const std::vector<std::string>& args);
  Status set_operation(std::int64_t operation_id, OperationState state, const std::string& detail);

  std::shared_ptr<Database> db_;
};

}  // namespace stepsnap::agent
