// Step tracer, kernel side: sees fork, exec and exit of the processes in
// watched cgroups, holds a step at its first exec, and says when the last
// process of a step is gone. Policy (what to snapshot, when to release) lives
// in user space; this side only observes, counts and stops.
// clang-format off
// vmlinux.h first: it defines the __u32/__u64 the other headers use.
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "step_tracer.h"
// clang-format on

#define SIGKILL_NR 9
#define SIGCONT_NR 18
#define SIGSTOP_NR 19

// Set by user space before load: on_signal_return (fexit/get_signal) is
// loaded and kills a continued held task in its own context, so the
// signal_generate programs leave it to that.
const volatile bool guard_in_task = false;

// Linux 6.13+: signal another task. Weak: only on_signal_kill calls it, and
// user space loads that program only where the kernel has it.
extern int bpf_send_signal_task(struct task_struct* task, int sig, enum pid_type type,
                                __u64 value) __ksym __weak;

// cgroup id -> watch; changed at run time by StepTracer::watch()/unwatch().
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u64);
  __type(value, struct step_watch);
} watched SEC(".maps");

// Processes counted for a watched cgroup, by (tgid, start time).
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct step_proc_key);
  __type(value, struct step_proc);
} procs SEC(".maps");

// Tasks stopped at their first exec and not yet released, by tgid. At most
// one per watch, so as many as there can be watches.
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, struct step_held);
} held SEC(".maps");

// Pods waiting for their step's container cgroup, by the pod's cgroup id.
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u64);
  __type(value, struct step_pod);
} pods SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 1024 * 1024);
} events SEC(".maps");

// Records that did not fit in the ring buffer; user space reports them.
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} drops SEC(".maps");

// A task's cgroup on the v2 (default) hierarchy: the one step cgroups live in.
static __always_inline struct cgroup* task_cgroup(struct task_struct* t) {
  return BPF_CORE_READ(t, cgroups, dfl_cgrp);
}

static __always_inline __u64 cgroup_id(struct cgroup* cgrp) { return BPF_CORE_READ(cgrp, kn, id); }

// The watch covering cgrp: cgrp itself or its nearest watched ancestor. Walks
// css parents (stable across kernels, unlike kernfs_node->parent, which 6.15
// renamed).
static __always_inline struct step_watch* find_watch(struct cgroup* cgrp, __u64* watched_id) {
  for (int i = 0; i < STEP_MAX_CGROUP_DEPTH; i++) {
    if (!cgrp) return NULL;
    __u64 id = cgroup_id(cgrp);
    struct step_watch* w = bpf_map_lookup_elem(&watched, &id);
    if (w) {
      *watched_id = id;
      return w;
    }
    cgrp = BPF_CORE_READ(cgrp, self.parent, cgroup);
  }
  return NULL;
}

static __always_inline __u64 leader_start(struct task_struct* t) {
  return BPF_CORE_READ(t, group_leader, start_time);
}

#define EEXIST_NR 17

// Counts t's process for the watch, once. Returns 1 if it was new, 0 if it
// was counted already, the map's negative errno if it could not be entered:
// then the watch's untracked count goes up and the caller reports it (fail
// closed).
static __always_inline int track(struct task_struct* t, __u64 watched_id, struct step_watch* w) {
  struct step_proc_key key = {.tgid = BPF_CORE_READ(t, tgid), .start_time_ns = leader_start(t)};
  struct step_proc val = {.cgroup_id = watched_id};
  // As an int: Linux 6.1 calls the hash map's update directly, and its int
  // result comes back without sign extension (-EEXIST would read as a large
  // positive long).
  int err = (int)bpf_map_update_elem(&procs, &key, &val, BPF_NOEXIST);
  if (err == -EEXIST_NR) return 0;
  if (err != 0) {
    __sync_fetch_and_add(&w->untracked, 1);
    return err;
  }
  __sync_fetch_and_add(&w->live, 1);
  // A main process named by user space gets its start time (its identity)
  // when it is first counted.
  if (w->main_tgid == key.tgid && w->main_start_ns == 0) w->main_start_ns = key.start_time_ns;
  return 1;
}

static __always_inline struct step_record* reserve(void) {
  struct step_record* r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
  if (!r) {
    __u32 zero = 0;
    __u64* n = bpf_map_lookup_elem(&drops, &zero);
    if (n) *n += 1;  // per-CPU slot: no other writer
    return NULL;
  }
  // Ring buffer memory is not zeroed; fill every byte we do not set below.
  __builtin_memset(r, 0, sizeof(*r));
  return r;
}

