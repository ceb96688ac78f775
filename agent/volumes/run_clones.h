// A pipeline run's clones: one writable clone per (pipeline, run, volume),
// made on the run's first ask and the same device on every later ask, so
// every step of a run sees what the earlier steps wrote.
//
// The clone is named "<pipeline>.<run>.<volume>" and carries labels saying
// where it came from, but neither is what makes it the run's clone: that is
// the catalog's run_clone column, which only this class sets. Names and
// labels are chosen by whoever creates a device, so a member of the socket
// group could otherwise plant a clone named and labelled like a run's, and
// the next root `runner exec` of that run would mount it.
#pragma once

#include <mutex>
#include <optional>
#include <string>

#include "agent/volumes/volumes.h"
#include "common/error.h"

namespace stepsnap::agent {

// "<pipeline>.<run>.<volume>", or an EINVAL error when that breaks the name
// rule (longer than 63 characters).
Result<std::string> run_clone_name(const std::string& pipeline, const std::string& run,
                                   const std::string& volume);

class RunClones {
 public:
  explicit RunClones(Volumes& volumes) : volumes_(volumes) {}

  // The run's clone of `volume`. On the first ask it is made from
  // `snapshot` when given, else from the volume's newest snapshot, else from
  // a snapshot taken now. A later ask naming a different snapshot than the
  // clone was made from is EEXIST: the run already works on other data. A
  // device that has the clone's name but is not the run's clone (planted,
  // or left from before schema version 3) is EEXIST too, and never used.
  // `owner_uid` is recorded as the new clone's owner.
  Result<DeviceRecord> ensure(const std::string& pipeline, const std::string& run,
                              const std::string& volume, const std::optional<std::string>& snapshot,
                              std::uint32_t owner_uid = 0);

 private:
  Result<DeviceRecord> source_snapshot(const std::string& volume,
                                       const std::optional<std::string>& snapshot);

  Volumes& volumes_;
  // Two steps of one run asking at once must get one clone, not two tries.
  std::mutex mutex_;
};

}  // namespace stepsnap::agent
