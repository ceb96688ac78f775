#include "bpf/event.h"

#include <errno.h>
#include <linux/types.h>
#include <string.h>
#include <time.h>

#include <algorithm>

#include "bpf/step_tracer.h"

namespace stepsnap::bpf {

std::string_view to_string(EventType type) {
  switch (type) {
    case EventType::fork:
      return "fork";
    case EventType::exec:
      return "exec";
    case EventType::exit:
      return "exit";
    case EventType::step_end:
      return "step_end";
    case EventType::hold_released:
      return "hold_released";
    case EventType::hold_timeout:
      return "hold_timeout";
    case EventType::hold_lost:
      return "hold_lost";
    case EventType::hold_broken:
      return "hold_broken";
    case EventType::lost:
      return "lost";
    case EventType::escape:
      return "escape";
    case EventType::untracked:
      return "untracked";
    case EventType::container:
      return "container";
  }
  return "unknown";
}

ExitStatus ExitStatus::from_wait_status(std::uint32_t status) {
  ExitStatus s;
  if ((status & 0x7f) == 0) {
    s.code = static_cast<int>((status >> 8) & 0xff);
  } else {
    s.signal = static_cast<int>(status & 0x7f);
    s.core_dumped = (status & 0x80) != 0;
  }
  return s;
}

namespace {

// A fixed char array from the kernel: up to the first NUL, never past the end.
std::string bounded_string(const char* data, std::size_t size) {
  return std::string(data, strnlen(data, size));
}

// argv as laid out on the new program's stack: NUL-terminated strings back to
// back. A last string without its NUL was cut by the record's size.
std::vector<std::string> split_args(const char* data, std::size_t len, bool* truncated) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < len; ++i) {
    if (data[i] == '\0') {
      out.emplace_back(data + start, i - start);
      start = i + 1;
    }
  }
  *truncated = start < len || len == STEP_ARGS_LEN;
  if (start < len) out.emplace_back(data + start, len - start);
  return out;
}

std::uint64_t clock_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

std::uint64_t monotonic_ns() { return clock_ns(CLOCK_MONOTONIC); }

std::int64_t wall_offset_ns() {
  return static_cast<std::int64_t>(clock_ns(CLOCK_REALTIME)) -
         static_cast<std::int64_t>(clock_ns(CLOCK_MONOTONIC));
}

Event decode(const step_record& r, std::int64_t wall_offset) {
  Event e;
  switch (r.type) {
    case STEP_REC_FORK:
      e.type = EventType::fork;
      break;
    case STEP_REC_EXEC:
      e.type = EventType::exec;
      break;
    case STEP_REC_EXIT:
      e.type = EventType::exit;
      break;
    case STEP_REC_STEP_END:
      e.type = EventType::step_end;
      break;
    case STEP_REC_HOLD_LOST:
      e.type = EventType::hold_lost;
      break;
    case STEP_REC_HOLD_BROKEN:
      e.type = EventType::hold_broken;
      break;
    case STEP_REC_ESCAPE:
      e.type = EventType::escape;
      break;
    case STEP_REC_UNTRACKED:
      e.type = EventType::untracked;
      break;
    case STEP_REC_CONTAINER:
      e.type = EventType::container;
      break;
    default:
      e.type = EventType::lost;
      break;
  }
  e.cgroup_id = r.cgroup_id;
  e.task_cgroup_id = r.task_cgroup_id;
  e.pid = r.pid;
  e.tgid = r.tgid;
  e.ppid = r.ppid;
  e.child_pid = r.child_tgid;
  e.comm = bounded_string(r.comm, sizeof(r.comm));
  e.held = (r.flags & STEP_F_HELD) != 0;
  e.main = (r.flags & STEP_F_MAIN) != 0;
  e.killed = (r.flags & STEP_F_KILLED) != 0;
  e.live_processes = r.live_processes;
  e.start_time_ns = r.start_time_ns;
  e.start_boottime_ns = r.start_boottime_ns;
  e.mono_ns = r.mono_ns;
  e.wall_ns = static_cast<std::uint64_t>(static_cast<std::int64_t>(r.mono_ns) + wall_offset);
  if (e.type == EventType::exec) {
    std::size_t flen = std::min<std::size_t>(r.filename_len, sizeof(r.filename));
    e.filename = bounded_string(r.filename, flen);
    std::size_t alen = std::min<std::size_t>(r.args_len, sizeof(r.args));
    e.argv = split_args(r.args, alen, &e.argv_truncated);
  }
  if (e.type == EventType::exit) e.exit = ExitStatus::from_wait_status(r.exit_code);
  if (e.type == EventType::untracked) e.error = static_cast<int>(r.exit_code);
  if (e.type == EventType::container) {
    std::size_t flen = std::min<std::size_t>(r.filename_len, sizeof(r.filename));
    e.filename = bounded_string(r.filename, flen);  // from the hierarchy's root
    if (r.flags & STEP_F_NOT_WATCHED) e.error = ENOSPC;
  }
  if (e.type == EventType::step_end) {
    e.main_pid = r.main_tgid;
    if (r.flags & STEP_F_MAIN_EXITED) e.exit = ExitStatus::from_wait_status(r.main_exit_code);
  }
  return e;
}

