// systemd readiness (Type=notify) without libsystemd: one datagram with
// "READY=1" (or any state text) to the socket named by $NOTIFY_SOCKET.
// Abstract sockets ("@name") are supported. Without the variable it is a
// no-op, so the daemon runs the same under systemd, in a shell and in tests.
#pragma once

#include <string>

#include "common/error.h"

namespace stepsnap::agent {

// Sends `state` (e.g. "READY=1\nSTATUS=serving") to $NOTIFY_SOCKET. Returns
// false (nothing sent, nothing wrong) when the variable is unset.
Result<bool> sd_notify(const std::string& state);

}  // namespace stepsnap::agent
