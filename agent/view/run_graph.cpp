#include "agent/view/run_graph.h"

#include <algorithm>
#include <map>
#include <vector>

#include "agent/view/html.h"

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

constexpr int kBoxW = 150, kBoxH = 40, kColGap = 60, kRowGap = 20, kPad = 10;

const char* fill_of(const json& step) {
  std::string state = step.value("state", "");
  if (state == "failed") return "#f4c7c3";
  if (state == "finished") {
    auto s = step.find("exit_status");
    if (s != step.end() && s->is_number() && s->get<int>() != 0) return "#f4c7c3";
    return "#c8e6c9";
  }
  if (state == "unknown" || state == "skipped" || state == "pending") return "#e0e0e0";
  if (state == "restored") return "#cfe0f7";
  return "#ffe7a3";  // registered, holding, running, finishing
}

}  // namespace

std::string run_graph_svg(const json& run) {
  std::vector<std::string> names;
  std::map<std::string, const json*> by_name;
  for (const auto& s : run["steps"]) {
    names.push_back(s.value("step", ""));
    by_name[names.back()] = &s;
  }
  // Depth: 0 for a step with no known dependency, else 1 + its deepest one.
  // Bounded by the number of steps, so a cycle in bad labels can not loop.
  std::map<std::string, int> depth;
  for (const auto& n : names) depth[n] = 0;
  for (std::size_t round = 0; round < names.size(); ++round) {
    bool moved = false;
    for (const auto& n : names) {
      for (const auto& dep : by_name[n]->value("after", json::array())) {
        if (!dep.is_string() || !depth.count(dep.get<std::string>())) continue;
        int want = depth[dep.get<std::string>()] + 1;
        if (want > depth[n] && want <= static_cast<int>(names.size())) {
          depth[n] = want;
          moved = true;
        }
      }
    }
    if (!moved) break;
  }
  std::map<int, int> rows;
  std::map<std::string, std::pair<int, int>> pos;  // top-left of each box
  int width = 0, height = 0;
  for (const auto& n : names) {
    int col = depth[n], row = rows[col]++;
    int x = kPad + col * (kBoxW + kColGap), y = kPad + row * (kBoxH + kRowGap);
    pos[n] = {x, y};
    width = std::max(width, x + kBoxW + kPad);
    height = std::max(height, y + kBoxH + kPad);
  }
  std::string svg = "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    std::to_string(width) + "\" height=\"" + std::to_string(height) +
                    "\" role=\"img\" aria-label=\"step graph\">"
                    "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" "
                    "markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\">"
                    "<path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>";
  for (const auto& n : names) {
    for (const auto& dep : by_name[n]->value("after", json::array())) {
      if (!dep.is_string() || !pos.count(dep.get<std::string>())) continue;
      auto [fx, fy] = pos[dep.get<std::string>()];
      auto [tx, ty] = pos[n];
      svg += "<line class=\"edge\" data-from=\"" + html::escape(dep.get<std::string>()) +
             "\" data-to=\"" + html::escape(n) + "\" x1=\"" + std::to_string(fx + kBoxW) +
             "\" y1=\"" + std::to_string(fy + kBoxH / 2) + "\" x2=\"" + std::to_string(tx) +
             "\" y2=\"" + std::to_string(ty + kBoxH / 2) +
             "\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>";
    }
  }
  for (const auto& n : names) {
    const json& s = *by_name[n];
    auto [x, y] = pos[n];
    std::string state = s.value("state", "");
    std::string sub = state;
    if (s.contains("exit_status") && s["exit_status"].is_number())
      sub += " · exit " + std::to_string(s["exit_status"].get<int>());
    svg += "<a href=\"#step-" + html::escape(html::url_segment(n)) + "\"><g class=\"step\">";
    svg += "<rect x=\"" + std::to_string(x) + "\" y=\"" + std::to_string(y) + "\" width=\"" +
           std::to_string(kBoxW) + "\" height=\"" + std::to_string(kBoxH) + "\" rx=\"6\" fill=\"" +
           fill_of(s) + "\" stroke=\"#555\"/>";
    svg += "<text x=\"" + std::to_string(x + 8) + "\" y=\"" + std::to_string(y + 16) +
           "\" font-weight=\"bold\">" + html::escape(n.substr(0, 20)) + "</text>";
    svg += "<text x=\"" + std::to_string(x + 8) + "\" y=\"" + std::to_string(y + 32) + "\">" +
           html::escape(sub) + "</text></g></a>";
  }
  svg += "</svg>";
  return svg;
}

}  // namespace stepsnap::agent
