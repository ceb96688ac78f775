// How a daemon (stepsnapd, stepsnap-csi) is asked to stop: SIGTERM or SIGINT,
// blocked in every thread and taken by the main thread with sigwait, so no
// handler ever runs in the middle of a kernel operation. SIGPIPE is ignored:
// a peer that went away is an error on its write, not the end of the daemon.
#pragma once

#include <signal.h>

namespace stepsnap {

class StopSignals {
 public:
  // Blocks them; make it before starting any thread, so every thread
  // inherits the mask.
  StopSignals();
  // Waits for one; "SIGTERM" or "SIGINT".
  const char* wait() const;

 private:
  sigset_t set_;
};

}  // namespace stepsnap
