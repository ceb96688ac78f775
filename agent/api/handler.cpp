#include "agent/api/handler.h"

#include <cerrno>

#include "agent/api/authz.h"
#include "agent/api/event_subscription.h"
#include "agent/volumes/device_text.h"
#include "agent/volumes/mkfs.h"
#include "common/log.h"
#include "dm/dm_error.h"

namespace stepsnap::agent {

using namespace protocol;  // this file maps each wire request onto the daemon

using json = nlohmann::json;

namespace {

// run.create's plan as the catalog keeps it (pipeline and run set there).
std::optional<RunPlanRecord> plan_record(const std::optional<RunPlanArgs>& args) {
  if (!args) return std::nullopt;
  RunPlanRecord plan;
  for (const auto& s : args->steps) plan.steps.push_back({s.step, s.after});
  plan.restored = args->restored;
  plan.restored_from = args->restored_from.value_or("");
  return plan;
}

tl::unexpected<ApiError> api_error(const Error& e) {
  return tl::unexpected(ApiError{error_code(e), e.message(),
                                 e.kind.empty() ? json(nullptr) : json{{"kind", e.kind}}});
}

template <typename T>
tl::expected<json, ApiError> answer(const Result<T>& r) {
  if (!r) return api_error(r.error());
  if constexpr (std::is_same_v<T, DeviceRecord>) {
    return device_json(*r);
  } else {
    return json(*r);
  }
}

tl::unexpected<ApiError> no_stream_fd(const std::string& op, const std::string& what) {
  return tl::unexpected(ApiError{std::string(protocol::code::bad_request),
                                 op + " needs a file descriptor to " + what +
                                     ", passed with the request (SCM_RIGHTS); use stepsnapctl"});
}

// This node's name in a send stream's header: the host name.
std::string node_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "unknown";
  return host;
}

// snapshot.show names at most this many earlier versions.
constexpr std::size_t kMaxLineage = 1000;

// One page of a list op: the filter gets the page's bounds (one row more
// than asked, to know whether another page follows), the answer names the
// page's last item in next_after when it does.
Result<DeviceFilter> paged(DeviceFilter f, const Page& page, Volumes& volumes) {
  if (page.after) {
    auto last = volumes.find(*page.after);
    if (!last)
      return tl::unexpected(
          last.error().context("after: the list has moved on; list from the "
                               "start again without after"));
    f.after_id = last->id;
  }
  f.limit = page.limit + 1;
  return f;
}

// The page as its text, written from the rows (device_text.h): the same
// bytes as the JSON value dumped, without building it.
tl::expected<Answer, ApiError> page_answer(Result<std::vector<DeviceRecord>> r, const Page& page,
                                           const char* key, const json* pool = nullptr) {
  if (!r) return api_error(r.error());
  std::optional<std::string> next_after;
  if (r->size() > page.limit) {
    r->resize(page.limit);
    next_after = r->back().name;
  }
  return Answer::text(device_page_text(*r, key, next_after, pool));
}

Status check_pool(const std::optional<std::string>& asked, const PoolRecord& pool) {
  if (asked && *asked != pool.name) {
    return fail("pool", *asked, ENOENT, "this agent serves pool " + pool.name);
  }
  return {};
}

}  // namespace

std::string error_code(const Error& e) {
  switch (dm::kind_of(e)) {
    case dm::ErrorKind::out_of_data_space:
    case dm::ErrorKind::out_of_metadata_space:
    case dm::ErrorKind::ids_exhausted:
      return "no_space";
    case dm::ErrorKind::needs_check:
    case dm::ErrorKind::read_only:
    case dm::ErrorKind::pool_failed:
      return "pool_read_only";
    case dm::ErrorKind::busy:
      return "busy";
    default:
      break;
  }
  switch (e.err) {
    case ENOENT:
      return "not_found";
    case EEXIST:
      return "exists";
    case EBUSY:
      return "busy";
    case EINVAL:
    case ENXIO:
    case EXDEV:
      return "invalid_value";
    case ENOSPC:
      return "no_space";
    case EPERM:
    case EACCES:
      return "forbidden";  // e.g. a step cgroup outside stepsnap/
    case ELOOP:
    case ENOTDIR:
      return "invalid_value";
    case ESTALE:
      return "busy";
    case ESHUTDOWN:
      return "busy";
    default:
      return "internal";
  }
}

