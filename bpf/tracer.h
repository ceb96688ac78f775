// bpf/: the step tracer's programs, records and C++ API. Uses common/ only;
// never includes agent/.
//
// StepTracer: the agent's handle on the step tracer BPF programs.
//
//   auto tracer = StepTracer::open({});             // load + attach, or a clear error
//   auto id = tracer->watch(cgroup.path(), {.hold_first_exec = true});
//   tracer->poll(100ms, [&](const Event& e) {
//     if (e.type == EventType::exec && e.held) { pre_snapshot(); tracer->release(*id); }
//     if (e.type == EventType::step_end) post_snapshot();
//   });
//
// One object owns the BPF object, its links, the ring buffer, the pidfds of
// held processes and an inotify watch on each cgroup's cgroup.events. libbpf
// types never appear here. Not thread-safe: one thread polls and commands.
//
// step_end is delivered only once cgroup.events says `populated 0`, even when
// the kernel side counted the last exit earlier: the exit tracepoint fires
// before the exiting task drops its namespaces, so a filesystem the step
// mounted itself is still being flushed then (tracer.cpp says why
// `populated 0` is late enough).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "bpf/event.h"
#include "common/error.h"

namespace stepsnap::bpf {

struct TracerOptions {
  // Route libbpf's own messages (and the verifier log) to log::debug.
  bool debug = false;
  // Size of the kernel-to-user ring buffer: a power of two, at least one
  // page. 0 keeps the built-in 1 MiB (about 1,700 records).
  std::uint32_t ring_bytes = 0;
  // Processes the kernel side can count at once, all watches together.
  // 0 keeps the built-in 65,536. A process that finds no room is reported
  // (untracked) and its step must be failed: its exit would go unseen.
  std::uint32_t proc_slots = 0;
  // A directory on bpffs where the programs' links and maps are pinned, so
  // they outlive this process: a held step stays held (and guarded against
  // SIGCONT), and a step that starts or ends while no tracer is open is
  // counted and held by the kernel side alone. When the directory already
  // holds a complete set of pins, open() re-adopts them instead of loading
  // fresh programs (see adopt()). Empty: nothing pinned, the programs go
  // with this object.
  std::string pin_dir;
};

// What the kernel side did for a watch while no tracer read its records:
// the state adopt() found in the pinned maps.
struct AdoptedWatch {
  std::uint64_t cgroup_id = 0;
  bool held = false;  // a task is stopped at the first exec and not released
  std::uint32_t held_pid = 0;
  bool hold_lost = false;      // the first exec was killed: its hold could not be made sure of
  bool hold_broken = false;    // the held task was continued from outside, and killed
  bool hold_was_made = false;  // a first exec was held at some point
  bool ended = false;          // the kernel side counted the last process's exit
  std::uint32_t live = 0;      // processes the kernel side counts as alive
  std::uint32_t execs = 0;
  bool escaped = false;    // a counted process left the watched cgroup (escape)
  bool untracked = false;  // a process could not be counted (untracked)
  std::optional<ExitStatus> main_exit;
  std::uint32_t main_pid = 0;
};

// What happens to a held process nobody released within hold_timeout (and
// to one still held when its watch ends).
enum class HoldExpiry {
  kill,     // SIGKILL: it never runs without whatever the hold was for
  release,  // SIGCONT: it runs anyway (a debugging aid: stepsnap-trace)
};

struct WatchOptions {
  // SIGSTOP the first process that execs in the cgroup before it runs a
  // single instruction of the new program; release() resumes it. The kernel
  // side fails closed: a hold it cannot report (ring buffer full) kills the
  // process instead (hold_lost), and a held process continued by anyone
  // else (kill -CONT, a shell's fg) is killed before its first instruction
  // (hold_broken).
  bool hold_first_exec = false;
  // A hold nobody releases within this time ends with on_hold_timeout and a
  // hold_timeout event: a step is never hung by the tracer.
  std::chrono::milliseconds hold_timeout{std::chrono::seconds(60)};
  HoldExpiry on_hold_timeout = HoldExpiry::kill;
  // The step's main process (whose exit status step_end reports). 0: the
  // first process that execs in the cgroup.
  pid_t main_pid = 0;
  // Only the step's boundaries: the main process's exec and exit, a held
  // exec, hold_*, step_end and lost. Processes are still all counted. What a
  // snapshot policy needs, at a fraction of the ring-buffer traffic.
  bool boundaries_only = false;
};

// A pod (the kubelet's pod cgroup, one child cgroup per container): the
// pod's cgroup itself is not watched; the kernel side picks the child made
// after skip_children others (counted from watch_pod()) as it is created
// and watches it with `container`, before any process can be in it.
struct PodWatchOptions {
  std::uint32_t skip_children = 0;
  WatchOptions container;
};

class StepTracer {
 public:
  using Callback = std::function<void(const Event&)>;

