// dm/: device-mapper and nothing else (pools, thin devices, loop devices).
// Uses common/ only; never includes agent/.
//
// The stateful layer over one dm-thin pool: id allocation, the transaction-id
// view of the pool, retries on EBUSY, typed space errors, rollback of group
// snapshots. Everything below it (dm_task.h, pool_messages.h, snapshot.h) is
// one kernel operation per function.
//
// A ThinPool is a view, not the pool's owner: pools and thin devices outlive
// the process on purpose (a daemon restarts; volumes stay mounted). The
// caller persists transaction_id() after each change and passes it back to
// open(); a mismatch means the pool changed behind its back (ErrorKind::
// stale_view) and its catalog must be resynced before anything else.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "dm/dm_error.h"
#include "dm/pool_status.h"
#include "dm/snapshot.h"
#include "dm/table.h"
#include "dm/thin_ids.h"

namespace stepsnap::dm {

struct PoolConfig {
  std::string name;      // dm name of the pool device
  std::string data_dev;  // block device paths
  std::string metadata_dev;
  // See PoolTable for what each default guards against.
  std::uint32_t block_sectors = 128;   // 64 KiB
  std::uint64_t low_water_blocks = 0;  // 0: a tenth of the data blocks
  bool zero_new_blocks = true;
  bool discard_passdown = true;
  bool error_if_no_space = true;
  // Zero the metadata device's superblock so the kernel formats a new, empty
  // pool. false: reuse the metadata already there (re-creating a pool).
  bool format = true;
};

// An active thin device: a dm device whose table maps one thin id of a pool.
struct ThinVolume {
  std::string name;
  ThinId id = 0;
  std::uint64_t sectors = 0;
  std::string path() const;  // /dev/mapper/<name>
  std::uint64_t size_bytes() const { return sectors * kSectorSize; }
};

// Called with a thin id after it is reserved and before the kernel creates
// anything with it: where a caller writes its intent record (agent/catalog),
// so a crash in between leaves a record naming the id, never an unrecorded
// device. An error from it stops the operation with nothing created; the
// reserved id is skipped, never reused.
using BeforeCreate = std::function<Status(ThinId)>;

struct ActivateOptions {
  bool read_only = false;
};

// Removal of a busy device is retried (udev, blkid or a lazy unmount may hold
// it for a moment), then reported with what holds it. containerd's defaults.
struct RetryPolicy {
  int attempts = 100;
  std::chrono::milliseconds delay{100};
};

// The pool's one metadata snapshot (reserve_metadata_snap), released
// (release_metadata_snap) however its holder leaves. A crash leaves it held;
// the agent releases a left-over one at start
// (ThinPool::release_held_metadata_snap).
class MetadataSnapGuard {
 public:
  static Result<MetadataSnapGuard> reserve(const std::string& pool);
  MetadataSnapGuard(MetadataSnapGuard&& o) noexcept : pool_(std::move(o.pool_)) { o.pool_.clear(); }
  MetadataSnapGuard& operator=(MetadataSnapGuard&&) = delete;
  ~MetadataSnapGuard();

 private:
  explicit MetadataSnapGuard(std::string pool) : pool_(std::move(pool)) {}
  std::string pool_;
};

class ThinPool {
 public:
  static Result<ThinPool> create(const PoolConfig& config);
  // An active pool. With expected_txn (what the caller stored after its last
  // change), a different kernel transaction id is a stale_view error.
  static Result<ThinPool> open(const std::string& name,
                               std::optional<std::uint64_t> expected_txn = std::nullopt);

  const std::string& name() const { return name_; }
  std::string path() const;
  // The pool's transaction id as of this view's last change; persist it.
  std::uint64_t transaction_id() const { return txn_; }
  // Accept the kernel's current transaction id as our view (after the caller
  // reconciled its catalog).
  Status resync();
  // Called with the new transaction id after every change this view makes
  // to it (each create and delete bumps it first), so the caller can persist
  // it and pass it to open() next time. Runs under the caller's locks; it
  // cannot undo the change, so it should only record the value.
  void on_transaction_change(std::function<void(std::uint64_t)> fn) { on_txn_ = std::move(fn); }
  // Ids the caller knows to be in use; only consulted once the 24-bit space
  // wraps around, or when the kernel says an id exists (EEXIST).
  void set_ids_in_use(std::set<ThinId> ids) { in_use_ = std::move(ids); }

  Result<PoolStatus> status() const;
  // OK when new devices and snapshots can be made; otherwise an Error with
  // kind out_of_data_space, out_of_metadata_space, needs_check, read_only or
  // pool_failed, naming the pool and its numbers.
  Status check_usable() const;
  // The same check on a status already read.
  Status usable(const PoolStatus& st) const;

