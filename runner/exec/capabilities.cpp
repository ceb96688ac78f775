#include "runner/exec/capabilities.h"

#include <algorithm>
#include <cctype>
#include <cerrno>

namespace stepsnap::runner {
namespace {

// Indexed by capability number (linux/capability.h).
constexpr const char* kNames[] = {
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
};
constexpr int kCount = sizeof(kNames) / sizeof(kNames[0]);

CapMask bit(const char* name) {
  for (int i = 0; i < kCount; ++i)
    if (std::string(kNames[i]) == name) return CapMask{1} << i;
  return 0;
}

std::string upper_without_prefix(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (name.rfind("CAP_", 0) == 0) name.erase(0, 4);
  return name;
}

}  // namespace

CapMask default_capabilities() {
  CapMask m = 0;
  for (const char* n :
       {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"})
    m |= bit(n);
  return m;
}

CapMask all_capabilities() { return (CapMask{1} << kCount) - 1; }

Result<int> capability_number(const std::string& name) {
  std::string n = upper_without_prefix(name);
  for (int i = 0; i < kCount; ++i)
    if (n == kNames[i]) return i;
  return fail("unknown capability", name, EINVAL,
              "give a name such as NET_ADMIN or CAP_SYS_PTRACE (see capabilities(7)), or ALL");
}

Result<CapMask> step_capabilities(const std::vector<std::string>& add,
                                  const std::vector<std::string>& drop) {
  auto mask_of = [](const std::vector<std::string>& names) -> Result<CapMask> {
    CapMask m = 0;
    for (const auto& name : names) {
      if (upper_without_prefix(name) == "ALL") {
        m |= all_capabilities();
        continue;
      }
      auto n = capability_number(name);
      if (!n) return tl::unexpected(n.error());
      m |= CapMask{1} << *n;
    }
    return m;
  };
  auto added = mask_of(add);
  if (!added) return added;
  auto dropped = mask_of(drop);
  if (!dropped) return dropped;
  return (default_capabilities() & ~*dropped) | *added;
}

std::string capability_names(CapMask mask) {
  std::string out;
  for (int i = 0; i < kCount; ++i) {
    if (!(mask & (CapMask{1} << i))) continue;
    if (!out.empty()) out += ",";
    out += kNames[i];
  }
  return out;
}

}  // namespace stepsnap::runner
