// protocol/: stepsnapd's wire protocol, shared by the agent, runner and
// stepsnapctl (types, parser, client). Uses common/ only.
//
// API requests and responses: one JSON object per line (schema in
// docs/api.md). Parsing is pure and total: any byte string gives either a
// typed Request or a RequestError with a code and a one-line message naming
// the field and what to do. Fuzzed by tests/protocol/request_fuzz.cpp.
//
//   request:  {"v":1,"id":7,"op":"volume.create","args":{"name":"ws","size_bytes":1073741824}}
//   ok:       {"v":1,"id":7,"ok":true,"result":{...}}
//   error:    {"v":1,"id":7,"ok":false,"error":{"code":"invalid_value","message":"..."}}
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <variant>
#include <vector>

#include "common/names.h"

namespace stepsnap::protocol {

inline constexpr int kApiVersion = 1;
inline constexpr std::size_t kMaxLabels = 64;
inline constexpr std::size_t kMaxLabelValueLength = 1024;
inline constexpr std::size_t kMaxRequestBytes = 64 * 1024;
inline constexpr int kMaxJsonDepth = 8;
inline constexpr std::size_t kMaxIdLength = 128;
inline constexpr std::size_t kMaxPathLength = 4096;
inline constexpr std::size_t kMaxCommandLength = 4096;
inline constexpr std::size_t kMaxStepVolumes = 32;
// Largest volume we accept: 1 PiB. dm-thin goes further; nobody here needs it
// and a typo of a few digits should fail loudly, not allocate a huge device.
inline constexpr std::uint64_t kMaxVolumeBytes = 1ull << 50;
// List pages: a list answers at most `limit` items (default below), in id
// order, and names the last one in `next_after` when more follow. Bounded so
// that no request makes the daemon load a 100,000-row table at once.
inline constexpr std::uint64_t kDefaultPageSize = 1000;
inline constexpr std::uint64_t kMaxPageSize = 10000;

enum class Op {
  volume_create,
  volume_list,
  volume_delete,
  snapshot_create,
  snapshot_list,
  snapshot_show,
  snapshot_delete,
  snapshot_label,
  clone_create,
  restore,
  step_register,
  step_unregister,
  step_ready,
  step_status,
  run_show,
  run_clone,
  run_create,
  events_subscribe,
  snapshot_send,
  snapshot_receive,
  retention_set,
  retention_show,
  gc,
};
std::string_view to_string(Op op);
std::optional<Op> parse_op(std::string_view text);

enum class SnapshotPolicy { pre, post, both, none };
std::string_view to_string(SnapshotPolicy policy);

// One page of a list: the items after the one named `after` (the
// `next_after` of the previous page; absent: from the first), at most limit.
struct Page {
  std::optional<std::string> after;
  std::uint64_t limit = kDefaultPageSize;
};

// Every `pool` below is optional: the daemon's only (or default) pool.
struct VolumeCreateArgs {
  std::optional<std::string> pool;
  std::string name;
  std::uint64_t size_bytes = 0;
  // "ext4" or "xfs": the agent makes the filesystem; absent: a raw device.
  std::optional<std::string> filesystem;
  Labels labels;
};
struct VolumeListArgs {
  std::optional<std::string> pool;
  Page page;
};
struct VolumeDeleteArgs {
  std::optional<std::string> pool;
  std::string name;
};
struct SnapshotCreateArgs {
  std::optional<std::string> pool;
  std::string volume;
  std::optional<std::string> name;  // generated when absent
  Labels labels;
  // Both or neither: the run this is an initial snapshot of (phase initial).
  std::optional<std::string> pipeline;
  std::optional<std::string> run;
};
struct SnapshotListArgs {
  std::optional<std::string> pool;
  std::optional<std::string> volume;
  std::optional<std::string> pipeline;
  std::optional<std::string> run;
  std::optional<std::string> step;
  Page page;
};
struct SnapshotShowArgs {
  std::optional<std::string> pool;
  std::string name;
};
struct SnapshotDeleteArgs {
  std::optional<std::string> pool;
  std::string name;
};
// snapshot.label: adds labels to a snapshot after it was taken (a key it
// already has gets the new value); a step's metrics arrive this way.
struct SnapshotLabelArgs {
  std::optional<std::string> pool;
  std::string name;
  Labels labels;
};
// clone.create: a writable copy of a snapshot for a pipeline step.
// restore: a snapshot becomes a new (ordinary) volume.
struct CloneCreateArgs {
  std::optional<std::string> pool;
  std::string snapshot;
  std::string name;
  Labels labels;
};
struct RestoreArgs {
  std::optional<std::string> pool;
  std::string snapshot;
  std::string name;
  Labels labels;
};
struct StepRegisterArgs {
  std::string pipeline;
  std::string run;
  std::string step;
  std::string cgroup;                // absolute path under the cgroup v2 mount
  std::vector<std::string> volumes;  // volume or clone names, each once
  SnapshotPolicy policy = SnapshotPolicy::both;
  std::string command;
  Labels labels;
  // "lease": "connection" (default): the registration also expires when the
  // connection that made it closes before a process entered the cgroup
  // (runner keeps its connection open for the whole step). "time": only the
  // agent's --step-lease applies (a one-shot client: stepsnapctl).
  bool lease_connection = true;
  // A pod step (docs/kubernetes.md): `cgroup` is the pod's cgroup, and the
  // step is the container whose child cgroup is made after this many others
  // under it (the sandbox's, the init containers', the containers' before
  // it in the pod spec). Such a registration is leased to its pod's cgroup,
  // not to a connection or a time: it ends when that cgroup is removed.
  std::optional<std::uint32_t> pod_skip_containers;
};
// Most child cgroups a pod step's container may come after.
inline constexpr std::uint64_t kMaxPodSkipContainers = 64;
struct StepStatusArgs {
  std::string pipeline;
  std::string run;
  std::string step;
};
// step.unregister: drop a registration whose step has not started.
struct StepUnregisterArgs {
  std::string pipeline;
  std::string run;
  std::string step;
};
// step.ready: runner's step is set up and waits at runner's gate, before
// CMD's exec; the agent takes its pre-snapshots and answers once they are
// recorded. runner lets CMD exec only on that answer. `registration` is
// what step.register answered; only over the connection that registered.
struct StepReadyArgs {
  std::string pipeline;
  std::string run;
  std::string step;
  std::uint64_t registration = 0;
};
struct RunShowArgs {
  std::string pipeline;
  std::string run;
};
// run.clone: this run's writable clone of `volume`, made on the run's first
// ask (from `snapshot`, or the volume's latest snapshot, or a snapshot taken
// now) and returned as it is on every later ask.
struct RunCloneArgs {
  std::optional<std::string> pool;
  std::string pipeline;
  std::string run;
  std::string volume;
  std::optional<std::string> snapshot;
};
// run.create: a pipeline run's volumes as one operation. Without `sources`
// every volume is snapshotted at one instant (the run's initial snapshots,
// one suspend of all of them); with `sources` (one snapshot per volume, in
// the same order) the clones are made from those. Then the run's clone of
// each volume. Everything is committed together or nothing is left behind.
// Without `run` the agent picks an id no run of the pipeline has.
// run.create's optional plan: the steps runner pipeline will run, in its
// execution order, each with the steps it runs after (all listed before it),
// and the ones restored from run `restored_from` (not re-run). Kept with the
// run, so its readers can show the steps that never registered.
struct PlannedStepArgs {
  std::string step;
  std::vector<std::string> after;
};
struct RunPlanArgs {
  std::vector<PlannedStepArgs> steps;
  std::vector<std::string> restored;
  std::optional<std::string> restored_from;
};
inline constexpr std::size_t kMaxPlanSteps = 512;
struct RunCreateArgs {
  std::optional<std::string> pool;
  std::string pipeline;
  std::optional<std::string> run;
  std::vector<std::string> volumes;
  std::vector<std::string> sources;
  std::optional<RunPlanArgs> plan;
};
// snapshot.send and snapshot.receive (docs/send-receive.md) come with one
// file descriptor passed over the socket (SCM_RIGHTS, on the request line's
// bytes): the agent writes the stream to it, or reads the stream from it.
struct SnapshotSendArgs {
  std::optional<std::string> pool;
  std::string name;
  std::optional<std::string> base;  // incremental from this snapshot
};
struct SnapshotReceiveArgs {
  std::optional<std::string> pool;
  std::optional<std::string> name;  // absent: the sender's name
};
// retention.set (docs/retention.md): the rule of one pipeline (absent: the
// default rule, "*", for pipelines without their own), replacing the one set
// before over the API; `clear` drops the API rule (the config file's applies
// again). Limits left out do not apply.
struct RetentionSetArgs {
  std::optional<std::string> pipeline;
  std::optional<std::uint64_t> keep_runs;
  std::uint64_t keep_failed_runs = 0;
  std::optional<std::uint64_t> max_age_seconds;
  std::vector<std::string> keep;  // label keys that pin a run
  bool clear = false;
};
struct RetentionShowArgs {};
// gc: one retention sweep now; with dry_run only what it would delete.
struct GcArgs {
  bool dry_run = false;
  std::optional<std::string> pipeline;  // only this pipeline's runs
};
struct EventsSubscribeArgs {
  // Deliver events with seq > since. Absent: only events from now on.
  std::optional<std::uint64_t> since;
  bool follow = true;  // false: send what is stored, then end
  // At most this many events, then the stream ends (a page of the log:
  // the next one starts after the last seq received).
  std::optional<std::uint64_t> limit;
};

using RequestArgs =
    std::variant<VolumeCreateArgs, VolumeListArgs, VolumeDeleteArgs, SnapshotCreateArgs,
                 SnapshotListArgs, SnapshotShowArgs, SnapshotDeleteArgs, CloneCreateArgs,
                 RestoreArgs, StepRegisterArgs, StepStatusArgs, RunShowArgs, RunCloneArgs,
                 EventsSubscribeArgs, StepUnregisterArgs, SnapshotLabelArgs, RunCreateArgs,
                 SnapshotSendArgs, SnapshotReceiveArgs, StepReadyArgs, RetentionSetArgs,
                 RetentionShowArgs, GcArgs>;

struct Request {
  nlohmann::json id;  // string or unsigned integer, echoed in the response
  Op op = Op::volume_list;
  RequestArgs args;
};

// Codes a client can switch on. Handlers add their own (not_found, exists,
// busy, no_space, pool_read_only, internal, events.truncated).
namespace code {
inline constexpr std::string_view too_large = "too_large";
inline constexpr std::string_view bad_json = "bad_json";
inline constexpr std::string_view bad_request = "bad_request";
inline constexpr std::string_view unsupported_version = "unsupported_version";
inline constexpr std::string_view unknown_op = "unknown_op";
inline constexpr std::string_view unknown_field = "unknown_field";
inline constexpr std::string_view missing_field = "missing_field";
inline constexpr std::string_view wrong_type = "wrong_type";
inline constexpr std::string_view invalid_value = "invalid_value";
// From the server: the peer may not do this (docs/security.md), and a
// connection that did not send a whole request line in time.
inline constexpr std::string_view forbidden = "forbidden";
inline constexpr std::string_view timeout = "timeout";
}  // namespace code

struct RequestError {
  std::string code;
  std::string message;
  nlohmann::json id;  // null when the request's id could not be read
};

// `line` is one request without its newline.
tl::expected<Request, RequestError> parse_request(std::string_view line);

// Response lines, without the trailing newline. Never throw: strings that are
// not valid UTF-8 are replaced, not rejected.
std::string ok_response(const nlohmann::json& id, const nlohmann::json& result);
// The same line with the result given as its JSON text (written by dump(),
// or byte for byte as dump() would), spliced in as it stands.
std::string ok_text_response(const nlohmann::json& id, std::string_view result_json);
std::string error_response(const nlohmann::json& id, std::string_view code,
                           std::string_view message,
                           const nlohmann::json& details = nlohmann::json());
inline std::string error_response(const RequestError& e) {
  return error_response(e.id, e.code, e.message);
}
// One event of an events.subscribe stream: {"v":1,"id":..,"event":{...}}.
std::string event_response(const nlohmann::json& id, const nlohmann::json& event);
// The same line from the event's JSON text as it stands (the event log's
// stored line), spliced in without parsing it: equal to
// event_response(id, json::parse(event_json)) for any text nlohmann's dump()
// wrote, since the response's keys sort "event" < "id" < "v".
std::string event_line_response(const nlohmann::json& id, std::string_view event_json);

}  // namespace stepsnap::protocol
