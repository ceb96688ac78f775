// stepsnapctl's human output: aligned tables, sizes, one-line events and
// errors. Pure functions over the API's JSON, unit-tested.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace stepsnap::agent {

// Columns padded to their widest cell, two spaces apart, no trailing
// spaces; one line per row, each ending in '\n'.
std::string format_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows);

// 1536 -> "1.5K", 1073741824 -> "1.0G", 512 -> "512".
std::string human_bytes(std::uint64_t bytes);

// The result of `op` for a person: a table for lists, "key: value" lines for
// one object.
std::string format_result(const std::string& op, const nlohmann::json& result);

// One line: "42 2024-05-01T12:00:00.1Z snapshot.created name=... volume=...".
std::string format_event(const nlohmann::json& event);

// The one-line message of an error answer: "<message> [<code>]".
std::string format_error(const nlohmann::json& error);

}  // namespace stepsnap::agent
