// The step's init: pid 1 of the step's pid namespace, so that CMD (pid 2)
// gets signals and orphans behave as if CMD ran directly.
//
// The kernel drops every signal sent to a pid namespace's init that has no
// handler for it, and makes that init the parent of every orphan. With CMD
// as pid 1, `kill -TERM $$` did nothing and orphans stayed zombies. So the
// cloned child stays behind as init: runner's own code, never an exec of a
// helper, because the agent's BPF program holds the step at its cgroup's
// first exec and that exec must be CMD's.
//
// What init does, in order (run_step_init):
// - forks CMD, which unblocks every signal and execs; an exec failure comes
//   back to init on a close-on-exec pipe and goes on to runner;
// - closes its stdin, stdout and stderr, so a reader of CMD's output is not
//   kept waiting by init;
// - closes its end of runner's report channel: runner sees EOF with nothing
//   written once CMD's exec succeeded, as it did when CMD was the child;
// - loops on a signalfd holding every signal: SIGCHLD reaps whatever child
//   ended (CMD or an orphan), SIGCONT is dropped (it would only undo the
//   agent's hold of CMD's exec), every other signal is sent on to CMD;
// - when CMD is reaped, exits with its status (init_exit_status). The
//   kernel then kills whatever is left in the pid namespace before init's
//   exit is reported, so runner's wait returns when the step is over.
#pragma once

#include <sys/types.h>

#include "runner/exec/sandbox_process.h"

namespace stepsnap::runner {

// init's exit status for CMD's wait status: CMD's exit code, or 128+N when
// CMD died of signal N. init cannot die of the signal that killed CMD (pid 1
// ignores its own default-action signals), so it encodes it the way a shell
// reports it, and runner reports that number: what runner shows for a
// command killed by SIGTERM is 143 either way. (What the agent records comes
// from the kernel, CMD's real wait status: CMD did the cgroup's first exec.)
int init_exit_status(int wait_status);

// Runs as the step's init; never returns. Expects every signal blocked (they
// stay blocked in init: a signal sent while the step was set up is pending,
// and is sent on to CMD once it exists). argv[0] is looked up in PATH with
// envp's PATH. report_fd is runner's channel: an exec failure is written to
// it as "<errno> execute CMD: <text>", and it is closed once CMD runs.
// CMD's child enters `sandbox` just before its exec (its failure is
// reported the same way, as "enter the sandbox ...").
[[noreturn]] void run_step_init(char* const argv[], char* const envp[], int report_fd,
                                const ProcessSandbox& sandbox);

}  // namespace stepsnap::runner
