// A device's JSON written as text straight from its record, and a page of a
// list answer made of them: the bytes nlohmann's dump() gives for
// device_json() and the list's object, without building those values. At a
// page of 1,000 snapshots, building and dumping the values was most of the
// agent's time for the answer (docs/benchmarks.md, scale).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/catalog/catalog.h"

namespace stepsnap::agent {

// Appends device_json(device, origin_name).dump() to out. A string that is
// not valid UTF-8 (nothing the API lets in makes one) falls back to that
// very dump, with the same replacement it does.
void append_device_json(std::string& out, const DeviceRecord& device,
                        const std::string& origin_name = {});

// Appends s as a JSON string, as nlohmann's dump() writes it (no ASCII
// escaping, \u00xx for other control characters). false, and out
// unchanged, when s is not valid UTF-8.
bool append_json_string(std::string& out, std::string_view s);

// The text of a page of a list op: {"next_after":..., "pool":..., key:[...]}
// with the members present, in nlohmann's (sorted) key order; the bytes of
// the same object built as JSON and dumped.
std::string device_page_text(const std::vector<DeviceRecord>& devices, std::string_view key,
                             const std::optional<std::string>& next_after,
                             const nlohmann::json* pool = nullptr);

}  // namespace stepsnap::agent
