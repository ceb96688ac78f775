#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <string>

namespace stepsnap::log {
namespace {
std::atomic<Level> g_level{Level::info};

const char* prefix(Level l) {
  switch (l) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "?";
}
}  // namespace

void set_level(Level l) { g_level = l; }
Level level() { return g_level; }

bool parse_level(std::string_view text, Level* out) {
  for (Level l : {Level::debug, Level::info, Level::warn, Level::error}) {
    if (text == prefix(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

void write(Level l, std::string_view message) {
  if (l < g_level.load()) return;
  // One fprintf per line so concurrent threads never interleave within a line.
  std::string line = std::string(prefix(l)) + ": " + std::string(message) + "\n";
  std::fputs(line.c_str(), stderr);
}

}  // namespace stepsnap::log
