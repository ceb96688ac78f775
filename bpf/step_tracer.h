/* The one definition of every record the step tracer's kernel side and user
 * side share. Fixed-width kernel types only (__u32/__u64, char arrays), so the
 * layout is the same for clang -target bpf and for the C++ compiler.
 *
 * Included by step_tracer.bpf.c (after vmlinux.h) and by C++. */
#ifndef STEPSNAP_BPF_STEP_TRACER_H
#define STEPSNAP_BPF_STEP_TRACER_H

/* C++ gets the __u32/__u64 here, whatever it included first; the BPF side
 * has them from vmlinux.h, which must not meet <linux/types.h>. */
#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define STEP_COMM_LEN 16
#define STEP_FILENAME_LEN 256
#define STEP_ARGS_LEN 256
/* How many cgroup levels above a task's own cgroup are searched for a watched
 * one. Bounded for the verifier; step cgroups sit a few levels deep. */
#define STEP_MAX_CGROUP_DEPTH 16

/* Record types written by the kernel side. */
enum step_record_type {
  STEP_REC_FORK = 1,     /* a new process (not a thread) in a watched cgroup */
  STEP_REC_EXEC = 2,     /* an exec in a watched cgroup */
  STEP_REC_EXIT = 3,     /* the last thread of a tracked process exited */
  STEP_REC_STEP_END = 4, /* the last tracked process of a watched cgroup exited */
  /* The first exec was to be held, but the hold could not be made sure of
   * (no ring record, no held slot, SIGSTOP refused): the task was sent
   * SIGKILL instead, before its first instruction. Fail closed. */
  STEP_REC_HOLD_LOST = 5,
  /* A held task was continued (SIGCONT from anyone) before user space
   * released it: the task was sent SIGKILL on its way back to user mode,
   * before its first instruction. */
  STEP_REC_HOLD_BROKEN = 6,
  /* A process counted for a watch moved to a cgroup outside it (task_cgroup_id:
   * where to). It stays counted, so the step end still waits for it. */
  STEP_REC_ESCAPE = 7,
  /* A process of a watched step could not be entered in the procs map (full):
   * its exit would go unseen. Fail closed: user space ends the step. */
  STEP_REC_UNTRACKED = 8,
  /* A pod watch picked its container (cgroup_mkdir): cgroup_id is the pod's
   * cgroup, task_cgroup_id the new child's, filename its path from the
   * hierarchy's root. The child is in the watched map from this moment, before
   * any process can be in it, unless STEP_F_NOT_WATCHED (no room). */
  STEP_REC_CONTAINER = 9,
};

/* step_record.flags */
#define STEP_F_HELD (1u << 0) /* exec: the task was sent SIGSTOP before its first instruction */
#define STEP_F_MAIN (1u << 1) /* the record is about the step's main process */
#define STEP_F_MAIN_EXITED (1u << 2) /* step end: main_exit_code is valid */
#define STEP_F_KILLED (1u << 3)      /* hold broken: the kernel side sent SIGKILL */
#define STEP_F_NOT_WATCHED (1u << 4) /* container: the watched map had no room for it */

/* One event, kernel -> user, through the ring buffer. */
struct step_record {
  __u32 type;
  __u32 flags;
  __u32 pid;               /* thread id */
  __u32 tgid;              /* process id */
  __u32 ppid;              /* real parent's tgid */
  __u32 child_tgid;        /* fork: the new process */
  __u64 cgroup_id;         /* the watched cgroup the task counts for */
  __u64 task_cgroup_id;    /* the task's own cgroup (a descendant or the same) */
  __u64 start_time_ns;     /* process start, CLOCK_MONOTONIC ns (key with tgid) */
  __u64 start_boottime_ns; /* process start, CLOCK_BOOTTIME ns (/proc/PID/stat) */
  __u64 mono_ns;           /* bpf_ktime_get_ns() when it happened */
  __u32 exit_code;         /* exit: raw wait status ((code << 8) | signal); untracked: errno */
  __u32 main_exit_code;    /* step end: the main process's raw wait status */
  __u32 main_tgid;         /* step end: the main process */
  __u32 live_processes;    /* tracked processes left after this record */
  __u32 filename_len;      /* exec: bytes valid in filename, including NUL */
  __u32 args_len;          /* exec: bytes valid in args (NUL separated) */
  char comm[STEP_COMM_LEN];
  char filename[STEP_FILENAME_LEN];
  char args[STEP_ARGS_LEN];
};

