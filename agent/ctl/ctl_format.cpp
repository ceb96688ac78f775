#include "agent/ctl/ctl_format.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>

#include "common/text.h"

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

// A device's origin by name: the answer's "origin", else the name the
// volume list gives its origin_id, else "#<id>"; "-" when it has none (a
// fresh volume, or an origin since deleted).
std::string origin_text(const json& d, const DeviceNames& names) {
  if (!d.is_object()) return "-";
  if (d.contains("origin") && d["origin"].is_string()) return d["origin"].get<std::string>();
  if (d.contains("origin_id") && d["origin_id"].is_number_integer()) {
    auto id = d["origin_id"].get<std::int64_t>();
    if (auto it = names.find(id); it != names.end()) return it->second;
    return "#" + std::to_string(id);
  }
  return "-";
}

std::string devices_table(const json& list, bool snapshots, const DeviceNames& names = {}) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : list) {
    if (snapshots) {
      rows.push_back({str(d, "name"), origin_text(d, names), size_text(d), step_text(d),
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

// "2024-05-01T12:00:00.123456789Z" -> "2024-05-01T12:00:00Z" (tables).
std::string short_time(const std::string& t) {
  auto dot = t.find('.');
  if (dot == std::string::npos || t.empty() || t.back() != 'Z') return t;
  return t.substr(0, dot) + "Z";
}

std::string one_line(std::string text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<std::int64_t> integer(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<std::int64_t>();
}

// An exit status as the agent records it: the code, or 128+signal.
std::string exit_text(std::int64_t status) {
  std::string out = std::to_string(status);
  if (status > 128 && status < 128 + 65) {
    out += " (128+" + std::to_string(status - 128) + ": killed by signal " +
           std::to_string(status - 128) + ", or exit code " + std::to_string(status) + ")";
  }
  return out;
}

// "key: value" lines, values aligned; a value with '\n' continues on
// indented lines.
std::string aligned(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::size_t width = 0;
  for (const auto& [k, v] : fields) width = std::max(width, k.size() + 1);
  std::string out;
  for (const auto& [k, v] : fields) {
    std::string pad(width - k.size() - 1 + 2, ' ');
    std::string indent(width + 2, ' ');
    const std::string& value = v;
    std::string line = k + ":" + pad;
    std::size_t start = 0;
    for (;;) {
      auto nl = value.find('\n', start);
      line += value.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line + "\n";
      if (nl == std::string::npos) break;
      start = nl + 1;
      line = indent;
    }
  }
  return out;
}

// Snapshot names of a phase: the step's own list (pre_snapshots /
// post_snapshots), else those of its snapshots with that phase.
std::vector<std::string> phase_snapshots(const json& s, const std::string& phase) {
  std::vector<std::string> out;
  const std::string key = phase + "_snapshots";
  if (s.contains(key) && s[key].is_array() && !s[key].empty()) {
    for (const auto& n : s[key]) out.push_back(n.is_string() ? n.get<std::string>() : n.dump());
    return out;
  }
  if (s.contains("snapshots") && s["snapshots"].is_array()) {
    for (const auto& d : s["snapshots"]) {
      if (d.contains("step") && str(d["step"], "phase") == phase) out.push_back(str(d, "name"));
    }
  }
  return out;
}

// The step's exit status, else the one its post-snapshot recorded.
std::optional<std::int64_t> step_exit(const json& s) {
  if (auto e = integer(s, "exit_status")) return e;
  if (s.contains("snapshots") && s["snapshots"].is_array()) {
    for (const auto& d : s["snapshots"]) {
      if (!d.contains("step")) continue;
      if (str(d["step"], "phase") != "post") continue;
      if (auto e = integer(d["step"], "exit_status")) return e;
    }
  }
  return std::nullopt;
}

// When a step began, for ordering: started, else registered, else its
// earliest snapshot (all RFC 3339 UTC with nanoseconds, so they sort as text).
std::string step_order_key(const json& s) {
  if (s.contains("started") && s["started"].is_string()) return s["started"];
  if (s.contains("registered") && s["registered"].is_string()) return s["registered"];
  std::string first = "~";
  if (s.contains("snapshots") && s["snapshots"].is_array()) {
    for (const auto& d : s["snapshots"]) first = std::min(first, str(d, "created", "~"));
  }
  return first;
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

std::string bytes_text(std::uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  return human_bytes(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

std::string format_duration(std::int64_t ns) {
  if (ns < 0) return "-";
  constexpr std::int64_t kMs = 1'000'000, kS = 1'000'000'000;
  char buf[32];
  if (ns < kMs) {
    std::snprintf(buf, sizeof buf, "%lldus", static_cast<long long>(ns / 1000));
  } else if (ns < kS) {
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ns / kMs));
  } else if (ns < 60 * kS) {
    long long tenths = ns / (kS / 10);
    std::snprintf(buf, sizeof buf, "%lld.%llds", tenths / 10, tenths % 10);
  } else if (ns < 3600 * kS) {
    long long s = ns / kS;
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    long long m = ns / (60 * kS);
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", m / 60, m % 60);
  }
  return buf;
}

std::optional<std::int64_t> parse_rfc3339_ns(const std::string& t) {
  // YYYY-MM-DDTHH:MM:SS[.fraction]Z
  auto digits = [&](std::size_t at, std::size_t n) -> std::optional<int> {
    if (at + n > t.size()) return std::nullopt;
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return std::nullopt;
      v = v * 10 + (t[i] - '0');
    }
    return v;
  };
  if (t.size() < 20 || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') ||
      t[13] != ':' || t[16] != ':') {
    return std::nullopt;
  }
  auto year = digits(0, 4), mon = digits(5, 2), day = digits(8, 2), hour = digits(11, 2),
       min = digits(14, 2), sec = digits(17, 2);
  if (!year || !mon || !day || !hour || !min || !sec || *mon < 1 || *mon > 12 || *day < 1 ||
      *day > 31 || *hour > 23 || *min > 59 || *sec > 60) {
    return std::nullopt;
  }
  std::size_t i = 19;
  std::int64_t frac = 0;
  if (i < t.size() && t[i] == '.') {
    ++i;
    std::size_t n = 0;
    for (; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i, ++n) {
      if (n < 9) frac = frac * 10 + (t[i] - '0');
    }
    if (n == 0) return std::nullopt;
    for (; n < 9; ++n) frac *= 10;
  }
  if (i + 1 != t.size() || (t[i] != 'Z' && t[i] != 'z')) return std::nullopt;
  tm utc{};
  utc.tm_year = *year - 1900;
  utc.tm_mon = *mon - 1;
  utc.tm_mday = *day;
  utc.tm_hour = *hour;
  utc.tm_min = *min;
  utc.tm_sec = *sec;
  time_t secs = timegm(&utc);
  return static_cast<std::int64_t>(secs) * 1'000'000'000 + frac;
}

DeviceNames device_names(const json& volume_list) {
  DeviceNames out;
  if (!volume_list.is_object() || !volume_list.contains("volumes") ||
      !volume_list["volumes"].is_array()) {
    return out;
  }
  for (const auto& d : volume_list["volumes"]) {
    if (auto id = integer(d, "id"); id && d.contains("name") && d["name"].is_string()) {
      out[*id] = d["name"].get<std::string>();
    }
  }
  return out;
}

std::string format_snapshot(const json& d) {
  std::vector<std::pair<std::string, std::string>> f;
  std::set<std::string> shown = {"name",      "kind",       "state",          "fault",
                                 "step",      "created",    "origin",         "origin_id",
                                 "thin_id",   "size_bytes", "mapped_bytes",   "parent",
                                 "parent_id", "lineage",    "labels",         "id",
                                 "dm_name",   "path",       "origin_snapshot"};
  f.emplace_back("name", str(d, "name"));
  if (str(d, "kind") != "snapshot") f.emplace_back("kind", str(d, "kind"));
  f.emplace_back("state", str(d, "state"));
  if (d.contains("fault")) f.emplace_back("fault", str(d, "fault"));
  if (d.contains("step") && d["step"].is_object()) {
    const json& s = d["step"];
    const std::string phase = str(s, "phase");
    f.emplace_back("pipeline", str(s, "pipeline"));
    f.emplace_back("run", str(s, "run"));
    if (phase == "initial") {
      // A run's starting state, taken before any of its steps.
      f.emplace_back("step", "- (the run's initial snapshot, before its first step)");
    } else {
      f.emplace_back("step", str(s, "step"));
    }
    f.emplace_back("phase", phase);
    std::string command = str(s, "command", "");
    f.emplace_back("command", command.empty() ? "-" : one_line(command));
    if (auto e = integer(s, "exit_status")) {
      f.emplace_back("exit status", exit_text(*e));
    } else {
      f.emplace_back("exit status", phase == "post"      ? "- (not known)"
                                    : phase == "initial" ? "-"
                                                         : "- (taken before the step ran)");
    }
  } else {
    f.emplace_back("step", "- (not a step snapshot: taken by snapshot.create)");
  }
  f.emplace_back("created", str(d, "created") + " (UTC)");
  std::string source = origin_text(d, {});
  if (auto oid = integer(d, "origin_id")) {
    source += source.rfind('#', 0) == 0 ? "" : " (device id " + std::to_string(*oid) + ")";
  } else {
    source = "- (the origin was deleted)";
  }
  f.emplace_back("source volume", source);
  if (d.contains("origin_snapshot")) {
    f.emplace_back("cloned from",
                   str(d, "origin_snapshot") + " (the snapshot the source volume was made from)");
  }
  f.emplace_back("thin id", str(d, "thin_id"));
  if (auto size = integer(d, "size_bytes"); size && *size >= 0) {
    f.emplace_back("size", bytes_text(static_cast<std::uint64_t>(*size)));
  } else {
    f.emplace_back("size", "-");
  }
  if (auto mapped = integer(d, "mapped_bytes"); mapped && *mapped >= 0) {
    f.emplace_back("mapped", bytes_text(static_cast<std::uint64_t>(*mapped)));
  } else {
    f.emplace_back("mapped", "- (not measured)");
  }
  if (d.contains("parent") && d["parent"].is_string()) {
    f.emplace_back("parent", str(d, "parent"));
  } else if (auto pid = integer(d, "parent_id")) {
    f.emplace_back("parent", "#" + std::to_string(*pid));
  } else {
    f.emplace_back("parent", "- (no earlier snapshot of this origin)");
  }
  std::vector<std::string> lineage;
  if (d.contains("lineage") && d["lineage"].is_array()) {
    for (const auto& n : d["lineage"])
      lineage.push_back(n.is_string() ? n.get<std::string>() : n.dump());
  }
  f.emplace_back("lineage", lineage.empty() ? "-" : join(lineage, "\n"));
  std::vector<std::string> labels;
  if (d.contains("labels") && d["labels"].is_object()) {
    for (auto it = d["labels"].begin(); it != d["labels"].end(); ++it) {
      labels.push_back(
          it.key() + "=" +
          (it.value().is_string() ? it.value().get<std::string>() : it.value().dump()));
    }
  }
  f.emplace_back("labels", labels.empty() ? "-" : join(labels, "\n"));
  if (d.contains("path")) f.emplace_back("device", str(d, "path"));
  // Whatever else the agent sends (newer agents), as it comes.
  if (d.is_object()) {
    for (auto it = d.begin(); it != d.end(); ++it) {
      if (shown.count(it.key())) continue;
      f.emplace_back(it.key(),
                     it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
    }
  }
  std::string out = aligned(f);
  if (!lineage.empty()) {
    out += "(lineage: the earlier snapshots of the same volume, nearest first)\n";
  }
  return out;
}

std::string format_run(const json& r, const DeviceNames& names) {
  std::vector<const json*> steps;
  if (r.contains("steps") && r["steps"].is_array()) {
    for (const auto& s : r["steps"]) steps.push_back(&s);
  }
  std::stable_sort(steps.begin(), steps.end(), [](const json* a, const json* b) {
    return step_order_key(*a) < step_order_key(*b);
  });
  std::vector<std::vector<std::string>> rows;
  std::vector<const json*> snaps;
  std::vector<std::string> notes;
  bool unknown = false;
  for (const json* sp : steps) {
    const json& s = *sp;
    std::string duration = "-";
    if (s.contains("started") && s.contains("finished")) {
      auto a = parse_rfc3339_ns(str(s, "started")), b = parse_rfc3339_ns(str(s, "finished"));
      if (a && b) duration = format_duration(*b - *a);
    }
    std::string held = "-";
    if (auto h = integer(s, "held_ns"); h && *h > 0) held = format_duration(*h);
    auto exit = step_exit(s);
    auto pre = phase_snapshots(s, "pre"), post = phase_snapshots(s, "post");
    rows.push_back({str(s, "step"), str(s, "state"), exit ? std::to_string(*exit) : "-",
                    s.contains("started") ? short_time(str(s, "started")) : "-", duration, held,
                    pre.empty() ? "-" : join(pre, ","), post.empty() ? "-" : join(post, ",")});
    if (s.contains("snapshots") && s["snapshots"].is_array()) {
      for (const auto& d : s["snapshots"]) snaps.push_back(&d);
    }
    if (s.contains("error")) notes.push_back("step " + str(s, "step") + ": " + str(s, "error"));
    unknown = unknown || str(s, "state") == "unknown";
  }
  std::stable_sort(snaps.begin(), snaps.end(), [](const json* a, const json* b) {
    return str(*a, "created") < str(*b, "created");
  });
  std::vector<std::vector<std::string>> snap_rows;
  for (const json* dp : snaps) {
    const json& d = *dp;
    const json step = d.contains("step") ? d["step"] : json::object();
    auto e = integer(step, "exit_status");
    snap_rows.push_back({str(d, "name"), str(step, "step"), str(step, "phase"),
                         origin_text(d, names), size_text(d), e ? std::to_string(*e) : "-",
                         short_time(str(d, "created"))});
  }
  std::string out = "run " + str(r, "pipeline") + "/" + str(r, "run") + ": " +
                    std::to_string(steps.size()) + (steps.size() == 1 ? " step, " : " steps, ") +
                    std::to_string(snaps.size()) +
                    (snaps.size() == 1 ? " snapshot" : " snapshots") + " (times in UTC)\n\n";
  out +=
      format_table({"STEP", "STATE", "EXIT", "STARTED", "DURATION", "HELD", "PRE", "POST"}, rows);
  if (!snap_rows.empty()) {
    out += "\n" + format_table({"SNAPSHOT", "STEP", "PHASE", "VOLUME", "SIZE", "EXIT", "CREATED"},
                               snap_rows);
  }
  // A notebook's pipeline-metrics, with the step that recorded each.
  std::vector<std::vector<std::string>> metric_rows;
  for (const json* sp : steps) {
    if (!sp->contains("metrics") || !(*sp)["metrics"].is_object()) continue;
    for (const auto& [name, value] : (*sp)["metrics"].items())
      metric_rows.push_back(
          {name, value.is_string() ? value.get<std::string>() : value.dump(), str(*sp, "step")});
  }
  if (!metric_rows.empty()) out += "\n" + format_table({"METRIC", "VALUE", "STEP"}, metric_rows);
  if (!notes.empty() || unknown) out += "\n";
  for (const auto& n : notes) out += "error: " + one_line(n) + "\n";
  if (unknown) {
    out +=
        "state unknown: the catalog has no record of the step itself, only its "
        "snapshots\n";
  }
  return out;
}

std::string format_result(const std::string& op, const json& r, const DeviceNames& names) {
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
  if (op == "snapshot.list" && r.contains("snapshots")) {
    return devices_table(r["snapshots"], true, names);
  }
  if (op == "snapshot.show" && r.is_object() && r.contains("name")) return format_snapshot(r);
  if (op == "run.show" && r.contains("steps")) return format_run(r, names);
  if (r.is_object() && r.empty()) return "ok\n";
  if (!r.is_object()) return r.dump() + "\n";
  std::string out = key_values(r);
  if (r.contains("snapshots") && r["snapshots"].is_array() && !r["snapshots"].empty()) {
    out += "\n" + devices_table(r["snapshots"], true, names);
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
