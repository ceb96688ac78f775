// agent/ctl/: stepsnapctl, a client of the socket API. Uses protocol/ only,
// nothing of the daemon.
//
// stepsnapctl's human output: aligned tables, sizes, one-line events and
// errors. Pure functions over the API's JSON, unit-tested.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace stepsnap::agent {

// Catalog device id -> name (from volume.list's "id" and "name"): lets the
// tables name a snapshot's origin when the answer carries only origin_id.
using DeviceNames = std::map<std::int64_t, std::string>;

// Columns padded to their widest cell, two spaces apart, no trailing
// spaces; one line per row, each ending in '\n'.
std::string format_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows);

// 1536 -> "1.5K", 1073741824 -> "1.0G", 512 -> "512".
std::string human_bytes(std::uint64_t bytes);

// 1073741824 -> "1.0G (1073741824 bytes)"; below 1024: "512 bytes".
std::string bytes_text(std::uint64_t bytes);

// 850'000'000 -> "850ms", 12'300'000'000 -> "12.3s", 245 s -> "4m05s",
// 3720 s -> "1h02m"; below a millisecond: "400us"; negative: "-".
std::string format_duration(std::int64_t ns);

// "2024-05-01T12:00:00.123456789Z" (the API's times: UTC, optional
// fraction) -> ns since 1970. Anything else (another zone, junk): nullopt.
std::optional<std::int64_t> parse_rfc3339_ns(const std::string& text);

// The device names in a volume.list result.
DeviceNames device_names(const nlohmann::json& volume_list);

// The result of `op` for a person: a table for lists, "key: value" lines for
// one object; snapshot.show and run.show have their own layouts (below).
std::string format_result(const std::string& op, const nlohmann::json& result,
                          const DeviceNames& names = {});

// snapshot.show: every field, aligned "key: value" lines, sizes in human
// units with exact bytes, times as the API gives them (RFC 3339, UTC).
std::string format_snapshot(const nlohmann::json& snapshot);

// run.show: a heading, the steps table (state, exit status, start, duration,
// pre/post snapshot names) in the order they started, then the snapshots
// table in the order they were taken, then any step errors.
std::string format_run(const nlohmann::json& run, const DeviceNames& names = {});

// One line: "42 2024-05-01T12:00:00.1Z snapshot.created name=... volume=...".
std::string format_event(const nlohmann::json& event);

// The one-line message of an error answer: "<message> [<code>]".
std::string format_error(const nlohmann::json& error);

}  // namespace stepsnap::agent
