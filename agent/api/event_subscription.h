// events.subscribe over an EventLog: the stored events after `since`, then
// (follow) every new one as it commits. Kept apart from the daemon's handler
// so that it is tested on a real event log without a pool.
#pragma once

#include "agent/api/api_server.h"
#include "agent/events/event_log.h"

namespace stepsnap::agent {

// Errors: invalid_value (since ahead of the log), events.truncated (events
// after `since` are gone; details.oldest_seq is the first still kept). The
// second can come after events were already sent: a follower that pruning
// overtook (it read slower than the log kept events) gets that error line
// instead of a silent gap or a bare end of stream.
tl::expected<void, ApiError> stream_events(EventLog& events, const EventsSubscribeArgs& args,
                                           EventStream& stream);

}  // namespace stepsnap::agent
