#include "bpf/tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <linux/types.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "bpf/step_tracer.h"
#include "common/cgroup_files.h"
#include "common/log.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "step_tracer.skel.h"

namespace stepsnap::bpf {
namespace {

constexpr const char* kVmlinuxBtf = "/sys/kernel/btf/vmlinux";

// libbpf has one global print callback. It goes to our log (debug level, so
// quiet unless asked for) and, while a load is running, into a buffer from
// which a failed load's reason (verifier log, missing BTF type) is explained.
std::mutex g_print_mutex;
bool g_print_debug = false;
std::string* g_capture = nullptr;

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  // Sized to the message: a verifier log is one message of many KiB, and
  // its last lines (the reason) are what a cut would lose.
  va_list again;
  va_copy(again, args);
  int n = std::vsnprintf(nullptr, 0, format, args);
  if (n < 0) {
    va_end(again);
    return 0;
  }
  std::string text(static_cast<std::size_t>(n) + 1, '\0');
  std::vsnprintf(text.data(), text.size(), format, again);
  va_end(again);
  text.resize(static_cast<std::size_t>(n));
  std::lock_guard lock(g_print_mutex);
  if (g_capture) *g_capture += text;
  if (g_print_debug || level == LIBBPF_WARN) {
    while (!text.empty() && text.back() == '\n') text.pop_back();
    // Warnings too stay at debug: load failures reach the user once, as our
    // own explained error, not as libbpf's raw lines.
    log::debug("libbpf: " + text);
  }
  return 0;
}

struct SkelDeleter {
  void operator()(step_tracer* s) const { step_tracer::destroy(s); }
};
struct RingDeleter {
  void operator()(ring_buffer* r) const { ring_buffer__free(r); }
};

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// The word after `marker` in text, up to a quote, space or newline.
std::string word_after(const std::string& text, const std::string& marker) {
  auto pos = text.find(marker);
  if (pos == std::string::npos) return {};
  pos += marker.size();
  auto end = text.find_first_of("'\" \n#", pos);
  return text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

// One clear sentence for why loading failed: what is missing, what to do.
tl::unexpected<Error> explain_load_error(int err, const std::string& log) {
  std::string helper = word_after(log, "unknown func ");
  if (!helper.empty())
    return fail("load step tracer", "BPF helper " + helper, err,
                "this kernel does not have that helper; run a kernel of 5.11 or newer");
  std::string type = word_after(log, "failed to find kernel BTF type ID of '");
  if (!type.empty())
    return fail("load step tracer", "attach point " + type, err,
                "the kernel's BTF has no such tracepoint; tp_btf programs need Linux 5.5 or "
                "newer with CONFIG_DEBUG_INFO_BTF=y");
  if (err == EPERM || (err == EACCES && geteuid() != 0))
    return fail("load step tracer", "BPF programs", err,
                "loading BPF needs root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN before "
                "Linux 5.8); run as root");
  std::string detail = "kernel said: " + last_line(log);
  return fail("load step tracer", "BPF programs", err, detail);
}

// Start of process `pid` in clock ticks since boot, /proc/PID/stat field 22.
std::optional<unsigned long long> proc_start_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');  // comm may contain spaces and parentheses
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  // Field 3 (state) is the first after comm; 22 is starttime.
  for (int i = 3; i < 22; ++i) rest >> field;
  unsigned long long ticks = 0;
  if (!(rest >> ticks)) return std::nullopt;
  return ticks;
}

// The pins of one tracer under TracerOptions::pin_dir. Maps and links by the
// names below: a complete set is re-adopted, none means load fresh.
constexpr const char* kMapPins[] = {"map_watched", "map_procs", "map_held",
                                    "map_events",  "map_drops", "map_pods"};
constexpr const char* kCoreLinkPins[] = {"link_on_fork", "link_on_exec", "link_on_exit",
                                         "link_on_attach", "link_on_mkdir"};
// One of these, after the hold guard the first tracer could load.
constexpr const char* kGuardLinkPins[] = {"link_on_signal_return", "link_on_signal_kill",
                                          "link_on_signal"};

bool pinned(const std::string& dir, const char* name) {
  return ::access((dir + "/" + name).c_str(), F_OK) == 0;
}

void unpin_all(const std::string& dir) {
  for (const char* n : kMapPins) ::unlink((dir + "/" + n).c_str());
  for (const char* n : kCoreLinkPins) ::unlink((dir + "/" + n).c_str());
  for (const char* n : kGuardLinkPins) ::unlink((dir + "/" + n).c_str());
}

// What pin_dir holds: -1 nothing to adopt (load fresh), else the index of
// the pinned hold guard (0 in_task, 1 kfunc, 2 user) of a complete set.
Result<int> inspect_pins(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail_errno("create pin directory", dir);
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) != 0) return fail_errno("pin step tracer", dir);
  if (fs.f_type != BPF_FS_MAGIC)
    return fail("pin step tracer", dir, EINVAL,
                "not on a BPF file system; mount one (mount -t bpf bpf /sys/fs/bpf) or give "
                "stepsnapd --bpf-pin-dir \"\" (then a held step does not survive an agent "
                "restart)");
  int links = 0, guard = -1, guards = 0;
  for (const char* n : kCoreLinkPins) links += pinned(dir, n);
  for (int i = 0; i < 3; ++i) {
    if (pinned(dir, kGuardLinkPins[i])) {
      guard = i;
      ++guards;
    }
  }
  int maps = 0;
  for (const char* n : kMapPins) maps += pinned(dir, n);
  if (links == 0 && guards == 0) {
    // Maps without programs: nothing ran on them since their tracer went,
    // so nothing in them is worth keeping. Start clean.
    unpin_all(dir);
    return -1;
  }
  constexpr int all_links = std::size(kCoreLinkPins), all_maps = std::size(kMapPins);
  if (links == all_links && guards == 1 && maps == all_maps) return guard;
  return fail("adopt pinned step tracer", dir, EUCLEAN,
              "an incomplete set of pins (" + std::to_string(links + guards) + " of " +
                  std::to_string(all_links + 1) + " links, " + std::to_string(maps) + " of " +
                  std::to_string(all_maps) +
                  " maps); when no step is running, remove the directory and start again");
}
}  // namespace

