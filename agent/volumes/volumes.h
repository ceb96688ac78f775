// agent/volumes/: every pool operation in its catalog intent, with its
// event. Uses agent/events, agent/catalog and dm/.
//
// The agent's operations on thin devices: every kernel call through
// dm::ThinPool wrapped in the catalog's intent (begin before, finish or
// abort after), its event committed in the same transaction as the catalog
// change, and the pool's space checked after each create.
//
// Naming on the kernel side: the pool device is "<pool>-pool"; volumes and
// clones are active as "<pool>-vol-<name>" (/dev/mapper/...); snapshots are
// thin ids with no active device (activate one by cloning it).
//
// Thread-safe: kernel operations on the pool are serialized by one mutex
// (ThinPool is a single-threaded view); the catalog locks itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/catalog/catalog.h"
#include "agent/events/event_log.h"
#include "common/error.h"
#include "common/names.h"
#include "dm/thin_pool.h"

namespace stepsnap::agent {

std::string pool_dm_name(const std::string& pool);
std::string volume_dm_name(const std::string& pool, const std::string& name);

// A device as the API shows it.
nlohmann::json device_json(const DeviceRecord& device, const std::string& origin_name = {});

struct GroupSnapshot {
  std::vector<DeviceRecord> snapshots;  // in the order of the volumes asked for
  // How long the volumes were paused: the frozen window, first suspend to
  // last resume, measured in dm/.
  std::chrono::nanoseconds pause{0};
  // The flush before it, while the volumes still ran.
  std::chrono::nanoseconds flush{0};
  // The volumes' dm names, in the same order: settle_group reads their
  // mapped bytes.
  std::vector<std::string> origin_dm_names;
  // Where the whole call's time went (issue 17): waiting for the pool's
  // lock (another operation on the pool), reading the origins' rows,
  // the kernel side part by part (dm::SnapshotTimes: the pool's status,
  // the transaction-id message, the intent records written from its hook,
  // flush, suspend, create_snap, resume), and the result commit (the rows
  // made `created` with their snapshot.created events, one transaction).
  std::chrono::nanoseconds lock_wait{0};
  std::chrono::nanoseconds lookup{0};
  dm::SnapshotTimes kernel;
  std::chrono::nanoseconds results{0};
};

// What run.create made (Volumes::create_run).
struct RunCreated {
  std::string pipeline;
  std::string run;
  // The run's initial snapshots, in the order of the volumes; empty when the
  // clones were made from given snapshots.
  std::vector<DeviceRecord> initial_snapshots;
  std::vector<DeviceRecord> clones;   // the run's clone of each volume
  std::chrono::nanoseconds pause{0};  // the group snapshot's pause, as GroupSnapshot
};
nlohmann::json run_created_json(const RunCreated& made);

// Who a create is for: the peer's uid (recorded as the device's owner, see
// docs/security.md) and, for run.clone only, the run the clone belongs to.
struct Ownership {
  std::uint32_t uid = 0;
  std::optional<RunCloneKey> run_clone;
};

// What snapshot.send wrote (snapshot_send.cpp).
struct SendResult {
  std::uint64_t bytes = 0;        // the whole stream
  std::uint64_t data_blocks = 0;  // blocks carried, of block_bytes each
  std::uint64_t zero_blocks = 0;  // blocks the receiver unmaps
  std::uint64_t block_bytes = 0;
  bool incremental = false;
};

// What snapshot.receive made (snapshot_receive.cpp).
struct ReceiveResult {
  DeviceRecord snapshot;
  std::uint64_t bytes = 0;
  std::uint64_t data_blocks = 0;
  std::uint64_t zero_blocks = 0;
};

class Volumes {
 public:
  Volumes(Catalog& catalog, EventLog& events, dm::ThinPool& pool, PoolRecord record,
          unsigned low_space_percent)
      : catalog_(catalog),
        events_(events),
        pool_(pool),
        record_(std::move(record)),
        low_space_percent_(low_space_percent) {}

  const PoolRecord& pool_record() const { return record_; }
  Catalog& catalog() { return catalog_; }
  // Runs fn with the pool locked (recovery, status).
  template <typename Fn>
  auto with_pool(Fn&& fn) {
    std::lock_guard lock(kernel_mutex_);
    return fn(pool_);
  }

