// Splitting the text device-mapper speaks (status lines, table parameters)
// into words and whole numbers. Shared by pool_status.cpp and table.cpp.
#pragma once

#include <charconv>
#include <sstream>
#include <string>
#include <vector>

namespace stepsnap::dm {

inline std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The whole word is a number of T's type; "12x" or "" is not.
template <typename T>
bool parse_number(const std::string& text, T* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace stepsnap::dm
