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

#define SIGSTOP_NR 19

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

// Counts t's process for the watch, once. Returns true if it was new.
static __always_inline bool track(struct task_struct* t, __u64 watched_id, struct step_watch* w) {
  struct step_proc_key key = {.tgid = BPF_CORE_READ(t, tgid), .start_time_ns = leader_start(t)};
  struct step_proc val = {.cgroup_id = watched_id};
  if (bpf_map_update_elem(&procs, &key, &val, BPF_NOEXIST) != 0) return false;
  __sync_fetch_and_add(&w->live, 1);
  // A main process named by user space gets its start time (its identity)
  // when it is first counted.
  if (w->main_tgid == key.tgid && w->main_start_ns == 0) w->main_start_ns = key.start_time_ns;
  return true;
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

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct* parent, struct task_struct* child) {
  // A new thread is no new process: only processes count.
  if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid)) return 0;
  // The child's cgroup, not the parent's: clone3(CLONE_INTO_CGROUP) starts a
  // child in a cgroup its parent is not in.
  struct cgroup* cgrp = task_cgroup(child);
  __u64 watched_id = 0;
  struct step_watch* w = find_watch(cgrp, &watched_id);
  if (!w) return 0;
  // A parent that entered the cgroup by migration before anything tracked it.
  if (task_cgroup(parent) == cgrp) track(parent, watched_id, w);
  track(child, watched_id, w);
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

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct* p, pid_t old_pid, struct linux_binprm* bprm) {
  __u64 watched_id = 0;
  struct step_watch* w = find_watch(task_cgroup(p), &watched_id);
  if (!w) return 0;
  track(p, watched_id, w);
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
  // Hold: the signal is pending when the exec returns to user space, so the
  // new program stops before its first instruction. SIGSTOP stops the whole
  // thread group whichever thread gets it, and after exec there is only one.
  if ((w->flags & STEP_WATCH_HOLD) && __sync_val_compare_and_swap(&w->hold_state, 0, 1) == 0) {
    bpf_send_signal(SIGSTOP_NR);
    flags |= STEP_F_HELD;
  }
  if ((w->flags & STEP_WATCH_BOUNDARIES_ONLY) && !(flags & (STEP_F_MAIN | STEP_F_HELD))) return 0;

  struct step_record* r = reserve();
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
// on, even before it forks or execs.
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(on_attach, struct cgroup* dst, const char* path, struct task_struct* task,
             bool threadgroup) {
  // Only the v2 hierarchy (id 0): a v1 cgroup's id may equal a v2 one.
  if (BPF_CORE_READ(dst, root, hierarchy_id) != 0) return 0;
  __u64 watched_id = 0;
  struct step_watch* w = find_watch(dst, &watched_id);
  if (!w) return 0;
  track(task, watched_id, w);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