std::optional<ApiError> DaemonHandler::check_device_owner(const Request& request,
                                                          const PeerCred& peer,
                                                          const std::string& name) {
  if (is_admin(peer, self_)) return std::nullopt;
  auto d = volumes_.find(name);
  if (!d) return std::nullopt;
  return check_owner(request.op, peer, self_, d->owner_uid,
                     std::string(to_string(d->kind)) + " " + name);
}

std::optional<ApiError> DaemonHandler::check_step_cap(const PeerCred& peer) {
  std::lock_guard lock(steps_mutex_);
  auto& mine = live_steps_[peer.uid];
  std::erase_if(mine, [&](const std::array<std::string, 3>& k) {
    auto s = policy_->status(k[0], k[1], k[2]);
    if (!s) return true;
    std::string state = s->value("state", "");
    return state == "finished" || state == "failed";
  });
  if (mine.size() < limits_.max_steps_per_peer) return std::nullopt;
  return ApiError{"busy", "uid " + std::to_string(peer.uid) + " has " +
                              std::to_string(mine.size()) +
                              " steps registered and not over, the most one peer may "
                              "(--max-steps-per-peer); wait for some to finish"};
}

void DaemonHandler::count_step(const PeerCred& peer, const StepSpec& spec) {
  std::lock_guard lock(steps_mutex_);
  live_steps_[peer.uid].push_back({spec.pipeline, spec.run, spec.step});
}

