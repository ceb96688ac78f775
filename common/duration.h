// Durations as people write them in flags, config files and stepsnapctl:
// "90s", "45m", "12h", "7d", "2w" (one number, one unit), or plain seconds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stepsnap {

// Seconds; nullopt for anything else (empty, no digits, an unknown unit,
// more than 100 years: a typo, not a retention period).
std::optional<std::uint64_t> parse_duration_seconds(std::string_view text);

// The largest whole unit that fits: 604800 -> "7d", 5400 -> "90m", 0 -> "0s".
std::string format_duration_seconds(std::uint64_t seconds);

}  // namespace stepsnap
