#include "common/names.h"

namespace stepsnap {

namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

std::optional<std::string> name_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.size() > kMaxNameLength) {
    return "is " + std::to_string(name.size()) + " characters long, more than " +
           std::to_string(kMaxNameLength);
  }
  if (name == "." || name == "..") return "is \"" + std::string(name) + "\"";
  for (char c : name) {
    if (!name_char(c)) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u < 0x20 || u >= 0x7f) return "contains a control or non-ASCII byte";
      return std::string("contains '") + c + "'";
    }
  }
  return std::nullopt;
}

bool is_valid_name(std::string_view name) { return !name_problem(name); }

}  // namespace stepsnap