static __always_inline void fill_task(struct step_record* r, struct task_struct* t) {
  r->pid = BPF_CORE_READ(t, pid);
  r->tgid = BPF_CORE_READ(t, tgid);
  r->ppid = BPF_CORE_READ(t, real_parent, tgid);
  r->task_cgroup_id = cgroup_id(task_cgroup(t));
  r->start_time_ns = leader_start(t);
  r->start_boottime_ns = BPF_CORE_READ(t, group_leader, start_boottime);
  r->mono_ns = bpf_ktime_get_ns();
  BPF_CORE_READ_STR_INTO(&r->comm, t, comm);
}

// A process the step's end would not wait for: always reported.
static __always_inline void report_untracked(struct task_struct* t, __u64 watched_id,
                                             struct step_watch* w, int err) {
  struct step_record* r = reserve();
  if (!r) return;  // counted in drops; user space finds w->untracked
  r->type = STEP_REC_UNTRACKED;
  r->exit_code = (__u32)-err;  // the map's errno
  fill_task(r, t);
  r->cgroup_id = watched_id;
  r->live_processes = w->live;
  bpf_ringbuf_submit(r, 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct* parent, struct task_struct* child) {
  // A new thread is no new process: only processes count.
  if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid)) return 0;
  // By descent first: the child of a counted process counts for the same
  // watch, whatever cgroup either of them is in now (a process that left
  // the step's cgroup still has its children counted).
  struct step_proc_key pkey = {.tgid = BPF_CORE_READ(parent, tgid),
                               .start_time_ns = leader_start(parent)};
  struct step_proc* pp = bpf_map_lookup_elem(&procs, &pkey);
  __u64 watched_id = 0;
  struct step_watch* w = NULL;
  if (pp) {
    watched_id = pp->cgroup_id;
    w = bpf_map_lookup_elem(&watched, &watched_id);
  }
  // Else by the child's cgroup, not the parent's: clone3(CLONE_INTO_CGROUP)
  // starts a child in a cgroup its parent is not in.
  struct cgroup* cgrp = task_cgroup(child);
  if (!w) {
    pp = NULL;
    w = find_watch(cgrp, &watched_id);
  }
  if (!w) return 0;
  // A parent that entered the cgroup by migration before anything tracked it.
  int err = 0;
  if (!pp && task_cgroup(parent) == cgrp && (err = track(parent, watched_id, w)) < 0)
    report_untracked(parent, watched_id, w, err);
  if ((err = track(child, watched_id, w)) < 0) report_untracked(child, watched_id, w, err);
  if (w->flags & STEP_WATCH_BOUNDARIES_ONLY) return 0;

  struct step_record* r = reserve();
  if (!r) return 0;
  r->type = STEP_REC_FORK;
  fill_task(r, parent);
  r->child_tgid = BPF_CORE_READ(child, tgid);
  r->cgroup_id = watched_id;
  r->live_processes = w->live;
  bpf_ringbuf_submit(r, 0);
  return 0;
}