tl::expected<Answer, ApiError> DaemonHandler::handle(const Request& request, const PeerCred& peer) {
  const PoolRecord& pool = volumes_.pool_record();
  const Ownership mine{.uid = peer.uid};
  auto owner_only = [&](const std::string& name) -> std::optional<ApiError> {
    return check_device_owner(request, peer, name);
  };
  auto pool_ok = [&](const std::optional<std::string>& p) { return check_pool(p, pool); };
  try {
    switch (request.op) {
      case Op::volume_create: {
        const auto& a = std::get<VolumeCreateArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        auto made = volumes_.create_volume(a.name, a.size_bytes, a.labels, mine);
        if (made && a.filesystem) {
          if (auto fs = make_filesystem("/dev/mapper/" + made->dm_name, *a.filesystem); !fs) {
            // Nothing half-made: a volume whose mkfs failed is removed again.
            Error e = fs.error();
            e.context("create volume " + a.name);
            if (auto removed = volumes_.remove(a.name, false); !removed)
              e.detail += (e.detail.empty() ? "" : "; ") +
                          std::string("the raw volume was left: ") + removed.error().message() +
                          "; delete it with volume.delete";
            return api_error(e);
          }
        }
        return answer(made);
      }
      case Op::volume_list: {
        const auto& a = std::get<VolumeListArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        auto f = paged({.kinds = {DeviceKind::volume, DeviceKind::clone}}, a.page, volumes_);
        if (!f) return api_error(f.error());
        auto pool_state = volumes_.pool_json();
        return page_answer(volumes_.list(*f), a.page, "volumes",
                           pool_state ? &*pool_state : nullptr);
      }
      case Op::volume_delete: {
        const auto& a = std::get<VolumeDeleteArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        if (auto refused = owner_only(a.name)) return tl::unexpected(*refused);
        if (auto r = volumes_.remove(a.name, false); !r) return api_error(r.error());
        return json::object();
      }
      case Op::snapshot_create: {
        const auto& a = std::get<SnapshotCreateArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        if (auto refused = owner_only(a.volume)) return tl::unexpected(*refused);
        std::optional<StepInfo> initial;
        if (a.pipeline && a.run)
          initial = StepInfo{.pipeline = *a.pipeline, .run = *a.run, .phase = Phase::initial};
        return answer(volumes_.snapshot(a.volume, a.name, a.labels, initial, mine));
      }
      case Op::snapshot_list: {
        const auto& a = std::get<SnapshotListArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        DeviceFilter f;
        f.kind = DeviceKind::snapshot;
        f.pipeline = a.pipeline;
        f.run = a.run;
        f.step = a.step;
        if (a.volume) {
          auto v = volumes_.find(*a.volume);
          if (!v) return api_error(v.error());
          f.origin_id = v->id;
        }
        auto page = paged(f, a.page, volumes_);
        if (!page) return api_error(page.error());
        return page_answer(volumes_.list(*page), a.page, "snapshots");
      }
      case Op::snapshot_show: {
        const auto& a = std::get<SnapshotShowArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        auto d = volumes_.find(a.name);
        if (!d) return api_error(d.error());
        if (d->kind != DeviceKind::snapshot) {
          return api_error(
              Error{"show snapshot", a.name, EINVAL, "it is a " + std::string(to_string(d->kind))});
        }
        // Each name by its id: never a list of the pool, which may hold
        // 100,000 snapshots.
        std::string origin;
        std::optional<std::int64_t> origin_source;  // a clone's or restore's snapshot
        if (d->origin_id) {
          if (auto o = volumes_.get(*d->origin_id)) {
            origin = o->name;
            origin_source = o->origin_id;
          }
        }
        json j = device_json(*d, origin);
        if (origin_source) {
          if (auto s = volumes_.get(*origin_source)) j["origin_snapshot"] = s->name;
        }
        // Lineage: the chain of earlier snapshots of the same origin.
        auto names = volumes_.lineage(d->id, kMaxLineage);
        if (!names) return api_error(names.error());
        json lineage = *names;
        if (!names->empty()) j["parent"] = names->front();
        j["lineage"] = lineage;  // nearest first: parent, its parent, ...
        return j;
      }
      case Op::snapshot_delete: {
        const auto& a = std::get<SnapshotDeleteArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        if (auto refused = owner_only(a.name)) return tl::unexpected(*refused);
        if (auto r = volumes_.remove(a.name, true); !r) return api_error(r.error());
        return json::object();
      }
      case Op::snapshot_send: {
        const auto& a = std::get<protocol::SnapshotSendArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        if (peer.passed_fd < 0) return no_stream_fd("snapshot.send", "write the stream to");
        auto sent = volumes_.send_snapshot(a.name, a.base, peer.passed_fd, node_name());
        if (!sent) return api_error(sent.error());
        return json{{"name", a.name},
                    {"bytes", sent->bytes},
                    {"data_blocks", sent->data_blocks},
                    {"zero_blocks", sent->zero_blocks},
                    {"block_bytes", sent->block_bytes},
                    {"incremental", sent->incremental}};
      }
      case Op::snapshot_receive: {
        const auto& a = std::get<protocol::SnapshotReceiveArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        if (peer.passed_fd < 0) return no_stream_fd("snapshot.receive", "read the stream from");
        auto got = volumes_.receive_snapshot(peer.passed_fd, a.name, mine);
        if (!got) return api_error(got.error());
        return json{{"snapshot", device_json(got->snapshot)},
                    {"bytes", got->bytes},
                    {"data_blocks", got->data_blocks},
                    {"zero_blocks", got->zero_blocks}};
      }
      case Op::snapshot_label: {
        const auto& a = std::get<SnapshotLabelArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        if (auto refused = owner_only(a.name)) return tl::unexpected(*refused);
        return answer(volumes_.label_snapshot(a.name, a.labels));
      }
      case Op::clone_create: {
        const auto& a = std::get<CloneCreateArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        // A clone holds the snapshot's data: only its owner may copy it.
        if (auto refused = owner_only(a.snapshot)) return tl::unexpected(*refused);
        return answer(volumes_.clone(a.snapshot, a.name, a.labels, DeviceKind::clone, mine));
      }
      case Op::restore: {
        const auto& a = std::get<RestoreArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        if (auto refused = owner_only(a.snapshot)) return tl::unexpected(*refused);
        return answer(volumes_.clone(a.snapshot, a.name, a.labels, DeviceKind::volume, mine));
      }
      case Op::run_clone: {
        const auto& a = std::get<RunCloneArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        return answer(run_clones_.ensure(a.pipeline, a.run, a.volume, a.snapshot, peer.uid));
      }
      case Op::run_create: {
        const auto& a = std::get<RunCreateArgs>(request.args);
        if (auto r = pool_ok(a.pool); !r) return api_error(r.error());
        auto made = volumes_.create_run(a.pipeline, a.run, a.volumes, a.sources,
                                        Ownership{.uid = peer.uid}, plan_record(a.plan));
        if (!made) return api_error(made.error());
        return run_created_json(*made);
      }
      case Op::step_register:
      case Op::step_unregister:
      case Op::step_ready:
      case Op::step_status:
      case Op::run_show:
        if (!policy_) {
          // The catalog has every step's record: reads need no tracer.
          if (request.op == Op::step_status) {
            const auto& a = std::get<StepStatusArgs>(request.args);
            return answer(records_.status(a.pipeline, a.run, a.step));
          }
          if (request.op == Op::run_show) {
            const auto& a = std::get<RunShowArgs>(request.args);
            return answer(records_.run(a.pipeline, a.run));
          }
          return tl::unexpected(ApiError{"internal",
                                         "step snapshots are off: the step tracer did not start "
                                         "(its reason is in the daemon's log); fix that and "
                                         "restart stepsnapd"});
        }
        if (request.op == Op::step_register) {
          const auto& a = std::get<StepRegisterArgs>(request.args);
          if (auto refused = check_step_cap(peer)) return tl::unexpected(*refused);
          StepSpec spec{
              .pipeline = a.pipeline,
              .run = a.run,
              .step = a.step,
              .cgroup = a.cgroup,
              .volumes = a.volumes,
              .pre_snapshot = a.policy == SnapshotPolicy::pre || a.policy == SnapshotPolicy::both,
              .post_snapshot = a.policy == SnapshotPolicy::post || a.policy == SnapshotPolicy::both,
              .command = a.command,
              .labels = a.labels,
              // A pod step outlives the connection that registered it
              // (stepsnap-csi's NodePublishVolume call): its pod's cgroup
              // is its lease.
              .connection = a.lease_connection && !a.pod_skip_containers ? peer.connection : 0,
              .pod_skip_containers = a.pod_skip_containers};
          auto registered = policy_->register_step(spec);
          if (registered) count_step(peer, spec);
          return answer(registered);
        }
        if (request.op == Op::step_unregister) {
          const auto& a = std::get<StepUnregisterArgs>(request.args);
          return answer(policy_->unregister_step(a.pipeline, a.run, a.step));
        }
        if (request.op == Op::step_status) {
          const auto& a = std::get<StepStatusArgs>(request.args);
          return answer(policy_->status(a.pipeline, a.run, a.step));
        }
        if (request.op == Op::step_ready) {
          // Blocks this connection's thread until the pre-snapshot is
          // recorded or failed: runner waits for exactly that answer.
          const auto& a = std::get<StepReadyArgs>(request.args);
          return answer(
              policy_->step_ready(a.pipeline, a.run, a.step, a.registration, peer.connection));
        }
        {
          const auto& a = std::get<RunShowArgs>(request.args);
          return answer(policy_->run(a.pipeline, a.run));
        }
      case Op::retention_set:
      case Op::retention_show:
      case Op::gc:
        return handle_retention(request);
      case Op::events_subscribe:
        break;
    }
  } catch (const std::exception& e) {
    log::error(std::string("handler: ") + e.what());
    return tl::unexpected(ApiError{"internal", std::string("internal error: ") + e.what()});
  }
  return tl::unexpected(ApiError{"bad_request", "op not handled here"});
}

