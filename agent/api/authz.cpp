#include "agent/api/authz.h"

#include <utility>

namespace stepsnap::agent {

using protocol::Op;

namespace {

// Reads are for every member: names, sizes, labels and step records are
// what the socket group is there to see. Creating is for every member too,
// and what they make is theirs. Anything that destroys or copies an
// object's data needs its owner. Steps and run clones are root's: a step
// names a cgroup the agent freezes and kills, and a run clone is what the
// next root `runner exec` of that run mounts.
constexpr std::pair<Op, Access> kTable[] = {
    {Op::volume_list, Access::member},
    {Op::snapshot_list, Access::member},
    {Op::snapshot_show, Access::member},
    {Op::step_status, Access::member},
    {Op::run_show, Access::member},
    {Op::events_subscribe, Access::member},
    {Op::volume_create, Access::member},
    {Op::volume_delete, Access::owner},
    {Op::snapshot_create, Access::owner},
    {Op::snapshot_delete, Access::owner},
    {Op::snapshot_label, Access::owner},
    {Op::clone_create, Access::owner},
    {Op::restore, Access::owner},
    {Op::step_register, Access::admin},
    {Op::step_unregister, Access::admin},
    {Op::run_clone, Access::admin},
    {Op::run_create, Access::admin},
    {Op::step_ready, Access::admin},
    // A stream carries a snapshot's data and step metadata out, or makes a
    // snapshot with any step metadata it says: root's.
    {Op::snapshot_send, Access::admin},
    {Op::snapshot_receive, Access::admin},
    // Rules are for every member to read; setting them and sweeping delete
    // every user's runs: root's.
    {Op::retention_show, Access::member},
    {Op::retention_set, Access::admin},
    {Op::gc, Access::admin},
};

std::string who(const PeerCred& peer) { return "uid " + std::to_string(peer.uid); }

ApiError forbidden(std::string message) {
  return ApiError{std::string(protocol::code::forbidden), std::move(message)};
}

}  // namespace

std::string_view to_string(Access access) {
  switch (access) {
    case Access::member:
      return "member";
    case Access::owner:
      return "owner";
    case Access::admin:
      return "admin";
  }
  return "admin";
}

Access access_for(Op op) {
  for (const auto& [o, a] : kTable)
    if (o == op) return a;
  return Access::admin;
}

bool is_admin(const PeerCred& peer, uid_t server_uid) {
  return peer.uid == 0 || peer.uid == server_uid;
}

std::optional<ApiError> check_op(Op op, const PeerCred& peer, uid_t server_uid) {
  if (access_for(op) != Access::admin || is_admin(peer, server_uid)) return std::nullopt;
  return forbidden(std::string(protocol::to_string(op)) + ": only root may do this, not " +
                   who(peer) + "; run it as root (for steps: through runner exec)");
}

std::optional<ApiError> check_owner(Op op, const PeerCred& peer, uid_t server_uid, uid_t owner_uid,
                                    const std::string& object) {
  if (is_admin(peer, server_uid) || peer.uid == owner_uid) return std::nullopt;
  return forbidden(std::string(protocol::to_string(op)) + " on " + object +
                   ": only its owner (uid " + std::to_string(owner_uid) +
                   ") or root may do this, not " + who(peer) +
                   "; ask the owner, or work on your own copy (clone.create of your own snapshot)");
}

}  // namespace stepsnap::agent
