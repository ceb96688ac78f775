// Small text helpers every layer shares.
#pragma once

#include <string>
#include <vector>

namespace stepsnap {

// parts with sep between them. A separator is only added once the text is
// non-empty, so leading empty parts leave no stray separator.
inline std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

// The last non-blank line of a tool's output (mkfs's complaint, the
// verifier's verdict), for a one-line error message.
inline std::string last_line(const std::string& text) {
  std::string last;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (!line.empty()) last = line;
    start = end + 1;
  }
  return last;
}

}  // namespace stepsnap