tl::expected<json, ApiError> DaemonHandler::handle_retention(const Request& request) {
  if (!retention_) {
    return tl::unexpected(ApiError{"internal", "retention is off in this agent"});
  }
  if (request.op == Op::retention_show) {
    return json{{"rules", retention_->store().show()}};
  }
  if (request.op == Op::retention_set) {
    const auto& a = std::get<RetentionSetArgs>(request.args);
    const std::string pipeline = a.pipeline.value_or(kDefaultRulePipeline);
    std::optional<RetentionRule> rule;
    if (!a.clear) {
      rule = RetentionRule{.keep_runs = a.keep_runs,
                           .keep_failed_runs = a.keep_failed_runs,
                           .max_age_seconds = a.max_age_seconds,
                           .keep_labels = a.keep};
    }
    if (auto r = retention_->store().set(pipeline, rule); !r) return api_error(r.error());
    return json{{"rules", retention_->store().show()}};
  }
  const auto& a = std::get<GcArgs>(request.args);
  auto report = retention_->sweep(a.dry_run, "api", a.pipeline);
  if (!report) return api_error(report.error());
  return sweep_json(*report);
}

tl::expected<void, ApiError> DaemonHandler::subscribe(const Request&,
                                                      const EventsSubscribeArgs& args,
                                                      const PeerCred&, EventStream& stream) {
  return stream_events(events_, args, stream);
}

void DaemonHandler::connection_closed(const PeerCred& peer) {
  if (policy_) policy_->connection_closed(peer.connection);
}

}  // namespace stepsnap::agent
