// Prometheus metrics derived from the event log: each committed event is
// fed in once, in seq order, and moves counters and histograms. Nothing in
// the snapshot path is instrumented or locked for it; after a restart the
// view replays the retained log, so a counter starts again from what the
// log still holds (Prometheus treats the drop as a counter reset).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "agent/events/event_log.h"

namespace stepsnap::agent {

// Cumulative buckets in seconds, Prometheus style.
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  void observe(double seconds);
  // name_bucket{le=...}, name_sum, name_count lines.
  void write(std::string& out, const std::string& name) const;

 private:
  std::array<std::uint64_t, kBounds.size()> counts_{};
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

class EventMetrics {
 public:
  void feed(const Event& event);
  // The # HELP / # TYPE blocks and samples of everything fed so far.
  std::string text() const;
  std::uint64_t last_seq() const;

 private:
  mutable std::mutex mutex_;
  std::uint64_t last_seq_ = 0;
  std::uint64_t events_ = 0;
  std::map<std::string, std::uint64_t> by_type_;
  std::map<std::string, std::uint64_t> snapshots_;  // by phase
  std::uint64_t clones_ = 0;
  std::uint64_t run_clones_ = 0;
  std::map<std::string, std::uint64_t> failures_;        // by op
  std::map<std::string, std::uint64_t> steps_finished_;  // by outcome
  std::uint64_t steps_started_ = 0;
  std::uint64_t tracer_lost_ = 0;
  Histogram pause_;
  Histogram hold_;
};

}  // namespace stepsnap::agent
