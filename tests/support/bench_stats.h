// Small pieces the benchmarks share: their sizes from the environment (so
// scripts/bench* can scale a run without a rebuild) and the median they
// report (robust to the odd slow sample on a shared machine).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace stepsnap::testing {

// The environment variable as a count, or fallback when unset or empty.
inline std::size_t env_or(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? static_cast<std::size_t>(std::stoul(v)) : fallback;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace stepsnap::testing
