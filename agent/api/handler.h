// agent/api/: the socket server and the handler of each protocol/ op. Uses
// protocol/ and agent/policy (and what that uses).
//
// The daemon's API handler: each op of docs/api.md over Volumes (pool +
// catalog + events) and the StepPolicy. Errors become one-line ApiErrors
// with a code a client can switch on (error_code() below).
#pragma once

#include "agent/api/api_server.h"
#include "agent/events/event_log.h"
#include "agent/volumes/run_clones.h"
#include "agent/policy/step_policy.h"
#include "agent/volumes/volumes.h"

namespace stepsnap::agent {

// The API code for an Error: dm kinds first (no_space, pool_read_only,
// busy), then errno (not_found, exists, busy, invalid_value), else internal.
std::string error_code(const Error& error);

class DaemonHandler final : public Handler {
 public:
  // policy may be null (no step tracer): step ops then fail with a clear error.
  DaemonHandler(Volumes& volumes, EventLog& events, StepPolicy* policy)
      : volumes_(volumes), events_(events), policy_(policy), run_clones_(volumes) {}

  tl::expected<nlohmann::json, ApiError> handle(const Request& request,
                                                const PeerCred& peer) override;
  tl::expected<void, ApiError> subscribe(const Request& request, const EventsSubscribeArgs& args,
                                         const PeerCred& peer, EventStream& stream) override;

 private:
  Volumes& volumes_;
  EventLog& events_;
  StepPolicy* policy_;
  RunClones run_clones_;
};

}  // namespace stepsnap::agent
