#include "csi/agent_link.h"

#include "protocol/api_client.h"

namespace stepsnap::csi {

using json = nlohmann::json;

Result<json> AgentLink::call(const std::string& op, const json& args) const {
  auto client = protocol::ApiClient::connect(socket_path_);
  if (!client) return tl::unexpected(client.error());
  return client->request(op, args);
}

Result<json> AgentLink::list_all(const std::string& op, json args, const char* key) const {
  // stepsnapd's largest page: a pool of a few thousand devices in one call.
  args["limit"] = 10000;
  json items = json::array();
  for (;;) {
    auto page = call(op, args);
    if (!page) return tl::unexpected(page.error());
    for (auto& item : (*page)[key]) items.push_back(std::move(item));
    if (!page->contains("next_after")) return items;
    args["after"] = (*page)["next_after"];
  }
}

Result<std::optional<json>> AgentLink::find_volume(const std::string& name) const {
  auto volumes = list_all("volume.list", json::object(), "volumes");
  if (!volumes) return tl::unexpected(volumes.error());
  for (const auto& v : *volumes) {
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
