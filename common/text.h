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

}  // namespace stepsnap