// Fail closed: the task that was to be held is killed instead. Called in the
// exec'ing task's context, so the SIGKILL is pending before the new program
// runs, like the SIGSTOP would have been.
static __always_inline void hold_lost(struct step_watch* w, __u32 tgid) {
  bpf_send_signal(SIGKILL_NR);
  bpf_map_delete_elem(&held, &tgid);
  w->hold_state = STEP_HOLD_LOST;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct* p, pid_t old_pid, struct linux_binprm* bprm) {
  __u64 watched_id = 0;
  struct step_watch* w = find_watch(task_cgroup(p), &watched_id);
  if (!w) return 0;
  int err = track(p, watched_id, w);
  if (err < 0) report_untracked(p, watched_id, w, err);
  __sync_fetch_and_add(&w->execs, 1);

  __u32 tgid = BPF_CORE_READ(p, tgid);
  __u64 start = leader_start(p);
  __u32 flags = 0;
  // The first process to exec becomes the step's main process unless user
  // space named one.
  if (w->main_tgid == 0) __sync_val_compare_and_swap(&w->main_tgid, 0, tgid);
  if (w->main_tgid == tgid) {
    if (w->main_start_ns == 0) w->main_start_ns = start;
    if (w->main_start_ns == start) flags |= STEP_F_MAIN;
  }
  bool hold =
      (w->flags & STEP_WATCH_HOLD) &&
      __sync_val_compare_and_swap(&w->hold_state, STEP_HOLD_NONE, STEP_HOLD_HELD) == STEP_HOLD_NONE;
  if (!hold && (w->flags & STEP_WATCH_BOUNDARIES_ONLY) && !(flags & STEP_F_MAIN)) return 0;

  // Read before the reservation: Linux 6.1's verifier loses track of a
  // ring record whose null check comes after a helper call (it took the
  // record for leaked on the hold-lost path).
  __u64 start_boot = BPF_CORE_READ(p, group_leader, start_boottime);
  // The record first: a hold user space never hears of would keep the step
  // stopped forever, so a hold is only made once its record is reserved.
  struct step_record* r = reserve();
  if (hold) {
    // Hold: the signal is pending when the exec returns to user space, so
    // the new program stops before its first instruction. SIGSTOP stops the
    // whole thread group whichever thread gets it, and after exec there is
    // only one. The held entry is what lets on_signal_return tell a release
    // from a SIGCONT sent by anyone else.
    struct step_held h = {
        .cgroup_id = watched_id, .start_time_ns = start, .start_boottime_ns = start_boot};
    if (!r || bpf_map_update_elem(&held, &tgid, &h, BPF_ANY) != 0 ||
        bpf_send_signal(SIGSTOP_NR) != 0) {
      hold_lost(w, tgid);
      if (!r) return 0;  // counted in drops; user space finds hold_state
      r->type = STEP_REC_HOLD_LOST;
      fill_task(r, p);
      r->cgroup_id = watched_id;
      r->live_processes = w->live;
      bpf_ringbuf_submit(r, 0);
      return 0;
    }
    flags |= STEP_F_HELD;
  }
  if (!r) return 0;
  r->type = STEP_REC_EXEC;
  r->flags = flags;
  fill_task(r, p);
  r->cgroup_id = watched_id;
  r->live_processes = w->live;
  const char* filename = BPF_CORE_READ(bprm, filename);
  long n = bpf_probe_read_kernel_str(r->filename, sizeof(r->filename), filename);
  r->filename_len = n > 0 ? n : 0;
  // The new program's argv, already laid out on its stack by the loader.
  unsigned long arg_start = BPF_CORE_READ(p, mm, arg_start);
  unsigned long arg_end = BPF_CORE_READ(p, mm, arg_end);
  unsigned long len = arg_end - arg_start;
  if (len > STEP_ARGS_LEN) len = STEP_ARGS_LEN;
  if (bpf_probe_read_user(r->args, len, (const void*)arg_start) == 0) r->args_len = len;
  bpf_ringbuf_submit(r, 0);
  return 0;
}

// A stopped task leaves get_signal() only when continued (SIGKILL never
// returns from it), and every task goes through it between the exec that
// queued its SIGSTOP and its first instruction: the SIGSTOP made a signal
// pending. So a task still in the held map here, its entry not marked
// released, was continued before user space released it (which marks the
// entry first, then sends SIGCONT): a SIGCONT from its session, a shell's
// fg, anyone with the right to signal it. Killing it now, in its own
// context, makes SIGKILL pending before it returns to user mode, so it
// still runs no instruction of its program. A released entry is dropped
// here: its task goes on.
SEC("fexit/get_signal")
int BPF_PROG(on_signal_return, struct ksignal* ksig, bool ret) {
  __u32 tgid = bpf_get_current_pid_tgid() >> 32;
  struct step_held* h = bpf_map_lookup_elem(&held, &tgid);
  if (!h) return 0;
  struct task_struct* t = bpf_get_current_task_btf();
  if (h->start_time_ns != leader_start(t)) return 0;  // a stale entry of a reused pid
  __u64 watched_id = h->cgroup_id;
  bool released = h->released;
  // Deleting decides the race with another continue: whoever deletes it owns it.
  if (bpf_map_delete_elem(&held, &tgid) != 0) return 0;
  if (released) return 0;
  bpf_send_signal(SIGKILL_NR);
  struct step_watch* w = bpf_map_lookup_elem(&watched, &watched_id);
  if (w) w->hold_state = STEP_HOLD_BROKEN;
  struct step_record* r = reserve();
  if (!r) return 0;  // counted in drops; user space finds hold_state
  r->type = STEP_REC_HOLD_BROKEN;
  r->flags = STEP_F_KILLED;
  fill_task(r, t);
  r->cgroup_id = watched_id;
  bpf_ringbuf_submit(r, 0);
  return 0;
}

