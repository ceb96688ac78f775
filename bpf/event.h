// A step tracer event as the agent sees it: decoded from the kernel record
// (bpf/step_tracer.h) or made in user space (hold released, hold timeout,
// lost records, step end from cgroup.events, a hold lost or broken whose
// record did not fit), and its JSON form.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct step_record;

namespace stepsnap::bpf {

enum class EventType {
  fork,           // a new process in a watched cgroup
  exec,           // an exec; held == true when the task was stopped at it
  exit,           // a process (its last thread) exited
  step_end,       // the last process of the watched cgroup is gone, namespaces and all
  hold_released,  // release() resumed the held process
  hold_timeout,   // nobody released the held process in time; resumed or killed (killed)
  hold_lost,      // the first exec was to be held but was killed instead (fail closed)
  hold_broken,    // the held process was continued before release; killed
  lost,           // records the ring buffer had no room for
  escape,         // a counted process moved to a cgroup outside the watch (still counted)
  untracked,      // a process of the step could not be counted (map full): fail closed
  container,      // a pod watch picked its container cgroup (task_cgroup_id, filename); error
                  // set: it could not be watched (ENOSPC: no room; ENOENT: already gone)
};

std::string_view to_string(EventType type);

// How a process ended, from its raw wait status.
struct ExitStatus {
  std::optional<int> code;    // exited normally with this code
  std::optional<int> signal;  // killed by this signal
  bool core_dumped = false;

  static ExitStatus from_wait_status(std::uint32_t status);
};

struct Event {
  EventType type = EventType::exec;
  std::uint64_t cgroup_id = 0;       // the watched cgroup
  std::uint64_t task_cgroup_id = 0;  // the task's own cgroup (may be a descendant); escape:
                                     // the cgroup it moved to
  std::uint32_t pid = 0;             // thread id
  std::uint32_t tgid = 0;            // process id
  std::uint32_t ppid = 0;
  std::uint32_t child_pid = 0;  // fork
  std::string comm;
  std::string filename;           // exec
  std::vector<std::string> argv;  // exec: the first bytes of argv, split
  bool argv_truncated = false;
  bool held = false;    // exec: stopped before its first instruction
  bool main = false;    // about the step's main process
  bool killed = false;  // hold_timeout: killed, not resumed; hold_broken: killed by the kernel side
  std::optional<ExitStatus> exit;  // exit: this process; step_end: the main process
  std::uint32_t main_pid = 0;      // step_end
  std::uint32_t live_processes = 0;
  std::uint64_t start_time_ns = 0;      // process start, CLOCK_MONOTONIC
  std::uint64_t start_boottime_ns = 0;  // process start, CLOCK_BOOTTIME
  std::uint64_t mono_ns = 0;            // CLOCK_MONOTONIC when it happened
  std::uint64_t wall_ns = 0;            // CLOCK_REALTIME when it happened
  std::uint64_t lost = 0;               // lost: how many records
  int error = 0;                        // untracked: the process map's errno; container: why
                                        // it is not watched
  std::string source = "bpf";           // "bpf", "user" or "cgroup.events"
};

// wall_offset_ns: CLOCK_REALTIME minus CLOCK_MONOTONIC, now.
Event decode(const step_record& record, std::int64_t wall_offset_ns);
std::int64_t wall_offset_ns();
std::uint64_t monotonic_ns();

nlohmann::json to_json(const Event& event);

}  // namespace stepsnap::bpf