struct WatchState {
  std::string dir;
  WatchOptions options;
  int events_wd = -1;
  bool seen_running = false;  // some process was in it: populated 0 then means ended
  bool ended = false;
  bool held = false;
  bool released = false;        // released, killed, or broken: no longer ours to release
  bool hold_failed = false;     // hold_lost or hold_broken delivered
  bool escape_seen = false;     // an escape delivered (one per watch)
  bool untracked_seen = false;  // an untracked delivered (one per watch)
  std::uint32_t held_pid = 0;
  UniqueFd held_pidfd;
  std::chrono::steady_clock::time_point deadline;
  std::optional<ExitStatus> main_exit;
  std::uint32_t main_pid = 0;
  // The kernel side's step_end, held back until the cgroup is empty: see
  // deliver_deferred_ends().
  std::optional<Event> deferred_end;
};

// A pod waiting for its step's container cgroup (watch_pod()).
struct PodState {
  std::string dir;
  WatchOptions container;
};

namespace {

// cgroup.events says no process is left in the cgroup (or in a descendant).
// A cgroup that is gone is empty: rmdir needs that (a held-back step_end
// must not wait for a cgroup removed under it).
bool cgroup_empty(const std::string& dir) {
  auto populated = cgroup_populated(dir);
  if (populated) return !*populated;
  return populated.error().err == ENOENT;
}

}  // namespace

struct StepTracer::Impl {
  std::unique_ptr<step_tracer, SkelDeleter> skel;
  std::unique_ptr<ring_buffer, RingDeleter> ring;
  UniqueFd inotify;
  UniqueFd epoll;
  std::map<std::uint64_t, WatchState> watches;
  std::map<std::uint64_t, PodState> pods;  // by the pod's cgroup id
  std::vector<Event> pending;              // made outside poll(), delivered by the next one
  std::uint64_t drops_reported = 0;
  std::string pin_dir;   // empty: nothing pinned
  bool adopted = false;  // the programs and maps are an earlier tracer's, re-adopted
  const Callback* callback = nullptr;
  int delivered = 0;

  // Held processes stay stopped (see ~StepTracer).
  ~Impl() = default;

  void emit(const Event& e) {
    ++delivered;
    if (callback && *callback) (*callback)(e);
  }

  // SIGCONT through the pidfd taken when the hold was seen: a reused pid can
  // never receive it. The held entry goes first: once it is gone the kernel
  // side takes the coming return from get_signal() for this release, while
  // it is there any continue is a broken hold. If the kernel side deleted
  // it already, the hold was broken (the process is being killed) or the
  // process exited: nothing to resume.
  Status resume(WatchState& w) {
    if (!w.held || w.released) return {};
    w.released = true;
    if (!w.held_pidfd) return {};
    // Two steps, each safe to die after: the entry marked released (the
    // kernel side then takes the next SIGCONT for the release), then the
    // SIGCONT. Killed in between, the agent leaves the task stopped with its
    // entry marked, which the next agent adopts as held and continues. The
    // entry goes when the task passes get_signal() (or exits).
    __u32 key = w.held_pid;
    step_held h{};
    int err = 0;
    if (bpf_map__lookup_elem(skel->maps.held, &key, sizeof(key), &h, sizeof(h), 0) != 0) {
      err = errno;
    } else {
      h.released = 1;
      if (bpf_map__update_elem(skel->maps.held, &key, sizeof(key), &h, sizeof(h), BPF_EXIST) != 0)
        err = errno;
    }
    if (err != 0) {
      w.held_pidfd.reset();
      return fail("resume held process", std::to_string(w.held_pid),
                  err == ENOENT ? ECANCELED : err,
                  err == ENOENT ? "it was continued from outside before its release (and killed) "
                                  "or has exited"
                                : "");
    }
    int rc = pidfd_send_signal(w.held_pidfd.get(), SIGCONT);
    err = errno;
    w.held_pidfd.reset();
    if (rc != 0 && err != ESRCH)
      return fail("resume held process", std::to_string(w.held_pid), err);
    return {};
  }

  // SIGKILL through the pidfd: the held process never runs.
  Status kill_held(WatchState& w) {
    if (!w.held || w.released) return {};
    w.released = true;
    if (!w.held_pidfd) return {};
    int rc = pidfd_send_signal(w.held_pidfd.get(), SIGKILL);
    int err = errno;
    w.held_pidfd.reset();
    if (rc != 0 && err != ESRCH) return fail("kill held process", std::to_string(w.held_pid), err);
    return {};
  }

  Status expire_hold(WatchState& w) {
    return w.options.on_hold_timeout == HoldExpiry::release ? resume(w) : kill_held(w);
  }

  Event user_event(EventType type, std::uint64_t cgroup_id, const WatchState& w) {
    Event e;
    e.type = type;
    e.source = "user";
    e.cgroup_id = cgroup_id;
    e.pid = e.tgid = w.held_pid;
    e.mono_ns = monotonic_ns();
    e.wall_ns = e.mono_ns + wall_offset_ns();
    return e;
  }