// Where fexit programs cannot load (no BPF trampolines): a SIGCONT is seen
// as it is generated, in the sender's context, with the target's siglock
// held. The hold is marked broken there. With kill, the target gets SIGKILL
// through bpf_send_signal_task (deferred by the kernel to an irq_work right
// after the siglock is dropped, microseconds; the target is then kicked out
// of user mode before it reaches its first system call). Without it, user
// space kills it on reading the record (STEP_F_KILLED unset).
static __always_inline int sigcont_to_held(struct task_struct* task, bool kill) {
  __u32 tgid = BPF_CORE_READ(task, tgid);
  struct step_held* h = bpf_map_lookup_elem(&held, &tgid);
  if (!h) return 0;
  if (h->start_time_ns != leader_start(task)) return 0;
  __u64 watched_id = h->cgroup_id;
  bool released = h->released;
  if (bpf_map_delete_elem(&held, &tgid) != 0) return 0;
  if (released) return 0;  // user space's own SIGCONT, after its release
  bool killed = false;
  if (kill && bpf_send_signal_task) {
    killed = bpf_send_signal_task(task, SIGKILL_NR, PIDTYPE_TGID, 0) == 0;
  }
  struct step_watch* w = bpf_map_lookup_elem(&watched, &watched_id);
  if (w) w->hold_state = STEP_HOLD_BROKEN;
  struct step_record* r = reserve();
  if (!r) return 0;  // counted in drops; user space finds hold_state
  r->type = STEP_REC_HOLD_BROKEN;
  if (killed) r->flags = STEP_F_KILLED;
  fill_task(r, task);
  r->cgroup_id = watched_id;
  bpf_ringbuf_submit(r, 0);
  return 0;
}

SEC("tp_btf/signal_generate")
int BPF_PROG(on_signal, int sig, struct kernel_siginfo* info, struct task_struct* task, int group,
             int result) {
  if (sig != SIGCONT_NR || guard_in_task) return 0;
  return sigcont_to_held(task, false);
}

SEC("tp_btf/signal_generate")
int BPF_PROG(on_signal_kill, int sig, struct kernel_siginfo* info, struct task_struct* task,
             int group, int result) {
  if (sig != SIGCONT_NR || guard_in_task) return 0;
  return sigcont_to_held(task, true);
}

// True when t is the last thread of its process. signal->live drops to zero
// for the last thread before the tracepoint fires, on every kernel we support;
// 6.1's tracepoint has no group_dead argument, so this is the portable test.
static __always_inline bool last_thread(struct task_struct* t) {
  if (bpf_core_field_exists(t->signal->live)) return BPF_CORE_READ(t, signal, live.counter) == 0;
  return BPF_CORE_READ(t, pid) == BPF_CORE_READ(t, tgid);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct* p) {
  if (!last_thread(p)) return 0;
  struct step_proc_key key = {.tgid = BPF_CORE_READ(p, tgid), .start_time_ns = leader_start(p)};
  // A held task that dies (killed while stopped) frees its held slot.
  struct step_held* h = bpf_map_lookup_elem(&held, &key.tgid);
  if (h && h->start_time_ns == key.start_time_ns) bpf_map_delete_elem(&held, &key.tgid);
  struct step_proc* proc = bpf_map_lookup_elem(&procs, &key);
  if (!proc) return 0;
  __u64 watched_id = proc->cgroup_id;
  // Deleting is what makes this exit count once, even if two CPUs raced here.
  if (bpf_map_delete_elem(&procs, &key) != 0) return 0;
  struct step_watch* w = bpf_map_lookup_elem(&watched, &watched_id);
  if (!w) return 0;  // unwatched since

  __u32 code = BPF_CORE_READ(p, exit_code);
  __u32 flags = 0;
  if (key.tgid == w->main_tgid && key.start_time_ns == w->main_start_ns) {
    w->main_exit_code = code;
    w->main_exited = 1;
    flags |= STEP_F_MAIN;
  }
  __u32 before = __sync_fetch_and_sub(&w->live, 1);

  struct step_record* r = NULL;
  if (!(w->flags & STEP_WATCH_BOUNDARIES_ONLY) || (flags & STEP_F_MAIN)) r = reserve();
  if (r) {
    r->type = STEP_REC_EXIT;
    r->flags = flags;
    fill_task(r, p);
    r->cgroup_id = watched_id;
    r->exit_code = code;
    r->live_processes = before - 1;
    bpf_ringbuf_submit(r, 0);
  }

  if (before != 1 || __sync_val_compare_and_swap(&w->ended, 0, 1) != 0) return 0;
  r = reserve();
  if (!r) return 0;
  r->type = STEP_REC_STEP_END;
  fill_task(r, p);
  r->cgroup_id = watched_id;
  r->main_tgid = w->main_tgid;
  r->main_exit_code = w->main_exit_code;
  if (w->main_exited) r->flags |= STEP_F_MAIN_EXITED;
  bpf_ringbuf_submit(r, 0);
  return 0;
}

