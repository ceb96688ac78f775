// Record shared by exec_seen.bpf.c and its test: one exec seen by the kernel.
#pragma once

struct exec_seen_event {
  __u32 pid;
  __u32 ppid;
  char comm[16];
};
