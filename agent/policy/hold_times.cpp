#include "agent/policy/hold_times.h"

#include <algorithm>

namespace stepsnap::agent {

namespace {

std::int64_t between(std::uint64_t from, std::uint64_t to) {
  if (from == 0 || to == 0 || to < from) return 0;
  return static_cast<std::int64_t>(to - from);
}

}  // namespace

HoldParts hold_parts(const HoldStamps& s) {
  HoldParts p;
  p.wake_ns = between(s.exec, s.seen);
  p.flush_ns = s.flush.count();
  p.pause_ns = s.pause.count();
  p.group = s.group;
  p.group_other_ns = std::max<std::int64_t>(
      0, between(s.snapshot_start, s.snapshot_end) - p.flush_ns - p.pause_ns);
  if (s.gate != 0) {
    // The snapshot was taken at the gate, before CMD existed; the exec
    // hold after it only waits for the release.
    p.gated = true;
    p.gate_ns = between(s.gate, s.armed);
    p.exec_ns = between(s.exec, s.release);
    p.held_ns = p.gate_ns + p.exec_ns;
    p.queue_ns = between(s.gate, s.snapshot_start);
    p.release_ns = between(s.snapshot_end, s.armed) + between(s.seen, s.release);
    return p;
  }
  p.held_ns = between(s.exec, s.release);
  p.queue_ns = between(s.seen, s.snapshot_start);
  p.release_ns = between(s.snapshot_end, s.release);
  return p;
}

nlohmann::json to_json(const GroupParts& g) {
  return {{"lock_wait_ns", g.lock_wait_ns},
          {"lookup_ns", g.lookup_ns},
          {"status_ns", g.status_ns},
          {"txn_ns", g.txn_ns},
          {"intent_ns", g.intent_ns},
          {"suspend_ns", g.suspend_ns},
          {"create_snap_ns", g.create_snap_ns},
          {"resume_ns", g.resume_ns},
          {"result_ns", g.result_ns}};
}

nlohmann::json to_json(const HoldParts& p) {
  nlohmann::json j = {{"wake_ns", p.wake_ns},
                      {"queue_ns", p.queue_ns},
                      {"flush_ns", p.flush_ns},
                      {"pause_ns", p.pause_ns},
                      {"group_other_ns", p.group_other_ns},
                      {"release_ns", p.release_ns},
                      {"group", to_json(p.group)}};
  if (p.gated) {
    j["gate_ns"] = p.gate_ns;
    j["exec_ns"] = p.exec_ns;
  }
  return j;
}

}  // namespace stepsnap::agent
