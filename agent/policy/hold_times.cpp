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
  p.held_ns = between(s.exec, s.release);
  p.wake_ns = between(s.exec, s.seen);
  p.queue_ns = between(s.seen, s.snapshot_start);
  p.flush_ns = s.flush.count();
  p.pause_ns = s.pause.count();
  p.group_other_ns = std::max<std::int64_t>(
      0, between(s.snapshot_start, s.snapshot_end) - p.flush_ns - p.pause_ns);
  p.release_ns = between(s.snapshot_end, s.release);
  return p;
}

nlohmann::json to_json(const HoldParts& p) {
  return {{"wake_ns", p.wake_ns},
          {"queue_ns", p.queue_ns},
          {"flush_ns", p.flush_ns},
          {"pause_ns", p.pause_ns},
          {"group_other_ns", p.group_other_ns},
          {"release_ns", p.release_ns}};
}

}  // namespace stepsnap::agent
