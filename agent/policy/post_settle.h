// What a finished step can leave between its writes and its volumes, dealt
// with before the post-snapshot.
//
// By the time the policy takes a post-snapshot, the tracer has seen the
// step's cgroup empty, which means every process of the step has torn down
// its mount namespace: whatever the step mounted (a loop-mounted image, an
// overlay, a bind mount, a tmpfs over a clone folder) is unmounted, synced
// and released, and the clone itself is unmounted (bpf/tracer.cpp says why).
// What can still stand in the way is a kernel object that outlives
// processes: a loop device backed by a file on one of the step's clones.
//
// - Left attached and unused (`losetup` without autoclear, or never
//   mounted): it holds its backing file open, so it keeps the clone's
//   filesystem alive, and the clone cannot be deleted. It is detached with
//   LOOP_CLR_FD, innermost first.
// - Still open: mounted in a mount namespace that something outside the
//   step's cgroup holds (nsenter, an open /proc/PID/ns/mnt, a bind mount of
//   it), mounted in the host's namespace by a step that shares it (a step
//   registered through the API, not run by runner), or opened by another
//   process. Its filesystem may still hold data it has not written to the
//   clone, which no freeze of the clone can reach. LOOP_CLR_FD only marks it
//   to detach on its last close; the step is reported as not exactly
//   snapshotted, with the device named.
//
// A loop device is the step's when its backing file's device
// (LOOP_GET_STATUS64: lo_device, or lo_rdevice for a loop over a block
// device) is one of the step's clones or, transitively, a loop device
// already found (a loop inside a loop). Other stacking needs no help:
// overlayfs and bind mounts write into the clone's own page cache, which
// the suspend's freeze flushes, and a tmpfs never was on the volume. The
// post-snapshot is always taken; what could not be settled is only
// reported.

#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace stepsnap::agent {

struct SettleTarget {
  std::string name;  // the volume or clone, as the catalog names it
  std::string path;  // its block device, "/dev/mapper/<dm name>"
};

struct SettleReport {
  // Loop devices detached, one line each ("/dev/loop3 (backing file /img on
  // clone p.r1.ws)").
  std::vector<std::string> detached;
  // Why the post-snapshot may not hold exactly the step's writes; empty when
  // it does. One sentence each, naming the device and what to do.
  std::vector<std::string> not_exact;
};

// Detaches the loop devices backed (directly or through other loops) by
// files on `targets`. A device that stays busy (a udev probe, say) is
// retried until `patience` runs out; the common case, nothing left, costs
// one scan of /sys/block and no wait.
SettleReport settle_before_post_snapshot(
    const std::vector<SettleTarget>& targets,
    std::chrono::milliseconds patience = std::chrono::milliseconds(2000));

}  // namespace stepsnap::agent
