// common/: what every module shares (errors, fds, logging, names, sizes, time,
// cgroup files). Uses nothing else of ours.
//
// The one result type of the code base.
//
// Recoverable failures are values: Result<T> holds a T or an Error that says
// what was being done, to what, and why (errno text). Fatal user errors are
// thrown as FatalError and caught once, near main().
#pragma once

#include <stdexcept>
#include <string>
#include <tl/expected.hpp>
#include <utility>

namespace stepsnap {

struct Error {
  std::string op;      // what was being done: "suspend", "open", "parse request"
  std::string object;  // on what: a device name, a path, a field
  int err = 0;         // errno value, 0 when the failure is not a system error
  std::string detail;  // extra words when errno alone does not say it
  // Machine-readable class a caller can act on, e.g. "out_of_data_space"
  // (see dm/dm_error.h); empty when the failure has no special class.
  std::string kind = {};

  // "suspend stepsnap-vol1: Device or resource busy (what holds it: ...)"
  std::string message() const;

  // Prepends context from an outer layer: "snapshot workspace: " + message.
  Error& context(std::string outer);
};

template <typename T>
using Result = tl::expected<T, Error>;
using Status = tl::expected<void, Error>;

inline tl::unexpected<Error> fail(std::string op, std::string object, int err,
                                  std::string detail = {}) {
  return tl::unexpected(Error{std::move(op), std::move(object), err, std::move(detail), {}});
}

// errno captured at the call site.
tl::unexpected<Error> fail_errno(std::string op, std::string object);

class FatalError : public std::runtime_error {
 public:
  explicit FatalError(const Error& e) : std::runtime_error(e.message()) {}
  explicit FatalError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace stepsnap
