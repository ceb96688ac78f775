// The capability set a step gets: containerd's default spec, changed by
// --cap-add and --cap-drop. Pure logic here (names, the mask); the child
// applies the mask in sandbox_process.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace stepsnap::runner {

// One bit per capability number (CAP_CHOWN = bit 0), as in /proc/PID/status.
using CapMask = std::uint64_t;

// containerd's (and Docker's) default set: CHOWN, DAC_OVERRIDE, FSETID,
// FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP,
// NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE (CapEff 00000000a80425fb).
CapMask default_capabilities();

// Every capability this build knows (CAP_CHOWN .. CAP_CHECKPOINT_RESTORE).
CapMask all_capabilities();

// "SYS_ADMIN", "CAP_SYS_ADMIN", "sys_admin" -> its number; "ALL" is not one.
Result<int> capability_number(const std::string& name);

// The default set, minus --cap-drop, plus --cap-add (an add wins over a
// drop of the same capability, "ALL" names every one). An unknown name is
// a one-line error naming it.
Result<CapMask> step_capabilities(const std::vector<std::string>& add,
                                  const std::vector<std::string>& drop);

// "CHOWN,DAC_OVERRIDE,..." for messages and docs.
std::string capability_names(CapMask mask);

}  // namespace stepsnap::runner
