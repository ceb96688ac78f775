// Snapshots of active thin devices: the one place dm/ suspends an origin.
//
// dm-thin requires the origin to be suspended during create_snap (nothing in
// the kernel enforces it; skipping it gives a snapshot that may miss writes
// in flight). The suspend freezes and flushes the filesystem on the origin,
// so the snapshot holds every write made before the call, page cache
// included. The pause an application sees is suspend + message + resume.
//
// Before the suspend each origin is flushed while still running (see
// flush.h), so the frozen window holds only what was written since.
//
// These functions take ids chosen by the caller (ThinPool allocates them);
// they are the literal sequence, with the resume guaranteed on every path.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/error.h"
#include "dm/thin_ids.h"

namespace stepsnap::dm {

struct ActiveOrigin {
  std::string device;  // the active thin device's dm name
  ThinId id = 0;       // its thin id in the pool
};

// What a snapshot cost the volumes: the flush before the suspend (they
// still run) and the frozen window, from the first suspend's start to the
// last resume's end (they are paused). The other fields say where a
// snapshot call's time went, part by part (issue 17): the frozen window is
// suspend + create_snap + resume; ThinPool fills the parts before it.
struct SnapshotTimes {
  std::chrono::nanoseconds flush{};
  std::chrono::nanoseconds frozen{};
  // ThinPool, before anything is suspended: the pool's status read (usable,
  // transaction id unchanged), the set_transaction_id message reserving
  // the ids, and the caller's BeforeCreate hook (its intent records).
  std::chrono::nanoseconds status{};
  std::chrono::nanoseconds txn_message{};
  std::chrono::nanoseconds before{};
  // Inside the frozen window: suspending every origin, the create_snap
  // messages, resuming every origin.
  std::chrono::nanoseconds suspend{};
  std::chrono::nanoseconds create_snap{};
  std::chrono::nanoseconds resume{};
};

struct SnapshotOptions {
  // Off only to measure what the flush saves (scripts/bench-dm).
  bool flush_first = true;
  SnapshotTimes* times = nullptr;  // filled when set
};

// flush -> suspend(origin, freeze+flush) -> create_snap(snap_id, origin) -> resume.
Status snapshot_active(const std::string& pool, const ActiveOrigin& origin, ThinId snap_id,
                       const SnapshotOptions& options = {});

// The same for an origin active as several devices (or none: then nothing
// is suspended, which is right for an inactive origin).
Status snapshot_suspending(const std::string& pool, const std::vector<std::string>& devices,
                           ThinId origin, ThinId snap_id, const SnapshotOptions& options = {});

// Every origin suspended first, then one create_snap each, then every one
// resumed, so the snapshots are of one instant across all the volumes (a
// multi-volume step). Resumes all even when a step fails. `created` receives
// the snapshot ids that exist afterwards, so the caller can roll them back.
Status snapshot_group_active(const std::string& pool, const std::vector<ActiveOrigin>& origins,
                             const std::vector<ThinId>& snap_ids, std::vector<ThinId>* created,
                             const SnapshotOptions& options = {});

}  // namespace stepsnap::dm
