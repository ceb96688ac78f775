// Who may do what over the socket (docs/security.md has the same table).
//
// Every peer that passed the socket check (root, the daemon's own uid, or a
// member of --socket-group) is one of:
//   admin   uid 0, or the daemon's own uid (an unprivileged test instance)
//   member  anyone else the socket let in
// and for an op that names an existing object, the object's owner (the uid
// recorded when it was made; 0 for what the daemon made itself).
//
// The table is data so that it is tested and documented as one thing; an op
// missing from it is admin-only (a new op is closed until someone decides).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "agent/api/api_server.h"
#include "protocol/request.h"

namespace stepsnap::agent {

enum class Access {
  member,  // any peer the socket lets in: reads, and making one's own objects
  owner,   // the named object's owner, or an admin
  admin,   // root (or the daemon's own uid) only
};
std::string_view to_string(Access access);

Access access_for(protocol::Op op);

bool is_admin(const PeerCred& peer, uid_t server_uid);

// nullopt when `peer` may use `op` at all (for Access::owner: may try it,
// the object is checked with check_owner).
std::optional<ApiError> check_op(protocol::Op op, const PeerCred& peer, uid_t server_uid);

// For Access::owner ops: nullopt when `peer` is an admin or owns the object.
// `object` names it for the message ("volume ws").
std::optional<ApiError> check_owner(protocol::Op op, const PeerCred& peer, uid_t server_uid,
                                    uid_t owner_uid, const std::string& object);

}  // namespace stepsnap::agent
