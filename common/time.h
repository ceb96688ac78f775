// Wall-clock time as the catalog, the event log and the API carry it.
#pragma once

#include <cstdint>
#include <string>

namespace stepsnap {

// Nanoseconds since the epoch (CLOCK_REALTIME).
std::int64_t now_ns();

// "2024-05-01T12:00:00.123456789Z" (UTC, always nine fraction digits).
std::string format_rfc3339_ns(std::int64_t unix_ns);

}  // namespace stepsnap
