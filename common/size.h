// Sizes as people write them: "4096", "64K", "20G", "1GiB", "2TB" (binary
// multiples, B and iB optional).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace stepsnap {

// nullopt for anything else, zero, or a value that overflows 64 bits.
std::optional<std::uint64_t> parse_size(const std::string& text);

}  // namespace stepsnap
