#include "csi/agent_link.h"

#include "protocol/api_client.h"

namespace stepsnap::csi {

using json = nlohmann::json;

Result<json> AgentLink::call(const std::string& op, const json& args) const {
  auto client = protocol::ApiClient::connect(socket_path_);
  if (!client) return tl::unexpected(client.error());
  return client->request(op, args);
}

Result<std::optional<json>> AgentLink::find_volume(const std::string& name, json* all) const {
  auto listed = call("volume.list", json::object());
  if (!listed) return tl::unexpected(listed.error());
  if (all) *all = *listed;
  for (const auto& v : listed->value("volumes", json::array())) {
    if (v.value("name", "") == name) return std::optional<json>(v);
  }
  return std::optional<json>();
}

Result<std::optional<json>> AgentLink::find_snapshot(const std::string& name) const {
  auto shown = call("snapshot.show", {{"name", name}});
  if (!shown) {
    // not_found: no device of that name; invalid_value: a device that is
    // not a snapshot. Either way there is no snapshot of that name.
    if (shown.error().kind == "not_found" || shown.error().kind == "invalid_value")
      return std::optional<json>();
    return tl::unexpected(shown.error());
  }
  return std::optional<json>(*shown);
}

}  // namespace stepsnap::csi
