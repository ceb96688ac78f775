// The rule for user-chosen names (volumes, snapshots, pipelines, runs,
// steps). One definition for the agent, its CLI and the runner.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace stepsnap {

// Labels users attach to volumes, snapshots and steps: key -> value.
using Labels = std::map<std::string, std::string>;

inline constexpr std::size_t kMaxNameLength = 63;

// [A-Za-z0-9._-]{1,63}, and never "." or "..": names end up in device-mapper
// names, cgroup directories and paths, where those two mean something else.
bool is_valid_name(std::string_view name);

// Why a name is invalid, as the end of a one-line message
// ("is empty", "is longer than 63 characters", ...); nullopt when valid.
std::optional<std::string> name_problem(std::string_view name);

// The sentence every name error ends with.
inline constexpr std::string_view kNameRule =
    "use 1-63 characters from A-Z a-z 0-9 . _ - (not \".\" or \"..\")";

}  // namespace stepsnap