  // Checks BTF, opens, loads and attaches the programs. Errors name what is
  // missing (BTF, privilege, helper, attach point) and what to do.
  static Result<StepTracer> open(const TracerOptions& options = {});

  StepTracer(StepTracer&&) noexcept;
  StepTracer& operator=(StepTracer&&) noexcept;
  // Detaches the programs, unless they are pinned (pin_dir): then they and
  // their maps stay, and so does the guard on every held process. A process
  // still held stays stopped, neither resumed nor killed: the tracer never
  // lets a held process run by itself, and whether to kill it is its
  // owner's decision (the agent's policy). Unpinned, nothing guards the
  // hold afterwards: a SIGCONT then resumes it.
  ~StepTracer();

  // True when open() found pinned programs and maps and re-adopted them:
  // watches made by an earlier tracer are in the kernel, waiting for
  // adopt() or drop_unadopted().
  bool adopted() const;
  // Takes over a watch an earlier tracer made on cgroup_dir (its pinned
  // entry must exist and the directory must still be cgroup_id): from now
  // on its records are delivered, release() works on a task it held, and a
  // step end the kernel side counted while nobody read its records is
  // delivered once the cgroup is empty. ENOENT: no such pinned watch;
  // ESTALE: the directory is another cgroup now.
  Result<AdoptedWatch> adopt(const std::string& cgroup_dir, std::uint64_t cgroup_id,
                             const WatchOptions& options);
  // Ends every pinned watch nobody adopted (its step is unknown to the
  // caller): a task held by one is killed, never resumed. Returns how many.
  int drop_unadopted();

  // Watches a cgroup v2 directory (and its descendants). Returns its id, the
  // one events carry. Watch before putting processes in: processes already
  // inside are not counted by the kernel side, only by the cgroup.events
  // safety net.
  Result<std::uint64_t> watch(const std::string& cgroup_dir, const WatchOptions& options = {});
  // Watches a pod for its step's container (PodWatchOptions). Returns the
  // pod's cgroup id; a `container` event (cgroup_id: the pod's,
  // task_cgroup_id and filename: the picked child's id and directory) says
  // which child is watched from then on, by its own id. Processes already
  // in the pod, and every other child, are neither held nor counted.
  // unwatch(pod id) gives up on a pod still waiting.
  Result<std::uint64_t> watch_pod(const std::string& pod_dir, const PodWatchOptions& options);
  // Stops watching; a process still held gets the watch's on_hold_timeout
  // (killed, unless the watch said release).
  Status unwatch(std::uint64_t cgroup_id);
  // SIGKILL to process `tgid` through a pidfd, if it is still the process
  // that started at start_boottime_ns (an escape event's): the escaped
  // process of a failed step, which its cgroup's kill no longer reaches.
  Status kill_process(std::uint32_t tgid, std::uint64_t start_boottime_ns);
  // SIGKILL to every process counted for the watch on cgroup_id, wherever
  // it is now: in the cgroup, or escaped out of it (which a cgroup kill
  // does not reach). For a step a restarted agent finds escaped: the
  // escape's record may be long gone, but the process map still counts it.
  // Returns how many were signalled.
  Result<int> kill_counted(std::uint64_t cgroup_id);
  // Resumes the held process of a cgroup, exactly once. EINVAL when nothing
  // is held (yet), EALREADY when it was released before, ECANCELED when the
  // hold was broken or lost (the process was killed, see hold_broken and
  // hold_lost) or timed out.
  Status release(std::uint64_t cgroup_id);

  // Waits up to timeout for events (less when a hold deadline comes first)
  // and hands each one to callback. Returns how many were delivered.
  Result<int> poll(std::chrono::milliseconds timeout, const Callback& callback);
  // An fd that becomes readable when poll() has something to do; put it in
  // an epoll loop and call poll(0ms) when it fires (and by next_deadline()).
  int fd() const;
  // When poll() must run next to release a hold on time, if any hold is due.
  std::optional<std::chrono::steady_clock::time_point> next_deadline() const;

  struct Impl;

 private:
  explicit StepTracer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stepsnap::bpf
