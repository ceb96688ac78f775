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

// A step started through runner's gate (step.ready) is held twice: at the
// gate, where its init waits to fork CMD while the agent takes the
// pre-snapshots, and then at CMD's exec, until the agent releases it. Its
// held time is the sum of both; runner's own work in between (reading the
// answer, the fork) is not the agent's and is left out.
// Inside the group call, part by part (Volumes::snapshot_group and
// dm::SnapshotTimes measure them), so that group_other_ns can be told
// apart: what of it is the kernel's and what is the agent's own. Copied
// into step.started's hold as "group".
struct GroupParts {
  std::int64_t lock_wait_ns = 0;    // waiting for the pool (another operation)
  std::int64_t lookup_ns = 0;       // the origins' catalog rows
  std::int64_t status_ns = 0;       // the pool's status read (usable, transaction id)
  std::int64_t txn_ns = 0;          // the set_transaction_id message reserving the ids
  std::int64_t intent_ns = 0;       // the intent records, committed before the suspend
  std::int64_t suspend_ns = 0;      // suspending every volume (freeze and flush)
  std::int64_t create_snap_ns = 0;  // the create_snap messages
  std::int64_t resume_ns = 0;       // resuming every volume
  std::int64_t result_ns = 0;       // rows made `created` with their events, one commit
};
nlohmann::json to_json(const GroupParts& g);

struct HoldStamps {
  std::uint64_t gate = 0;            // step.ready asked (0: not a gated step)
  std::uint64_t armed = 0;           // its pre-snapshots recorded: step.ready answers
  std::uint64_t exec = 0;            // BPF: the task stopped at its exec
  std::uint64_t seen = 0;            // the policy handled the held exec
  std::uint64_t snapshot_start = 0;  // the worker began the pre-snapshot group
  std::uint64_t snapshot_end = 0;    // the group was made, recorded and reported
  std::uint64_t release = 0;         // the policy decided to release
  // Inside the group (dm/, volumes): the flush while the volumes ran, and
  // the frozen window (first suspend to last resume).
  std::chrono::nanoseconds flush{0};
  std::chrono::nanoseconds pause{0};
  GroupParts group;
};

struct HoldParts {
  // Exec to release: the whole hold; for a gated step gate_ns + exec_ns.
  std::int64_t held_ns = 0;
  bool gated = false;
  std::int64_t gate_ns = 0;  // gated: step.ready asked to answered
  std::int64_t exec_ns = 0;  // gated: exec to release
  std::int64_t wake_ns = 0;  // exec to seen: ring buffer, tracer thread
  // Seen (gated: step.ready asked) to snapshot_start: the policy's worker
  // queue.
  std::int64_t queue_ns = 0;
  std::int64_t flush_ns = 0;
  std::int64_t pause_ns = 0;
  // The rest of the group call: waiting for the pool (another step's
  // snapshot), catalog intents and results, events, thin-id bookkeeping,
  // the pool's status.
  std::int64_t group_other_ns = 0;
  // snapshot_end to release: the step's own record and step.started
  // (gated: snapshot_end to armed, and seen to release).
  std::int64_t release_ns = 0;
  GroupParts group;  // the group call in parts (flush and pause are above)
};

// Parts from the stamps; a stamp left at 0 (or out of order) gives 0 for
// the parts beside it rather than a negative or huge number.
HoldParts hold_parts(const HoldStamps& s);
nlohmann::json to_json(const HoldParts& p);

}  // namespace stepsnap::agent
