// Where the time of one send or receive went, phase by phase, for the
// daemon's log: the stream's cost is mostly fixed work (metadata snapshot,
// device creation, activation) and this says which (docs/benchmarks.md).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace stepsnap::agent {

class PhaseClock {
 public:
  using clock = std::chrono::steady_clock;
  PhaseClock() : start_(clock::now()), last_(start_) {}

  // Ends the phase that ran since the previous mark (or construction).
  void mark(std::string phase) {
    auto now = clock::now();
    phases_.emplace_back(std::move(phase), ms(now - last_));
    last_ = now;
  }

  // "phase 1.2 ms, phase 30.0 ms, total 31.2 ms"
  std::string summary() const {
    std::string out;
    for (const auto& [name, took] : phases_) out += name + " " + format(took) + ", ";
    return out + "total " + format(ms(last_ - start_));
  }

  const std::vector<std::pair<std::string, double>>& phases() const { return phases_; }

 private:
  static double ms(clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
  }
  static std::string format(double ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f ms", ms);
    return buf;
  }
  clock::time_point start_;
  clock::time_point last_;
  std::vector<std::pair<std::string, double>> phases_;
};

}  // namespace stepsnap::agent
