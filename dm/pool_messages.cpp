#include "dm/pool_messages.h"

#include "dm/dm_task.h"

namespace stepsnap::dm {
namespace {
Status send(const std::string& pool, const std::string& text) {
  auto reply = message(pool, text);
  if (!reply) return tl::unexpected(reply.error());
  return {};
}
}  // namespace

Status create_thin(const std::string& pool, ThinId id) {
  return send(pool, "create_thin " + std::to_string(id));
}

Status create_snap(const std::string& pool, ThinId id, ThinId origin) {
  return send(pool, "create_snap " + std::to_string(id) + " " + std::to_string(origin));
}

Status delete_thin(const std::string& pool, ThinId id) {
  return send(pool, "delete " + std::to_string(id));
}

Status set_transaction_id(const std::string& pool, std::uint64_t current, std::uint64_t next) {
  return send(pool, "set_transaction_id " + std::to_string(current) + " " + std::to_string(next));
}

Status reserve_metadata_snap(const std::string& pool) {
  return send(pool, "reserve_metadata_snap");
}

Status release_metadata_snap(const std::string& pool) {
  return send(pool, "release_metadata_snap");
}

}  // namespace stepsnap::dm
