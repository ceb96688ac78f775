// The CSI spec's error codes: one error type for the driver, and the
// mapping from stepsnapd's error codes (protocol/request.h, docs/api.md)
// onto gRPC status codes. Pure.
#pragma once

#include <grpcpp/support/status.h>

#include <string>
#include <tl/expected.hpp>

#include "common/error.h"

namespace stepsnap::csi {

// A failure as the CO sees it: the spec's code and a one-line message that
// names the object and what to do.
struct CsiError {
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  std::string message;
};

template <typename T>
using CsiResult = tl::expected<T, CsiError>;

inline tl::unexpected<CsiError> csi_fail(grpc::StatusCode code, std::string message) {
  return tl::unexpected(CsiError{code, std::move(message)});
}

// "NOT_FOUND", "ALREADY_EXISTS", ... for logs and test messages.
std::string grpc_code_name(grpc::StatusCode code);

inline grpc::Status to_status(const CsiError& e) { return grpc::Status(e.code, e.message); }

// stepsnapd's code (Error::kind from ApiClient::request) -> gRPC code:
//   not_found -> NOT_FOUND, exists -> ALREADY_EXISTS,
//   no_space -> RESOURCE_EXHAUSTED (a full pool: data, metadata or thin ids),
//   busy -> FAILED_PRECONDITION (a device in use, e.g. still mounted),
//   pool_read_only -> FAILED_PRECONDITION (needs a human: thin_check),
//   invalid_value and the parser's codes -> INVALID_ARGUMENT,
//   forbidden -> PERMISSION_DENIED,
//   no code at all (no answer: stepsnapd down) -> UNAVAILABLE, so the CO
//   retries; anything else -> INTERNAL.
grpc::StatusCode code_for_agent_error(const std::string& agent_code);

// The whole error: the code above and "<what>: <stepsnapd's message>".
CsiError from_agent_error(const std::string& what, const Error& error);

// An RPC's answer from its outcome; a failure is also logged (at info: the
// CO retries most of them) with the RPC's name and code.
grpc::Status rpc_status(const CsiResult<void>& r, std::string_view rpc);

}  // namespace stepsnap::csi