/* watched map: cgroup id -> step_watch. User space creates the entry with
 * flags and main_tgid set and everything else zero; the kernel side owns the
 * rest. */
#define STEP_WATCH_HOLD (1u << 0) /* SIGSTOP the first exec in this cgroup */
/* Only the records a snapshot policy needs: the main process's exec and exit,
 * a held exec, and the step end. Every process is still counted; the others'
 * fork, exec and exit records are not written, which keeps an exec-heavy step
 * from filling the ring buffer and waking user space thousands of times. */
#define STEP_WATCH_BOUNDARIES_ONLY (1u << 1)

/* step_watch.hold_state */
#define STEP_HOLD_NONE 0   /* no exec held (yet) */
#define STEP_HOLD_HELD 1   /* the first exec was stopped and reported */
#define STEP_HOLD_LOST 2   /* the first exec was killed: its hold could not be made sure of */
#define STEP_HOLD_BROKEN 3 /* the held task was continued before release, and killed */

struct step_watch {
  __u32 flags;          /* STEP_WATCH_* (set by user space) */
  __u32 main_tgid;      /* 0: the first process that execs becomes the main one */
  __u64 main_start_ns;  /* start time of the main process, 0 until known */
  __u32 hold_state;     /* STEP_HOLD_* */
  __u32 ended;          /* 0, or 1 once the step end was sent */
  __u32 live;           /* tracked processes alive */
  __u32 main_exit_code; /* raw wait status of the main process */
  __u32 main_exited;    /* 1 once main_exit_code is valid */
  __u32 execs;          /* execs seen */
  __u32 escaped;        /* counted processes that moved out of the watched cgroup */
  __u32 untracked;      /* processes that could not be entered in the procs map */
};

/* procs map key: a process, by (tgid, start time) so pid reuse can't alias. */
struct step_proc_key {
  __u32 tgid;
  __u32 pad;
  __u64 start_time_ns;
};

struct step_proc {
  __u64 cgroup_id; /* the watched cgroup it counts for */
};

/* held map: tgid -> the task stopped at its first exec, from the exec until
 * it is continued after its release, or exits. User space releases it in
 * two steps: marks the entry released, then sends SIGCONT. A held task that
 * returns from get_signal() (continued) finds its entry: released, the entry
 * goes and the task runs; not released, someone else continued it, and it is
 * killed. An agent killed between the two steps leaves the entry marked and
 * the task stopped: the next agent adopts it held and sends the SIGCONT. */
struct step_held {
  __u64 cgroup_id;         /* the watch that holds it */
  __u64 start_time_ns;     /* the task's start (its identity with tgid) */
  __u64 start_boottime_ns; /* the same, CLOCK_BOOTTIME: what /proc/PID/stat shows, so a
                            * restarted agent can check a pidfd is this task */
  __u32 released;          /* 1: user space released it; a SIGCONT is its to send */
  __u32 pad;
};

/* pods map: a pod's cgroup id -> step_pod. The pod's own cgroup is not
 * watched (its pause and init containers are none of the step's business);
 * the kernel side picks one child cgroup as it is created, the one after
 * `skip` others, and watches it as a step with watch_flags. User space
 * creates the entry with skip and watch_flags set, the rest zero. */
#define STEP_POD_WAITING 0
#define STEP_POD_PICKED 1
#define STEP_POD_FAILED 2 /* picked, but the watched map had no room */

struct step_pod {
  __u32 skip;        /* child cgroups created before the one picked */
  __u32 watch_flags; /* STEP_WATCH_* of the picked child's watch */
  __u32 seen;        /* child cgroups created since the entry was made */
  __u32 state;       /* STEP_POD_* */
  __u64 child_id;    /* the picked child's cgroup id, once picked */
};

#endif /* STEPSNAP_BPF_STEP_TRACER_H */
