#include "runner/pipeline/pipeline_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "common/text.h"

namespace stepsnap::runner {

namespace {

std::string padded(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

// Trailing blanks of table lines are noise in logs.
std::string rstrip(std::string s) {
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

const char* signal_name(int sig) {
  // Linux x86/arm numbering of the signals a step is likely to die of.
  static constexpr const char* kNames[] = {
      nullptr,   "SIGHUP",  "SIGINT",  "SIGQUIT", "SIGILL",  "SIGTRAP", "SIGABRT",
      "SIGBUS",  "SIGFPE",  "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE",
      "SIGALRM", "SIGTERM", nullptr,   nullptr,   nullptr,   nullptr,   nullptr,
      nullptr,   nullptr,   nullptr,   "SIGXCPU", "SIGXFSZ"};
  if (sig <= 0 || sig >= static_cast<int>(std::size(kNames))) return nullptr;
  return kNames[sig];
}

std::string duration_cell(const StepResult& r) {
  if (r.state == StepState::ok || r.state == StepState::failed) return format_duration(r.seconds);
  return "-";
}

}  // namespace

std::string step_counter(std::size_t position, std::size_t total) {
  std::string t = std::to_string(total);
  std::string p = std::to_string(position);
  if (p.size() < t.size()) p.insert(0, t.size() - p.size(), ' ');
  return "[" + p + "/" + t + "]";
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  char buf[64];
  // One decimal below a minute; rounding 59.96 up must not print "60.0 s".
  if (std::round(seconds * 10) < 600) {
    std::snprintf(buf, sizeof buf, "%.1f s", seconds);
    return buf;
  }
  auto whole = static_cast<long long>(std::llround(seconds));
  if (whole < 3600) {
    std::snprintf(buf, sizeof buf, "%lld min %02lld s", whole / 60, whole % 60);
    return buf;
  }
  long long minutes = (whole + 30) / 60;
  std::snprintf(buf, sizeof buf, "%lld h %02lld min", minutes / 60, minutes % 60);
  return buf;
}

std::string describe_exit(int exit_code) {
  std::string code = "exit " + std::to_string(exit_code);
  switch (exit_code) {
    case 124:
      return "timed out, " + code;
    case 125:
      return "runner error, " + code;
    case 126:
      return "cannot execute, " + code;
    case 127:
      return "command not found, " + code;
    default:
      break;
  }
  if (exit_code > 128 && exit_code < 128 + 65) {
    int sig = exit_code - 128;
    const char* name = signal_name(sig);
    return std::string("killed by ") + (name ? name : "signal " + std::to_string(sig)) + ", " +
           code;
  }
  return code;
}

std::string start_line(std::size_t position, std::size_t total, const std::string& step) {
  return step_counter(position, total) + " " + step + ": started";
}

std::string status_text(const StepResult& r) {
  switch (r.state) {
    case StepState::ok:
      return "ok";
    case StepState::failed:
      return "failed (" + describe_exit(r.exit_code) + ")";
    case StepState::skipped:
      return "skipped";
    case StepState::restored:
      return "restored";
    case StepState::not_run:
      return "not run";
  }
  return "?";
}

std::string end_line(std::size_t position, std::size_t total, const StepResult& r) {
  std::string line = step_counter(position, total) + " " + r.name + ": ";
  switch (r.state) {
    case StepState::ok:
      return line + "ok in " + format_duration(r.seconds);
    case StepState::failed:
      line += status_text(r) + " in " + format_duration(r.seconds);
      if (!r.post_snapshots.empty()) {
        line += std::string("; post-snapshot") + (r.post_snapshots.size() > 1 ? "s" : "") +
                " kept: " + join(r.post_snapshots, ", ");
      }
      return line;
    case StepState::skipped:
      return line + "skipped: depends on failed step " + r.because;
    case StepState::restored:
      return line + "restored: not re-run";
    case StepState::not_run:
      return line + "not run: the pipeline was stopped";
  }
  return line;
}

std::string running_line(std::size_t position, std::size_t total, const std::string& step,
                         double elapsed_seconds, unsigned frame) {
  static constexpr char kSpinner[] = {'|', '/', '-', '\\'};
  if (!std::isfinite(elapsed_seconds) || elapsed_seconds < 0) elapsed_seconds = 0;
  auto whole = static_cast<long long>(std::floor(elapsed_seconds));
  std::string elapsed;
  if (whole < 60) {
    elapsed = std::to_string(whole) + " s";
  } else {
    char buf[48];
    if (whole < 3600)
      std::snprintf(buf, sizeof buf, "%lld min %02lld s", whole / 60, whole % 60);
    else
      std::snprintf(buf, sizeof buf, "%lld h %02lld min %02lld s", whole / 3600, (whole / 60) % 60,
                    whole % 60);
    elapsed = buf;
  }
  return step_counter(position, total) + " " + step + ": running " + elapsed + " " +
         kSpinner[frame % 4];
}

std::string summary_counts(const std::vector<StepResult>& results) {
  std::size_t counts[5] = {0, 0, 0, 0, 0};
  for (const auto& r : results) ++counts[static_cast<int>(r.state)];
  static constexpr const char* kNames[5] = {"ok", "failed", "skipped", "restored", "not run"};
  std::string out = std::to_string(results.size()) + (results.size() == 1 ? " step" : " steps");
  std::string parts;
  for (int s = 0; s < 5; ++s) {
    if (counts[s] == 0) continue;
    parts += (parts.empty() ? "" : ", ") + std::to_string(counts[s]) + " " + kNames[s];
  }
  return parts.empty() ? out : out + ": " + parts;
}

std::string summary_table(const std::vector<StepResult>& results, std::size_t width) {
  const std::vector<std::string> head = {"STEP", "STATUS", "DURATION", "PRE SNAPSHOT",
                                         "POST SNAPSHOT"};
  // Rows of cells; a snapshot cell is a list (one line each).
  std::vector<std::size_t> w(head.size());
  for (std::size_t c = 0; c < head.size(); ++c) w[c] = head[c].size();
  for (const auto& r : results) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], status_text(r).size());
    w[2] = std::max(w[2], duration_cell(r).size());
    for (const auto& s : r.pre_snapshots) w[3] = std::max(w[3], s.size());
    for (const auto& s : r.post_snapshots) w[4] = std::max(w[4], s.size());
  }
  const std::string gap = "  ";
  std::size_t total = 0;
  for (auto x : w) total += x;
  total += gap.size() * (w.size() - 1);