nlohmann::json to_json(const Event& e) {
  nlohmann::json j;
  j["type"] = to_string(e.type);
  j["source"] = e.source;
  j["mono_ns"] = e.mono_ns;
  j["wall_ns"] = e.wall_ns;
  if (e.type == EventType::lost) {
    j["lost"] = e.lost;
    return j;
  }
  j["cgroup_id"] = e.cgroup_id;
  if (e.type == EventType::step_end) {
    j["main_pid"] = e.main_pid;
  } else {
    j["pid"] = e.pid;
    j["tgid"] = e.tgid;
  }
  if (e.source == "bpf") {
    j["task_cgroup_id"] = e.task_cgroup_id;
    j["ppid"] = e.ppid;
    j["comm"] = e.comm;
    j["start_time_ns"] = e.start_time_ns;
  }
  if (e.main) j["main"] = true;
  switch (e.type) {
    case EventType::fork:
      j["child_pid"] = e.child_pid;
      break;
    case EventType::exec:
      j["filename"] = e.filename;
      j["argv"] = e.argv;
      if (e.argv_truncated) j["argv_truncated"] = true;
      j["held"] = e.held;
      break;
    case EventType::hold_timeout:
      j["action"] = e.killed ? "killed" : "released";
      break;
    case EventType::hold_broken:
      j["killed_in_kernel"] = e.killed;
      break;
    case EventType::escape:
      j["to_cgroup_id"] = e.task_cgroup_id;
      break;
    case EventType::untracked:
      j["errno"] = e.error;
      break;
    case EventType::container:
      j["container_cgroup_id"] = e.task_cgroup_id;
      j["container_cgroup"] = e.filename;
      if (e.error) j["errno"] = e.error;
      break;
    default:
      break;
  }
  if (e.type == EventType::exit || e.type == EventType::step_end) {
    // exit_code and signal are both present, one of them null, so a reader
    // never has to guess whether a missing key means "not known".
    j["exit_code"] = nullptr;
    j["signal"] = nullptr;
    if (e.exit) {
      if (e.exit->code) j["exit_code"] = *e.exit->code;
      if (e.exit->signal) {
        j["signal"] = *e.exit->signal;
        const char* name = sigabbrev_np(*e.exit->signal);
        if (name) j["signal_name"] = std::string("SIG") + name;
        if (e.exit->core_dumped) j["core_dumped"] = true;
      }
    }
    j["live_processes"] = e.live_processes;
  }
  return j;
}

}  // namespace stepsnap::bpf
