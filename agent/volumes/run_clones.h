// A pipeline run's clones: one writable clone per (pipeline, run, volume),
// made on the run's first ask and the same device on every later ask, so
// every step of a run sees what the earlier steps wrote.
//
// The clone is named "<pipeline>.<run>.<volume>", so it is found again by
// name after a restart; its labels say where it came from.
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
  // clone was made from is EEXIST: the run already works on other data.
  Result<DeviceRecord> ensure(const std::string& pipeline, const std::string& run,
                              const std::string& volume,
                              const std::optional<std::string>& snapshot);

 private:
  Result<DeviceRecord> source_snapshot(const std::string& volume,
                                       const std::optional<std::string>& snapshot);

  Volumes& volumes_;
  // Two steps of one run asking at once must get one clone, not two tries.
  std::mutex mutex_;
};

}  // namespace stepsnap::agent
