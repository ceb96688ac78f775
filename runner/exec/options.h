// The command line of `runner exec`, parsed into plain data.
//
// Parsing only looks at the words: whether a host directory exists, whether
// the agent runs or whether we are root is checked later, by exec.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/names.h"

namespace stepsnap::runner {

inline constexpr const char* kDefaultAgentSocket = "/run/stepsnap/stepsnapd.sock";
inline constexpr const char* kDefaultMarshalDir = ".marshal";

// --volume NAME:/path[:ro]. With the agent NAME is a volume name; with
// --no-agent it is an absolute host directory.
struct VolumeOption {
  std::string name;
  std::string target;
  bool read_only = false;
  // Set by exec once the volume is resolved: the filesystem on the clone's
  // block device ("ext4", "xfs", ...); empty when name is a host directory.
  std::string fstype = {};
};

enum class NetMode { none, host };

// What the step's sandbox lets it do beyond the defaults (docs/security.md).
struct SandboxOptions {
  std::optional<std::string> rootfs;  // --rootfs DIR; default: the host's / read-only
  unsigned uid = 0;                   // --user UID[:GID]; default root (see exec_help)
  unsigned gid = 0;
  std::vector<std::string> cap_add;  // capability names, "ALL" allowed
  std::vector<std::string> cap_drop;
  bool host_dev = false;  // --dev host: the host's /dev, pool devices included
};

struct SnapshotPhases {
  bool pre = true;
  bool post = true;
};

struct ExecOptions {
  bool help = false;
  bool no_agent = false;
  std::string agent_socket = kDefaultAgentSocket;
  std::string pipeline;
  std::string run;
  std::string step;
  std::vector<VolumeOption> volumes;  // the first one is the workspace volume
  // --clone-from VOLUME=SNAPSHOT: the run's clone of VOLUME, when made, is
  // made from SNAPSHOT instead of the volume's newest snapshot.
  std::map<std::string, std::string> clone_from;
  std::optional<std::string> workdir;
  // --env-file's lines, then --env's, in order (a later one wins).
  std::vector<std::pair<std::string, std::string>> env;
  SandboxOptions sandbox;
  // Not a command-line option: host directories bound read-write at their
  // own path in the step (runner pipeline's metrics folder, which the step
  // writes and runner reads).
  std::vector<std::string> host_dirs;
  std::string hostname;  // defaults to the step name
  NetMode net = NetMode::none;
  std::optional<std::uint64_t> memory_bytes;
  std::optional<double> cpus;
  std::optional<double> timeout_seconds;
  SnapshotPhases snapshots;
  std::string marshal = kDefaultMarshalDir;
  // --kfp-ui-metadata PATH: KFP's mlpipeline-ui-metadata for the step
  // (kfp_metadata.h), its links into the view at view_url.
  std::string kfp_ui_metadata;
  std::string view_url = "http://127.0.0.1:9477";
  // Labels on the step's registration; set by runner pipeline (the step's
  // dependencies and the pipeline file, which the view draws and quotes).
  Labels labels;
  std::vector<std::string> command;
};

// Parses the words after "exec". Every error is one line, ready to print.
Result<ExecOptions> parse_exec_options(const std::vector<std::string>& args);

// --user's text, "UID" or "UID:GID" (numeric), into sb's uid and gid.
Status parse_user(const std::string& text, SandboxOptions* sb);

// "512M", "2G", "1048576" -> bytes.
Result<std::uint64_t> parse_bytes(const std::string& text);

std::string exec_help();
std::string runner_help();

}  // namespace stepsnap::runner