  Result<DeviceRecord> create_volume(const std::string& name, std::uint64_t size_bytes,
                                     const Labels& labels, const Ownership& who = {});
  // snapshot.create: name generated ("<volume>.s<thin id>") when absent;
  // `step` set for a pipeline run's initial snapshot.
  Result<DeviceRecord> snapshot(const std::string& volume, const std::optional<std::string>& name,
                                const Labels& labels, const std::optional<StepInfo>& step = {},
                                const Ownership& who = {});
  // One instant across every volume (dm snapshot_group); all or nothing.
  // Names "<run>.<step>.<volume>.<phase>" (or "<volume>.s<id>.<phase>" when
  // that is too long or taken). Each snapshot gets a snapshot.created event
  // carrying `event_extra`.
  Result<GroupSnapshot> snapshot_group(const std::vector<std::string>& volumes,
                                       const StepInfo& step, const Labels& labels,
                                       const nlohmann::json& event_extra);
  // What snapshot_group leaves out so that a held step goes as soon as its
  // snapshots are recorded (docs/agent.md, the hold): each snapshot's
  // mapped bytes (its origin's thin status read now, after the step was
  // released: an upper bound, as any reading after the resume is) and the
  // pool's space check (pool.usage, pool.low_space). Call it once the
  // step is released. Failures are logged: the snapshots stand.
  void settle_group(const GroupSnapshot& group);
  // clone.create (kind clone) and restore (kind volume): a new active device
  // from a snapshot.
  Result<DeviceRecord> clone(const std::string& snapshot, const std::string& name,
                             const Labels& labels, DeviceKind kind, const Ownership& who = {});
  // run.create, one operation (run_creation.cpp): the run's initial
  // snapshots of every volume at one instant (one group snapshot) unless
  // `sources` names one snapshot per volume, then the run's clone of each;
  // the intents of all of them committed before the first kernel call, the
  // results in one transaction after the last. When any part fails every
  // device made so far is removed and every intent rolled back; a kill -9
  // in between leaves only `creating` rows, which recovery rolls back
  // together. Without `run` an id no run of the pipeline has is picked
  // ("run-YYYYMMDD-HHMMSS", then "-2", "-3", ...); a given run that exists
  // (any clone, snapshot or step of it) is EEXIST. `plan` (its pipeline and
  // run are set here) is kept with the run, in the same transaction.
  Result<RunCreated> create_run(const std::string& pipeline, const std::optional<std::string>& run,
                                const std::vector<std::string>& volumes,
                                const std::vector<std::string>& sources, const Ownership& who,
                                const std::optional<RunPlanRecord>& plan = std::nullopt);
  // snapshot.send (docs/send-receive.md): writes the stream of snapshot
  // `name` to `out`: with `base`, only the blocks whose mapping differs from
  // base's, found from a held metadata snapshot by thin_dump; the data is
  // read from the pool's data device at the mapped blocks, which the held
  // metadata snapshot keeps allocated until the end. `node` names this
  // agent's node in the header.
  Result<SendResult> send_snapshot(const std::string& name, const std::optional<std::string>& base,
                                   int out, const std::string& node);
  // snapshot.receive: reads a stream from `in` and makes it a snapshot of
  // this pool (named `name`, or the sender's name), on top of the base the
  // stream names (found by uuid) when it is incremental. The new thin device
  // is in a `creating` catalog row, active under a temporary dm name, until
  // the whole stream checked out; any failure deletes it and the row, and a
  // crash leaves the row to recovery, which does the same.
  Result<ReceiveResult> receive_snapshot(int in, const std::optional<std::string>& name,
                                         const Ownership& who = {});
  // volume.delete (volumes and clones) or snapshot.delete (snapshots).
  Status remove(const std::string& name, bool snapshot);
  // snapshot.label: merges `labels` into the snapshot's (new values win),
  // with a snapshot.labelled event in the same transaction. Returns the
  // snapshot as it is now.
  Result<DeviceRecord> label_snapshot(const std::string& name, const Labels& labels);

  Result<DeviceRecord> find(const std::string& name);
  // The run's clone by the catalog's run_clone column (never by name or
  // labels); nullopt when the run has none.
  Result<std::optional<DeviceRecord>> find_run_clone(const RunCloneKey& key);
  Result<std::vector<DeviceRecord>> list(DeviceFilter filter);
  // By catalog id (an origin_id or parent_id); ENOENT for another pool's.
  Result<DeviceRecord> get(std::int64_t id);
  // The volume's newest created snapshot, if it has one.
  Result<std::optional<DeviceRecord>> newest_snapshot(std::int64_t origin_id);
  // The names of a snapshot's earlier versions, nearest first, at most max.
  Result<std::vector<std::string>> lineage(std::int64_t id, std::size_t max);
  Result<nlohmann::json> pool_json();

 private:
  // After a create or a delete: pool.usage when the pool's use moved by
  // 0.1% of either space since the last one, pool.low_space when it
  // crosses the threshold.
  void check_space();
  // After a failed create: pool.out_of_space for the space kinds.
  void report_failure(const std::string& op, const Error& error);
  Result<DeviceRecord> origin_for(const std::string& name, bool want_snapshot,
                                  const std::string& op);
  // EEXIST when a device of that name is in the catalog.
  Status name_is_free(const std::string& op, const std::string& name);

  // What the kernel made for one device of a create: its active dm name
  // (empty for a snapshot) and, for a snapshot, its origin's mapped bytes.
  struct Made {
    std::string dm_name;
    std::uint64_t mapped_bytes = 0;
  };
  // Intent, kernel operation, finish with events: see volumes.cpp. The
  // pool's space is checked after a success unless the caller does it
  // later (settle_group).
  template <typename SpecFn, typename OpFn, typename EventFn>
  // `results_time`, when set, gets the time of the result commit.
  Result<std::vector<DeviceRecord>> create_with_intent(
      std::string_view op, SpecFn&& spec_for, OpFn&& kernel_op, EventFn&& event_for,
      bool check_space_now = true, std::chrono::nanoseconds* results_time = nullptr);

  Catalog& catalog_;
  EventLog& events_;
  dm::ThinPool& pool_;
  PoolRecord record_;
  unsigned low_space_percent_;
  std::mutex kernel_mutex_;
  bool low_space_reported_ = false;  // guarded by kernel_mutex_
  // The pool's use in per mille of data and metadata space, as the last
  // pool.usage reported it (none yet: an impossible value).
  struct Usage {
    unsigned data = 1001;
    unsigned metadata = 1001;
    bool operator==(const Usage&) const = default;
  };
  Usage last_usage_;  // guarded by kernel_mutex_
};

}  // namespace stepsnap::agent
