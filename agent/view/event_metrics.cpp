#include "agent/view/event_metrics.h"

#include <cstdio>

namespace stepsnap::agent {

namespace {

std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// Label values here are our own words (phases, ops, states), but escape them
// as the format asks anyway.
std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

void Histogram::observe(double seconds) {
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) ++counts_[i];
  }
  ++count_;
  sum_ += seconds;
}

void Histogram::write(std::string& out, const std::string& name) const {
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    out += name + "_bucket{le=\"" + number(kBounds[i]) + "\"} " + std::to_string(counts_[i]) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

void EventMetrics::feed(const Event& e) {
  std::lock_guard lock(mutex_);
  if (e.seq <= last_seq_) return;  // fed once, in order
  last_seq_ = e.seq;
  ++events_;
  ++by_type_[std::string(to_string(e.type))];
  const auto& d = e.data;
  switch (e.type) {
    case EventType::snapshot_created: {
      std::string phase = "manual";
      if (d.contains("step") && d["step"].is_object()) phase = d["step"].value("phase", "manual");
      ++snapshots_[phase];
      if (d.contains("pause_ns") && d["pause_ns"].is_number())
        pause_.observe(d["pause_ns"].get<double>() / 1e9);
      break;
    }
    case EventType::clone_created:
      ++clones_;
      if (d.contains("run_clone")) ++run_clones_;
      break;
    case EventType::step_started:
      ++steps_started_;
      if (d.contains("held_ns") && d["held_ns"].is_number() && d["held_ns"].get<double>() > 0)
        hold_.observe(d["held_ns"].get<double>() / 1e9);
      break;
    case EventType::step_finished: {
      std::string state = d.value("state", "finished");
      if (state == "finished" && d.contains("exit_status") && d["exit_status"].is_number() &&
          d["exit_status"].get<int>() != 0)
        state = "exited_nonzero";
      ++steps_finished_[state];
      break;
    }
    case EventType::error:
      if (d.contains("op") && d["op"].is_string()) ++failures_[d["op"].get<std::string>()];
      break;
    case EventType::pool_out_of_space:
      if (d.contains("op") && d["op"].is_string()) ++failures_[d["op"].get<std::string>()];
      break;
    case EventType::events_lost:
      if (d.value("source", "") == "bpf" && d.contains("count") && d["count"].is_number())
        tracer_lost_ += d["count"].get<std::uint64_t>();
      break;
    default:
      break;
  }
}

std::uint64_t EventMetrics::last_seq() const {
  std::lock_guard lock(mutex_);
  return last_seq_;
}

std::string EventMetrics::text() const {
  std::lock_guard lock(mutex_);
  std::string out;
  header(out, "stepsnap_events_published_total", "counter",
         "Events committed to the event log (read by the view).");
  out += "stepsnap_events_published_total " + std::to_string(events_) + "\n";
  header(out, "stepsnap_events_last_seq", "gauge", "Sequence number of the newest event.");
  out += "stepsnap_events_last_seq " + std::to_string(last_seq_) + "\n";
  header(out, "stepsnap_events_by_type_total", "counter", "Events committed, by type.");
  for (const auto& [t, n] : by_type_)
    out += "stepsnap_events_by_type_total{type=\"" + label_value(t) + "\"} " + std::to_string(n) +
           "\n";
  header(out, "stepsnap_snapshots_created_total", "counter",
         "Snapshots created, by phase (initial, pre, post, manual).");
  for (const char* phase : {"initial", "pre", "post", "manual"}) {
    auto it = snapshots_.find(phase);
    out += std::string("stepsnap_snapshots_created_total{phase=\"") + phase + "\"} " +
           std::to_string(it == snapshots_.end() ? 0 : it->second) + "\n";
  }
  header(out, "stepsnap_clones_created_total", "counter", "Clones created (run clones included).");
  out += "stepsnap_clones_created_total " + std::to_string(clones_) + "\n";
  header(out, "stepsnap_operation_failures_total", "counter",
         "Failures the agent reported as events, by operation (step.pre_snapshot, "
         "step.post_snapshot, step.hold, snapshot and clone on a full pool, ...).");
  for (const char* op : {"step.pre_snapshot", "step.post_snapshot", "step.hold"}) {
    if (!failures_.count(op))
      out += std::string("stepsnap_operation_failures_total{op=\"") + op + "\"} 0\n";
  }
  for (const auto& [op, n] : failures_)
    out += "stepsnap_operation_failures_total{op=\"" + label_value(op) + "\"} " +
           std::to_string(n) + "\n";
  header(out, "stepsnap_steps_started_total", "counter", "Steps released to run.");
  out += "stepsnap_steps_started_total " + std::to_string(steps_started_) + "\n";
  header(out, "stepsnap_steps_finished_total", "counter",
         "Steps over, by end state (finished, exited_nonzero, failed).");
  for (const char* s : {"finished", "exited_nonzero", "failed"}) {
    auto it = steps_finished_.find(s);
    out += std::string("stepsnap_steps_finished_total{state=\"") + s + "\"} " +
           std::to_string(it == steps_finished_.end() ? 0 : it->second) + "\n";
  }
  header(out, "stepsnap_tracer_events_lost_total", "counter",
         "Records the step tracer's BPF ring buffer dropped (events.lost).");
  out += "stepsnap_tracer_events_lost_total " + std::to_string(tracer_lost_) + "\n";
  header(out, "stepsnap_snapshot_pause_seconds", "histogram",
         "Time a volume was suspended for one snapshot (pause_ns of snapshot.created).");
  pause_.write(out, "stepsnap_snapshot_pause_seconds");
  header(out, "stepsnap_step_hold_seconds", "histogram",
         "Time a step was held at its first exec for its pre-snapshots (held_ns).");
  hold_.write(out, "stepsnap_step_hold_seconds");
  return out;
}

}  // namespace stepsnap::agent