  std::string out;
  if (total <= width) {
    auto row = [&](const std::vector<std::string>& cells) {
      std::string line;
      for (std::size_t c = 0; c < cells.size(); ++c)
        line += (c ? gap : "") + padded(cells[c], w[c]);
      out += rstrip(line) + "\n";
    };
    row(head);
    for (const auto& r : results) {
      std::size_t lines =
          std::max<std::size_t>(1, std::max(r.pre_snapshots.size(), r.post_snapshots.size()));
      for (std::size_t k = 0; k < lines; ++k) {
        auto snap = [&](const std::vector<std::string>& v) -> std::string {
          if (v.empty()) return k == 0 ? "-" : "";
          return k < v.size() ? v[k] : "";
        };
        if (k == 0)
          row({r.name, status_text(r), duration_cell(r), snap(r.pre_snapshots),
               snap(r.post_snapshots)});
        else
          row({"", "", "", snap(r.pre_snapshots), snap(r.post_snapshots)});
      }
    }
  } else {
    // Too wide side by side: snapshots go under their step.
    auto row = [&](const std::vector<std::string>& cells) {
      std::string line;
      for (std::size_t c = 0; c < cells.size(); ++c)
        line += (c ? gap : "") + padded(cells[c], w[c]);
      out += rstrip(line) + "\n";
    };
    row({head[0], head[1], head[2]});
    for (const auto& r : results) {
      row({r.name, status_text(r), duration_cell(r)});
      auto list = [&](const char* label, const std::vector<std::string>& v) {
        out += std::string("    ") + label + (v.empty() ? "-" : join(v, ", ")) + "\n";
      };
      if (!r.pre_snapshots.empty() || !r.post_snapshots.empty()) {
        list("pre:  ", r.pre_snapshots);
        list("post: ", r.post_snapshots);
      }
    }
  }
  out += summary_counts(results);
  return out;
}

std::string metrics_table(const std::vector<StepResult>& results) {
  std::size_t wn = std::string("METRIC").size(), wv = std::string("VALUE").size();
  bool any = false;
  for (const auto& r : results)
    for (const auto& [name, value] : r.metrics) {
      wn = std::max(wn, name.size());
      wv = std::max(wv, value.size());
      any = true;
    }
  if (!any) return {};
  auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
    return a + std::string(wn - a.size() + 2, ' ') + b + std::string(wv - b.size() + 2, ' ') + c;
  };
  std::string out = row("METRIC", "VALUE", "STEP");
  for (const auto& r : results)
    for (const auto& [name, value] : r.metrics) out += "\n" + row(name, value, r.name);
  return out;
}

}  // namespace stepsnap::runner