// A process moved into a watched cgroup (cgroup.procs write) counts from then
// on, even before it forks or execs. A counted process moved out of its
// watch's cgroups has escaped: reported (the step fails), and still counted
// for its watch until it exits, so the step's end waits for it.
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(on_attach, struct cgroup* dst, const char* path, struct task_struct* task,
             bool threadgroup) {
  // Only the v2 hierarchy (id 0): a v1 cgroup's id may equal a v2 one.
  if (BPF_CORE_READ(dst, root, hierarchy_id) != 0) return 0;
  __u64 watched_id = 0;
  struct step_watch* w = find_watch(dst, &watched_id);
  struct step_proc_key key = {.tgid = BPF_CORE_READ(task, tgid),
                              .start_time_ns = leader_start(task)};
  struct step_proc* proc = bpf_map_lookup_elem(&procs, &key);
  if (proc && proc->cgroup_id != watched_id) {
    __u64 own_id = proc->cgroup_id;
    struct step_watch* own = bpf_map_lookup_elem(&watched, &own_id);
    if (!own) return 0;
    __sync_fetch_and_add(&own->escaped, 1);
    struct step_record* r = reserve();
    if (!r) return 0;  // counted in drops; user space finds own->escaped
    r->type = STEP_REC_ESCAPE;
    fill_task(r, task);
    r->cgroup_id = own_id;
    r->task_cgroup_id = cgroup_id(dst);  // where it went
    r->live_processes = own->live;
    bpf_ringbuf_submit(r, 0);
    return 0;
  }
  if (!w) return 0;
  int err = track(task, watched_id, w);
  if (err < 0) report_untracked(task, watched_id, w, err);
  return 0;
}

// A cgroup made under a pod's cgroup: the kubelet's runtime makes one child
// per container (the sandbox's pause, each init container, each container)
// in an order the pod spec fixes, before it puts the container's first
// process there. The child after `skip` others is the step's: it goes into
// the watched map here, in the mkdir itself, so no process of it can exec
// unwatched, while every other child stays unwatched (never held, never
// counted).
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(on_mkdir, struct cgroup* cgrp, const char* path) {
  if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0) return 0;  // v2 only
  struct cgroup* parent = BPF_CORE_READ(cgrp, self.parent, cgroup);
  if (!parent) return 0;
  __u64 pod_id = cgroup_id(parent);
  struct step_pod* pod = bpf_map_lookup_elem(&pods, &pod_id);
  if (!pod) return 0;
  // Atomic: of two children made at once, exactly one is number `skip`.
  if (__sync_fetch_and_add(&pod->seen, 1) != pod->skip) return 0;
  __u64 child_id = cgroup_id(cgrp);
  struct step_watch w = {.flags = pod->watch_flags};
  __u32 flags = 0;
  if (bpf_map_update_elem(&watched, &child_id, &w, BPF_NOEXIST) != 0) {
    pod->state = STEP_POD_FAILED;
    flags = STEP_F_NOT_WATCHED;
  } else {
    pod->state = STEP_POD_PICKED;
  }
  pod->child_id = child_id;
  // A record that does not fit is counted in drops; user space then reads
  // the pick from this map.
  struct step_record* r = reserve();
  if (!r) return 0;
  r->type = STEP_REC_CONTAINER;
  r->flags = flags;
  r->cgroup_id = pod_id;
  r->task_cgroup_id = child_id;
  r->mono_ns = bpf_ktime_get_ns();
  long n = bpf_probe_read_kernel_str(r->filename, sizeof(r->filename), path);
  r->filename_len = n > 0 ? n : 0;
  bpf_ringbuf_submit(r, 0);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
