// stepsnapd's settings: command-line flags, optionally a config file (INI,
// same names as the long flags without "--"; flags win over the file).
// Parsing and validation only; the daemon's main() acts on the result.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "agent/retention/retention_rules.h"
#include "agent/view/listen_address.h"
#include "common/error.h"
#include "common/log.h"
#include "common/size.h"

// Bounds of --hold-timeout: at least a second (a snapshot needs a moment),
// at most a day (a step held longer is stuck, not slow).
inline constexpr std::uint64_t kMinHoldTimeoutSeconds = 1;
inline constexpr std::uint64_t kMaxHoldTimeoutSeconds = 86400;
// Bounds of --step-lease: the same, for a registration nobody uses.
inline constexpr std::uint64_t kMinStepLeaseSeconds = 1;
inline constexpr std::uint64_t kMaxStepLeaseSeconds = 86400;

namespace stepsnap::agent {

struct PoolConfig {
  std::string name = "stepsnap";
  // Real devices (production) ...
  std::string data_device;
  std::string metadata_device;
  // ... or loop files made on first start (development, tests).
  std::string loop_dir;
  std::uint64_t loop_data_bytes = 0;
  std::uint64_t loop_metadata_bytes = 0;
  std::uint64_t block_bytes = 64 * 1024;
  unsigned low_space_percent = 80;  // pool.low_space above this
};

struct DaemonOptions {
  std::string config_file;
  std::string state_dir = "/var/lib/stepsnap";
  std::string socket_path = "/run/stepsnap/stepsnapd.sock";
  std::string socket_group = "stepsnap";  // empty: root only
  std::string event_log_file;             // empty: events only in the catalog
  std::uint64_t event_retention = 100000;
  // How long a step's first exec may stay held for its pre-snapshot before
  // the tracer lets it go (and the policy kills it: it would run without its
  // pre-state). A step is stopped all that time.
  std::uint64_t hold_timeout_seconds = 600;
  // How long a registered step's cgroup may stay empty before the
  // registration expires (its watch slot and name freed, an error event).
  std::uint64_t step_lease_seconds = 60;
  // The only cgroup subtree step cgroups (and pods) may be registered
  // beneath (agent/policy/step_cgroup.h). Empty: <cgroup v2 mount>/stepsnap.
  // On a Kubernetes node: the kubelet's, e.g. /sys/fs/cgroup/kubepods.slice.
  std::string step_cgroup_root;
  // Where the step tracer's BPF links and maps are pinned (on bpffs), so
  // held steps stay held across a restart and the next start adopts them.
  // Empty: nothing pinned; a stop kills held steps, a restart fails the
  // steps under way.
  std::string bpf_pin_dir = "/sys/fs/bpf/stepsnap";
  log::Level log_level = log::Level::info;
  PoolConfig pool;
  // Format a metadata device even though it holds a thin pool's superblock
  // (destroying every volume of that pool). Never in a config file: only
  // on the command line, for the one start that needs it.
  bool format_pool = false;
  // Per-peer limits (docs/security.md).
  std::uint64_t request_timeout_seconds = 60;
  std::uint64_t max_connections_per_uid = 16;
  std::uint64_t max_steps_per_peer = 256;
  // The HTTP view (agent/view): --http-listen as given, and parsed; none
  // when it is "" (off).
  std::string http_listen = std::string(kDefaultHttpListen);
  std::optional<ListenAddress> http;
  // Retention (docs/retention.md): the rules of --retention (one per
  // pipeline, "*" the default), and how often the sweep runs on its own
  // (0: only on demand and on low space).
  RetentionRules retention;
  std::uint64_t gc_interval_seconds = 3600;

  std::string retention_file() const { return state_dir + "/retention.json"; }

  std::string catalog_path() const { return state_dir + "/catalog.db"; }
};

// `stepsnapd --help` text; the caller prints it and exits 0.
struct HelpRequested {
  std::string text;
};

using ParsedOptions = std::variant<DaemonOptions, HelpRequested>;

// argv as main() got it. Errors are one line naming the flag, e.g.
// "--pool-loop-data-size: \"12Q\" is not a size; use bytes or a K, M, G, T suffix".
Result<ParsedOptions> parse_daemon_options(int argc, const char* const* argv);

using stepsnap::parse_size;  // common/size.h

}  // namespace stepsnap::agent
