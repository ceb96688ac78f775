// Where a held step's time goes, from the BPF program stopping it at its
// first exec to the agent releasing it (issue 17): the parts the
// step.started event reports under "hold", so a slow hold says which part
// grew. All stamps are CLOCK_MONOTONIC nanoseconds, the clock the BPF
// program stamps the exec with.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>

namespace stepsnap::agent {

struct HoldStamps {
  std::uint64_t exec = 0;            // BPF: the task stopped at its exec
  std::uint64_t seen = 0;            // the policy handled the held exec
  std::uint64_t snapshot_start = 0;  // the worker began the pre-snapshot group
  std::uint64_t snapshot_end = 0;    // the group was made, recorded and reported
  std::uint64_t release = 0;         // the policy decided to release
  // Inside the group (dm/, volumes): the flush while the volumes ran, and
  // the frozen window (first suspend to last resume).
  std::chrono::nanoseconds flush{0};
  std::chrono::nanoseconds pause{0};
};

struct HoldParts {
  std::int64_t held_ns = 0;   // exec to release: the whole hold
  std::int64_t wake_ns = 0;   // exec to seen: ring buffer, tracer thread
  std::int64_t queue_ns = 0;  // seen to snapshot_start: the policy's worker queue
  std::int64_t flush_ns = 0;
  std::int64_t pause_ns = 0;
  // The rest of the group call: waiting for the pool (another step's
  // snapshot), catalog intents and results, events, thin-id bookkeeping,
  // the pool's status.
  std::int64_t group_other_ns = 0;
  std::int64_t release_ns = 0;  // snapshot_end to release: the step's own record
};

// Parts from the stamps; a stamp left at 0 (or out of order) gives 0 for
// the parts beside it rather than a negative or huge number.
HoldParts hold_parts(const HoldStamps& s);
nlohmann::json to_json(const HoldParts& p);

}  // namespace stepsnap::agent
