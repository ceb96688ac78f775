// An enum's names as a table of {value, name} pairs, looked up both ways.
// For enums whose names are also parsed (wire ops, catalog columns, event
// types); an enum that is only printed uses a switch instead, so the
// compiler names any enumerator left out.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace stepsnap {

template <typename E, std::size_t N>
std::optional<E> parse_enum(std::string_view text,
                            const std::pair<E, std::string_view> (&table)[N]) {
  for (const auto& [value, name] : table)
    if (name == text) return value;
  return std::nullopt;
}

// `fallback` for a value the table does not hold (a corrupt cast).
template <typename E, std::size_t N>
std::string_view name_of(E e, const std::pair<E, std::string_view> (&table)[N],
                         std::string_view fallback = "unknown") {
  for (const auto& [value, name] : table)
    if (value == e) return name;
  return fallback;
}

}  // namespace stepsnap
