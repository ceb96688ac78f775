#include "agent/ctl_format.h"

#include <algorithm>
#include <cstdio>

namespace stepsnap::agent {

using json = nlohmann::json;

namespace {

std::string str(const json& j, const char* key, const std::string& dflt = "-") {
  if (!j.is_object()) return dflt;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

std::string labels_text(const json& d) {
  std::string out;
  if (d.is_object() && d.contains("labels") && d["labels"].is_object()) {
    for (auto it = d["labels"].begin(); it != d["labels"].end(); ++it) {
      out += (out.empty() ? "" : ",") + it.key() + "=" +
             (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
    }
  }
  return out.empty() ? "-" : out;
}

std::string size_text(const json& d) {
  if (d.is_object() && d.contains("size_bytes") && d["size_bytes"].is_number_integer() &&
      d["size_bytes"].get<std::int64_t>() >= 0) {
    return human_bytes(d["size_bytes"].get<std::uint64_t>());
  }
  return "-";
}

std::string step_text(const json& d) {
  if (!d.is_object() || !d.contains("step") || !d["step"].is_object()) return "-";
  const json& s = d["step"];
  return str(s, "pipeline") + "/" + str(s, "run") + "/" + str(s, "step");
}

std::string devices_table(const json& list, bool snapshots) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : list) {
    if (snapshots) {
      rows.push_back({str(d, "name"), str(d, "origin_id"), size_text(d), step_text(d),
                      d.contains("step") ? str(d["step"], "phase") : "-",
                      d.contains("step") ? str(d["step"], "exit_status") : "-", str(d, "created"),
                      labels_text(d)});
    } else {
      rows.push_back({str(d, "name"), str(d, "kind"), size_text(d), str(d, "state"), str(d, "path"),
                      labels_text(d)});
    }
  }
  if (snapshots) {
    return format_table({"NAME", "ORIGIN", "SIZE", "STEP", "PHASE", "EXIT", "CREATED", "LABELS"},
                        rows);
  }
  return format_table({"NAME", "KIND", "SIZE", "STATE", "DEVICE", "LABELS"}, rows);
}

std::string key_values(const json& obj) {
  std::string out;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const json& v = it.value();
    if (it.key() == "snapshots" && v.is_array()) continue;  // shown as a table
    std::string text;
    if (v.is_string()) {
      text = v.get<std::string>();
    } else if (it.key() == "size_bytes" && v.is_number_unsigned()) {
      text = human_bytes(v.get<std::uint64_t>()) + " (" + v.dump() + " bytes)";
    } else {
      text = v.dump();
    }
    out += it.key() + ": " + text + "\n";
  }
  return out;
}

}  // namespace

std::string format_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(headers.size(), 0);
  for (std::size_t c = 0; c < headers.size(); ++c) width[c] = headers[c].size();
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t c = 0; c < width.size(); ++c) {
      std::string cell = c < cells.size() ? cells[c] : "";
      out += cell;
      if (c + 1 < width.size()) out += std::string(width[c] - cell.size() + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(headers);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string human_bytes(std::uint64_t bytes) {
  static const char* units = "KMGTPE";
  if (bytes < 1024) return std::to_string(bytes);
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%c", v, units[u]);
  return buf;
}

std::string format_result(const std::string& op, const json& r) {
  if (op == "volume.list" && r.contains("volumes")) {
    std::string out = devices_table(r["volumes"], false);
    if (r.contains("pool") && r["pool"].is_object()) {
      const json& p = r["pool"];
      auto pct = [&](const char* used, const char* total) {
        if (!p.contains(used) || !p.contains(total) || !p[total].is_number() ||
            p[total].get<double>() == 0) {
          return std::string("-");
        }
        return std::to_string(
                   static_cast<int>(p[used].get<double>() * 100 / p[total].get<double>())) +
               "%";
      };
      out += "pool " + str(p, "name") + ": " + str(p, "mode") + ", data " +
             pct("used_data_blocks", "total_data_blocks") + " used, metadata " +
             pct("used_metadata_blocks", "total_metadata_blocks") + " used\n";
    }
    return out;
  }
  if (op == "snapshot.list" && r.contains("snapshots")) return devices_table(r["snapshots"], true);
  if (op == "run.show" && r.contains("steps")) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : r["steps"]) {
      std::size_t pre = 0, post = 0;
      if (s.contains("snapshots")) {
        for (const auto& d : s["snapshots"]) {
          std::string phase = d.contains("step") ? str(d["step"], "phase") : "";
          pre += phase == "pre";
          post += phase == "post";
        }
      }
      rows.push_back({str(s, "step"), str(s, "state"), str(s, "exit_status"), str(s, "started"),
                      std::to_string(pre), std::to_string(post)});
    }
    return "run " + str(r, "pipeline") + "/" + str(r, "run") + "\n" +
           format_table({"STEP", "STATE", "EXIT", "STARTED", "PRE", "POST"}, rows);
  }
  if (r.is_object() && r.empty()) return "ok\n";
  if (!r.is_object()) return r.dump() + "\n";
  std::string out = key_values(r);
  if (r.contains("snapshots") && r["snapshots"].is_array() && !r["snapshots"].empty()) {
    out += "\n" + devices_table(r["snapshots"], true);
  }
  return out;
}

std::string format_event(const json& e) {
  std::string out = str(e, "seq") + " " + str(e, "time") + " " + str(e, "type");
  if (e.contains("data") && e["data"].is_object()) {
    for (auto it = e["data"].begin(); it != e["data"].end(); ++it) {
      const json& v = it.value();
      if (v.is_object() || (v.is_array() && !v.empty() && v.front().is_object())) {
        if (it.key() == "step" && v.is_object()) {
          out += " step=" + str(v, "pipeline") + "/" + str(v, "run") + "/" + str(v, "step");
          if (v.contains("phase")) out += " phase=" + str(v, "phase");
        }
        continue;
      }
      out += " " + it.key() + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
    }
  }
  return out;
}

std::string format_error(const json& error) {
  std::string message = str(error, "message", "unknown error");
  std::string code = str(error, "code", "");
  std::replace(message.begin(), message.end(), '\n', ' ');
  return code.empty() ? message : message + " [" + code + "]";
}

}  // namespace stepsnap::agent
