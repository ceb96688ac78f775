// Limits on the names and labels users give the agent. The name rule itself
// is shared with the runner: common/names.h.
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "common/names.h"

namespace stepsnap::agent {

using Labels = std::map<std::string, std::string>;

using stepsnap::is_valid_name;
using stepsnap::kMaxNameLength;
using stepsnap::kNameRule;
using stepsnap::name_problem;

inline constexpr std::size_t kMaxLabels = 64;
inline constexpr std::size_t kMaxLabelValueLength = 1024;

}  // namespace stepsnap::agent
