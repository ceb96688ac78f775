#include "dm/dm_error.h"

#include <array>
#include <utility>

namespace stepsnap::dm {
namespace {
constexpr std::array<std::pair<ErrorKind, std::string_view>, 9> kNames{{
    {ErrorKind::none, ""},
    {ErrorKind::out_of_data_space, "out_of_data_space"},
    {ErrorKind::out_of_metadata_space, "out_of_metadata_space"},
    {ErrorKind::needs_check, "needs_check"},
    {ErrorKind::read_only, "read_only"},
    {ErrorKind::pool_failed, "pool_failed"},
    {ErrorKind::busy, "busy"},
    {ErrorKind::stale_view, "stale_view"},
    {ErrorKind::ids_exhausted, "ids_exhausted"},
}};
}  // namespace

std::string_view to_string(ErrorKind kind) {
  for (const auto& [k, name] : kNames) {
    if (k == kind) return name;
  }
  return "";
}

ErrorKind kind_of(const Error& error) {
  for (const auto& [k, name] : kNames) {
    if (error.kind == name) return k;
  }
  return ErrorKind::none;
}

}  // namespace stepsnap::dm
