// A run's step graph as inline SVG: one box per step, coloured by state,
// an arrow from each dependency (a step's `after` list), laid out in
// columns by depth. Pure; every name in it is escaped.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace stepsnap::agent {

// run: the view's run JSON (steps with step, state, exit_status, after).
std::string run_graph_svg(const nlohmann::json& run);

}  // namespace stepsnap::agent
