// agent/api/: the socket server and the handler of each protocol/ op. Uses
// protocol/ and agent/policy (and what that uses).
//
// The daemon's API handler: each op of docs/api.md over Volumes (pool +
// catalog + events) and the StepPolicy. Errors become one-line ApiErrors
// with a code a client can switch on (error_code() below).
#pragma once

#include <unistd.h>

#include <array>
#include <map>
#include <mutex>

#include "agent/api/api_server.h"
#include "agent/events/event_log.h"
#include "agent/policy/step_policy.h"
#include "agent/retention/retention_sweep.h"
#include "agent/volumes/run_clones.h"
#include "agent/volumes/volumes.h"

namespace stepsnap::agent {

// The API code for an Error: dm kinds first (no_space, pool_read_only,
// busy), then errno (not_found, exists, busy, invalid_value), else internal.
std::string error_code(const Error& error);

struct HandlerLimits {
  // Steps one uid may have registered and not yet over (finished or
  // failed); one more is `busy`. Bounds what a runaway client can make the
  // tracer watch.
  std::size_t max_steps_per_peer = 256;
};

class DaemonHandler final : public Handler {
 public:
  // policy may be null (no step tracer): step.register and step.unregister
  // then fail with a clear error; step.status and run.show answer from the
  // catalog.
  // retention may be null too: retention.* and gc then fail.
  DaemonHandler(Volumes& volumes, EventLog& events, StepPolicy* policy, HandlerLimits limits = {},
                RetentionSweeper* retention = nullptr)
      : volumes_(volumes),
        events_(events),
        policy_(policy),
        run_clones_(volumes),
        records_(volumes, volumes.catalog()),
        limits_(limits),
        retention_(retention) {}

  tl::expected<Answer, ApiError> handle(const Request& request, const PeerCred& peer) override;
  tl::expected<void, ApiError> subscribe(const Request& request, const EventsSubscribeArgs& args,
                                         const PeerCred& peer, EventStream& stream) override;
  // Registrations leased to that connection whose cgroup is still empty
  // expire (StepPolicy::connection_closed).
  void connection_closed(const PeerCred& peer) override;

 private:
  Volumes& volumes_;
  EventLog& events_;
  // Refuses when peer is neither an admin nor the owner of device `name`
  // (authz.h). A name that is not found passes: the op itself then answers
  // not_found.
  std::optional<ApiError> check_device_owner(const Request& request, const PeerCred& peer,
                                             const std::string& name);
  // The registration cap of HandlerLimits: forgets steps that are over,
  // then refuses when peer still has the maximum.
  std::optional<ApiError> check_step_cap(const PeerCred& peer);
  void count_step(const PeerCred& peer, const StepSpec& spec);
  // retention.set, retention.show and gc.
  tl::expected<nlohmann::json, ApiError> handle_retention(const Request& request);

  StepPolicy* policy_;
  RunClones run_clones_;
  StepRecords records_;  // step reads when there is no policy
  HandlerLimits limits_;
  RetentionSweeper* retention_;
  const uid_t self_ = ::geteuid();
  std::mutex steps_mutex_;
  // Per uid: the steps it registered that were not over when last looked at.
  std::map<uid_t, std::vector<std::array<std::string, 3>>> live_steps_;
};

}  // namespace stepsnap::agent
