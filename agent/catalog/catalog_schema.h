// The catalog's schema as an ordered list of migrations. Migration i (0-based)
// moves the database from version i to version i+1; schema_migrations records
// each one applied. Never edit a released migration: append a new one.
#pragma once

#include <string_view>
#include <vector>

namespace stepsnap::agent {

const std::vector<std::string_view>& catalog_migrations();

}  // namespace stepsnap::agent