  void on_held(WatchState& w, const Event& e) {
    w.held = true;
    w.held_pid = e.tgid;
    w.deadline = std::chrono::steady_clock::now() + w.options.hold_timeout;
    UniqueFd fd(pidfd_open(static_cast<pid_t>(e.tgid)));
    if (!fd) {
      log::warn("held process " + std::to_string(e.tgid) + " is gone: " + std::strerror(errno));
      return;
    }
    // Make sure the pidfd is the process the kernel stopped and not a new one
    // that got its pid: compare start times (boot clock, in clock ticks).
    long hz = sysconf(_SC_CLK_TCK);
    auto ticks = proc_start_ticks(static_cast<pid_t>(e.tgid));
    unsigned long long expect = e.start_boottime_ns / (1'000'000'000ull / hz);
    if (!ticks || *ticks != expect) {
      log::warn("held process " + std::to_string(e.tgid) + " exited before it could be pinned");
      return;
    }
    w.held_pidfd = std::move(fd);
  }

  // A watch's user-side state: the cgroup.events notification and the
  // options. The kernel side's entry is the caller's.
  Result<WatchState> watch_state(const std::string& dir, const WatchOptions& options) {
    WatchState w;
    w.dir = dir;
    w.options = options;
    w.events_wd = inotify_add_watch(inotify.get(), (dir + "/cgroup.events").c_str(), IN_MODIFY);
    if (w.events_wd < 0) return fail_errno("inotify_add_watch", dir + "/cgroup.events");
    auto populated = cgroup_populated(dir);
    w.seen_running = populated && *populated;
    return w;
  }

  // The kernel side picked a pod's container cgroup (its record, or its
  // pods map entry after a drop): watched from here like any step's, and
  // the pod's own entry is used up.
  void on_container(std::uint64_t pod_id, std::uint64_t child_id, bool watched,
                    const std::string& source) {
    auto it = pods.find(pod_id);
    if (it == pods.end()) return;
    PodState pod = std::move(it->second);
    pods.erase(it);
    bpf_map__delete_elem(skel->maps.pods, &pod_id, sizeof(pod_id), 0);
    Event e;
    e.type = EventType::container;
    e.source = source;
    e.cgroup_id = pod_id;
    e.task_cgroup_id = child_id;
    e.mono_ns = monotonic_ns();
    e.wall_ns = e.mono_ns + wall_offset_ns();
    e.filename = child_dir(pod.dir, child_id);
    if (!watched) e.error = ENOSPC;
    if (watched && !e.filename.empty()) {
      auto w = watch_state(e.filename, pod.container);
      if (w) {
        watches.emplace(child_id, std::move(*w));
      } else {
        log::warn("step tracer: " + w.error().message());
        e.error = w.error().err;
      }
    } else if (watched) {
      e.error = ENOENT;  // removed before we could look: nothing ran in it
    }
    if (e.error != 0 && watched)
      bpf_map__delete_elem(skel->maps.watched, &child_id, sizeof(child_id), 0);
    emit(e);
  }

  // The child directory of pod_dir whose inode is child_id; empty when gone.
  static std::string child_dir(const std::string& pod_dir, std::uint64_t child_id) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(pod_dir, ec)) {
      struct stat st {};
      if (entry.is_directory(ec) && ::stat(entry.path().c_str(), &st) == 0 && st.st_ino == child_id)
        return entry.path().string();
    }
    return {};
  }

  // After dropped records: a pick whose record was among them.
  void find_dropped_picks() {
    std::vector<std::pair<std::uint64_t, step_pod>> picked;
    for (const auto& [id, pod] : pods) {
      step_pod kp{};
      std::uint64_t key = id;
      if (bpf_map__lookup_elem(skel->maps.pods, &key, sizeof(key), &kp, sizeof(kp), 0) == 0 &&
          kp.state != STEP_POD_WAITING)
        picked.emplace_back(id, kp);
    }
    for (const auto& [id, kp] : picked)
      on_container(id, kp.child_id, kp.state == STEP_POD_PICKED, "bpf.map");
  }

  static int on_record(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Impl*>(ctx);
    if (size < sizeof(step_record)) return 0;
    step_record r;
    std::memcpy(&r, data, sizeof(r));
    self->handle(decode(r, wall_offset_ns()));
    return 0;
  }

  void handle(const Event& e) {
    if (e.type == EventType::container) {
      on_container(e.cgroup_id, e.task_cgroup_id, e.error == 0, e.source);
      return;
    }
    auto it = watches.find(e.cgroup_id);
    if (it == watches.end()) return;  // unwatched since the kernel wrote it
    WatchState& w = it->second;
    w.seen_running = true;
    if (e.type == EventType::exec && e.held) on_held(w, e);
    if (e.type == EventType::hold_lost || e.type == EventType::hold_broken) {
      if (w.hold_failed) return;  // already found in the map after a drop
      w.hold_failed = true;
      // Where the kernel side could only see the SIGCONT, not kill its
      // target, the kill is ours, at once.
      if (e.type == EventType::hold_broken && !e.killed && w.held_pidfd)
        pidfd_send_signal(w.held_pidfd.get(), SIGKILL);
      if (w.held) w.released = true;
      w.held_pidfd.reset();
    }
    // One of each per watch: a step fails once (the kernel side writes one
    // escape per thread moved).
    if (e.type == EventType::escape) {
      if (w.escape_seen) return;
      w.escape_seen = true;
    }
    if (e.type == EventType::untracked) {
      if (w.untracked_seen) return;
      w.untracked_seen = true;
    }
    if (e.type == EventType::exit && e.main) {
      w.main_exit = e.exit;
      w.main_pid = e.tgid;
    }
    if (e.type == EventType::step_end) {
      if (w.ended) return;
      w.ended = true;
      if (!cgroup_empty(w.dir)) {
        w.deferred_end = e;
        return;
      }
    }
    emit(e);
  }

  // Why step_end waits for cgroup.events `populated 0` and not only for the
  // kernel side's count: the BPF program runs on sched_process_exit, which
  // do_exit() fires before exit_files(), exit_fs(), exit_task_namespaces()
  // and exit_task_work(). The last reference to the step's mount namespace
  // is dropped in exit_task_namespaces() (put_mnt_ns -> umount_tree), and
  // each unmounted mount is released by __cleanup_mnt, queued as task work
  // of the exiting task and run by exit_task_work(): that is where a
  // filesystem the step mounted itself (ext4 on a loop device over an image
  // on the step's clone, say) is synced and shut down, its loop device
  // released (autoclear detaches it and drops the backing file), and the
  // clone's own mount let go. Only after that does do_exit() call
  // cgroup_exit() (6.1; cgroup_task_exit() in newer kernels), which takes
  // the task off its css_set and, for the last one, makes the cgroup
  // unpopulated. So `populated 0` means every process of the step, and so
  // every holder of its mount namespace that lived in the cgroup, has
  // finished that teardown: a snapshot taken now sees the stacked
  // filesystems' data on the step's volumes. What it cannot cover (a
  // namespace held from outside the cgroup keeps its mounts; a loop device
  // left attached outlives every process) the agent deals with before the
  // post-snapshot (agent/policy/post_settle.h).
  void deliver_deferred_ends() {
    for (auto& [id, w] : watches) {
      if (!w.deferred_end || !cgroup_empty(w.dir)) continue;
      Event e = *w.deferred_end;
      w.deferred_end.reset();
      emit(e);
    }
  }

  void consume_ring() { ring_buffer__consume(ring.get()); }

  // The safety net: cgroup.events says populated 0. The kernel side writes
  // its step_end before the last task leaves the cgroup, so after draining the
  // ring once more a missing step_end means its record was lost.
  void check_cgroup_events() {
    alignas(inotify_event) char buf[4096];
    std::vector<int> changed;
    for (;;) {
      ssize_t n = ::read(inotify.get(), buf, sizeof(buf));
      if (n <= 0) break;
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<inotify_event*>(p);
        changed.push_back(ev->wd);
        p += sizeof(inotify_event) + ev->len;
      }
    }
    if (changed.empty()) return;
    bool drained = false;
    for (auto& [id, w] : watches) {
      if (std::find(changed.begin(), changed.end(), w.events_wd) == changed.end()) continue;
      // A change means populated (or frozen) flipped; it was running at some point.
      w.seen_running = true;
      auto populated = cgroup_populated(w.dir);
      if (!populated || *populated || w.ended) continue;
      if (!drained) {
        consume_ring();
        drained = true;
      }
      if (w.ended) continue;
      // The cgroup is empty, but is the step over? Not while the kernel
      // side still counts a live process of it (one that left the cgroup),
      // unless records were lost (then its count cannot be trusted: fail
      // towards ending, as before).
      step_watch kw{};
      std::uint64_t key = id;
      if (bpf_map__lookup_elem(skel->maps.watched, &key, sizeof(key), &kw, sizeof(kw), 0) == 0 &&
          kw.live > 0 && drops_total() == 0) {
        log::debug("step tracer: cgroup " + w.dir + " is empty but " + std::to_string(kw.live) +
                   " of its processes live elsewhere; the step goes on");
        continue;
      }
      w.ended = true;
      Event e = user_event(EventType::step_end, id, w);
      e.source = "cgroup.events";
      e.exit = w.main_exit;
      e.main_pid = w.main_pid;
      emit(e);
    }
  }

  // Records the ring buffer had no room for, since the maps were made.
  std::uint64_t drops_total() {
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return 0;
    std::vector<std::uint64_t> values(static_cast<std::size_t>(ncpu));
    __u32 key = 0;
    if (bpf_map__lookup_elem(skel->maps.drops, &key, sizeof(key), values.data(),
                             values.size() * sizeof(std::uint64_t), 0) != 0)
      return 0;
    std::uint64_t total = 0;
    for (auto v : values) total += v;
    return total;
  }

  void check_drops() {
    std::uint64_t total = drops_total();
    if (total <= drops_reported) return;
    Event e;
    e.type = EventType::lost;
    e.source = "bpf";
    e.lost = total - drops_reported;
    e.mono_ns = monotonic_ns();
    e.wall_ns = e.mono_ns + wall_offset_ns();
    drops_reported = total;
    emit(e);
    find_dropped_picks();
    find_failed_holds();
  }

  // A hold the kernel side lost or broke while the ring was full: its record
  // is among the drops, its state is in the watch. Read it there.
  void find_failed_holds() {
    for (auto& [id, w] : watches) {
      step_watch kw{};
      std::uint64_t key = id;
      if (bpf_map__lookup_elem(skel->maps.watched, &key, sizeof(key), &kw, sizeof(kw), 0) != 0)
        continue;
      // An escape or an untracked process whose record was dropped.
      if (kw.escaped > 0 && !w.escape_seen) {
        w.escape_seen = true;
        Event e = user_event(EventType::escape, id, w);
        e.source = "bpf.map";
        emit(e);
      }
      if (kw.untracked > 0 && !w.untracked_seen) {
        w.untracked_seen = true;
        Event e = user_event(EventType::untracked, id, w);
        e.source = "bpf.map";
        emit(e);
      }
      if (!w.options.hold_first_exec || w.hold_failed) continue;
      if (kw.hold_state != STEP_HOLD_LOST && kw.hold_state != STEP_HOLD_BROKEN) continue;
      w.hold_failed = true;
      if (kw.hold_state == STEP_HOLD_BROKEN && w.held_pidfd)
        pidfd_send_signal(w.held_pidfd.get(), SIGKILL);
      if (w.held) w.released = true;
      w.held_pidfd.reset();
      Event e = user_event(
          kw.hold_state == STEP_HOLD_LOST ? EventType::hold_lost : EventType::hold_broken, id, w);
      e.source = "bpf.map";
      emit(e);
    }
  }

  void check_deadlines() {
    auto now = std::chrono::steady_clock::now();
    for (auto& [id, w] : watches) {
      if (!w.held || w.released || now < w.deadline) continue;
      if (auto st = expire_hold(w); !st) log::warn(st.error().message());
      Event e = user_event(EventType::hold_timeout, id, w);
      e.killed = w.options.on_hold_timeout == HoldExpiry::kill;
      emit(e);
    }
  }
};

