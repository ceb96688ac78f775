#include "common/error.h"

#include <cerrno>
#include <cstring>

namespace stepsnap {

std::string Error::message() const {
  std::string m = op;
  if (!object.empty()) m += " " + object;
  if (err != 0) m += std::string(": ") + std::strerror(err);
  if (!detail.empty()) m += (err != 0 ? " (" + detail + ")" : ": " + detail);
  return m;
}

Error& Error::context(std::string outer) {
  // message() starts with op, so prefixing it makes the text read outer-to-inner.
  op = std::move(outer) + ": " + op;
  return *this;
}

tl::unexpected<Error> fail_errno(std::string op, std::string object) {
  int e = errno;
  return fail(std::move(op), std::move(object), e);
}

}  // namespace stepsnap
