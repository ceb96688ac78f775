#include "common/duration.h"

#include <charconv>

namespace stepsnap {

namespace {

constexpr std::uint64_t kMinute = 60, kHour = 3600, kDay = 86400, kWeek = 7 * 86400;
constexpr std::uint64_t kMaxSeconds = 100ull * 366 * kDay;

}  // namespace

std::optional<std::uint64_t> parse_duration_seconds(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "s")
    scale = 1;
  else if (unit == "m")
    scale = kMinute;
  else if (unit == "h")
    scale = kHour;
  else if (unit == "d")
    scale = kDay;
  else if (unit == "w")
    scale = kWeek;
  else
    return std::nullopt;
  if (n > kMaxSeconds / scale) return std::nullopt;
  return n * scale;
}

std::string format_duration_seconds(std::uint64_t seconds) {
  for (auto [scale, unit] : {std::pair{kWeek, "w"}, std::pair{kDay, "d"}, std::pair{kHour, "h"},
                             std::pair{kMinute, "m"}}) {
    if (seconds != 0 && seconds % scale == 0) return std::to_string(seconds / scale) + unit;
  }
  return std::to_string(seconds) + "s";
}

}  // namespace stepsnap