  // A new, empty thin id.
  Result<ThinId> create_thin(const BeforeCreate& before = {});
  // A snapshot of an active volume: flushed while live, then frozen and
  // suspended for the duration of one message. `times`, when set, gets the
  // flush and the frozen window (dm/snapshot.h).
  Result<ThinId> snapshot(const ThinVolume& origin, const BeforeCreate& before = {},
                          SnapshotTimes* times = nullptr);
  // A snapshot of an id; any active device mapping it is suspended, an
  // inactive one is snapshotted directly.
  Result<ThinId> snapshot(ThinId origin, const BeforeCreate& before = {},
                          SnapshotTimes* times = nullptr);
  // All at one instant; on failure no snapshot of the group is left behind.
  Result<std::vector<ThinId>> snapshot_group(const std::vector<ThinVolume>& origins,
                                             const BeforeCreate& before = {},
                                             SnapshotTimes* times = nullptr);
  // Whether snapshots flush their origins before suspending them (default
  // on; off only to measure what it saves).
  void set_flush_before_snapshot(bool on) { flush_before_snapshot_ = on; }
  // The id must not be active (EBUSY otherwise).
  Status delete_thin(ThinId id);

  Result<ThinVolume> activate(ThinId id, const std::string& name, std::uint64_t size_bytes,
                              const ActivateOptions& options = {});
  // Idempotent: a device that does not exist is already deactivated.
  Status deactivate(const std::string& name, const RetryPolicy& retry = {});
  // create_thin + activate.
  Result<ThinVolume> create_volume(const std::string& name, std::uint64_t size_bytes,
                                   const BeforeCreate& before = {});
  // A writable device from a snapshot (or any id): a new snapshot of it,
  // activated, so writes touch neither the source nor its other snapshots.
  // Restore is the same operation: any snapshot becomes a new volume.
  Result<ThinVolume> clone(ThinId source, const std::string& name, std::uint64_t size_bytes,
                           const BeforeCreate& before = {});
  Result<ThinVolume> restore(ThinId snapshot, const std::string& name, std::uint64_t size_bytes,
                             const BeforeCreate& before = {}) {
    return clone(snapshot, name, size_bytes, before);
  }
  // Every thin id the pool's metadata holds, ascending, active or not. Holds
  // a metadata snapshot (reserve_metadata_snap) for the duration and reads
  // its device-details btree from the metadata device (thin_metadata.h): no
  // tool, no change to the pool's transaction id. EBUSY when someone else
  // (thin_ls -m, say) holds the pool's one metadata snapshot; EROFS-like
  // errors on a read-only pool, which takes no messages.
  Result<std::vector<ThinId>> list_thin_ids() const;
  // Releases the pool's metadata snapshot if one is held (a crash inside
  // list_thin_ids, or a tool such as thin_ls -m that never let go): the
  // pool has only one, and while it is held list_thin_ids cannot run and the
  // held copy's blocks are never freed. Returns whether one was released.
  Result<bool> release_held_metadata_snap();
  // Holds the pool's metadata snapshot for thin_dump (thin_mappings.h); EBUSY
  // while someone else holds it.
  Result<MetadataSnapGuard> hold_metadata_snapshot() const;
  // Device nodes of the pool's metadata and data devices.
  Result<std::string> metadata_device_path() const;
  Result<std::string> data_device_path() const;
  std::uint64_t block_bytes() const { return std::uint64_t{table_.block_sectors} * kSectorSize; }
  // The thin devices currently active on this pool.
  Result<std::vector<ThinVolume>> active_volumes() const;
  // Removes the pool device (every thin device must be deactivated first).
  Status remove(const RetryPolicy& retry = {});

 private:
  ThinPool(std::string name, std::string dev, PoolTable table, std::uint64_t txn)
      : name_(std::move(name)), dev_(std::move(dev)), table_(std::move(table)), txn_(txn) {}

  // Compare-and-swap of the transaction id; EINVAL from the kernel means
  // someone else changed the pool: stale_view.
  Status bump_txn(std::uint64_t next);
  // check_usable and the stale-view check (one status read), then `count`
  // fresh ids with the transaction id bumped past the last of them first
  // (one set_transaction_id message for all). `times` gets both parts.
  Result<std::vector<ThinId>> reserve_ids(std::size_t count, SnapshotTimes* times);
  Result<ThinId> reserve_id(SnapshotTimes* times);
  // Makes a message failure actionable: re-reads the pool's status to say
  // whether space or metadata trouble was the cause.
  Error classify(Error error) const;
  Result<std::vector<ThinVolume>> devices_of(ThinId id) const;

  std::string name_;
  std::string dev_;  // "major:minor" of the pool device, as thin tables name it
  PoolTable table_;
  std::uint64_t txn_ = 0;
  std::set<ThinId> in_use_;
  std::function<void(std::uint64_t)> on_txn_;
  bool flush_before_snapshot_ = true;
};

}  // namespace stepsnap::dm
