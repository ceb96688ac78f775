#include "agent/view/pages.h"

#include <algorithm>

#include "agent/view/html.h"
#include "agent/view/run_graph.h"

namespace stepsnap::agent {

using json = nlohmann::json;
using html::escape;
using html::link;

namespace {

std::string str(const json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

std::int64_t num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<std::int64_t>() : 0;
}

std::string run_href(const std::string& pipeline, const std::string& run) {
  return "/runs/" + html::url_segment(pipeline) + "/" + html::url_segment(run);
}

std::string snapshot_href(const std::string& name) {
  return "/snapshots/" + html::url_segment(name);
}

std::string state_cell(const std::string& state) {
  return "<td class=\"state " + escape(state) + "\">" + escape(state) + "</td>";
}

std::string snapshot_links(const json& names) {
  std::string out;
  for (const auto& n : names) {
    if (!n.is_string()) continue;
    out += (out.empty() ? "" : "<br>") + link(snapshot_href(n), n.get<std::string>());
  }
  return out.empty() ? "—" : out;
}

// Single quotes unless every character is plainly safe in a shell word.
std::string shell_word(const std::string& w) {
  bool plain = !w.empty() && std::all_of(w.begin(), w.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("/._-+=:,@").find(c) != std::string_view::npos;
  });
  if (plain) return w;
  std::string out = "'";
  for (char c : w) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string device_table(const json& devices, bool with_origin) {
  std::string t =
      "<table><tr><th>name</th><th>kind</th><th>state</th><th>size</th><th>mapped</th>"
      "<th>created</th>" +
      std::string(with_origin ? "<th>origin</th>" : "") + "<th>path</th></tr>";
  for (const auto& d : devices) {
    std::string name = str(d, "name");
    std::string kind = str(d, "kind");
    t += "<tr><td>" + (kind == "snapshot" ? link(snapshot_href(name), name) : escape(name)) +
         "</td><td>" + escape(kind) + "</td>" + state_cell(str(d, "state")) + "<td>" +
         html::bytes(num(d, "size_bytes")) + "</td><td>" +
         (d.contains("mapped_bytes") ? html::bytes(num(d, "mapped_bytes")) : "—") + "</td><td>" +
         escape(str(d, "created")) + "</td>";
    if (with_origin) t += "<td>" + escape(str(d, "origin", "—")) + "</td>";
    t += "<td><code>" + escape(str(d, "path", "—")) + "</code></td></tr>";
  }
  return t + "</table>";
}

}  // namespace

std::string restore_command(const std::string& file, const std::string& run,
                            const std::string& step) {
  return "runner pipeline run " + (file.empty() ? std::string("FILE") : shell_word(file)) +
         " --restore " + shell_word(run) + " --from-step " + shell_word(step);
}

std::string next_page_link(const std::string& href) {
  if (href.empty()) return "";
  return "<p class=\"next\"><a id=\"next-page\" href=\"" + escape(href) + "\">next page</a></p>";
}

std::string runs_page(const json& runs, const std::string& next_href) {
  std::string b = "<h1>Pipelines and runs</h1>";
  if (runs.empty()) {
    b += "<p>No runs yet. Start one with <code>runner pipeline run FILE</code>.</p>";
    return html::page("Runs", b);
  }
  b += "<table id=\"runs\"><tr><th>pipeline</th><th>run</th><th>state</th><th>started</th>"
       "<th>duration</th><th>steps</th><th>ok</th><th>failed</th><th>skipped</th>"
       "<th>restored</th><th>running</th></tr>";
  for (const auto& r : runs) {
    std::string p = str(r, "pipeline"), id = str(r, "run");
    b += "<tr><td>" + escape(p) + "</td><td>" + link(run_href(p, id), id) + "</td>" +
         state_cell(str(r, "state")) + "<td>" + escape(str(r, "started")) + "</td><td>" +
         (r.contains("duration_ns") ? html::duration(num(r, "duration_ns")) : "—") + "</td><td>" +
         std::to_string(num(r, "steps_total")) + "</td><td>" + std::to_string(num(r, "steps_ok")) +
         "</td><td>" + std::to_string(num(r, "steps_failed")) + "</td><td>" +
         std::to_string(num(r, "steps_skipped")) + "</td><td>" +
         std::to_string(num(r, "steps_restored")) + "</td><td>" +
         std::to_string(num(r, "steps_running") + num(r, "steps_pending")) + "</td></tr>";
  }
  b += "</table>" + next_page_link(next_href);
  return html::page("Runs", b);
}

std::string run_page(const json& run) {
  std::string p = str(run, "pipeline"), id = str(run, "run");
  const json& summary = run["summary"];
  std::string b = "<h1>Run " + escape(id) + " of pipeline " + escape(p) + "</h1>";
  b += "<p>State <span class=\"state " + escape(str(summary, "state")) + "\">" +
       escape(str(summary, "state")) + "</span>, started " + escape(str(summary, "started", "—")) +
       (summary.contains("duration_ns") ? ", took " + html::duration(num(summary, "duration_ns"))
                                        : std::string()) +
       ".</p>";
  b += "<h2>Steps</h2>" + run_graph_svg(run);
  b += "<table id=\"steps\"><tr><th>step</th><th>state</th><th>exit</th><th>duration</th>"
       "<th>hold</th><th>pre-snapshots</th><th>post-snapshots</th><th>command</th></tr>";
  for (const auto& s : run["steps"]) {
    std::string name = str(s, "step");
    b += "<tr id=\"step-" + escape(html::url_segment(name)) + "\"><td>" + escape(name) + "</td>" +
         state_cell(str(s, "state")) + "<td>" + escape(str(s, "exit_status", "—")) + "</td><td>" +
         (s.contains("duration_ns") ? html::duration(num(s, "duration_ns")) : "—") + "</td><td>" +
         (num(s, "held_ns") ? html::duration(num(s, "held_ns")) : "—") + "</td><td>" +
         snapshot_links(s.contains("pre_snapshots") ? s["pre_snapshots"] : json::array()) +
         "</td><td>" +
         snapshot_links(s.contains("post_snapshots") ? s["post_snapshots"] : json::array()) +
         "</td><td><code>" + escape(str(s, "command")) + "</code>" +
         (s.contains("error") ? "<br><span class=\"failed\">" + escape(str(s, "error")) + "</span>"
                              : std::string()) +
         (s.contains("because") ? "<br>depends on failed step " + escape(str(s, "because"))
                                : std::string()) +
         (s.contains("restored_from")
              ? "<br>not re-run: restored from run " + escape(str(s, "restored_from"))
              : std::string()) +
         "</td></tr>";
  }
  b += "</table>";
  b += "<h2>Restore</h2><p>Each command starts a new run whose volumes are this run's "
       "pre-snapshots of that step, and runs the pipeline from there.</p>"
       "<table id=\"restore\"><tr><th>step</th><th>command</th></tr>";
  for (const auto& s : run["steps"]) {
    if (!s.contains("pre_snapshots") || s["pre_snapshots"].empty()) continue;
    std::string file = s.contains("labels") ? str(s["labels"], "stepsnap.pipeline_file") : "";
    b += "<tr><td>" + escape(str(s, "step")) + "</td><td><code class=\"restore\">" +
         escape(restore_command(file, id, str(s, "step"))) + "</code></td></tr>";
  }
  b += "</table>";
  if (!run["metrics"].empty()) {
    b += "<h2>Metrics</h2><table id=\"metrics\"><tr><th>name</th><th>value</th></tr>";
    for (const auto& [k, v] : run["metrics"].items())
      b += "<tr><td>" + escape(k) + "</td><td>" +
           escape(v.is_string() ? v.get<std::string>() : v.dump()) + "</td></tr>";
    b += "</table>";
  }
  b += "<h2>Initial snapshots</h2>";
  b += run["initial_snapshots"].empty() ? "<p>None.</p>"
                                        : device_table(run["initial_snapshots"], false);
  b += "<h2>Run clones</h2>";
  b += run["run_clones"].empty() ? "<p>None.</p>" : device_table(run["run_clones"], false);
  return html::page("Run " + id, b);
}

std::string snapshot_page(const json& s) {
  std::string name = str(s, "name");
  std::string b = "<h1>Snapshot " + escape(name) + "</h1><table id=\"fields\">";
  auto row = [&](const std::string& k, const std::string& v_html) {
    b += "<tr><th>" + escape(k) + "</th><td>" + v_html + "</td></tr>";
  };
  row("name", escape(name));
  row("state", escape(str(s, "state")));
  if (s.contains("step")) {
    const json& st = s["step"];
    row("pipeline", escape(str(st, "pipeline")));
    row("run", link(run_href(str(st, "pipeline"), str(st, "run")), str(st, "run")));
    if (!str(st, "step").empty()) row("step", escape(str(st, "step")));
    row("phase", escape(str(st, "phase")));
    if (!str(st, "command").empty())
      row("command", "<code>" + escape(str(st, "command")) + "</code>");
    if (st.contains("exit_status")) row("exit status", escape(str(st, "exit_status")));
  }
  row("created", escape(str(s, "created")));
  row("source volume", escape(str(s, "origin", "—")));
  if (s.contains("origin_snapshot"))
    row("source volume's snapshot",
        link(snapshot_href(str(s, "origin_snapshot")), str(s, "origin_snapshot")));
  row("thin id", escape(str(s, "thin_id")));
  row("size",
      html::bytes(num(s, "size_bytes")) + " (" + std::to_string(num(s, "size_bytes")) + " bytes)");
  row("mapped", s.contains("mapped_bytes") ? html::bytes(num(s, "mapped_bytes")) + " (" +
                                                 std::to_string(num(s, "mapped_bytes")) + " bytes)"
                                           : "not measured");
  if (s.contains("mapped_bytes_added")) {
    std::int64_t added = num(s, "mapped_bytes_added");
    row("newly mapped since parent",
        (added < 0 ? "-" + html::bytes(static_cast<std::uint64_t>(-added))
                   : html::bytes(static_cast<std::uint64_t>(added))) +
            " (" + std::to_string(added) +
            " bytes; blocks the volume first wrote after the parent, a lower bound of what "
            "changed)");
  }
  row("parent",
      s.contains("parent") ? link(snapshot_href(str(s, "parent")), str(s, "parent")) : "none");
  std::string lineage;
  const json none = json::array();
  const json& lineage_names = s.contains("lineage") ? s["lineage"] : none;
  for (const auto& n : lineage_names)
    lineage += "<li>" + link(snapshot_href(n.get<std::string>()), n.get<std::string>()) + "</li>";
  row("lineage", lineage.empty() ? "none" : "<ol id=\"lineage\">" + lineage + "</ol>");
  std::string children;
  const json& made = s.contains("children") ? s["children"] : none;
  for (const auto& c : made)
    children += "<li>" + escape(str(c, "kind")) + " " + escape(str(c, "name")) + "</li>";
  row("made from it", children.empty() ? "nothing" : "<ul>" + children + "</ul>");
  row("owner uid", escape(str(s, "owner_uid")));
  if (s.contains("fault"))
    row("fault", "<span class=\"failed\">" + escape(str(s, "fault")) + "</span>");
  std::string labels;
  const json no_labels = json::object();
  const json& label_map = s.contains("labels") ? s["labels"] : no_labels;
  for (const auto& [k, v] : label_map.items())
    labels += "<tr><td>" + escape(k) + "</td><td>" +
              escape(v.is_string() ? v.get<std::string>() : v.dump()) + "</td></tr>";
  row("labels", labels.empty() ? "none" : "<table id=\"labels\">" + labels + "</table>");
  b += "</table>";
  b += "<p>Restore it as a new volume: <code>stepsnapctl restore " + escape(name) +
       " NEW-VOLUME</code></p>";
  return html::page("Snapshot " + name, b);
}

std::string pool_page(const PoolView& v) {
  std::string b = "<h1>Volumes and pool</h1>";
  const json& pool = v.pool;
  if (pool.is_null()) {
    b += "<p>The catalog has no pool yet.</p>";
  } else {
    b += "<h2>Pool " + escape(str(pool, "name")) + "</h2>";
    if (pool.contains("status")) {
      const json& st = pool["status"];
      auto meter = [&](const char* what, std::int64_t used, std::int64_t total) {
        int pct = total ? static_cast<int>(used * 100 / total) : 0;
        b += "<p>" + std::string(what) +
             ": <span class=\"meter\"><span style=\"width:" + std::to_string(pct * 3) +
             "px\"></span></span> " + std::to_string(pct) + "% (" + std::to_string(used) + " of " +
             std::to_string(total) + " blocks)</p>";
      };
      meter("data", num(st, "used_data_blocks"), num(st, "total_data_blocks"));
      meter("metadata", num(st, "used_metadata_blocks"), num(st, "total_metadata_blocks"));
      b += "<p>Mode " + escape(str(st, "mode")) +
           (st.value("needs_check", false) ? ", <span class=\"failed\">needs_check</span>" : "") +
           ". Block size " + html::bytes(num(pool, "block_bytes")) + ".</p>";
    } else {
      b += "<p>Pool status unavailable: " + escape(str(pool, "status_error")) + "</p>";
    }
    b += "<p>Thresholds: <code>pool.low_space</code> at " + std::to_string(v.low_space_percent) +
         "% of data or metadata; <code>pool.out_of_space</code> when an operation fails for "
         "lack of space.</p>";
  }
  if (v.samples.size() >= 2) {
    // Use over time: the pool.usage events the agent logs at every 0.1% move.
    const int w = 600, h = 160;
    std::int64_t t0 = num(v.samples.front(), "time_ns"), t1 = num(v.samples.back(), "time_ns");
    double span = t1 > t0 ? static_cast<double>(t1 - t0) : 1.0;
    auto path = [&](const char* key) {
      std::string d;
      for (const auto& s : v.samples) {
        double x = (static_cast<double>(num(s, "time_ns") - t0) / span) * w;
        double y = h - s.value(key, 0.0) / 100.0 * h;
        d += (d.empty() ? "M" : " L") + std::to_string(static_cast<int>(x)) + "," +
             std::to_string(static_cast<int>(y));
      }
      return d;
    };
    int thr = h - static_cast<int>(v.low_space_percent * h / 100);
    b += "<h2>Use over time</h2><svg id=\"use-chart\" width=\"" + std::to_string(w) +
         "\" height=\"" + std::to_string(h) + "\" style=\"background:#fff;border:1px solid #ccc\">";
    b += "<line x1=\"0\" x2=\"" + std::to_string(w) + "\" y1=\"" + std::to_string(thr) +
         "\" y2=\"" + std::to_string(thr) + "\" stroke=\"#b3261e\" stroke-dasharray=\"4\"/>";
    b += "<path d=\"" + path("data_percent") + "\" fill=\"none\" stroke=\"#3b6fd1\"/>";
    b += "<path d=\"" + path("metadata_percent") + "\" fill=\"none\" stroke=\"#17733a\"/>";
    b += "</svg><p>Blue: data %, green: metadata %, dashed: the low-space threshold.</p>";
  }
  b += "<h2>Space events</h2>";
  if (v.space_events.empty()) {
    b += "<p>No low- or out-of-space events in the retained log.</p>";
  } else {
    b += "<table id=\"space-events\"><tr><th>seq</th><th>time</th><th>type</th><th>data</th></tr>";
    for (const auto& e : v.space_events)
      b += "<tr><td>" + escape(str(e, "seq")) + "</td><td>" + escape(str(e, "time")) + "</td><td>" +
           escape(str(e, "type")) + "</td><td><code>" + escape(e["data"].dump()) +
           "</code></td></tr>";
    b += "</table>";
  }
  b += "<h2>Volumes and clones</h2>" + device_table(v.volumes, true) +
       next_page_link(v.volumes_next_href);
  return html::page("Volumes and pool", b);
}

std::string live_page() {
  std::string b =
      "<h1>Live events</h1><p>From <code>/events</code> (Server-Sent Events; the id of each is "
      "its sequence number, so a reconnect resumes where it stopped): <span "
      "id=\"status\">connecting</span></p><ul id=\"events\"></ul>"
      "<script src=\"/static/live.js\"></script>";
  return html::page("Live events", b);
}

std::string not_found_page(const std::string& what, const std::string& name,
                           const std::string& why) {
  std::string b = "<h1>Not found</h1><p id=\"not-found\">No " + escape(what) + " <code>" +
                  escape(name) + "</code>" + (why.empty() ? "" : ": " + escape(why)) +
                  ".</p><p><a href=\"/\">All runs</a></p>";
  return html::page("Not found", b);
}

}  // namespace stepsnap::agent