StepTracer::StepTracer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StepTracer::StepTracer(StepTracer&&) noexcept = default;
StepTracer& StepTracer::operator=(StepTracer&&) noexcept = default;
StepTracer::~StepTracer() = default;

Result<StepTracer> StepTracer::open(const TracerOptions& options) {
  if (::access(kVmlinuxBtf, R_OK) != 0)
    return fail("load step tracer", kVmlinuxBtf, errno,
                "the kernel has no BTF type information; CO-RE BPF programs need a kernel "
                "built with CONFIG_DEBUG_INFO_BTF=y");
  {
    std::lock_guard lock(g_print_mutex);
    g_print_debug = options.debug;
  }
  libbpf_set_print(libbpf_print);

  // How a held task continued from outside is stopped, best first:
  //  in_task: fexit/get_signal kills it in its own context before it
  //           returns to user mode (needs BPF trampolines: Linux 6.1 has
  //           them; kernels without ftrace do not);
  //  kfunc:   tp_btf/signal_generate sees the SIGCONT and kills the target
  //           with bpf_send_signal_task (Linux 6.13+);
  //  user:    tp_btf/signal_generate sees it; user space kills it on the
  //           record (the step may run for a moment first).
  enum class Guard { in_task, kfunc, user };
  // Pinned programs of an earlier tracer (an agent that stopped or died) are
  // re-adopted: their maps reused, their links left attached as they are,
  // so no exec, fork or exit between the two tracers goes unseen and a task
  // they hold stays held and guarded. Nothing of ours is attached then.
  int pinned_guard = -1;
  if (!options.pin_dir.empty()) {
    auto g = inspect_pins(options.pin_dir);
    if (!g) return tl::unexpected(g.error());
    pinned_guard = *g;
  }
  const bool adopt = pinned_guard >= 0;
  auto load = [&](Guard guard) -> Result<std::unique_ptr<Impl>> {
    auto impl = std::make_unique<Impl>();
    impl->skel.reset(step_tracer::open());
    if (!impl->skel) return fail_errno("open BPF object", "step_tracer");
    impl->pin_dir = options.pin_dir;
    impl->adopted = adopt;
    if (!options.pin_dir.empty()) {
      bpf_map* maps[] = {impl->skel->maps.watched, impl->skel->maps.procs, impl->skel->maps.held,
                         impl->skel->maps.events,  impl->skel->maps.drops, impl->skel->maps.pods};
      for (std::size_t i = 0; i < std::size(maps); ++i) {
        std::string path = options.pin_dir + "/" + kMapPins[i];
        if (int rc = bpf_map__set_pin_path(maps[i], path.c_str()); rc != 0)
          return fail("pin map", path, -rc);
      }
    }
    if (options.ring_bytes != 0) {
      auto page = static_cast<std::uint32_t>(::sysconf(_SC_PAGESIZE));
      bool power_of_two = (options.ring_bytes & (options.ring_bytes - 1)) == 0;
      if (!power_of_two || options.ring_bytes < page)
        return fail("size ring buffer", std::to_string(options.ring_bytes) + " bytes", EINVAL,
                    "give a power of two of at least " + std::to_string(page));
      if (int rc = bpf_map__set_max_entries(impl->skel->maps.events, options.ring_bytes); rc != 0)
        return fail("size ring buffer", "events", -rc);
    }
    if (options.proc_slots != 0) {
      if (int rc = bpf_map__set_max_entries(impl->skel->maps.procs, options.proc_slots); rc != 0)
        return fail("size process map", "procs", -rc);
    }
    impl->skel->rodata->guard_in_task = guard == Guard::in_task;
    bpf_program__set_autoload(impl->skel->progs.on_signal_return, guard == Guard::in_task);
    bpf_program__set_autoload(impl->skel->progs.on_signal_kill, guard == Guard::kfunc);
    bpf_program__set_autoload(impl->skel->progs.on_signal, guard == Guard::user);
    if (adopt) {
      // Only the maps are wanted (reused from their pins): the programs
      // running are the pinned ones.
      for (bpf_program* prog = bpf_object__next_program(impl->skel->obj, nullptr); prog;
           prog = bpf_object__next_program(impl->skel->obj, prog))
        bpf_program__set_autoload(prog, false);
    }

    std::string load_log;
    {
      std::lock_guard lock(g_print_mutex);
      g_capture = &load_log;
    }
    int rc = step_tracer::load(impl->skel.get());
    int err = errno;
    {
      std::lock_guard lock(g_print_mutex);
      g_capture = nullptr;
    }
    if (rc != 0) {
      auto e = explain_load_error(rc < 0 ? -rc : err, load_log);
      // Only a failure of this guard's own program lets the next guard try.
      const char* own = guard == Guard::in_task ? "'on_signal_return'"
                        : guard == Guard::kfunc ? "'on_signal_kill'"
                                                : "";
      if (*own && load_log.find(own) != std::string::npos) e.value().kind = "guard";
      if (adopt && load_log.find("reuse pinned map") != std::string::npos)
        e.value().detail =
            "the pinned maps in " + options.pin_dir +
            " are of another stepsnapd build; when no step is running, remove that directory "
            "and start again";
      return e;
    }
    if (adopt) {
      // The pinned links are what runs; check they are still there.
      for (const char* n : kCoreLinkPins) {
        std::string path = options.pin_dir + "/" + n;
        bpf_link* link = bpf_link__open(path.c_str());
        if (!link) return fail_errno("open pinned link", path);
        bpf_link__disconnect(link);  // closing our fd must not detach it
        bpf_link__destroy(link);
      }
      return impl;
    }

    // Attach one by one so an error names the tracepoint the kernel refused.
    struct {
      bpf_program* prog;
      bpf_link** link;
      const char* what;
      bool load;
    } progs[] = {
        {impl->skel->progs.on_fork, &impl->skel->links.on_fork, "tp_btf/sched_process_fork", true},
        {impl->skel->progs.on_exec, &impl->skel->links.on_exec, "tp_btf/sched_process_exec", true},
        {impl->skel->progs.on_exit, &impl->skel->links.on_exit, "tp_btf/sched_process_exit", true},
        {impl->skel->progs.on_attach, &impl->skel->links.on_attach, "tp_btf/cgroup_attach_task",
         true},
        {impl->skel->progs.on_mkdir, &impl->skel->links.on_mkdir, "tp_btf/cgroup_mkdir", true},
        {impl->skel->progs.on_signal_return, &impl->skel->links.on_signal_return,
         "fexit/get_signal", guard == Guard::in_task},
        {impl->skel->progs.on_signal_kill, &impl->skel->links.on_signal_kill,
         "tp_btf/signal_generate", guard == Guard::kfunc},
        {impl->skel->progs.on_signal, &impl->skel->links.on_signal, "tp_btf/signal_generate",
         guard == Guard::user},
    };
    for (auto& p : progs) {
      if (!p.load) continue;
      bpf_link* link = bpf_program__attach(p.prog);
      if (!link) {
        auto e = fail_errno("attach", p.what);
        if (p.prog == impl->skel->progs.on_signal_return ||
            p.prog == impl->skel->progs.on_signal_kill)
          e.value().kind = "guard";
        return e;
      }
      *p.link = link;  // the skeleton's destroy() detaches it, unless pinned
      if (!options.pin_dir.empty()) {
        std::string path = options.pin_dir + "/link_" + bpf_program__name(p.prog);
        if (int rc = bpf_link__pin(link, path.c_str()); rc != 0) {
          unpin_all(options.pin_dir);
          return fail("pin link", path, -rc);
        }
      }
    }
    return impl;
  };
  Result<std::unique_ptr<Impl>> loaded = fail("load step tracer", "", EINVAL);
  const char* guard_name[] = {"fexit/get_signal kills it in its own context",
                              "signal_generate kills it with bpf_send_signal_task",
                              "signal_generate reports it and the tracer kills it"};
  for (Guard g : {Guard::in_task, Guard::kfunc, Guard::user}) {
    if (adopt && static_cast<int>(g) != pinned_guard) continue;
    loaded = load(g);
    if (loaded) {
      log::info(std::string("step tracer: a held step continued from outside: ") +
                guard_name[static_cast<int>(g)]);
      break;
    }
    if (loaded.error().kind != "guard") return tl::unexpected(loaded.error());
    log::debug("step tracer: " + loaded.error().message() + "; trying the next hold guard");
  }
  if (!loaded) {
    // A fresh load pinned nothing that stays: libbpf unpins the maps of a
    // failed load, and a failed attach unpinned the links.
    if (!adopt && !options.pin_dir.empty()) unpin_all(options.pin_dir);
    return tl::unexpected(loaded.error());
  }
  auto impl = std::move(*loaded);
  if (adopt)
    log::info("step tracer: re-adopted the programs and maps pinned in " + options.pin_dir);

  impl->ring.reset(ring_buffer__new(bpf_map__fd(impl->skel->maps.events), &Impl::on_record,
                                    impl.get(), nullptr));
  if (!impl->ring) return fail_errno("create ring buffer", "events");
  impl->inotify.reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!impl->inotify) return fail_errno("inotify_init1", "cgroup.events watches");
  impl->epoll.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!impl->epoll) return fail_errno("epoll_create1", "step tracer");
  for (int fd : {ring_buffer__epoll_fd(impl->ring.get()), impl->inotify.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(impl->epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      return fail_errno("epoll_ctl add", "step tracer");
  }
  return StepTracer(std::move(impl));
}

Result<std::uint64_t> StepTracer::watch(const std::string& cgroup_dir,
                                        const WatchOptions& options) {
  struct statfs fs {};
  if (::statfs(cgroup_dir.c_str(), &fs) != 0) return fail_errno("watch", cgroup_dir);
  if (fs.f_type != CGROUP2_SUPER_MAGIC)
    return fail("watch", cgroup_dir, EINVAL, "not a cgroup v2 directory");
  struct stat st {};
  if (::stat(cgroup_dir.c_str(), &st) != 0) return fail_errno("watch", cgroup_dir);
  std::uint64_t id = st.st_ino;  // what BPF sees as the cgroup id
  if (impl_->watches.count(id)) return fail("watch", cgroup_dir, EEXIST);

  if (impl_->pods.count(id)) return fail("watch", cgroup_dir, EEXIST, "it is a watched pod");
  auto state = impl_->watch_state(cgroup_dir, options);
  if (!state) return tl::unexpected(state.error());
  WatchState w = std::move(*state);

  step_watch kw{};
  kw.flags = (options.hold_first_exec ? STEP_WATCH_HOLD : 0) |
             (options.boundaries_only ? STEP_WATCH_BOUNDARIES_ONLY : 0);
  kw.main_tgid = static_cast<__u32>(options.main_pid);
  if (bpf_map__update_elem(impl_->skel->maps.watched, &id, sizeof(id), &kw, sizeof(kw),
                           BPF_NOEXIST) != 0) {
    auto e = fail_errno("add to watched map", cgroup_dir);
    inotify_rm_watch(impl_->inotify.get(), w.events_wd);
    return e;
  }
  impl_->watches.emplace(id, std::move(w));
  return id;
}

Result<std::uint64_t> StepTracer::watch_pod(const std::string& pod_dir,
                                            const PodWatchOptions& options) {
  struct statfs fs {};
  if (::statfs(pod_dir.c_str(), &fs) != 0) return fail_errno("watch pod", pod_dir);
  if (fs.f_type != CGROUP2_SUPER_MAGIC)
    return fail("watch pod", pod_dir, EINVAL, "not a cgroup v2 directory");
  struct stat st {};
  if (::stat(pod_dir.c_str(), &st) != 0) return fail_errno("watch pod", pod_dir);
  std::uint64_t id = st.st_ino;
  if (impl_->pods.count(id) || impl_->watches.count(id)) return fail("watch pod", pod_dir, EEXIST);
  step_pod kp{};
  kp.skip = options.skip_children;
  kp.watch_flags = (options.container.hold_first_exec ? STEP_WATCH_HOLD : 0) |
                   (options.container.boundaries_only ? STEP_WATCH_BOUNDARIES_ONLY : 0);
  if (bpf_map__update_elem(impl_->skel->maps.pods, &id, sizeof(id), &kp, sizeof(kp), BPF_NOEXIST) !=
      0)
    return fail_errno("add to pods map", pod_dir);
  impl_->pods.emplace(id, PodState{pod_dir, options.container});
  return id;
}

bool StepTracer::adopted() const { return impl_->adopted; }

namespace {

// The held map's entry for a watch, if a task of it is held: (tgid, entry).
std::optional<std::pair<__u32, step_held>> held_of(bpf_map* held, std::uint64_t cgroup_id) {
  __u32 key = 0, next = 0;
  __u32* prev = nullptr;
  while (bpf_map__get_next_key(held, prev, &next, sizeof(next)) == 0) {
    key = next;
    prev = &key;
    step_held h{};
    if (bpf_map__lookup_elem(held, &key, sizeof(key), &h, sizeof(h), 0) != 0) continue;
    if (h.cgroup_id == cgroup_id) return std::make_pair(key, h);
  }
  return std::nullopt;
}

}  // namespace

Result<AdoptedWatch> StepTracer::adopt(const std::string& cgroup_dir, std::uint64_t cgroup_id,
                                       const WatchOptions& options) {
  if (!impl_->adopted)
    return fail("adopt watch", cgroup_dir, ENOENT, "the tracer found no pinned programs to adopt");
  struct stat st {};
  if (::stat(cgroup_dir.c_str(), &st) != 0) return fail_errno("adopt watch", cgroup_dir);
  if (st.st_ino != cgroup_id)
    return fail(
        "adopt watch", cgroup_dir, ESTALE,
        "the directory is another cgroup than the one watched (" + std::to_string(cgroup_id) + ")");
  if (impl_->watches.count(cgroup_id)) return fail("adopt watch", cgroup_dir, EEXIST);
  step_watch kw{};
  std::uint64_t key = cgroup_id;
  if (bpf_map__lookup_elem(impl_->skel->maps.watched, &key, sizeof(key), &kw, sizeof(kw), 0) != 0)
    return fail("adopt watch", cgroup_dir, ENOENT, "no pinned watch on it");

  WatchState w;
  w.dir = cgroup_dir;
  w.options = options;
  w.events_wd =
      inotify_add_watch(impl_->inotify.get(), (cgroup_dir + "/cgroup.events").c_str(), IN_MODIFY);
  if (w.events_wd < 0) return fail_errno("inotify_add_watch", cgroup_dir + "/cgroup.events");
  auto populated = cgroup_populated(cgroup_dir);
  w.seen_running = kw.execs > 0 || kw.live > 0 || (populated && *populated);

  AdoptedWatch a;
  a.cgroup_id = cgroup_id;
  a.live = kw.live;
  a.execs = kw.execs;
  a.hold_was_made = kw.hold_state != STEP_HOLD_NONE;
  // Told here, once: their records, if still in the ring, are not repeated.
  a.escaped = w.escape_seen = kw.escaped > 0;
  a.untracked = w.untracked_seen = kw.untracked > 0;
  if (kw.main_exited) {
    w.main_exit = ExitStatus::from_wait_status(kw.main_exit_code);
    w.main_pid = kw.main_tgid;
    a.main_exit = w.main_exit;
    a.main_pid = kw.main_tgid;
  }
  if (kw.hold_state == STEP_HOLD_LOST || kw.hold_state == STEP_HOLD_BROKEN) {
    // Killed by the kernel side already; nothing of it is ours to release.
    w.held = true;
    w.released = true;
    w.hold_failed = true;
    a.hold_lost = kw.hold_state == STEP_HOLD_LOST;
    a.hold_broken = kw.hold_state == STEP_HOLD_BROKEN;
  } else if (kw.hold_state == STEP_HOLD_HELD) {
    w.held = true;
    auto h = held_of(impl_->skel->maps.held, cgroup_id);
    if (h) {
      Event e;
      e.tgid = h->first;
      e.start_boottime_ns = h->second.start_boottime_ns;
      impl_->on_held(w, e);  // pidfd, checked against the task's start
      a.held = static_cast<bool>(w.held_pidfd);
      a.held_pid = h->first;
    }
    // Without an entry (or a task), the hold was released by the earlier
    // tracer or its task is gone: nothing to release.
    if (!a.held) w.released = true;
  }
  if (kw.ended) {
    // Counted while nobody read the ring, or read by a tracer that died
    // before the cgroup emptied: delivered once cgroup.events agrees,
    // like any step end (deliver_deferred_ends).
    a.ended = true;
    w.ended = true;
    w.seen_running = true;
    Event e = impl_->user_event(EventType::step_end, cgroup_id, w);
    e.source = "bpf.map";
    e.exit = w.main_exit;
    e.main_pid = kw.main_tgid;
    w.deferred_end = e;
  }
  impl_->watches.emplace(cgroup_id, std::move(w));
  return a;
}

int StepTracer::drop_unadopted() {
  if (!impl_->adopted) return 0;
  // A pod still waiting for its container is never adopted (its step is
  // failed by the caller): its entry goes, and no child of it is watched.
  {
    bpf_map* pods = impl_->skel->maps.pods;
    std::vector<std::uint64_t> waiting;
    std::uint64_t key = 0, next = 0;
    std::uint64_t* prev = nullptr;
    while (bpf_map__get_next_key(pods, prev, &next, sizeof(next)) == 0) {
      key = next;
      prev = &key;
      waiting.push_back(key);
    }
    for (std::uint64_t id : waiting) bpf_map__delete_elem(pods, &id, sizeof(id), 0);
  }
  bpf_map* watched = impl_->skel->maps.watched;
  std::vector<std::uint64_t> stale;
  std::uint64_t key = 0, next = 0;
  std::uint64_t* prev = nullptr;
  while (bpf_map__get_next_key(watched, prev, &next, sizeof(next)) == 0) {
    key = next;
    prev = &key;
    if (!impl_->watches.count(key)) stale.push_back(key);
  }
  for (std::uint64_t id : stale) {
    // The watch goes first: no new hold in it from here.
    bpf_map__delete_elem(watched, &id, sizeof(id), 0);
    while (auto h = held_of(impl_->skel->maps.held, id)) {
      __u32 tgid = h->first;
      WatchState w;
      Event e;
      e.tgid = tgid;
      e.start_boottime_ns = h->second.start_boottime_ns;
      impl_->on_held(w, e);
      if (bpf_map__delete_elem(impl_->skel->maps.held, &tgid, sizeof(tgid), 0) != 0) break;
      if (w.held_pidfd) pidfd_send_signal(w.held_pidfd.get(), SIGKILL);
      log::warn("step tracer: killed held process " + std::to_string(tgid) +
                " of a pinned watch no step claims (cgroup " + std::to_string(id) + ")");
    }
  }
  return static_cast<int>(stale.size());
}

Status StepTracer::unwatch(std::uint64_t cgroup_id) {
  if (impl_->pods.erase(cgroup_id)) {
    bpf_map__delete_elem(impl_->skel->maps.pods, &cgroup_id, sizeof(cgroup_id), 0);
    return {};
  }
  auto it = impl_->watches.find(cgroup_id);
  if (it == impl_->watches.end()) return fail("unwatch", std::to_string(cgroup_id), ENOENT);
  Status resumed = impl_->expire_hold(it->second);
  bpf_map__delete_elem(impl_->skel->maps.watched, &cgroup_id, sizeof(cgroup_id), 0);
  inotify_rm_watch(impl_->inotify.get(), it->second.events_wd);
  impl_->watches.erase(it);
  return resumed;
}

Status StepTracer::kill_process(std::uint32_t tgid, std::uint64_t start_boottime_ns) {
  WatchState w;
  Event e;
  e.tgid = tgid;
  e.start_boottime_ns = start_boottime_ns;
  impl_->on_held(w, e);  // a pidfd, only if it is still that process
  if (!w.held_pidfd) return fail("kill process", std::to_string(tgid), ESRCH, "it has exited");
  if (pidfd_send_signal(w.held_pidfd.get(), SIGKILL) != 0 && errno != ESRCH)
    return fail_errno("kill process", std::to_string(tgid));
  return {};
}

Result<int> StepTracer::kill_counted(std::uint64_t cgroup_id) {
  bpf_map* procs = impl_->skel->maps.procs;
  std::vector<step_proc_key> counted;
  step_proc_key key{}, next{};
  step_proc_key* prev = nullptr;
  while (bpf_map__get_next_key(procs, prev, &next, sizeof(next)) == 0) {
    key = next;
    prev = &key;
    step_proc p{};
    if (bpf_map__lookup_elem(procs, &key, sizeof(key), &p, sizeof(p), 0) == 0 &&
        p.cgroup_id == cgroup_id)
      counted.push_back(key);
  }
  int killed = 0;
  for (const auto& k : counted) {
    UniqueFd fd(pidfd_open(static_cast<pid_t>(k.tgid)));
    if (!fd) continue;  // exited meanwhile
    // The entry still there once the pidfd is open: the process it names
    // has not exited (its exit deletes it first), so the pid was not reused
    // and the pidfd is that process.
    step_proc p{};
    step_proc_key again = k;
    if (bpf_map__lookup_elem(procs, &again, sizeof(again), &p, sizeof(p), 0) != 0) continue;
    if (pidfd_send_signal(fd.get(), SIGKILL) == 0) ++killed;
  }
  return killed;
}

Status StepTracer::release(std::uint64_t cgroup_id) {
  auto it = impl_->watches.find(cgroup_id);
  std::string what = "cgroup " + std::to_string(cgroup_id);
  if (it == impl_->watches.end()) return fail("release", what, ENOENT, "not watched");
  WatchState& w = it->second;
  if (w.hold_failed)
    return fail("release", what, ECANCELED,
                "the hold was lost or broken and the process killed (see hold_lost/hold_broken)");
  if (!w.held) return fail("release", what, EINVAL, "nothing is held (yet)");
  if (w.released) return fail("release", what, EALREADY);
  if (auto st = impl_->resume(w); !st) return st;
  impl_->pending.push_back(impl_->user_event(EventType::hold_released, cgroup_id, w));
  return {};
}

Result<int> StepTracer::poll(std::chrono::milliseconds timeout, const Callback& callback) {
  using namespace std::chrono;
  if (!impl_->pending.empty()) timeout = milliseconds(0);
  if (auto d = next_deadline()) {
    auto left = duration_cast<milliseconds>(*d - steady_clock::now()) + milliseconds(1);
    timeout = std::clamp(left, milliseconds(0), timeout);
  }
  epoll_event evs[4];
  int n = epoll_wait(impl_->epoll.get(), evs, 4, static_cast<int>(timeout.count()));
  if (n < 0 && errno != EINTR) return fail_errno("epoll_wait", "step tracer");

  impl_->callback = &callback;
  impl_->delivered = 0;
  std::vector<Event> pending = std::move(impl_->pending);
  impl_->pending.clear();
  for (const auto& e : pending) impl_->emit(e);
  impl_->consume_ring();
  impl_->check_cgroup_events();
  // Also without a notification: cgroup.events may have flipped between the
  // ring's step_end and our read of it, and a removed cgroup says nothing.
  impl_->deliver_deferred_ends();
  impl_->check_drops();
  impl_->check_deadlines();
  impl_->callback = nullptr;
  return impl_->delivered;
}

int StepTracer::fd() const { return impl_->epoll.get(); }

std::optional<std::chrono::steady_clock::time_point> StepTracer::next_deadline() const {
  std::optional<std::chrono::steady_clock::time_point> next;
  for (const auto& [id, w] : impl_->watches)
    if (w.held && !w.released && (!next || w.deadline < *next)) next = w.deadline;
  return next;
}

}  // namespace stepsnap::bpf
