// stepsnap-csi's way to stepsnapd: one socket connection per call (the
// daemon serialises pool work itself; a fresh connection never carries a
// half-read answer of an earlier failed call), and the device lookups the
// services share.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/error.h"

namespace stepsnap::csi {

class AgentLink {
 public:
  explicit AgentLink(std::string socket_path) : socket_path_(std::move(socket_path)) {}

  // The op's result, or an Error whose kind is stepsnapd's code (empty when
  // stepsnapd did not answer at all).
  Result<nlohmann::json> call(const std::string& op, const nlohmann::json& args) const;

  // Every item of a paged list op (volume.list, snapshot.list): the
  // array under `key` of each page, following next_after to the last.
  Result<nlohmann::json> list_all(const std::string& op, nlohmann::json args,
                                  const char* key) const;

  // A volume or clone by name from volume.list (nullopt: none of that name).
  Result<std::optional<nlohmann::json>> find_volume(const std::string& name) const;
  // A snapshot by name from snapshot.show (nullopt: no such snapshot; a
  // device of that name that is not a snapshot is also nullopt).
  Result<std::optional<nlohmann::json>> find_snapshot(const std::string& name) const;

  const std::string& socket_path() const { return socket_path_; }

 private:
  std::string socket_path_;
};

}  // namespace stepsnap::csi
